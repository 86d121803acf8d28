"""Batch request lines, file splitting and result parsing (`core.batch`), the ledger
(`core.batch_ledger`), the batch statuses and the batch price (pure functions)."""

from __future__ import annotations

import json

import pytest

from convsync_pipeline.analyzers.openai import BATCH_PRICE_FACTOR, estimate_cost_usd
from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import TokenUsage
from convsync_pipeline.core.batch import (
    RequestTooLargeError,
    custom_id,
    parse_results,
    request_line,
    split_files,
)
from convsync_pipeline.core.batch_ledger import BatchLedger, BatchRecord, ledger_key, new_token
from convsync_pipeline.core.document import Conversation
from convsync_pipeline.core.journal import Change, DateState, Entry

D = "2026-05-06"


def line(cid: str, model: str = "m", filler: int = 0):
    messages = [{"role": "user", "content": "x" * filler}]
    return model, request_line(D, cid, 1, model, messages, {"type": "json_schema"})


def test_a_request_line_is_the_live_body_wrapped() -> None:
    _, made = line("a|b/c")
    parsed = json.loads(made.data)
    assert made.data.endswith(b"\n") and made.data.count(b"\n") == 1
    assert parsed == {
        "custom_id": f"{D}|1|a|b/c",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "m",
            "messages": [{"role": "user", "content": ""}],
            "response_format": {"type": "json_schema"},
        },
    }
    assert custom_id(D, "x", 2) != custom_id(D, "x", 3), "one id per attempt"


def test_files_split_at_the_request_and_byte_limits_one_model_each() -> None:
    lines = [line(f"c{n}", model="a" if n % 3 else "b") for n in range(10)]
    files = list(split_files(lines, max_requests=3))
    assert all(len(f.lines) <= 3 for f in files)
    assert all({m for m, _ in lines if _ in f.lines} == {f.model} for f in files)
    assert sorted(line.custom_id for f in files for line in f.lines) == sorted(
        made.custom_id for _, made in lines
    )
    size = len(line("c0", filler=100)[1].data)
    by_bytes = list(split_files([line(f"c{n}", filler=100) for n in range(5)], max_bytes=2 * size))
    assert [len(f.lines) for f in by_bytes] == [2, 2, 1]
    assert all(f.size <= 2 * size and f.size == len(f.content()) for f in by_bytes)
    with pytest.raises(RequestTooLargeError, match="c9"):
        list(split_files([line("c9", filler=500)], max_bytes=100))


def output(cid: str, status_code: int = 200, body=None, error=None) -> bytes:
    item = {
        "id": "r",
        "custom_id": cid,
        "error": error,
        "response": None
        if error
        else {"status_code": status_code, "request_id": "q", "body": body or {"ok": 1}},
    }
    return json.dumps(item).encode()


def test_results_are_matched_by_custom_id_whatever_the_order() -> None:
    out = b"\n".join(
        [
            output("c"),
            output("a"),
            output("b", 400, {"error": {"code": "context_length_exceeded", "message": "too long"}}),
            b"not json",
            b"",
        ]
    )
    errors = b"\n".join(
        [
            output("d", error={"code": "batch_expired", "message": "window closed"}),
            output("a", error={"code": "server_error", "message": "x"}),  # an answer beats it
        ]
    )
    results = parse_results(out, errors, None)
    assert set(results) == {"a", "b", "c", "d"}
    assert results["a"].body == {"ok": 1} and results["c"].body == {"ok": 1}
    assert results["b"].body is None and "400 context_length_exceeded: too long" in (
        results["b"].error or ""
    )
    assert results["d"].expired and "batch_expired" in (results["d"].error or "")
    assert parse_results(b"", None) == {}


def conversation(cid: str, state: str = "pending") -> Conversation:
    return Conversation(
        id=cid, startedAt="", endedAt="", messages=[], source="s", processingStatus=state
    )


def test_the_batch_token_rides_the_status_machine_and_the_log() -> None:
    before = conversation("a")
    marked = status.begin_batch_attempt(before, "tok")
    assert status.batch_of(marked) == "tok" and status.batch_of(before) is None
    change = Change.between(before, marked)
    assert change.fields == {"batchId": "tok"}
    state = DateState([before])
    state.fold(Entry(D, 1, 1, changes=(change,)))
    assert status.batch_of(state.conversations[0]) == "tok"
    # Leaving the batch clears it; a live attempt later never carries a stale token.
    done = status.leave_batch(status.record_failure(state.conversations[0], "x", 3))
    assert status.batch_of(done) is None and done.model_dump(by_alias=True)["batchId"] is None
    left = Change.between(state.conversations[0], done)
    assert left.fields["batchId"] is None and left.to == "pending"
    raw = json.dumps(
        {"date": D, "entry": 2, "lockGeneration": 1, "changes": [left.to_json()]}
    ).encode()
    state.fold(Entry.from_json_bytes(raw, "journal/x"))
    assert status.batch_of(state.conversations[0]) is None
    assert status.batch_of(status.begin_attempt(state.conversations[0])) is None


def test_the_ledger_round_trips_and_names_its_key() -> None:
    token = new_token(D)
    assert token.startswith(f"cs-{D}-") and token != new_token(D)
    ledger = BatchLedger(date=D).adding(BatchRecord(token=token, model="m", requests=2))
    ledger = ledger.updated(token, state="submitted", batch_id="batch_1")
    again = BatchLedger.from_json_bytes(ledger.to_json_bytes())
    assert again.by_batch_id("batch_1") is not None and again.open_records()[0].token == token
    assert json.loads(ledger.to_json_bytes())["batches"][0]["batchId"] == "batch_1"
    with pytest.raises(ValueError, match="already"):
        ledger.adding(BatchRecord(token=token))
    with pytest.raises(KeyError):
        ledger.updated("nope", state="collected")
    assert ledger_key(D) == f"batches/{D}.json"


def test_batch_prices_are_half_the_live_ones() -> None:
    usage = TokenUsage(
        promptTokens=1_000_000, completionTokens=1_000_000, cachedTokens=0, totalTokens=2_000_000
    )
    live = estimate_cost_usd("gpt-4o-mini", usage)
    assert live == pytest.approx(0.75)
    assert estimate_cost_usd("gpt-4o-mini", usage, batch=True) == pytest.approx(
        live * BATCH_PRICE_FACTOR
    )
    assert estimate_cost_usd("unknown-model", usage, batch=True) is None


def test_a_corrupt_ledger_is_named_not_guessed(tmp_path) -> None:
    from convsync_pipeline.pipeline.batch import read_ledger
    from convsync_pipeline.pipeline.documents import CorruptDocumentError
    from convsync_pipeline.store.local import LocalStore

    store = LocalStore(tmp_path)
    store.write(ledger_key(D), b'{"date": "2026-05-06", "batches": [{"state": "lost"}]}')
    with pytest.raises(CorruptDocumentError, match=f"batches/{D}.json is not a valid batch"):
        read_ledger(store, D)
    assert store.read(ledger_key(D)) is not None, "left as is"


def test_nothing_but_the_batch_and_openai_paths_import_the_sdk() -> None:
    """The local set-up, `convsync status` and `convsync batches` stay free of the openai
    SDK's import time: the batch pass imports it only when it runs."""
    import subprocess
    import sys

    code = (
        "import sys, convsync_pipeline.definitions, convsync_pipeline.cli.batches, "
        "convsync_pipeline.operations.status, convsync_pipeline.pipeline.analyse; "
        "print('openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
