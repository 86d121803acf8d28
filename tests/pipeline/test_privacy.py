"""Customers' identifiers appear nowhere convsync shows: the one redactor guards every exit.

Each kind of identifier (e-mail, phone, card, IBAN, a user pattern from
CONVSYNC_REDACT_PATTERNS) is planted in a conversation that succeeds, one that fails all its
attempts (the fake OpenAI server answering 400 with an error text echoing the customer's
words, so `processingError` would carry them) and a record that is quarantined. Real Dagster
runs (SQLite instance on disk, and the PostgreSQL one of deploy/) materialise the date and
the dead letters; then every operation runs through the CLI. The event log (every stored
event, read back from SQLite's files and PostgreSQL's table), the compute logs, the report,
the logs and all console output are scanned: zero hits, and the placeholders are there.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize, serialize_value

from convsync_pipeline.cli import main
from convsync_pipeline.definitions import build_assets
from convsync_pipeline.operations.deadletters import FIRST_WORDS_CHARS
from convsync_pipeline.resources import build_resources
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload, run_date, settings_for
from tests.fixtures.openai_server import FakeOpenAIServer, Reply, by_conversation
from tests.fixtures.postgres import PgConn

D = "2026-02-11"
API_KEY = "sk-test-privacy-0000"
EMAIL, PHONE = "jane.doe@example.com", "+44 20 7946 0958"
CARD, IBAN, CUSTOM = "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "ACME-004217"
WORDS = f"My card {CARD} was charged twice, ref {CUSTOM}"  # within the first words
MORE = f", IBAN {IBAN}, mail {EMAIL} or call {PHONE}"
# As written, and squeezed (a renderer may drop or change the spaces).
FRAGMENTS = (EMAIL, PHONE, CARD, IBAN, CUSTOM, "4111111111111111", "DE89370400440532013000",
             "442079460958", "jane.doe")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def hits(text: str) -> list[str]:
    squeezed = re.sub(r"[\s-]", "", text)
    return [f for f in FRAGMENTS if f in text or re.sub(r"[\s-]", "", f) in squeezed]


def _instance(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    if kind == "postgres":
        database: PgConn = request.getfixturevalue("postgres_database")
        for name, value in database.dagster_env().items():
            monkeypatch.setenv(name, value)
        shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_identifiers_appear_nowhere_convsync_shows(
    kind: str,
    tmp_path: Path,
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="convsync")
    home = _instance(kind, tmp_path, monkeypatch, request)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "store"
    env = {
        "CONVSYNC_STORE": str(root),
        "CONVSYNC_ANALYZER": "openai",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": openai_server.base_url,
        "CONVSYNC_RETRY_DELAY_SECONDS": "0",
        "CONVSYNC_MAX_ATTEMPTS": "1",
        "CONVSYNC_REDACT_PATTERNS": r'["ACME-\\d{6}"]',
        "CONVSYNC_LOCK_WAIT_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_for(env)
    store = LocalStore(root)
    store.write(
        f"incoming/{D}/export.csv",
        csv_upload(
            ("ok", f"{D}T09:00:00Z", "user", WORDS + MORE),
            ("bad", f"{D}T09:01:00Z", "user", WORDS + MORE),
            ("late", "not a time", "user", WORDS + MORE),  # quarantined
        ),
    )
    # The server "echoes the input" in its error: processingError would carry the words.
    openai_server.behaviour = by_conversation(
        {"bad": Reply("bad_request", message=f"cannot process: {WORDS}{MORE}")}
    )
    with DagsterInstance.get() as instance:
        result = run_date(settings, D, instance=instance)
        assert result.success
        assets = [*build_assets(settings), *_operations(settings)]
        dead = materialize(
            assets, selection=["dead_letters"], resources=build_resources(settings),
            instance=instance,
        )
        assert dead.success
        dead_md = str(dead.asset_materializations_for_node("dead_letters")[0].metadata)
        assert "[CARD]" in dead_md and "[REDACTED]" in dead_md and "[IBAN]" in dead_md
        events = [
            serialize_value(record.event_log_entry)
            for run in (result, dead)
            for record in instance.get_records_for_run(run.run_id, limit=100_000).records
        ]
    assert len(events) > 20
    for event in events:
        assert not hits(event), event[:500]
    document = store.read(f"conversations/{D}.json").decode()
    assert CARD in document, "the store keeps the customer's words; only what leaves is redacted"
    assert "[CARD]" in document, "processingError is stored redacted"
    assert any(key.startswith("quarantine/") for key in (i.key for i in store.list("")))

    # Every operation, through the CLI (the operator's own --show-text aside).
    outputs = []
    for argv in (
        ["status"], ["status", D], ["failed"], ["failed", "--json"],
        ["report", "--out", str(tmp_path / "report.html")], ["compact"],
        ["forget", "--match", "nothing like this", "--dry-run"],
    ):
        assert main(argv) == 0, argv
    out, err = capfd.readouterr()
    outputs += [out, err]
    assert "[CARD]" in out
    page = (tmp_path / "report.html").read_text()
    assert "[CARD]" in page
    outputs.append(page)
    assert main(["failed", "--show-text"]) == 0
    shown, _ = capfd.readouterr()
    assert main(["requeue", D]) == 0
    outputs += list(capfd.readouterr())

    # The instance's own storage, read back raw: SQLite files and compute logs, or PostgreSQL.
    if kind == "sqlite":
        stored = [p for p in home.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in stored)
        outputs += [p.read_bytes().decode("utf-8", "replace") for p in stored]
    else:
        database: PgConn = request.getfixturevalue("postgres_database")
        with database.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT event FROM event_logs")
            rows = [row[0] for row in cursor.fetchall()]
        connection.close()
        assert len(rows) > 20
        outputs += rows
        outputs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*.out")]
        outputs += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*.err")]
    outputs += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    for text in outputs:
        assert not hits(text), hits(text)
    # Shown raw only when the operator asks: proves the scan would have seen a leak.
    assert CARD in shown and len(WORDS) < FIRST_WORDS_CHARS


def _operations(settings):
    from convsync_pipeline.assets.operations import build_operations_definitions

    return build_operations_definitions(settings)["assets"]
