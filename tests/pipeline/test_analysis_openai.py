"""`ai_analysis` with the openai analyser, end to end through `dagster.materialize`.

Every run goes through the real assets (`run_date`), the real RetryPolicy (step retries in the
same run), the real openai SDK (its own retries, Retry-After, timeouts) and a real HTTP server
(`FakeOpenAIServer`). Attempt accounting is checked where it costs money: at the server.

Two counts per conversation, both taken by the server:
- `requests`: every chat request it received (the SDK's own retries included);
- `sends`: requests that were the first try of a pipeline attempt (the SDK marks its retries
  with the header `x-stainless-retry-count`). A pipeline attempt is one `analyze()` call, so
  `sends` must never exceed CONVSYNC_MAX_ATTEMPTS, across step retries and runs, and must equal
  `retryCount` (+1 for a success) unless a system failure released the conversation unspent.

The core success/failure accounting runs on both backends (`store_factory`: folder and S3 via
moto_server); the other scenarios run on the folder store to keep the suite short.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from typing import Any

import pytest

from convsync_pipeline.core.document import Conversation, DateDocument, Message
from convsync_pipeline.core.keys import document_key, summary_key
from convsync_pipeline.core.status import INTERRUPTED_ERROR
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload, run_date, settings_for
from tests.fixtures import openai_server as fake
from tests.fixtures.openai_server import FakeOpenAIServer, Reply, by_conversation, sequence

API_KEY = "sk-test-SECRET-1234567890"
D = "2026-02-11"
MAX_ATTEMPTS = 3
SDK_TRIES = 3  # OpenAIAnalyzer's max_retries=2 plus the first try

# A 5xx without Retry-After makes the SDK back off 0.5 s, then 1 s; the header keeps it short.
SERVER_ERROR = Reply("server_error", retry_after_ms=5)


# ------------------------------------------------------------------------------- fixtures
class ServerTap:
    """Per-conversation counts of what reached the server: all requests, and first tries."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._sends: Counter[str] = Counter()

    def record(self, conversation_id: str | None, retry_number: int) -> None:
        if retry_number == 0:
            with self._lock:
                self._sends[conversation_id or ""] += 1

    def sends(self) -> dict[str, int]:
        with self._lock:
            return dict(self._sends)

    def requests(self) -> dict[str, int]:
        return self.server.sent_counts()


_request_retry = threading.local()


