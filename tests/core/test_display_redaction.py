"""Every display path uses the one redactor, read from CONVSYNC_REDACT(_PATTERNS): markdown
tables (event-log metadata), the report's text, the `convsync` logger, the dead letters."""

from __future__ import annotations

import logging

import pytest

from convsync_pipeline.assets.markdown import table
from convsync_pipeline.core.document import Conversation
from convsync_pipeline.core.redaction import Redactor
from convsync_pipeline.operations.deadletters import first_customer_words
from convsync_pipeline.operations.report import _text

WORDS = "my card 4111 1111 1111 1111, mail jane@example.com, ref ACME-123456"


@pytest.fixture(autouse=True)
def patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSYNC_REDACT_PATTERNS", r"ACME-\d{6}")
    monkeypatch.delenv("CONVSYNC_REDACT", raising=False)


def test_markdown_tables_are_redacted() -> None:
    shown = table(["id", "words"], [["c1", WORDS]])
    assert "4111" not in shown and "jane@" not in shown and "ACME-1" not in shown
    assert "[CARD]" in shown and "[EMAIL]" in shown and "[REDACTED]" in shown


def test_report_text_is_redacted_then_escaped() -> None:
    assert _text(f"<b>{WORDS}</b>") == (
        "&lt;b&gt;my card [CARD], mail [EMAIL], ref [REDACTED]&lt;/b&gt;"
    )


def test_the_convsync_logger_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="convsync")
    logging.getLogger("convsync").warning("analysis of %s failed: %s", "c1", WORDS)
    (record,) = [r for r in caplog.records if r.name == "convsync"]
    assert "4111" not in record.getMessage() and "[CARD]" in record.getMessage()


def test_first_words_are_redacted_before_the_cut() -> None:
    conversation = Conversation.model_validate(
        {
            "id": "c1",
            "startedAt": "2026-02-11T09:00:00.000Z",
            "endedAt": "2026-02-11T09:00:00.000Z",
            "source": "incoming/x.csv",
            "processingStatus": "pending",
            "messages": [
                {"role": "user", "content": WORDS, "timestamp": "2026-02-11T09:00:00.000Z"}
            ],
        }
    )
    assert first_customer_words(conversation, 24, Redactor()) == "my card [CARD], mail…"
    assert first_customer_words(conversation, 200) == WORDS  # raw only when no redactor


def test_switched_off_shows_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSYNC_REDACT", "false")
    assert WORDS in table(["words"], [[WORDS]])
