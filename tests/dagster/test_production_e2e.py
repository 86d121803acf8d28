"""End to end on the production instance: `dagster dev` (webserver + daemon) with
deploy/dagster.yaml on a real PostgreSQL, the project's code location, and a local folder
store. Drives it the way a user does: GraphQL as the UI sends it.

- the code location loads without errors and its four assets are daily-partitioned;
- a backfill of three dates launched with `launchPartitionBackfill` completes as one run (the
  assets' backfill policy) tagged with the range, and the store holds each date's document
  and summary;
- `new_upload_sensor`, tested and started as in the UI (dry run, persist its cursor, start),
  reacts to a new upload with one ingest run, after which `ingested_upload_sensor` requests one
  run, for exactly the date it contains;
- the schedule's tick for a given time requests the previous day.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dagster_dev import DagsterDev, convsync_env, dagster_dev, wait_until
from tests.fixtures.postgres import PgConn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
MODULE = "convsync_pipeline.definitions"
LOCATION = MODULE  # `dagster dev -m MODULE` names the location after the module
REPOSITORY = "__repository__"  # a Definitions object's repository
SENSOR = "new_upload_sensor"
ASSETS = ["raw_conversations", "normalized_conversations", "ai_analysis", "daily_summary"]

BACKFILL_DATES = ["2026-02-01", "2026-02-02", "2026-02-03"]
SENSOR_DATE = "2026-02-04"

HEADER = "conversation_id,timestamp,role,content\n"


def _conversations_csv(dates: list[str], prefix: str) -> str:
    """Two short conversations per date, a user message and an answer each."""
    rows = [HEADER]
    for date in dates:
        for number, (question, answer) in enumerate(
            [
                ("The app keeps crashing when I upload photos", "Sorry! Please update to 4.2."),
                ("I was charged twice this month", "Refunded, thanks for your patience."),
            ]
        ):
            conversation = f"{prefix}-{date}-{number}"
            rows.append(f"{conversation},{date}T09:0{number}:00Z,user,{question}\n")
            rows.append(f'{conversation},{date}T09:0{number}:30Z,assistant,"{answer}"\n')
    return "".join(rows)


def _drop_upload(store: Path, key: str, text: str) -> None:
    """Appear at once in incoming/: written beside it under a non-upload name, then renamed."""
    target = store / key
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


ASSET_NODES = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionDefinition { type }
    partitionStats { numMaterialized numFailed }
    repository { name location { name } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 100) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

SENSOR_DRY_RUN = """
mutation SensorDryRun($selector: SensorSelector!, $cursor: String) {
  sensorDryRun(selectorData: $selector, cursor: $cursor) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        cursor
        skipReason
        error { message stack }
        runRequests { runKey tags { key value } }
      }
    }
    ... on PythonError { message stack }
    ... on SensorNotFoundError { message }
  }
}
"""

SET_SENSOR_CURSOR = """
mutation SetCursor($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""


REPOSITORY_QUERY = """
query Repository($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository { schedules { name executionTimezone } sensors { name } }
    ... on PythonError { message }
  }
}
"""

SCHEDULE_DRY_RUN = """
mutation ScheduleDryRun($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        skipReason
        error { message stack }
        runRequests { runKey tags { key value } }
      }
    }
    ... on PythonError { message stack }
  }
}
"""


def _tags(entry: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in entry["tags"]}


def _dates_covered(runs: list[dict[str, Any]]) -> set[str]:
    """The dates the runs materialised: one partition each, or a range (backfill policy)."""
    dates: set[str] = set()
    for run in runs:
        tags = _tags(run)
        if "dagster/partition" in tags:
            dates.add(tags["dagster/partition"])
            continue
        first = dt.date.fromisoformat(tags["dagster/asset_partition_range_start"])
        last = dt.date.fromisoformat(tags["dagster/asset_partition_range_end"])
        dates.update(
            (first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)
        )
    return dates


def _runs(dev: DagsterDev, **run_filter: Any) -> list[dict[str, Any]]:
    result = dev.graphql(RUNS, {"filter": run_filter})["runsOrError"]
    assert result["__typename"] == "Runs", result
    return result["results"]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _assert_date_written(store: Path, date: str, conversation_ids: set[str]) -> None:
    document = _read_json(store / "conversations" / f"{date}.json")
    assert document["date"] == date
    assert {c["id"] for c in document["conversations"]} == conversation_ids
    assert all(c["processingStatus"] == "success" for c in document["conversations"])
    assert document["processedCount"] == len(conversation_ids)
    summary = _read_json(store / "summaries" / f"{date}.json")
    assert summary["processedCount"] == len(conversation_ids)
    assert summary["documentVersion"] == document["_blobMeta"]["version"]


@pytest.fixture
def production_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return home


def test_backfill_sensor_and_schedule_on_the_production_instance(
    postgres_database: PgConn, production_home: Path, tmp_path: Path
):
    store = tmp_path / "store"
    store.mkdir()
    _drop_upload(store, "incoming/backfill/export.csv", _conversations_csv(BACKFILL_DATES, "b"))
    env: dict[str, str | None] = {**postgres_database.dagster_env(), **convsync_env(store)}
    started = time.monotonic()
    with dagster_dev(
        production_home, env=env, target=("-m", MODULE), log_path=tmp_path / "dagster-dev.log"
    ) as dev:
        # --- the code location and its assets -------------------------------------------
        dev.wait_for_location(LOCATION, timeout=180)
        nodes = {
            "/".join(node["assetKey"]["path"]): node
            for node in dev.graphql(ASSET_NODES)["assetNodes"]
            if node["repository"]["location"]["name"] == LOCATION
        }
        for name in ASSETS:
            assert name in nodes, f"asset {name} missing; have {sorted(nodes)}"
            assert nodes[name]["isPartitioned"], name
            assert nodes[name]["partitionDefinition"]["type"] == "TIME_WINDOW", name

        # --- a backfill of three dates, exactly as the UI launches it ---------------------
        backfill_id = dev.launch_partition_backfill(
            {
                "assetSelection": [{"path": [name]} for name in ASSETS],
                "partitionNames": BACKFILL_DATES,
            }
        )
        backfill = dev.wait_for_backfill(backfill_id, timeout=360)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        runs = _runs(dev, tags=[{"key": "dagster/backfill", "value": backfill_id}])
        assert runs, "the backfill launched no runs"
        assert {run["status"] for run in runs} == {"SUCCESS"}, runs
        assert _dates_covered(runs) == set(BACKFILL_DATES), runs
        # BackfillPolicy.single_run(): the three dates are one run, tagged with the range.
        (backfill_run,) = runs
        assert "dagster/partition" not in _tags(backfill_run), backfill_run
        assert _tags(backfill_run)["dagster/asset_partition_range_start"] == BACKFILL_DATES[0]
        for date in BACKFILL_DATES:
            _assert_date_written(store, date, {f"b-{date}-0", f"b-{date}-1"})
        nodes = {
            "/".join(node["assetKey"]["path"]): node
            for node in dev.graphql(ASSET_NODES)["assetNodes"]
        }
        for name in ASSETS:
            assert nodes[name]["partitionStats"]["numMaterialized"] == len(BACKFILL_DATES)
            assert nodes[name]["partitionStats"]["numFailed"] == 0
        backfill_seconds = time.monotonic() - started

        # --- the sensor: test it, keep its cursor, start it, then a new upload -------------
        sensor = {
            "repositoryName": REPOSITORY,
            "repositoryLocationName": LOCATION,
            "sensorName": SENSOR,
        }
        dry = dev.graphql(SENSOR_DRY_RUN, {"selector": sensor, "cursor": None})["sensorDryRun"]
        assert dry["__typename"] == "DryRunInstigationTick", dry
        evaluation = dry["evaluationResult"]
        assert evaluation["error"] is None, evaluation["error"]
        # An ingest run per upload version, for the one upload there is; no date yet.
        requested = [_tags(r) for r in evaluation["runRequests"]]
        assert [t.get("convsync/upload") for t in requested] == ["incoming/backfill/export.csv"]
        assert "dagster/partition" not in requested[0], requested
        persisted = dev.graphql(
            SET_SENSOR_CURSOR, {"selector": sensor, "cursor": evaluation["cursor"]}
        )["setSensorCursor"]
        assert persisted["__typename"] == "Sensor", persisted
        # Dropped before the start, so the sensor's first tick sees it (ticks are 30 s apart).
        _drop_upload(store, "incoming/sensor/new.csv", _conversations_csv([SENSOR_DATE], "s"))
        start = dev.start_sensor(sensor)
        assert start["__typename"] == "Sensor", start
        assert start["sensorState"]["status"] == "RUNNING"
        sensor_filter = {"tags": [{"key": "dagster/sensor_name", "value": SENSOR}]}
        follow_filter = {
            "tags": [{"key": "dagster/sensor_name", "value": "ingested_upload_sensor"}]
        }

        def sensor_runs_finished() -> list[dict[str, Any]] | None:
            dev.check_alive()
            runs = _runs(dev, **sensor_filter) + _runs(dev, **follow_filter)
            finished = [r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}]
            done = len(finished) == len(runs)
            return runs if done and _runs(dev, **follow_filter) else None

        sensor_runs = wait_until(
            sensor_runs_finished,
            timeout=240,
            interval=2,
            what=f"the ingest run and the run for {SENSOR_DATE}",
            on_timeout=lambda: f"{_runs(dev, **sensor_filter)}\n{dev.log_tail()}",
        )
        # Exactly the new upload (the persisted cursor covers the backfilled one), then
        # exactly the date it contains.
        [ingest_run] = _runs(dev, **sensor_filter)
        assert _tags(ingest_run)["convsync/upload"] == "incoming/sensor/new.csv"
        date_runs = _runs(dev, **follow_filter)
        assert [_tags(r).get("dagster/partition") for r in date_runs] == [SENSOR_DATE]
        assert {r["status"] for r in sensor_runs} == {"SUCCESS"}, sensor_runs
        _assert_date_written(store, SENSOR_DATE, {f"s-{SENSOR_DATE}-0", f"s-{SENSOR_DATE}-1"})

        # --- the schedule: a tick shortly after midnight completes the previous day -------
        repository = dev.graphql(
            REPOSITORY_QUERY,
            {"selector": {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}},
        )["repositoryOrError"]
        assert repository["__typename"] == "Repository", repository
        assert SENSOR in {s["name"] for s in repository["sensors"]}
        schedules = {s["name"]: s for s in repository["schedules"]}
        assert schedules, "no schedule in the code location"
        schedule = schedules.get("convsync_daily_schedule") or next(iter(schedules.values()))
        # The UI's "test schedule" evaluates the first tick at or after the given time: the
        # one shortly after midnight that starts 2026-02-11 (UTC here) must ask for the 10th.
        tick = dt.datetime(2026, 2, 10, 23, 59, 59, tzinfo=dt.UTC)
        dry = dev.graphql(
            SCHEDULE_DRY_RUN,
            {
                "selector": {
                    "repositoryName": REPOSITORY,
                    "repositoryLocationName": LOCATION,
                    "scheduleName": schedule["name"],
                },
                "timestamp": tick.timestamp(),
            },
        )["scheduleDryRun"]
        assert dry["__typename"] == "DryRunInstigationTick", dry
        evaluation = dry["evaluationResult"]
        assert evaluation["error"] is None, evaluation["error"]
        [request] = evaluation["runRequests"]
        assert _tags(request)["dagster/partition"] == "2026-02-10"

    assert dev.exit_code == 0, f"dagster dev did not shut down cleanly:\n{dev.log_tail()}"

    # --- everything above was recorded in PostgreSQL ---------------------------------------
    with postgres_database.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
        statuses = dict(cursor.fetchall())
    connection.close()
    assert statuses == {"SUCCESS": len(runs) + len(sensor_runs)}, statuses
    print(
        f"\nproduction e2e: backfill of {len(BACKFILL_DATES)} dates done after "
        f"{backfill_seconds:.0f} s, everything after {time.monotonic() - started:.0f} s"
    )