@pytest.fixture
def tap(openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> ServerTap:
    """Counts first tries at the server: the handler notes the SDK's retry header, the
    server's request hook (run in the same handler thread) files it under the conversation."""
    tap = ServerTap(openai_server)
    original_post = fake._Handler.do_POST

    def do_post(handler: Any) -> None:
        _request_retry.number = int(handler.headers.get("x-stainless-retry-count") or 0)
        original_post(handler)

    monkeypatch.setattr(fake._Handler, "do_POST", do_post)
    original_handle = openai_server._handle

    def handle(endpoint: str, model: str, body: dict[str, Any], api_key: str) -> Any:
        if endpoint == "chat":
            tap.record(fake._conversation_id(body), getattr(_request_retry, "number", 0))
        return original_handle(endpoint, model, body, api_key)

    monkeypatch.setattr(openai_server, "_handle", handle)
    return tap


@pytest.fixture(autouse=True)
def _openai_env(monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAIServer) -> None:
    """The SDK reads the key from the environment, never from Dagster config."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)


def openai_settings(store_env: dict[str, str], base_url: str, **extra: str) -> Settings:
    return settings_for(
        {
            **store_env,
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": base_url,
            "CONVSYNC_RETRY_DELAY_SECONDS": "0.05",
            "CONVSYNC_REQUEST_TIMEOUT_SECONDS": "5",
        },
        **extra,
    )


@pytest.fixture
def local(tmp_path: Any, openai_server: FakeOpenAIServer) -> tuple[Store, Settings]:
    store = LocalStore(tmp_path / "store")
    return store, openai_settings(
        {"CONVSYNC_STORE": str(tmp_path / "store")}, openai_server.base_url
    )


# ------------------------------------------------------------------------------- helpers
def upload(store: Store, *conversation_ids: str, key: str = "incoming/2026-02-11/export.csv"):
    rows = []
    for n, cid in enumerate(conversation_ids):
        rows.append((cid, f"2026-02-11T09:{n % 60:02d}:00Z", "user", f"My order {n} never arrived"))
        rows.append((cid, f"2026-02-11T09:{n % 60:02d}:30Z", "agent", "Sorry! I have re-sent it."))
    store.write(key, csv_upload(*rows))


def document(store: Store, date: str = D) -> dict[str, Any]:
    data = store.read(document_key(date))
    assert data is not None, f"no document for {date}"
    return json.loads(data)


def conversations(store: Store) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in document(store)["conversations"]}


def assert_consistent(doc: dict[str, Any]) -> None:
    """processedCount and summary always match the conversations (SPEC 5)."""
    counts = Counter(c["processingStatus"] for c in doc["conversations"])
    assert doc["processedCount"] == counts["success"]
    assert doc["summary"] == {
        "total": len(doc["conversations"]),
        **{s: counts[s] for s in ("pending", "processing", "success", "failed")},
    }
    for c in doc["conversations"]:
        assert (c["processedAt"] is not None) == (c["processingStatus"] == "success")
        assert (c["analysis"] is not None) == (c["processingStatus"] == "success")
        if c["processingStatus"] == "success":
            assert c["processingError"] is None
            assert c["analysis"]["analyzer"] == "openai"


def spent(conversation: dict[str, Any]) -> int:
    """Attempts a conversation has used: failures counted, plus a success or a send in flight."""
    state = conversation["processingStatus"]
    return conversation["retryCount"] + (state in ("success", "processing"))


def assert_attempts(
    tap: ServerTap,
    store: Store,
    *,
    before: list[dict[str, Any]] = (),  # type: ignore[assignment]
    released: frozenset[str] = frozenset(),
) -> None:
    """At the server: no conversation sent more than MAX_ATTEMPTS times, and every send is
    accounted for by retryCount (or the success), counted from `before` (a document written
    by hand), unless a system failure released it unspent."""
    sends = tap.sends()
    assert all(count <= MAX_ATTEMPTS for count in sends.values()), sends
    earlier = {c["id"]: spent(c) for c in before}
    for cid, c in conversations(store).items():
        used_here = spent(c) - earlier.get(cid, 0)
        if cid in released:
            assert sends.get(cid, 0) >= used_here, (cid, sends.get(cid), c)
        else:
            assert sends.get(cid, 0) == used_here, (cid, sends.get(cid), c)


def step_retries(result: Any) -> int:
    return sum(1 for event in result.all_events if event.is_step_up_for_retry)


def error_text(error: Any) -> str:
    """A serialized Dagster error with its causes (a retry wraps the asset's exception)."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "".join(parts)


def checks(result: Any) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def analysis_metadata(result: Any) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("ai_analysis")
    return {key: value.value for key, value in materialization.metadata.items()}


def step_failure_message(result: Any) -> str:
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "ai_analysis"
    user = failure.step_failure_data.user_failure_data
    return user.description if user is not None else failure.step_failure_data.error.message


def hand_written(store: Store, *items: tuple[str, str, int, str | None]) -> list[dict[str, Any]]:
    """Write a date document by hand: (id, status, retryCount, processingError) each."""
    rows = []
    for n, (cid, state, retries, error) in enumerate(items):
        stamp = f"2026-02-11T10:{n:02d}:00.000Z"
        rows.append(
            Conversation(
                id=cid,
                startedAt=stamp,
                endedAt=stamp,
                messages=[
                    Message(role="user", content=f"Where is my parcel {n}?", timestamp=stamp)
                ],
                source="incoming/2026-02-11/old.csv",
                processingStatus=state,
                retryCount=retries,
                processingError=error,
                processedAt=stamp if state == "success" else None,
                analysis={"analyzer": "openai", "summary": "done earlier"}
                if state == "success"
                else None,
            )
        )
    sealed = DateDocument(date=D, conversations=rows).sealed()
    store.write(document_key(D), sealed.to_json_bytes())
    return json.loads(sealed.to_json_bytes())["conversations"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ------------------------------------------------------------------------------- both backends
def test_success_and_failure_accounting_on_both_backends(store_factory, openai_server, tap):
    store = store_factory()
    settings = openai_settings(store_factory.env(store), openai_server.base_url)
    upload(store, "c-ok", "c-500", "c-json", "c-refuse")
    openai_server.behaviour = by_conversation(
        {
            "c-500": SERVER_ERROR,
            "c-json": sequence("invalid_json", "success"),
            "c-refuse": "refusal",
        }
    )

    result = run_date(settings, D)

    assert result.success, "conversations ending failed do not fail the run"
    assert step_retries(result) == MAX_ATTEMPTS - 1
    doc = document(store)
    assert_consistent(doc)
    got = conversations(store)
    assert {cid: (c["processingStatus"], c["retryCount"]) for cid, c in got.items()} == {
        "c-ok": ("success", 0),
        "c-json": ("success", 1),  # invalid JSON once, then success on the step retry
        "c-500": ("failed", 3),
        "c-refuse": ("failed", 3),
    }
    assert got["c-json"]["processingError"] is None, "a success clears the error"
    assert got["c-500"]["processingError"].startswith("the server failed 3 times (HTTP 500")
    assert got["c-refuse"]["processingError"].startswith("the model refused")
    assert doc["processedCount"] == 2
    assert doc["summary"] == {"total": 4, "pending": 0, "processing": 0, "success": 2, "failed": 2}
    assert tap.requests() == {"c-ok": 1, "c-json": 2, "c-500": 3 * SDK_TRIES, "c-refuse": 3}
    assert_attempts(tap, store)

    assert checks(result) == {
        "ids_unique": True,
        "processed_count_matches": True,
        "nothing_left_processing": True,
        "no_failed": False,

        "single_analysis_version": True,
        "summary_matches_document": True,
    }
    (no_failed,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_failed"]
    assert no_failed.severity.value == "WARN"
    summary = json.loads(store.read(summary_key(D)))
    assert summary["documentVersion"] == doc["_blobMeta"]["version"]
    assert summary["processedCount"] == 2

    # A later run sends nothing again: failed waits for requeue, success is done.
    before = tap.requests()
    again = run_date(settings, D)
    assert again.success and step_retries(again) == 0
    assert tap.requests() == before
    assert analysis_metadata(again)["selected"] == 0
    assert_attempts(tap, store)


# ------------------------------------------------------------------------------- one conversation
SCENARIOS = {
    # name: (behaviour, status, retryCount, error start or None, requests, step retries)
    "success": ("success", "success", 0, None, 1, 0),
    "429_retry_after_then_success": (
        sequence(Reply("rate_limit", retry_after=1), "success"),
        "success",
        0,
        None,
        2,
        0,
    ),
    "persistent_500": (SERVER_ERROR, "failed", 3, "the server failed 3 times (HTTP 500", 9, 2),
    "persistent_429": (
        Reply("rate_limit", retry_after_ms=5),
        "failed",
        3,
        "still rate limited after 3 tries (429",
        9,
        2,
    ),
    "timeout_then_success": (
        sequence(*[Reply("timeout", delay=4)] * SDK_TRIES, "success"),
        "success",
        1,
        None,
        SDK_TRIES + 1,
        1,
    ),
    "invalid_json_once": (sequence("invalid_json", "success"), "success", 1, None, 2, 1),
    "schema_violation": ("schema_violation", "failed", 3, "the model's answer does not", 3, 2),
    "refusal": ("refusal", "failed", 3, "the model refused to analyse", 3, 2),
    "bad_request_about_input": ("bad_request", "failed", 3, "the server rejected this", 3, 2),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_one_conversation_scenario(name, local, openai_server, tap):
    behaviour, status, retries, error, requests, retried = SCENARIOS[name]
    store, settings = local
    if name == "timeout_then_success":
        settings = settings.model_copy(update={"request_timeout_seconds": 1.0})
    upload(store, "c-1")
    openai_server.behaviour = behaviour

    result = run_date(settings, D)

    assert result.success
    assert step_retries(result) == retried
    doc = document(store)
    assert_consistent(doc)
    (c,) = doc["conversations"]
    assert (c["processingStatus"], c["retryCount"]) == (status, retries)
    if error is None:
        assert c["processingError"] is None
    else:
        assert c["processingError"].startswith(error), c["processingError"]
    assert tap.requests() == {"c-1": requests}
    assert_attempts(tap, store)
    assert checks(result)["no_failed"] is (status != "failed")
    metadata = analysis_metadata(result)
    assert metadata["analyzer"] == "openai"
    assert metadata["succeeded"] == (status == "success")
    if status == "success":
        assert metadata["prompt_tokens"] > 0 and metadata["estimated_cost_usd"] > 0
    if name == "429_retry_after_then_success":
        first, second = (r.received_at for r in openai_server.received)
        assert second - first >= 0.9, "the SDK waited for Retry-After"
    retry_reasons = [
        error_text(e.step_retry_data.error) for e in result.all_events if e.is_step_up_for_retry
    ]
    if name == "timeout_then_success":
        assert "no answer from the model within 1s (3 tries, timeout)" in retry_reasons[0]
    if name == "invalid_json_once":
        assert "the model's answer is not valid JSON" in retry_reasons[0]


# ------------------------------------------------------------------------------- system failures
SYSTEM_FAILURES = {
    # name: (how to break it, words the one message must contain, chat requests sent)
    "401_at_preflight": ("wrong_key", ("401", "OPENAI_API_KEY"), 0),
    "401_while_sending": (sequence("invalid_api_key"), ("401", "OPENAI_API_KEY"), 2),
    "insufficient_quota": (sequence("insufficient_quota"), ("quota", "OPENAI_API_KEY"), 2),
    "unknown_model": (fake.always("model_not_found"), ("CONVSYNC_OPENAI_MODEL",), 0),
    "server_unreachable": ("unreachable", ("cannot reach", "OPENAI_BASE_URL"), 0),
}


@pytest.mark.parametrize("name", list(SYSTEM_FAILURES))
def test_a_system_failure_costs_no_attempt_and_fails_the_run_once(
    name, local, openai_server, tap, monkeypatch
):
    how, words, chat_requests = SYSTEM_FAILURES[name]
    store, settings = local
    before = hand_written(
        store,
        ("fresh", "pending", 0, None),
        ("tried-once", "pending", 1, "the model's answer is not valid JSON"),
        ("done", "success", 0, None),
    )
    version = document(store)["_blobMeta"]["version"]
    if how == "wrong_key":
        openai_server.expected_api_key = API_KEY
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-WRONG-0000000000")
    elif how == "unreachable":
        settings = settings.model_copy(update={"openai_base_url": closed_port_url()})
    else:
        openai_server.behaviour = how

    result = run_date(settings, D)

    assert not result.success
    assert step_retries(result) == 0, "Failure(allow_retries=False): no step retry"
    message = step_failure_message(result)
    assert "\n" not in message.strip(), message
    for word in words:
        assert word in message, message
    assert result.is_node_skipped("daily_summary") or not result.is_node_success("daily_summary")
    after = document(store)["conversations"]
    assert [
        (c["id"], c["processingStatus"], c["retryCount"], c["processingError"]) for c in after
    ] == [(c["id"], c["processingStatus"], c["retryCount"], c["processingError"]) for c in before]
    assert_consistent(document(store))
    if chat_requests == 0:  # stopped at the preflight: nothing marked, nothing written
        assert document(store)["_blobMeta"]["version"] == version
    assert sum(tap.requests().values()) == chat_requests
    assert all(count == 1 for count in tap.requests().values()), "not retried by the SDK either"
    assert_attempts(tap, store, before=before, released=frozenset({"fresh", "tried-once"}))

    # Fix the set-up and run again: everything due is analysed, nothing was charged.
    openai_server.behaviour = "success"
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    fixed = run_date(settings.model_copy(update={"openai_base_url": openai_server.base_url}), D)
    assert fixed.success
    got = conversations(store)
    assert (got["fresh"]["processingStatus"], got["fresh"]["retryCount"]) == ("success", 0)
    assert (got["tried-once"]["processingStatus"], got["tried-once"]["retryCount"]) == (
        "success",
        1,
    )
    assert tap.sends()["fresh"] <= MAX_ATTEMPTS and tap.sends()["tried-once"] <= MAX_ATTEMPTS
    assert "done" not in tap.requests()
    assert_attempts(tap, store, before=before, released=frozenset({"fresh", "tried-once"}))
    assert_consistent(document(store))


# ------------------------------------------------------------------------------- interrupted runs
def test_a_conversation_left_processing_counts_one_attempt(local, openai_server, tap):
    store, settings = local
    before = hand_written(
        store,
        ("died-first-try", "processing", 0, None),
        ("died-last-try", "processing", 2, "the server failed 3 times (HTTP 500: boom)"),
        ("pending", "pending", 0, None),
    )

    result = run_date(settings, D)

    assert result.success
    got = conversations(store)
    assert (got["died-first-try"]["processingStatus"], got["died-first-try"]["retryCount"]) == (
        "success",
        1,
    )
    assert got["died-first-try"]["processingError"] is None
    assert (got["died-last-try"]["processingStatus"], got["died-last-try"]["retryCount"]) == (
        "failed",
        3,
    )
    assert got["died-last-try"]["processingError"] == INTERRUPTED_ERROR
    assert tap.requests() == {"died-first-try": 1, "pending": 1}, "the third attempt was the crash"
    assert analysis_metadata(result)["recovered_interrupted"] == 2
    assert checks(result)["nothing_left_processing"] is True
    assert checks(result)["no_failed"] is False
    doc = document(store)
    assert_consistent(doc)
    assert doc["summary"]["failed"] == 1 and doc["processedCount"] == 2
    assert_attempts(tap, store, before=before)


# ------------------------------------------------------------------------------- batch size
def test_batch_size_analyses_urgent_conversations_first(tmp_path, openai_server, tap):
    store = LocalStore(tmp_path / "store")
    settings = openai_settings(
        {"CONVSYNC_STORE": str(tmp_path / "store"), "CONVSYNC_BATCH_SIZE": "2"},
        openai_server.base_url,
    )
    rows = [
        ("plain-1", "09:00", "Hi, how do I change my avatar?", ""),
        ("plain-2", "09:01", "Thanks, all good now.", ""),
        ("manager", "09:02", "This is unacceptable, I want to talk to a manager", ""),
        ("high", "09:03", "My invoice looks wrong", "high"),
        ("critical", "09:04", "The site is down for all our users", "urgent"),
    ]
    lines = ["conversation_id,timestamp,role,content,priority"]
    lines += [f'{cid},2026-02-11T{hm}:00Z,user,"{text}",{prio}' for cid, hm, text, prio in rows]
    store.write("incoming/2026-02-11/tickets.csv", ("\n".join(lines) + "\n").encode())

    first = run_date(settings, D)

    assert first.success and step_retries(first) == 0
    assert set(tap.requests()) == {"critical", "high"}, "highest priority first"
    metadata = analysis_metadata(first)
    assert (metadata["selected"], metadata["deferred_by_batch_size"]) == (2, 3)
    got = conversations(store)
    assert {cid for cid, c in got.items() if c["processingStatus"] == "success"} == {
        "critical",
        "high",
    }
    assert all(
        (c["processingStatus"], c["retryCount"]) == ("pending", 0)
        for cid, c in got.items()
        if cid not in {"critical", "high"}
    )
    assert_consistent(document(store))

    second = run_date(settings, D)
    assert second.success
    assert set(tap.requests()) == {"critical", "high", "manager", "plain-1"}
    assert analysis_metadata(second)["deferred_by_batch_size"] == 1
    assert_attempts(tap, store)


# ------------------------------------------------------------------------------- redaction
PERSONAL = ("jane.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "4111111111111111")


def test_personal_data_in_uploads_never_reaches_the_server(local, openai_server, tap):
    store, settings = local
    texts = (
        f"Please mail the refund to {PERSONAL[0]} or call {PERSONAL[1]}",
        f"I paid with card {PERSONAL[2]}, order 12345",
        f"card again: {PERSONAL[3]}",
    )
    rows = [("pii", f"2026-02-11T09:0{n}:00Z", "user", text) for n, text in enumerate(texts)]
    store.write("incoming/2026-02-11/pii.csv", csv_upload(*rows))

    assert run_date(settings, D).success

    assert tap.requests() == {"pii": 1}
    sent = json.dumps([request.body for request in openai_server.received])
    for value in PERSONAL:
        assert value not in sent
        assert value.replace(" ", "") not in sent.replace(" ", "")
    assert "[EMAIL]" in sent and "[PHONE]" in sent and "[CARD]" in sent
    assert "order 12345" in sent, "order numbers are not personal data"
    (c,) = document(store)["conversations"]
    assert c["processingStatus"] == "success"
    assert [m["content"] for m in c["messages"]] == list(texts), "the store keeps the original"


# ------------------------------------------------------------------------------- the window
@pytest.mark.parametrize("saves", ["on the loop", "in a worker thread"])
def test_the_window_sends_only_what_a_completed_entry_marked(
    saves, tmp_path, openai_server, tap, monkeypatch
):
    """SPEC 7 at the server, with the date's log (SPEC 5a): every request is for a
    conversation that the log, as of the last *completed* entry, marks `processing`; the log
    never marks more than the concurrency; entries are created one at a time, numbered without
    gaps. Both places an entry can be written: on the event loop (quick writes) and in a
    worker thread (slow ones, here forced)."""
    from convsync_pipeline.pipeline import analyse
    from convsync_pipeline.pipeline.analyse import analyse_date
    from convsync_pipeline.pipeline.ingest import ingest_new_uploads
    from convsync_pipeline.pipeline.merge_date import merge_date
    from convsync_pipeline.resources.analyzer import make_analyzer
    from convsync_pipeline.resources.blob_lock import locks_from_settings

    concurrency = 4
    store = LocalStore(tmp_path / "store")
    settings = openai_settings(
        {"CONVSYNC_STORE": str(tmp_path / "store"), "CONVSYNC_CONCURRENCY": str(concurrency)},
        openai_server.base_url,
    )
    ids = [f"w-{n:02d}" for n in range(40)]
    upload(store, *ids)
    list(ingest_new_uploads(store, settings))
    locks = locks_from_settings(store, settings)
    assert merge_date(store, locks, D, "seed").added == len(ids)
    merged = [i.key for i in store.list(f"journal/{D}/") if not i.key.endswith("/ids.json")]
    first_entry = len(merged) + 1  # after the merge's entry

    if saves == "in a worker thread":  # every write counts as slow: thread after the first 5
        monkeypatch.setattr(analyse, "THREAD_SAVE_AFTER_SECONDS", -1.0)
    guard = threading.Lock()
    marked: set[str] = set()  # processing, as of the last completed entry
    numbers: list[int] = []
    most_marked = [0]
    written_by: list[str] = []
    writing = [0]
    problems: list[str] = []
    original_cas = store.compare_and_swap

    def compare_and_swap(key: str, data: bytes, expected: str | None) -> str:
        if not key.startswith("journal/"):
            return original_cas(key, data, expected)
        with guard:
            written_by.append(threading.current_thread().name)
            writing[0] += 1
            if writing[0] > 1:
                problems.append("two entries at once")
        try:
            token = original_cas(key, data, expected)
        finally:
            with guard:
                writing[0] -= 1
        entry = json.loads(data)
        with guard:
            numbers.append(entry["entry"])
            for change in entry["changes"]:
                (marked.add if change["to"] == "processing" else marked.discard)(change["id"])
            most_marked[0] = max(most_marked[0], len(marked))
        return token

    store.compare_and_swap = compare_and_swap  # type: ignore[method-assign]
    # Slow answers for some, failures for others: results arrive while entries are written.
    openai_server.latency = 0.03
    openai_server.behaviour = by_conversation(
        {cid: sequence("invalid_json", "success") for cid in ids[::5]}
    )
    counted = openai_server._handle  # the tap's hook: the wrapper below runs before it

    def handle(endpoint: str, model: str, body: dict[str, Any], api_key: str) -> Any:
        if endpoint == "chat":
            cid = fake._conversation_id(body)
            with guard:
                was_marked = cid in marked
            if not was_marked:
                problems.append(f"{cid} sent before a completed entry marked it processing")
        return counted(endpoint, model, body, api_key)

    openai_server._handle = handle  # type: ignore[method-assign]

    report = analyse_date(store, locks, settings, lambda: make_analyzer(settings), D, "window-test")

    assert problems == []
    loop_thread = threading.current_thread().name
    if saves == "on the loop":
        assert set(written_by) == {loop_thread}
    else:
        assert written_by[:5] == [loop_thread] * 5
        assert loop_thread not in written_by[5:] and len(written_by) > 10
    assert numbers == list(range(first_entry, first_entry + len(numbers)))
    assert report.entries == len(numbers)
    assert most_marked[0] == concurrency  # used, never exceeded
    assert marked == set()
    assert 2 <= openai_server.max_in_flight <= concurrency
    assert (report.succeeded, report.failed_attempts) == (len(ids) - len(ids[::5]), len(ids[::5]))
    got = conversations(store)
    assert {cid: (c["processingStatus"], c["retryCount"]) for cid, c in got.items()} == {
        cid: ("pending", 1) if cid in ids[::5] else ("success", 0) for cid in ids
    }
    assert all(
        got[cid]["processingError"] == "the model's answer is not valid JSON" for cid in ids[::5]
    )
    doc = document(store)
    assert doc["_blobMeta"]["journalEntry"] == numbers[-1], "the pass ends with a checkpoint"
    assert_consistent(doc)
    assert_attempts(tap, store)


