"""The OpenAI API key appears nowhere convsync writes, logs or reports.

One test drives the openai analyser through `run_date` (real Dagster runs on one instance)
in the ways most likely to leak a key:
- a successful run, with one conversation whose 5xx error text quotes the whole key (as a
  misconfigured proxy echoing the Authorization header would) and one whose 400 quotes the
  masked key, both stored as `processingError`;
- a run failing with 401 while sending (OpenAI's 401 body quotes the masked key);
- a run failing with 401 at the preflight (any request with a wrong key);
and then looks for the key, its secret part and its masked form in: captured logs (every
logger at DEBUG, the SDK's and httpx's included), captured stdout/stderr (file-descriptor
level, so Dagster's console output counts too), every event record of every run in the Dagster
instance (serialized), each run's stored config and tags, materialization metadata, the error
messages of the failed runs, and every object and file in the store.
"""

from __future__ import annotations

import logging

import pytest
from dagster import DagsterInstance, serialize_value

from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload, run_date, settings_for
from tests.fixtures.openai_server import FakeOpenAIServer, Reply, by_conversation, mask_key

API_KEY = "sk-test-SECRET-1234567890"
WRONG_KEY = "sk-test-WRONGSECRET-0987654321"
D = "2026-02-11"
# The key, its distinctive part, and the masked forms a server may quote.
FRAGMENTS = (
    API_KEY,
    "SECRET-1234567890",
    mask_key(API_KEY),
    WRONG_KEY,
    "WRONGSECRET",
    mask_key(WRONG_KEY),
    "sk-test-",
)


def leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def test_the_api_key_appears_nowhere(
    tmp_path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    # A Dagster instance managing the convsync logger may have raised its level: reset it.
    caplog.set_level(logging.DEBUG, logger="convsync")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    root = tmp_path / "store"
    store = LocalStore(root)
    settings = settings_for(
        {
            "CONVSYNC_STORE": str(root),
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai_server.base_url,
            "CONVSYNC_RETRY_DELAY_SECONDS": "0.05",
            "CONVSYNC_MAX_ATTEMPTS": "1",  # one pass per run is enough here
        }
    )
    assert not leaks(serialize_value(settings.model_dump(mode="json")))
    store.write(
        "incoming/2026-02-11/export.csv",
        csv_upload(
            ("ok", "2026-02-11T09:00:00Z", "user", "Where is my parcel?"),
            ("echo", "2026-02-11T09:01:00Z", "user", "Refund please"),
            ("masked", "2026-02-11T09:02:00Z", "user", "Cancel my plan"),
        ),
    )
    instance = DagsterInstance.ephemeral()
    results = []

    # 1. A run that succeeds, with server error texts quoting the key.
    openai_server.behaviour = by_conversation(
        {
            "echo": Reply(
                "server_error",
                retry_after_ms=5,
                message=f"upstream rejected header Authorization: Bearer {API_KEY}",
            ),
            "masked": Reply("bad_request", message=f"bad input for key {mask_key(API_KEY)}"),
        }
    )
    results.append(run_date(settings, D, instance=instance))
    assert results[-1].success

    # 2. 401 while sending (the models endpoint still answers): the body quotes the masked key.
    store.write(
        "incoming/2026-02-11/more.csv",
        csv_upload(("later", "2026-02-11T10:00:00Z", "user", "Hello again")),
    )
    openai_server.behaviour = lambda request: (
        "invalid_api_key" if request.endpoint == "chat" else "success"
    )
    results.append(run_date(settings, D, instance=instance))

    # 3. A wrong key in the environment: every request, the preflight first, gets a 401.
    openai_server.behaviour = "success"
    openai_server.expected_api_key = API_KEY
    monkeypatch.setenv("OPENAI_API_KEY", WRONG_KEY)
    results.append(run_date(settings, D, instance=instance))

    assert [r.success for r in results] == [True, False, False]
    assert openai_server.received, "requests did carry the key to the server"

    # Error messages of the failed runs: one clear line naming the variable, not its value.
    for result in results[1:]:
        (failure,) = result.get_step_failure_events()
        message = failure.step_failure_data.user_failure_data.description
        assert "OPENAI_API_KEY" in message and "401" in message
        assert not leaks(message), message
        assert not leaks(serialize_value(failure.step_failure_data))
        run_failure = result.get_run_failure_event()
        assert not leaks(serialize_value(run_failure.event_specific_data))

    # Dagster's instance: every event record of every run, the runs themselves.
    for result in results:
        records = instance.get_records_for_run(result.run_id, limit=100_000).records
        assert records
        for record in records:
            assert not leaks(serialize_value(record.event_log_entry)), record
        run = instance.get_run_by_id(result.run_id)
        assert not leaks(serialize_value(run))
        for materialization in result.get_asset_materialization_events():
            assert not leaks(serialize_value(materialization.event_specific_data))

    # Metadata a person reads in the UI, including the analysis errors table.
    metadata = results[0].asset_materializations_for_node("ai_analysis")[0].metadata
    assert "errors" in metadata
    assert not leaks(serialize_value(metadata))

    # Every object in the store, and every file under its root (internal guards included).
    keys = [info.key for info in store.list("")]
    assert any(key.startswith("conversations/") for key in keys)
    for key in keys:
        data = store.read(key) or b""
        assert not leaks(data.decode("utf-8", "replace")), key
    for path in root.rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes().decode("utf-8", "replace")), path
    document = store.read(f"conversations/{D}.json").decode()
    assert "[redacted key]" in document, "the quoted key was scrubbed, not merely absent"

    # Logs and console output.
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert not leaks(text), (record.name, text[:300])
    out, err = capfd.readouterr()
    assert "ai_analysis" in err + out, "Dagster's console output was captured"
    assert not leaks(out), out[:2000]
    assert not leaks(err), err[:2000]
