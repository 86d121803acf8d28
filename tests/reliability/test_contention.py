"""Scenario 1 - contention: eight `dagster asset materialize --select ai_analysis` processes
started at once for one date, round after round, on the folder store and on S3.

`dagster asset materialize` bypasses Dagster's run queue (NOTES), so only the date lock stands
between these processes and the seed's race (two runs analysing the same conversations).

Each round prepares a fresh date holding CONVERSATIONS pending conversations, starts
PROCESSES CLI runs with CONVSYNC_LOCK_WAIT_SECONDS=0 and checks, from the model server's own
request counts and the stored bytes:

- every conversation was sent to the model exactly once;
- exactly one run analysed; every other run either failed with the lock conflict
  (`[Lock] Failed to acquire lock` and "is locked by" in its output) or, arriving after the
  winner released the lock, found nothing to do - and none of them wrote anything: no
  `[Blob] wrote` line, the document's versions are exactly the winner's saves, the document's
  fence is the winner's lock generation;
- the document ends consistent (valid JSON, unique ids, processedCount and summary recounted).

Even rounds hold every model request until all contenders have exited, so the round is sure
to contain seven lock conflicts whatever the machine's load; odd rounds let the model answer
after a latency, so late contenders also meet the lock as it is released.

Rounds: 10 on each backend (the issue's number); each round costs eight Dagster start-ups
(about 7 s of CPU each on 2 cores). CONVSYNC_RELIABILITY_ROUNDS overrides both for a quicker
local run.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from convsync_pipeline.core.keys import document_key
from tests.reliability.harness import (
    Outcome,
    cleanup,
    cli_env,
    conversation_ids,
    conversations_csv,
    lock_generation,
    prepare_dates,
    read_document,
    start_materialize,
    upload,
    wait_all,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROCESSES = 8
CONVERSATIONS = 30
LOCAL_ROUNDS = 10
S3_ROUNDS = 10
FREE_LATENCY = 0.3  # odd rounds: seconds per model answer (30 conversations, 8 at a time)


def _rounds(kind: str) -> int:
    override = os.environ.get("CONVSYNC_RELIABILITY_ROUNDS")
    if override:
        return int(override)
    return LOCAL_ROUNDS if kind == "local" else S3_ROUNDS


def test_eight_processes_one_date(store_factory, homes, model_server, tmp_path, record_outcome):
    started = time.monotonic()
    server, gate = model_server
    store = store_factory()
    store_env = store_factory.env(store)
    rounds = _rounds(store_factory.kind)
    first = dt.date(2026, 3, 1)
    dates = [(first + dt.timedelta(days=number)).isoformat() for number in range(rounds)]
    ids_by_date = {}
    for number, date in enumerate(dates):
        ids_by_date[date] = conversation_ids(f"r{number:02d}", CONVERSATIONS)
        upload(store, f"incoming/{date}/export.csv", conversations_csv(date, ids_by_date[date]))
    prepare_dates(store, store_env, dates)

    outcome = Outcome("contention", store_factory.kind)
    conflicts = late_noops = 0
    for number, date in enumerate(dates):
        gated = number % 2 == 0
        key = document_key(date)
        before = read_document(store, date)
        assert before.count_statuses().pending == CONVERSATIONS
        generation_before = lock_generation(store, date)
        sent_before = server.sent_counts()
        if gated:
            gate.hold()
            server.latency = 0.0
        else:
            gate.open()
            server.latency = FREE_LATENCY
        runs = []
        try:
            for process in range(PROCESSES):
                home = homes.new(f"round{number}-p{process}")
                env = cli_env(store_env, home, server, CONVSYNC_LOCK_WAIT_SECONDS="0")
                runs.append(
                    start_materialize(
                        f"round{number}-p{process}", "ai_analysis", date, env, tmp_path / "logs"
                    )
                )
            if gated:
                wait_until(
                    lambda runs=runs: sum(run.poll() is not None for run in runs) >= PROCESSES - 1,
                    240,
                    f"{PROCESSES - 1} contenders of round {number} to give up",
                    runs,
                )
                gate.open()
            wait_all(runs)
        finally:
            gate.open()
            cleanup(runs)

        winners, losers, noops = [], [], []
        for run in runs:
            rc = run.poll()
            if rc == 0 and run.analysed() > 0:
                winners.append(run)
            elif rc != 0 and run.lost_lock_race() and not run.blob_writes():
                losers.append(run)
            elif rc == 0 and run.analysed() == 0 and not run.blob_writes():
                noops.append(run)
            else:
                raise AssertionError(f"round {number}: unexpected run\n{run.tail()}")
        assert len(winners) == 1, "\n".join(run.tail() for run in winners)
        if gated:
            assert len(losers) == PROCESSES - 1, [run.name for run in noops]
        winner = winners[0]

        sent = server.sent_counts()
        delta = {cid: sent.get(cid, 0) - sent_before.get(cid, 0) for cid in sent}
        delta = {cid: count for cid, count in delta.items() if count}
        duplicates = {cid: count for cid, count in delta.items() if count > 1}
        assert not duplicates, f"round {number}: sent more than once: {duplicates}"
        assert set(delta) == set(ids_by_date[date]), f"round {number}: sent {sorted(delta)}"

        after = read_document(store, date)
        assert after.count_statuses().success == CONVERSATIONS
        assert [c.id for c in after.conversations] == ids_by_date[date]
        assert all(c.retry_count == 0 for c in after.conversations)  # losers spent no attempt
        writes = winner.blob_writes(key)
        assert writes == list(range(before.version + 1, after.version + 1)), (
            f"round {number}: versions {before.version}->{after.version}, winner wrote {writes}"
        )
        assert after.blob_meta.lock_generation == generation_before + 1
        assert lock_generation(store, date) == generation_before + 1 + len(noops)

        conflicts += len(losers)
        late_noops += len(noops)
        outcome.runs += len(runs)
        outcome.conversations += CONVERSATIONS
        outcome.duplicates += sum(count - 1 for count in duplicates.values())
        outcome.lost += CONVERSATIONS - after.count_statuses().success

    outcome.seconds = time.monotonic() - started
    outcome.details = {
        "rounds": rounds,
        "processes_per_round": PROCESSES,
        "lock_conflicts": conflicts,
        "late_noop_runs": late_noops,
        "requests": server.total_requests,
    }
    record_outcome(outcome)
