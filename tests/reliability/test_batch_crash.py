"""Batch mode under SIGKILL: a pass in its own process is killed at the three moments where
a batch could be lost or sent twice, and the next pass (folder store: the kernel freed the
lock with the process) must neither lose it nor create a second one nor charge an attempt.

- between upload and create: the create request is held by the server and then dropped,
  as if the process died before sending it: no batch exists. The next pass finds no batch
  with the token, releases the conversations without an attempt and submits them once.
- between create and record: the batch exists at the provider, its answer never reached the
  process. The next pass finds it by its token (`batches.list`) and records it: one batch.
- during collection: the process dies downloading the output. The next pass folds it.

At the end every conversation is `success` with `retryCount` 0 and was submitted once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convsync_pipeline.store.local import LocalStore
from tests.pipeline.test_batch_mode import (
    API_KEY,
    D,
    assert_attempts,
    assert_consistent,
    batch_settings,
    ledger,
    run_pass,
    seed,
    state,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
# One pass in batch mode, as `ai_analysis` runs it, in a process of its own.
PASS = """
import sys
from convsync_pipeline.analyzers.openai_batch import BatchClient
from convsync_pipeline.pipeline.analyse import analyse_date
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import StoreLocks
from convsync_pipeline.store.local import LocalStore

store_path, date = sys.argv[1], sys.argv[2]
settings = load_settings()
store = LocalStore(store_path)
analyse_date(
    store, StoreLocks(store, 30.0, 5.0), settings, lambda: None, date, "doomed",
    make_batch_client=lambda: BatchClient(base_url=settings.openai_base_url, timeout_seconds=60),
)
"""


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def start_pass(store_path: Path, base_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,
        "CONVSYNC_ANALYZER": "openai",
        "OPENAI_BASE_URL": base_url,
        "CONVSYNC_OPENAI_MODE": "batch",
        "CONVSYNC_START_DATE": "2026-01-01",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-c", PASS, str(store_path), D],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


@pytest.mark.parametrize(
    "moment", ["between upload and create", "between create and record", "during collection"]
)
def test_sigkill_never_loses_a_batch_nor_makes_a_second_one(moment, tmp_path, openai_server):
    path = tmp_path / "store"
    store = LocalStore(path)
    ids = [f"s{n}" for n in range(5)]
    seed(store, ids)
    settings = batch_settings(openai_server.base_url)
    api = openai_server.batch
    point = {
        "between upload and create": "create",
        "between create and record": "created",
        "during collection": "content",
    }[moment]
    if point == "content":
        run_pass(store, settings)  # submitted by a pass that lived
        api.run_to_end()
    api.hold(point)
    process = start_pass(path, openai_server.base_url)
    try:
        assert api.reached(point, timeout=120), process.communicate(timeout=5)[0].decode()[-2000:]
        kill(process)
    finally:
        if process.poll() is None:
            kill(process)
    api.release(point, drop=point == "create")

    before = state(store)
    if point != "content":
        # What the dead pass left: marked with a token the ledger knows, nothing recorded.
        (record,) = ledger(store)["batches"]
        assert record["state"] == "submitting"
        assert {c["batchId"] for c in before.values()} == {record["token"]}
    assert api.creates == (0 if point == "create" else 1)

    report = run_pass(store, settings, owner="next")
    assert report.failed_attempts == 0 and report.recovered_interrupted == 0
    if point == "create":
        assert report.batch is not None and report.batch.released == len(ids)
        assert [r["state"] for r in ledger(store)["batches"]] == ["abandoned", "submitted"]
    if point != "content":
        assert api.creates == 1, "the batch was found or re-made, never doubled"
        api.run_to_end()
        run_pass(store, settings, owner="last")
    now = state(store)
    assert {(c["processingStatus"], c["retryCount"]) for c in now.values()} == {("success", 0)}
    assert api.submitted_counts() == dict.fromkeys(ids, 1)
    assert_attempts(store, openai_server)
    assert_consistent(store)
    json.dumps(ledger(store))  # the ledger stays valid JSON throughout
