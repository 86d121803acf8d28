"""Run per upload, through a real `dagster dev` (webserver + daemon, the root dagster.yaml):
uploads land, `new_upload_sensor` requests one ingest run each, `ingested_upload_sensor`
requests the runs of the dates each upload touched once that run succeeds, every date ends
analysed, and nothing is requested twice."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dagster_dev import DagsterDev, convsync_env, dagster_dev, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
MODULE = "convsync_pipeline.definitions"
SELECTOR = {"repositoryName": "__repository__", "repositoryLocationName": MODULE}
UPLOADS = {  # upload -> the dates it holds (one date shared)
    "incoming/2026-02-21/first.csv": ["2026-02-20", "2026-02-21"],
    "incoming/2026-02-21/second.jsonl.gz": ["2026-02-21", "2026-02-22"],
}

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 100) {
    ... on Runs { results { runId jobName status tags { key value } } }
  }
}
"""
SENSOR_TICKS = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 5) { status } } }
  }
}
"""


def _rows(upload: str, dates: list[str]) -> list[dict[str, str]]:
    name = upload.rsplit("/", 1)[-1].split(".")[0]
    return [
        {"conversation_id": f"{name}-{date}-{n}", "timestamp": f"{date}T09:0{n}:00Z",
         "role": "user", "content": "The app keeps crashing when I upload photos"}
        for date in dates for n in range(2)
    ]


def _drop(store: Path, key: str, dates: list[str]) -> None:
    import gzip

    rows = _rows(key, dates)
    if key.endswith(".csv"):
        data = ("conversation_id,timestamp,role,content\n" + "".join(
            f"{r['conversation_id']},{r['timestamp']},{r['role']},{r['content']}\n"
            for r in rows)).encode()
    else:
        data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    target = store / key
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, target)  # appears at once


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _runs(dev: DagsterDev) -> list[dict[str, Any]]:
    return dev.graphql(RUNS, {"filter": {}})["runsOrError"]["results"]


def test_each_upload_gets_one_ingest_run_and_its_dates_runs_follow(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    store = tmp_path / "store"
    store.mkdir()
    started = time.monotonic()
    with dagster_dev(home, env=convsync_env(store), target=("-m", MODULE),
                     log_path=tmp_path / "dagster-dev.log") as dev:
        dev.wait_for_location(MODULE, timeout=180)
        follow = {**SELECTOR, "sensorName": "ingested_upload_sensor"}

        def follow_ticked() -> bool:
            dev.check_alive()
            state = dev.graphql(SENSOR_TICKS, {"selector": follow})["sensorOrError"]
            return state["sensorState"]["status"] == "RUNNING" and bool(
                state["sensorState"]["ticks"]
            )

        # Running by default; its first tick sets its cursor, so wait for it to be in place.
        wait_until(follow_ticked, timeout=120, interval=2, what="ingested_upload_sensor's tick",
                   on_timeout=dev.log_tail)
        for key, dates in UPLOADS.items():
            _drop(store, key, dates)
        start = dev.start_sensor({**SELECTOR, "sensorName": "new_upload_sensor"})
        assert start["__typename"] == "Sensor", start
        expected_pairs = {(k, d) for k, dates in UPLOADS.items() for d in dates}

        def all_done() -> list[dict[str, Any]] | None:
            dev.check_alive()
            runs = _runs(dev)
            daily = [r for r in runs if r["jobName"] == "convsync_daily"]
            finished = all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in runs)
            return runs if finished and len(daily) >= len(expected_pairs) else None

        runs = wait_until(all_done, timeout=420, interval=3, what="the ingest and date runs",
                          on_timeout=lambda: f"{_runs(dev)}\n{dev.log_tail()}")
        flow_seconds = time.monotonic() - started
        # One more cycle of both sensors: nothing new may be requested.
        time.sleep(40)
        assert len(_runs(dev)) == len(runs), "a run was requested twice"

    assert dev.exit_code == 0, dev.log_tail()
    assert {r["status"] for r in runs} == {"SUCCESS"}, runs
    ingest = [r for r in runs if r["jobName"] == "convsync_ingest"]
    daily = [r for r in runs if r["jobName"] == "convsync_daily"]
    assert sorted(_tags(r)["convsync/upload"] for r in ingest) == sorted(UPLOADS)
    assert {_tags(r)["dagster/sensor_name"] for r in ingest} == {"new_upload_sensor"}
    assert {_tags(r)["dagster/sensor_name"] for r in daily} == {"ingested_upload_sensor"}
    assert sorted((_tags(r)["convsync/upload"], _tags(r)["dagster/partition"]) for r in daily) == (
        sorted(expected_pairs)
    )
    keys = [_tags(r)["dagster/run_key"] for r in runs]
    assert len(keys) == len(set(keys)), "one run per key"

    for date in sorted({d for dates in UPLOADS.values() for d in dates}):
        document = json.loads((store / "conversations" / f"{date}.json").read_text())
        expected = {row["conversation_id"] for key, dates in UPLOADS.items() if date in dates
                    for row in _rows(key, [date])}
        assert {c["id"] for c in document["conversations"]} == expected, date
        assert {c["processingStatus"] for c in document["conversations"]} == {"success"}, date
        summary = json.loads((store / "summaries" / f"{date}.json").read_text())
        assert summary["documentVersion"] == document["_blobMeta"]["version"]
    indexed = list((store / "state" / "uploads").glob("*.json"))
    assert len(indexed) == len(UPLOADS)  # each upload ingested once in total
    print(f"\nrun per upload: {len(ingest)} ingest runs and {len(daily)} date runs done "
          f"{flow_seconds:.0f} s after dagster dev started")
