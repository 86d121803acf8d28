"""Batch mode (SPEC 7) through the real pass, the real openai SDK and a real HTTP server.

`FakeOpenAIServer.batch` is the Batch API (`/v1/files`, `/v1/batches`) with a lifecycle the
test drives. Attempt accounting is checked where it costs money, at the server: how often each
conversation's line ran in a batch (`run_counts`) never exceeds its attempts, and how often it
was submitted at all (`submitted_counts`) only exceeds that by whole batches that failed
before running (those cost no attempt).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from convsync_pipeline.analyzers.openai import build_messages, build_response_format
from convsync_pipeline.analyzers.openai_batch import BatchClient
from convsync_pipeline.core.batch_ledger import ledger_key
from convsync_pipeline.core.document import Conversation, DateDocument, Message
from convsync_pipeline.core.keys import document_key
from convsync_pipeline.pipeline.analyse import (
    AnalysisReport,
    AnalysisSystemError,
    analyse_date,
    choose_mode,
)
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.analyzer import make_analyzer
from convsync_pipeline.settings import Settings, load_settings
from convsync_pipeline.store.base import DateLockedError, Store, StoreLocks
from tests.fixtures.openai_server import FakeOpenAIServer, Reply, by_conversation

API_KEY = "sk-test-BATCH-1234567890"
D = "2026-03-04"
MAX_ATTEMPTS = 3


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def batch_settings(base_url: str, mode: str = "batch", **extra: str) -> Settings:
    return load_settings(
        {
            "OPENAI_API_KEY": API_KEY,
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_BASE_URL": base_url,
            "CONVSYNC_OPENAI_MODE": mode,
            "CONVSYNC_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "CONVSYNC_START_DATE": "2026-01-01",
            **extra,
        }
    )


def seed(store: Store, ids: list[str]) -> None:
    """A date document of pending conversations (one mentions an e-mail: redaction)."""
    conversations = [
        Conversation(
            id=cid,
            startedAt=f"{D}T09:00:00Z",
            endedAt=f"{D}T09:05:00Z",
            source="test.csv",
            processingStatus="pending",
            messages=[
                Message(
                    role="user",
                    content=f"help {cid}, mail me at a.b@example.com",
                    timestamp=f"{D}T09:00:00Z",
                ),
                Message(role="agent", content="done", timestamp=f"{D}T09:01:00Z"),
            ],
        )
        for cid in ids
    ]
    document = DateDocument(date=D, conversations=conversations).sealed()
    store.compare_and_swap(document_key(D), document.to_json_bytes(), None)


def run_pass(
    store: Store, settings: Settings, owner: str = "test", wait: float = 5.0, timeout: float = 30.0
) -> AnalysisReport:
    locks = StoreLocks(store, ttl_seconds=30.0, wait_seconds=wait)
    return analyse_date(
        store,
        locks,
        settings,
        lambda: make_analyzer(settings),
        D,
        owner,
        make_batch_client=lambda: BatchClient(
            base_url=settings.openai_base_url, timeout_seconds=timeout
        ),
    )


def state(store: Store) -> dict[str, dict[str, Any]]:
    document = load_document(store, D).document
    return {c.id: c.model_dump(by_alias=True) for c in document.conversations}


def ledger(store: Store) -> dict[str, Any]:
    data = store.read(ledger_key(D))
    assert data is not None
    return json.loads(data)


def assert_attempts(store: Store, server: FakeOpenAIServer) -> None:
    """At the server: no line ran more often than its conversation was charged for."""
    now = state(store)
    for cid, runs in server.batch.run_counts().items():
        c = now[cid]
        charged = c["retryCount"] + (1 if c["processingStatus"] in ("success", "processing") else 0)
        assert runs <= charged, f"{cid} ran {runs} times for {charged} attempts"
        assert runs <= MAX_ATTEMPTS


def assert_consistent(store: Store) -> None:
    data = store.read(document_key(D))
    assert data is not None
    doc = json.loads(data)
    counts = {s: 0 for s in ("pending", "processing", "success", "failed")}
    for c in doc["conversations"]:
        counts[c["processingStatus"]] += 1
    assert doc["processedCount"] == counts["success"]
    assert {k: doc["summary"][k] for k in counts} == counts


def test_request_lines_and_errors_go_through_the_one_redactor(store_factory, openai_server):
    """The user's own patterns (CONVSYNC_REDACT_PATTERNS) mask the batch's request lines as
    they mask live requests, and an error line echoing the words is stored redacted."""
    store = store_factory()
    seed(store, ["c0", "c1"])
    settings = batch_settings(openai_server.base_url, CONVSYNC_REDACT_PATTERNS='["mail me"]')
    openai_server.behaviour = by_conversation(
        {"c1": Reply("bad_request", message="cannot process: mail me at a.b@example.com")}
    )
    run_pass(store, settings)
    sent = json.dumps(openai_server.batch.lines)
    assert "mail me" not in sent and "a.b@example.com" not in sent
    assert "[REDACTED]" in sent and "[EMAIL]" in sent
    openai_server.batch.run_to_end()
    run_pass(store, settings)
    failed = state(store)["c1"]
    assert failed["retryCount"] == 1 and "cannot process" in failed["processingError"]
    assert "mail me" not in failed["processingError"]
    assert "a.b@example.com" not in failed["processingError"]


# ---------------------------------------------------------------------------- the main path
def test_submit_collect_and_resubmit_failed_lines(store_factory, openai_server):
    """Due conversations are marked `processing` with their batch before it is created; a
    live batch is left alone by later passes (no second batch, no charge); once it ends the
    answers are matched by custom_id (output shuffled), a schema violation and a 400 line each
    cost one attempt with the reason kept, and those two go out again in a new batch."""
    store = store_factory()
    ids = [f"c{n}" for n in range(6)]
    seed(store, ids)
    settings = batch_settings(openai_server.base_url)
    api = openai_server.batch
    marked_before_create: list[bool] = []
    original_create = api.create

    def create(body: dict[str, Any]) -> Any:
        now = state(store_factory.reopen(store))
        marked_before_create.append(
            all(c["processingStatus"] == "processing" and c.get("batchId") for c in now.values())
        )
        return original_create(body)

    api.create = create  # type: ignore[method-assign]
    report = run_pass(store, settings)

    assert report.mode == "batch" and report.batch is not None
    assert marked_before_create == [True]
    assert report.batch.requests == 6 and len(report.batch.submitted) == 1
    (record,) = ledger(store)["batches"]
    assert record["state"] == "submitted" and record["batchId"].startswith("batch_")
    assert {c["batchId"] for c in state(store).values()} == {record["token"]}
    # The request lines are the live requests: same messages (redacted), same schema.
    (batch_id,) = api.lines
    line = api.lines[batch_id][0]
    conversation = load_document(store, D).document.conversations[0]
    assert line["custom_id"] == f"{D}|1|{conversation.id}"
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"]["messages"] == build_messages(conversation, redact=True)
    assert line["body"]["response_format"] == build_response_format()
    assert "a.b@example.com" not in json.dumps(api.lines)
    batch = api.batches[batch_id]
    assert batch["metadata"]["convsync_date"] == D
    assert batch["metadata"]["convsync_token"] == record["token"]
    assert api.files[batch["input_file_id"]]["purpose"] == "batch"
    assert api.files[batch["input_file_id"]]["expires_at"] is not None

    # Alive: a second pass neither charges nor resubmits.
    api.advance()
    again = run_pass(store, settings)
    assert api.creates == 1 and again.failed_attempts == 0
    assert {c["processingStatus"] for c in state(store).values()} == {"processing"}
    assert again.batch is not None and again.batch.open

    openai_server.behaviour = by_conversation({"c1": "schema_violation", "c2": "bad_request"})
    api.shuffle = True
    api.run_to_end()
    collected = run_pass(store, settings)
    now = state(store)
    assert collected.succeeded == 4 and collected.failed_attempts == 2
    assert {cid for cid, c in now.items() if c["processingStatus"] == "success"} == {
        "c0",
        "c3",
        "c4",
        "c5",
    }
    assert all(now[cid]["batchId"] is None for cid in ("c0", "c3"))
    assert now["c1"]["retryCount"] == 1 and "schema" in now["c1"]["processingError"]
    assert now["c2"]["retryCount"] == 1 and "400" in now["c2"]["processingError"]
    assert now["c1"]["processingStatus"] == "processing", "resubmitted in the same pass"
    assert api.creates == 2
    records = ledger(store)["batches"]
    assert [r["state"] for r in records] == ["collected", "submitted"]
    assert records[0]["succeeded"] == 4 and records[0]["failedAttempts"] == 2
    assert records[0]["estimatedCostUsd"] > 0

    openai_server.behaviour = "success"
    api.run_to_end()
    run_pass(store, settings)
    now = state(store)
    assert {c["processingStatus"] for c in now.values()} == {"success"}
    assert api.submitted_counts() == {"c0": 1, "c1": 2, "c2": 2, "c3": 1, "c4": 1, "c5": 1}
    assert_attempts(store, openai_server)
    assert_consistent(store)
    assert openai_server.total_requests == 0, "nothing went live"


def test_expired_batch_keeps_its_answers(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, [f"e{n}" for n in range(5)])
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    openai_server.batch.expire(answered=3)
    openai_server.batch.shuffle = True
    report = run_pass(store, settings, owner="collector")
    now = state(store)
    succeeded = [cid for cid, c in now.items() if c["processingStatus"] == "success"]
    unfinished = [cid for cid, c in now.items() if c["retryCount"] == 1]
    assert len(succeeded) == 3 and len(unfinished) == 2
    assert report.succeeded == 3 and report.failed_attempts == 2
    assert all("expired" in now[cid]["processingError"] for cid in unfinished)
    (first, second) = ledger(store)["batches"]
    assert first["providerStatus"] == "expired" and first["succeeded"] == 3
    assert second["requests"] == 2, "the unfinished ones go out again"
    assert_attempts(store, openai_server)


def test_a_batch_failing_whole_costs_no_attempt(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["f1", "f2"])
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    openai_server.batch.fail(code="token_limit_exceeded")
    with pytest.raises(AnalysisSystemError) as raised:
        run_pass(store, settings)
    message = str(raised.value)
    assert "enqueued-token limit" in message and "token_limit_exceeded" in message
    assert "no conversation was charged" in message and API_KEY not in message
    now = state(store)
    assert {(c["processingStatus"], c["retryCount"], c["batchId"]) for c in now.values()} == {
        ("pending", 0, None)
    }
    (record,) = ledger(store)["batches"]
    assert record["state"] == "collected" and record["released"] == 2
    assert openai_server.batch.creates == 1, "the failing run submits nothing more"
    assert openai_server.batch.run_counts() == {}
    assert_consistent(store)


def test_completed_with_everything_in_the_error_file(tmp_path, openai_server):
    """`completed` with no output file at all, every line a 400 in the error file."""
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["x1", "x2"])
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    openai_server.behaviour = "bad_request"
    openai_server.batch.run_to_end()
    (batch,) = openai_server.batch.batches.values()
    assert batch["output_file_id"] is None and batch["error_file_id"]
    report = run_pass(store, settings)
    assert report.failed_attempts == 2
    now = state(store)
    assert all(c["retryCount"] == 1 for c in now.values())
    assert all("context_length_exceeded" in c["processingError"] for c in now.values())


def test_a_400_line_in_the_output_file_and_an_empty_error_file_id(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["o1", "o2"])
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    openai_server.behaviour = by_conversation({"o2": "bad_request"})
    openai_server.batch.errors_in_output = True
    openai_server.batch.run_to_end()
    (batch,) = openai_server.batch.batches.values()
    assert batch["error_file_id"] == ""
    run_pass(store, settings)
    now = state(store)
    assert now["o1"]["processingStatus"] == "success"
    assert now["o2"]["retryCount"] == 1 and "400" in now["o2"]["processingError"]


def test_a_lost_create_answer_finds_the_batch_instead_of_creating_another(tmp_path, openai_server):
    """The batch is created but its answer never arrives (the client times out): the pass
    finds it by its token in `batches.list` (paged: other batches come first) and records
    it; nothing is created twice."""
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["t1", "t2"])
    settings = batch_settings(openai_server.base_url)
    api = openai_server.batch
    for _ in range(3):  # someone else's batches on the account, listed after ours
        file_id = json.loads(api.upload(*_multipart_upload())[2])["id"]
        api.create({"input_file_id": file_id, "metadata": {"other": "x"}})
    api.hold("created")
    threading.Timer(3.0, api.release, ("created",)).start()
    report = run_pass(store, settings, timeout=1.0)
    assert api.creates == 4
    (record,) = ledger(store)["batches"]
    assert record["state"] == "submitted"
    ours = [b for b in api.batches.values() if b["metadata"].get("convsync_token")]
    assert [b["id"] for b in ours] == [record["batchId"]]
    assert report.batch is not None and report.batch.requests == 2


def _multipart_upload() -> tuple[str, bytes]:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
        '{"custom_id":"other","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}'
        f"\n\r\n--{boundary}--\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_two_collectors_at_once_fold_each_answer_once(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    ids = [f"k{n}" for n in range(4)]
    seed(store, ids)
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    api = openai_server.batch
    api.run_to_end()
    api.hold("content")  # the first collector stops mid-download, holding the lock
    outcomes: dict[str, Any] = {}

    def collect(name: str) -> None:
        try:
            outcomes[name] = run_pass(store, settings, owner=name, wait=20.0)
        except Exception as error:
            outcomes[name] = error

    first = threading.Thread(target=collect, args=("first",))
    first.start()
    assert api.reached("content")
    second = threading.Thread(target=collect, args=("second",))
    second.start()
    threading.Timer(1.0, api.release, ("content",)).start()
    first.join(60)
    second.join(60)
    reports = [o for o in outcomes.values() if isinstance(o, AnalysisReport)]
    assert all(isinstance(o, AnalysisReport | DateLockedError) for o in outcomes.values())
    assert sum(r.succeeded for r in reports) == len(ids)
    now = state(store)
    assert {(c["processingStatus"], c["retryCount"]) for c in now.values()} == {("success", 0)}
    assert api.creates == 1
    assert_consistent(store)


def test_live_mode_never_sends_or_charges_a_conversation_waiting_on_a_batch(
    tmp_path, openai_server
):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["l1", "l2"])
    run_pass(store, batch_settings(openai_server.base_url))
    report = run_pass(store, batch_settings(openai_server.base_url, mode="live"))
    assert report.mode == "live" and report.recovered_interrupted == 0
    assert openai_server.total_requests == 0
    assert {c["processingStatus"] for c in state(store).values()} == {"processing"}
    openai_server.batch.run_to_end()
    report = run_pass(store, batch_settings(openai_server.base_url, mode="live"))
    assert report.succeeded == 2 and openai_server.total_requests == 0


def test_choose_mode() -> None:
    import datetime as dt

    def settings(mode: str, threshold: int = 10) -> Settings:
        return batch_settings("http://x/v1", mode=mode, CONVSYNC_BATCH_THRESHOLD=str(threshold))

    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert choose_mode(settings("live"), "openai", 10_000, D) == "live"
    assert choose_mode(settings("batch"), "openai", 1, D) == "batch"
    assert choose_mode(settings("batch"), "local", 1, D) == "live"
    assert choose_mode(settings("auto"), "openai", 10, D) == "live"
    assert choose_mode(settings("auto"), "openai", 11, D) == "batch"
    assert choose_mode(settings("auto"), "openai", 11, today) == "live", "today stays live"


def test_a_rejected_key_costs_nothing_and_never_shows(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, ["r1", "r2"])
    openai_server.expected_api_key = "sk-the-right-one-000000"
    with pytest.raises(AnalysisSystemError) as raised:
        run_pass(store, batch_settings(openai_server.base_url))
    message = str(raised.value)
    assert "OPENAI_API_KEY" in message and "401" in message
    assert API_KEY not in message and API_KEY[-4:] not in message
    now = state(store)
    assert {(c["processingStatus"], c["retryCount"]) for c in now.values()} == {("pending", 0)}
    (record,) = ledger(store)["batches"]
    assert record["state"] == "abandoned" and API_KEY not in json.dumps(record)
    assert openai_server.batch.creates == 0


def test_the_batch_size_bounds_a_batch_run_too(tmp_path, openai_server):
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    seed(store, [f"z{n}" for n in range(5)])
    report = run_pass(store, batch_settings(openai_server.base_url, CONVSYNC_BATCH_SIZE="2"))
    assert report.selected == 2 and report.deferred == 3
    assert sum(c["processingStatus"] == "processing" for c in state(store).values()) == 2
    assert report.needs_retry is False


def test_a_date_beyond_the_file_limit_goes_out_in_several_batches(
    tmp_path, openai_server, monkeypatch: pytest.MonkeyPatch
):
    from convsync_pipeline.pipeline import batch
    from convsync_pipeline.store.local import LocalStore

    monkeypatch.setattr(batch, "MAX_REQUESTS_PER_FILE", 2)  # OpenAI's is 50,000
    store = LocalStore(tmp_path / "store")
    ids = [f"m{n}" for n in range(5)]
    seed(store, ids)
    settings = batch_settings(openai_server.base_url)
    report = run_pass(store, settings)
    api = openai_server.batch
    assert report.batch is not None and len(report.batch.submitted) == 3
    assert sorted(len(lines) for lines in api.lines.values()) == [1, 2, 2]
    assert len({c["batchId"] for c in state(store).values()}) == 3
    api.expire(next(iter(api.batches)), answered=2)  # one ends early, two run to the end
    api.shuffle = True
    api.run_to_end()
    collected = run_pass(store, settings)
    assert collected.succeeded == 5 and collected.batch is not None
    assert len(collected.batch.collected) == 3
    assert {c["processingStatus"] for c in state(store).values()} == {"success"}
    assert api.submitted_counts() == dict.fromkeys(ids, 1)


def test_find_pages_through_the_account_s_batches(openai_server, monkeypatch: pytest.MonkeyPatch):
    """`batches.list` has no metadata filter: `find` pages with `after` until the token."""
    from convsync_pipeline.analyzers import openai_batch

    api = openai_server.batch
    content_type, body = _multipart_upload()
    file_id = json.loads(api.upload(content_type, body)[2])["id"]
    api.create({"input_file_id": file_id, "metadata": {"convsync_token": "ours"}})
    for n in range(5):  # newer batches, listed first
        api.create({"input_file_id": file_id, "metadata": {"other": str(n)}})
    monkeypatch.setattr(openai_batch, "LIST_PAGE", 2)
    listed: list[str] = []
    original = api.list

    def spy(query: dict[str, str]) -> Any:
        listed.append(query.get("after", "-"))
        return original(query)

    api.list = spy  # type: ignore[method-assign]
    client = BatchClient(base_url=openai_server.base_url)
    found = client.find("ours")
    assert found is not None and found.metadata["convsync_token"] == "ours"
    assert len(listed) == 3 and listed[0] == "-" and all(a.startswith("batch_") for a in listed[1:])
    assert client.find("nobody") is None
    client.close()
