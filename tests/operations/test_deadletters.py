"""`convsync failed` and `convsync requeue`: the dead-letter list and its way back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convsync_pipeline.core.document import Conversation, Message
from convsync_pipeline.operations.deadletters import first_customer_words
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.store.local import LocalStore
from tests.operations.builders import conversation, document, put, read, snapshot
from tests.operations.conftest import held_lock

LONG = (
    "I have been waiting for three weeks for a refund of the duplicate charge on my card "
    "and nobody answers my emails"
)


def seed(root: Path) -> None:
    put(
        root,
        "2026-02-11",
        document(
            "2026-02-11",
            [
                conversation(
                    "c1", "failed", retry=3, error="model output failed validation", words=LONG
                ),
                conversation("c2", "failed", retry=3, error="timeout after 60s\nretries exhausted"),
                conversation("c3", "success"),
                conversation("c4", "pending", retry=1, error="rate limited"),
            ],
            version=5,
        ),
    )
    put(
        root,
        "2026-02-12",
        document(
            "2026-02-12", [conversation("d1", "failed", "2026-02-12", retry=3, error="refusal")]
        ),
    )
    put(root, "2026-02-13", document("2026-02-13", [conversation("e1", "success", "2026-02-13")]))


def test_failed_lists_every_failed_conversation_across_dates(root: Path, cli) -> None:
    seed(root)

    result = cli("failed")

    assert result.code == 0, result.err
    rows = [line for line in result.out.splitlines() if line.startswith("2026-")]
    assert [row.split()[:3] for row in rows] == [
        ["2026-02-11", "c1", "3"],
        ["2026-02-11", "c2", "3"],
        ["2026-02-12", "d1", "3"],
    ]
    assert "model output failed validation" in rows[0]
    assert "timeout after 60s retries exhausted" in rows[1], "one line per conversation"
    assert "3 failed conversation(s) on 2 date(s)" in result.out
    assert "c3" not in result.out and "c4" not in result.out


def test_failed_json_for_a_date_and_for_a_range(root: Path, cli) -> None:
    seed(root)

    one = cli("failed", "2026-02-11", "--json")
    ranged = cli("failed", "--from", "2026-02-12", "--to", "2026-02-13", "--json")

    assert one.code == 0 and ranged.code == 0
    listed = json.loads(one.out)
    assert [(e["date"], e["id"], e["attempts"]) for e in listed] == [
        ("2026-02-11", "c1", 3),
        ("2026-02-11", "c2", 3),
    ]
    assert listed[0]["lastError"] == "model output failed validation"
    words = listed[0]["firstCustomerWords"]
    assert words.startswith("I have been waiting for three weeks") and words.endswith("…")
    assert len(words) <= 80
    assert listed[1]["source"] == "incoming/2026-02-11/export.csv"
    assert [e["id"] for e in json.loads(ranged.out)] == ["d1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["failed", "2026-02-11", "--from", "2026-02-10"], "not both"),
        (["failed", "2026-2-11"], "YYYY-MM-DD"),
        (["failed", "--from", "2026-02-12", "--to", "2026-02-11"], "after --to"),
        (["failed", "2026-02-20"], "no date document for 2026-02-20"),
        (["requeue", "2026-02-20"], "no date document for 2026-02-20"),
    ],
)
def test_bad_arguments_are_one_line_errors(root: Path, cli, argv: list[str], message: str) -> None:
    seed(root)

    result = cli(*argv)

    assert result.code == 1
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_requeue_round_trip(root: Path, store: LocalStore, cli) -> None:
    seed(root)
    other_date = (root / "conversations" / "2026-02-12.json").read_bytes()

    result = cli("requeue", "2026-02-11")

    assert result.code == 0, result.err
    assert "requeued 2 conversation(s) of 2026-02-11" in result.out
    doc = load_document(store, "2026-02-11").document
    by_id = doc.by_id()
    for cid in ("c1", "c2"):
        assert by_id[cid].processing_status == "pending"
        assert by_id[cid].retry_count == 0
        assert by_id[cid].processing_error is None
    assert by_id["c3"].processing_status == "success"
    assert (by_id["c4"].retry_count, by_id["c4"].processing_error) == (1, "rate limited")
    assert doc.version == 6, "one save"
    assert doc.summary.pending == 3 and doc.summary.failed == 0
    assert (root / "conversations" / "2026-02-12.json").read_bytes() == other_date
    assert json.loads(cli("failed", "2026-02-11", "--json").out) == []

    again = cli("requeue", "2026-02-11")
    assert again.code == 0
    assert "nothing to requeue" in again.out
    assert load_document(store, "2026-02-11").document.version == 6, "no needless save"


def test_requeue_by_id_reports_unknown_and_non_failed_ids(
    root: Path, store: LocalStore, cli
) -> None:
    seed(root)

    result = cli("requeue", "2026-02-11", "--id", "c1", "c3", "--id", "nope")

    assert result.code == 1
    assert "requeued 1 conversation(s) of 2026-02-11" in result.out
    errors = result.err.strip().splitlines()
    assert len(errors) == 2
    assert "'nope'" in errors[0] and "nothing changed for it" in errors[0]
    assert "'c3'" in errors[1] and "is success, not failed" in errors[1]
    by_id = load_document(store, "2026-02-11").document.by_id()
    assert by_id["c1"].processing_status == "pending"
    assert by_id["c2"].processing_status == "failed", "not named: untouched"
    assert by_id["c3"].processing_status == "success"


def test_requeue_of_only_invalid_ids_writes_nothing(root: Path, cli) -> None:
    seed(root)
    before = read(root, "2026-02-11")

    result = cli("requeue", "2026-02-11", "--id", "c4")

    assert result.code == 1
    assert "'c4' of 2026-02-11 is pending, not failed" in result.err
    assert read(root, "2026-02-11") == before


def test_requeue_is_refused_while_another_process_holds_the_date(
    root: Path, store: LocalStore, cli
) -> None:
    seed(root)
    before = snapshot(root / "conversations")

    with held_lock(store, "2026-02-11", "run-7f3a"):
        result = cli("requeue", "2026-02-11")

    assert result.code == 1
    assert result.out == ""
    error = result.err.strip()
    assert len(error.splitlines()) == 1
    assert "2026-02-11" in error and "run-7f3a" in error
    assert snapshot(root / "conversations") == before
    assert cli("requeue", "2026-02-11").code == 0, "works once the lock is free"


def test_failed_warns_about_documents_it_cannot_read(root: Path, cli) -> None:
    seed(root)
    put(root, "2026-02-14", {"date": "2026-02-14", "conversations": [{"id": "legacy"}]})

    result = cli("failed", "--json")

    assert result.code == 1, "the listing is incomplete"
    assert len(json.loads(result.out)) == 3
    assert "conversations/2026-02-14.json" in result.err


def _conversation(*turns: tuple[str, str]) -> Conversation:
    return Conversation(
        id="x",
        startedAt="t",
        endedAt="t",
        source="s",
        processingStatus="failed",
        messages=[Message(role=r, content=c, timestamp="t") for r, c in turns],
    )


def test_first_customer_words_skip_the_agent_greeting() -> None:
    convo = _conversation(
        ("system", "be nice"), ("agent", "Hi!"), ("Customer", "My   card\nis blocked")
    )
    assert first_customer_words(convo) == "My card is blocked"
    assert first_customer_words(_conversation(("agent", "Hello there"))) == "Hello there"
    assert first_customer_words(_conversation()) == ""
    words = first_customer_words(_conversation(("user", "word " * 40)))
    assert words.endswith("…") and len(words) <= 80 and "  " not in words
