"""Scenario 2 — the run queue: two overlapping backfills through `dagster dev`.

A SQLite instance configured by the repository's root `dagster.yaml` (copied into a temporary
DAGSTER_HOME), `dagster dev` started by the test, a folder store, and the openai analyser
against a fake OpenAI server on 127.0.0.1. Two backfills are launched exactly as the UI does
(`launchPartitionBackfill`): dates 1-4 and dates 3-6, back to back.

The shared dates 3 and 4 are made slower (their answers take 6 s, the others 0.5 s), so a
run of date 3 or 4 is likely still analysing when its twin from the other backfill is already
queued; the test reports how many twins were queued while the other was in flight (only the
queue kept those apart). Whether a twin would actually have been *started* without the limit
depends on how fast the daemon dequeues: on this shared 2-core machine under load it launched
runs nearly one at a time, and two control runs with the tag limit removed did not overlap either
(docs/reliability-faults.md).

Proved from the run records (GraphQL start/end times and the `dagster/partition` tag, and,
stricter, the instance's event log from the moment a run left the queue until it ended):
never two runs of one partition in flight at once; both backfills complete, every run
succeeds, every date's document is fully analysed; and each conversation was sent to the
analyser exactly once in total although dates 3 and 4 ran twice.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from tests.fixtures.dagster_dev import dagster_dev
from tests.fixtures.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.reliability_faults._support import record_numbers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
MODULE = "convsync_pipeline.definitions"
ASSETS = ["raw_conversations", "normalized_conversations", "ai_analysis", "daily_summary"]
DATES = [f"2026-06-0{day}" for day in range(1, 7)]
FIRST, SECOND = DATES[0:4], DATES[2:6]
PER_DATE = 3
SLOW_DATES = {DATES[2], DATES[3]}
SLOW, FAST = 6.0, 0.5
API_KEY = "sk-fake-run-queue-key"

QUEUE_EVENTS = {
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_DEQUEUED,
    DagsterEventType.RUN_STARTING,
}
LEFT_QUEUE = (DagsterEventType.RUN_DEQUEUED, DagsterEventType.RUN_STARTING)

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 200) {
    __typename
    ... on Runs { results { runId status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""


def _partitions(tags: dict[str, str]) -> list[str]:
    """The dates a run covers: its partition, or its range when a backfill policy applies."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first = dt.date.fromisoformat(tags["dagster/asset_partition_range_start"])
    last = dt.date.fromisoformat(tags["dagster/asset_partition_range_end"])
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _overlaps(intervals: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    clashes = []
    for (start_a, end_a, run_a), (start_b, end_b, run_b) in itertools.combinations(intervals, 2):
        if start_a < end_b and start_b < end_a:
            clashes.append((run_a, run_b))
    return clashes


def _max_in_flight(intervals: list[tuple[float, float, str]]) -> int:
    edges = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    current = best = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def _slow_shared_dates(request: FakeRequest) -> Reply:
    """Answers for dates 3 and 4 take SLOW seconds, the others FAST (ids carry the date)."""
    cid = request.conversation_id or ""
    time.sleep(SLOW if any(date in cid for date in SLOW_DATES) else FAST)
    return Reply("success")


def _upload() -> str:
    rows = ["conversation_id,timestamp,role,content"]
    for date in DATES:
        for number in range(PER_DATE):
            cid = f"q-{date}-{number}"
            rows.append(f"{cid},{date}T09:0{number}:00Z,user,I was charged twice this month")
            rows.append(f"{cid},{date}T09:0{number}:30Z,agent,Refunded. Sorry about that!")
    return "\n".join(rows) + "\n"


def test_overlapping_backfills_never_run_one_partition_twice_at_once(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    store = tmp_path / "store"
    (store / "incoming" / "queue").mkdir(parents=True)
    (store / "incoming" / "queue" / "export.csv").write_text(_upload(), encoding="utf-8")

    started = time.monotonic()
    with FakeOpenAIServer() as server:
        server.behaviour = _slow_shared_dates
        env: dict[str, str | None] = {
            "CONVSYNC_STORE": str(store),
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": server.base_url,
            "CONVSYNC_TIMEZONE": "UTC",
            "CONVSYNC_START_DATE": "2026-01-01",
            "CONVSYNC_S3_ENDPOINT_URL": None,
            "CONVSYNC_RETRY_DELAY_SECONDS": "0",
        }
        with dagster_dev(home, env=env, log_path=tmp_path / "dagster-dev.log") as dev:
            dev.wait_for_location(MODULE, timeout=180)
            backfills = [
                dev.launch_partition_backfill(
                    {"assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": dates}
                )
                for dates in (FIRST, SECOND)
            ]
            finished = [dev.wait_for_backfill(b, timeout=420) for b in backfills]
            runs: list[dict[str, Any]] = []
            for backfill_id in backfills:
                result = dev.graphql(
                    RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}
                )["runsOrError"]
                assert result["__typename"] == "Runs", result
                runs += result["results"]
        assert dev.exit_code == 0, dev.log_tail()
        sent = server.sent_counts()
        lookups = server.model_lookups
    seconds = time.monotonic() - started

    for backfill in finished:
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert {run["status"] for run in runs} == {"SUCCESS"}, runs

    # --- from GraphQL: start/end and the partition tag --------------------------------------
    by_partition: dict[str, list[tuple[float, float, str]]] = {}
    for run in runs:
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        for date in _partitions(tags):
            by_partition.setdefault(date, []).append(
                (run["startTime"], run["endTime"], run["runId"])
            )
    assert sorted(by_partition) == DATES
    for date in DATES:
        expected = 2 if date in FIRST and date in SECOND else 1
        assert len(by_partition[date]) == expected, (date, by_partition[date])
        assert not _overlaps(by_partition[date]), f"two runs of {date} in flight at once"

    # --- stricter, from the instance: from leaving the queue until the run ended ------------
    instance = DagsterInstance.from_config(str(home))
    try:
        records = [
            record
            for backfill_id in backfills
            for record in instance.get_run_records(
                filters=RunsFilter(tags={"dagster/backfill": backfill_id})
            )
        ]
        assert len(records) == len(runs)
        flight: dict[str, list[tuple[float, float, str]]] = {}
        everything: list[tuple[float, float, str]] = []
        queued: dict[str, tuple[float, float]] = {}  # run id -> enqueued, dequeued
        for record in records:
            run = record.dagster_run
            times: dict[DagsterEventType, float] = {}
            for entry in instance.all_logs(run.run_id, of_type=QUEUE_EVENTS):
                event_type = entry.dagster_event_type
                assert event_type is not None
                times.setdefault(event_type, entry.timestamp)
            left = [times[t] for t in LEFT_QUEUE if t in times]
            assert left, f"run {run.run_id} never left the queue"
            assert record.end_time is not None
            interval = (min(left), record.end_time, run.run_id)
            everything.append(interval)
            queued[run.run_id] = (times[DagsterEventType.RUN_ENQUEUED], min(left))
            for date in _partitions(run.tags):
                flight.setdefault(date, []).append(interval)
        for date, intervals in flight.items():
            assert not _overlaps(intervals), f"{date}: {intervals}"
        # A twin (the other backfill's run of the same date) that was already queued while
        # this one was in flight: only the queue kept the two apart.
        waited_for_twin = 0
        for intervals in flight.values():
            for first, second in itertools.permutations(intervals, 2):
                if first[0] <= second[0] and queued[second[2]][0] < first[1]:
                    waited_for_twin += 1
    finally:
        instance.dispose()

    # --- the store: every date complete, every conversation sent exactly once --------------
    for date in DATES:
        document = json.loads((store / "conversations" / f"{date}.json").read_text("utf-8"))
        assert document["summary"]["total"] == document["summary"]["success"] == PER_DATE
        summary = json.loads((store / "summaries" / f"{date}.json").read_text("utf-8"))
        assert summary["documentVersion"] == document["_blobMeta"]["version"]
    expected_ids = {f"q-{date}-{n}" for date in DATES for n in range(PER_DATE)}
    assert set(sent) == expected_ids and set(sent.values()) == {1}, sent

    record_numbers(
        "run_queue",
        "local",
        backfills=len(backfills),
        runs=len(runs),
        partitions=len(DATES),
        partitions_run_twice=sum(1 for d in DATES if len(by_partition[d]) == 2),
        conversations=len(expected_ids),
        analysis_requests=sum(sent.values()),
        model_lookups=lookups,
        max_runs_in_flight=_max_in_flight(everything),
        twin_runs_queued_while_other_in_flight=waited_for_twin,
        same_partition_overlaps=0,
        duplicates_beyond_limit=sum(1 for n in sent.values() if n > 1),
        data_lost=0,
        seconds=round(seconds, 1),
    )
