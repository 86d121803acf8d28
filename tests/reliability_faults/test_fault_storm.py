"""Scenario 6 — fault storm: 1,000 conversations (folder store; 150 on S3) analysed by the
real `ai_analysis` asset with the openai analyser against a fake OpenAI server that answers
30 % 429, 10 % 500, 5 % timeouts and 5 % invalid JSON.

Faults are a deterministic function of (seed, conversation id, n-th request for that id), so
a run is reproducible. Step retries are Dagster's own `RetryPolicy` (CONVSYNC_RETRY_DELAY_SECONDS
=0 makes its backoff immediate); the client timeout is 1 s and Retry-After 5 ms.

What "an attempt" is, precisely:
- a *server request* is one HTTP request the fake server received for a conversation;
- a *logical attempt* is one `analyze()` call, i.e. one conversation attempt in SPEC section 7.
  The SDK retries 429 / 500 / timeouts itself (`max_retries=2`), so one logical attempt is 1 to
  3 server requests: it ends at the first 200 (a success, or invalid JSON: a failed attempt)
  or after 3 retryable failures (a failed attempt);
- per conversation, logical attempts = retryCount (+1 if it succeeded), and this must be
  <= CONVSYNC_MAX_ATTEMPTS (3), so server requests <= 3 x 3.
The test replays each conversation's server-side request sequence through that rule and
requires the document to agree exactly: same number of failed attempts, success only when the
last attempt succeeded, `failed` only after exactly 3 failed attempts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest

from convsync_pipeline.core.analysis import Analysis
from convsync_pipeline.core.keys import document_key, summary_key
from tests.dagster.helpers import run_date, settings_for
from tests.fixtures.moto import StoreFactory
from tests.fixtures.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.reliability_faults._support import record_numbers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

D = "2026-04-01"
SEED = 20261129
MAX_ATTEMPTS = 3
SDK_TRIES = 3  # OpenAIAnalyzer's max_retries=2, plus the first request
CLIENT_TIMEOUT = 1.0
# (kind, share of server requests); the rest (50 %) succeed
FAULTS = (("rate_limit", 0.30), ("server_error", 0.10), ("timeout", 0.05), ("invalid_json", 0.05))
RETRYABLE = {"rate_limit", "server_error", "timeout"}
API_KEY = "sk-fake-storm-key-0000"


def fault_for(conversation_id: str, nth: int) -> str:
    """The kind of answer to request number `nth` (1-based) for this conversation."""
    digest = hashlib.sha256(f"{SEED}:{conversation_id}:{nth}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    for kind, share in FAULTS:
        if draw < share:
            return kind
        draw -= share
    return "success"


class Storm:
    """The fake server's behaviour: seeded faults, and a log of what each request got."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kinds: dict[str, list[str]] = {}

    def __call__(self, request: FakeRequest) -> Reply:
        if request.endpoint != "chat":
            return Reply("success")  # the preflight GET /models/{model}
        cid = request.conversation_id or ""
        kind = fault_for(cid, request.attempt)
        with self._lock:
            sequence = self.kinds.setdefault(cid, [])
            sequence.append(kind)
            assert len(sequence) == request.attempt, "the server's per-id count is the order"
        if kind in {"rate_limit", "server_error"}:
            return Reply(kind, retry_after_ms=5)
        if kind == "timeout":
            return Reply("timeout", delay=CLIENT_TIMEOUT * 2.5)
        return Reply(kind)

    def injected(self) -> Counter[str]:
        with self._lock:
            return Counter(kind for sequence in self.kinds.values() for kind in sequence)


def logical_attempts(kinds: list[str]) -> list[str]:
    """Replay one conversation's server requests as the SDK groups them into attempts."""
    attempts: list[str] = []
    position = 0
    while position < len(kinds):
        for tries in range(1, SDK_TRIES + 1):
            kind = kinds[position]
            position += 1
            if kind not in RETRYABLE:
                attempts.append(kind)  # "success" or "invalid_json"
                break
            if tries == SDK_TRIES or position == len(kinds):
                attempts.append("exhausted")
                break
    return attempts


def _upload(count: int) -> bytes:
    rows = ["conversation_id,timestamp,role,content"]
    for number in range(count):
        cid = f"storm-{number:04d}"
        rows.append(f"{cid},{D}T08:{number % 60:02d}:00Z,user,My order {number} never arrived")
        rows.append(f"{cid},{D}T08:{number % 60:02d}:30Z,agent,Sorry! Re-sent it today.")
    return ("\n".join(rows) + "\n").encode()


def test_fault_storm_every_conversation_ends_within_its_attempts(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 1000 if store_factory.kind == "local" else 150
    store = store_factory()
    store.write(f"incoming/{D}/storm.csv", _upload(count))
    storm = Storm()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with FakeOpenAIServer() as server:
        server.behaviour = storm
        settings = settings_for(
            {
                **store_factory.env(store),
                "CONVSYNC_ANALYZER": "openai",
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": server.base_url,
                "CONVSYNC_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                "CONVSYNC_RETRY_DELAY_SECONDS": "0",
                "CONVSYNC_REQUEST_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT),
                "CONVSYNC_CONCURRENCY": "32",
            }
        )
        started = time.monotonic()
        result = run_date(settings, D)
        seconds = time.monotonic() - started
        sent = server.sent_counts()
        model_lookups = server.model_lookups
    assert result.success, "conversation failures must not fail the run"
    step_retries = sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")
    assert step_retries <= MAX_ATTEMPTS - 1

    document = json.loads(store.read(document_key(D)) or b"{}")
    conversations = {c["id"]: c for c in document["conversations"]}
    assert len(conversations) == len(document["conversations"]) == count, "lost or duplicated"
    statuses = Counter(c["processingStatus"] for c in conversations.values())
    assert set(statuses) <= {"success", "failed", "pending"}, statuses
    assert sum(statuses.values()) == count
    assert document["summary"] == {
        "total": count,
        "processing": 0,
        **{s: statuses.get(s, 0) for s in ("pending", "success", "failed")},
    }
    assert document["processedCount"] == statuses["success"]

    over_limit = 0
    attempts_total = 0
    for cid, conversation in conversations.items():
        requests = sent.get(cid, 0)
        retry_count = conversation["retryCount"]
        status = conversation["processingStatus"]
        attempts = retry_count + (1 if status == "success" else 0)
        attempts_total += attempts
        over_limit += attempts > MAX_ATTEMPTS
        assert 1 <= attempts <= MAX_ATTEMPTS, (cid, conversation)
        assert attempts <= requests <= attempts * SDK_TRIES, (cid, requests, attempts)
        replay = logical_attempts(storm.kinds.get(cid, []))
        assert len(replay) == attempts, (cid, replay, conversation)
        assert replay.count("success") == (1 if status == "success" else 0), (cid, replay)
        if status == "success":
            assert replay[-1] == "success"
            Analysis.model_validate(conversation["analysis"])
            assert conversation["processedAt"] and conversation["processingError"] is None
        elif status == "failed":
            assert retry_count == MAX_ATTEMPTS and conversation["processingError"], conversation
            assert conversation["analysis"] is None and conversation["processedAt"] is None
        else:
            assert retry_count < MAX_ATTEMPTS and conversation["analysis"] is None
    assert sum(sent.values()) == sum(len(k) for k in storm.kinds.values())
    assert set(sent) == set(conversations), "only known conversations were sent"

    summary = json.loads(store.read(summary_key(D)) or b"{}")
    assert summary["processedCount"] == statuses["success"]
    assert summary["documentVersion"] == document["_blobMeta"]["version"]

    injected = storm.injected()
    numbers: dict[str, Any] = {
        "runs": 1,
        "step_passes": step_retries + 1,
        "conversations": count,
        "server_requests": sum(sent.values()),
        "model_lookups": model_lookups,
        "logical_attempts": attempts_total,
        "faults_injected": {k: injected[k] for k, _ in FAULTS},
        "success": statuses["success"],
        "failed_after_limit": statuses["failed"],
        "pending_with_attempts_left": statuses["pending"],
        "max_requests_per_conversation": max(sent.values()),
        "duplicates_beyond_limit": over_limit,
        "data_lost": count - len(conversations),
        "seconds": round(seconds, 1),
    }
    record_numbers("fault_storm", store_factory.kind, **numbers)
    assert over_limit == 0
    assert injected["rate_limit"] and injected["server_error"] and injected["timeout"]
    assert injected["invalid_json"]
