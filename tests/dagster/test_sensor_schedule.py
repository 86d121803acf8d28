"""`new_upload_sensor`, the ingest run, `ingested_upload_sensor` and the daily schedule,
evaluated the way Dagster's daemon does."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    build_run_status_sensor_context,
    build_schedule_context,
    instance_for_test,
)

from convsync_pipeline import sensors
from convsync_pipeline.assets.upload_ingest import ingest_run_request
from convsync_pipeline.core.keys import upload_id
from convsync_pipeline.definitions import build_definitions
from convsync_pipeline.pipeline.ingest import UploadReport
from convsync_pipeline.resources import build_resources
from convsync_pipeline.store.local import Digests, LocalStore
from tests.dagster.helpers import csv_upload, run_date, sensor_ticker, settings_for

ROWS_11_12 = (
    ("a", "2026-02-11T10:00:00Z", "user", "hi"),
    ("b", "2026-02-12T10:00:00Z", "user", "hello"),
)


@pytest.fixture
def sensor_env(store_factory):
    store = store_factory()
    settings = settings_for(store_factory.env(store))
    tick = sensor_ticker(settings)
    return store, tick


def _uploads(requests) -> list[str]:
    return [r.run_config["ops"]["ingest_upload"]["config"]["upload"] for r in requests]


def test_requests_one_ingest_run_per_new_upload_version_once(sensor_env):
    store, tick = sensor_env
    store.write("incoming/x/first.csv", csv_upload(*ROWS_11_12))
    (request,), cursor = tick(None)
    [info] = store.list("incoming/x/first.csv")
    # One run per upload version, told apart by the listing alone (no read of the upload).
    assert request.run_key == upload_id(info.key, info.listed_version)
    assert request.run_config == {"ops": {"ingest_upload": {"config": {
        "upload": "incoming/x/first.csv"}}}}
    assert request.tags["convsync/upload"] == "incoming/x/first.csv"
    assert request.partition_key is None  # the dates are the run's to find

    again, cursor = tick(cursor)
    assert again == [], "an upload is requested once"

    store.write(
        "incoming/a-earlier-key.csv", csv_upload(("c", "2026-02-13T01:00:00Z", "user", "x"))
    )
    store.write("incoming/z/last.csv", csv_upload(("d", "2026-02-11T05:00:00Z", "user", "y")))
    newer, cursor = tick(cursor)
    assert sorted(_uploads(newer)) == ["incoming/a-earlier-key.csv", "incoming/z/last.csv"]
    assert tick(cursor)[0] == []

    store.write("incoming/x/first.csv", csv_upload(("e", "2026-02-14T05:00:00Z", "user", "z")))
    (replaced,), cursor = tick(cursor)  # new bytes under an old key: a new upload version
    assert _uploads([replaced]) == ["incoming/x/first.csv"]
    assert replaced.run_key != request.run_key


def test_the_upload_sensor_targets_the_ingest_job_and_the_run_sensor_the_daily_job(tmp_path):
    definitions = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path)}))
    assert definitions.resolve_sensor_def("new_upload_sensor").job_name == "convsync_ingest"
    follow = definitions.resolve_sensor_def("ingested_upload_sensor")
    assert [target.job_name for target in follow.targets] == ["convsync_daily"]
    assert follow.default_status.value == "RUNNING"
    ingest = definitions.resolve_job_def("convsync_ingest")
    assert ingest.tags["convsync/ingest"] == "true"  # dagster.yaml: two ingest runs at a time
    [node] = ingest.graph.node_defs
    assert node.retry_policy is not None and node.retry_policy.max_retries == 3
    assert set(node.required_resource_keys) == {"blob_store"}


def test_many_same_second_arrivals_are_each_requested_once(sensor_env):
    store, tick = sensor_env
    for n in range(40):
        store.write(
            f"incoming/burst/{n:03d}.csv",
            csv_upload((f"c{n}", "2026-02-11T10:00:00Z", "user", "x")),
        )
    requests, cursor = tick(None)
    assert len(requests) == 40
    assert len({r.run_key for r in requests}) == 40
    store.write("incoming/burst/late.csv", csv_upload(("z", "2026-02-11T10:00:00Z", "user", "x")))
    requests, cursor = tick(cursor)
    assert [r.tags["convsync/upload"] for r in requests] == ["incoming/burst/late.csv"]


def test_non_uploads_are_not_requested(sensor_env):
    store, tick = sensor_env
    store.write("incoming/readme.txt", b"not an upload")
    store.write("incoming/notes.csv.zip", b"not an upload either")
    requests, _ = tick(None)
    assert requests == []


def test_a_tick_never_reads_an_upload_even_a_1_gb_one(tmp_path, monkeypatch):
    """The sensor lists and requests; the body is the ingest run's to read."""
    store_root = tmp_path / "store"
    big = store_root / "incoming" / "2026-02-11" / "huge.csv"
    big.parent.mkdir(parents=True)
    with big.open("wb") as handle:  # 1 GB, sparse: nothing of it is ever read here
        handle.truncate(2**30)
    settings = settings_for({"CONVSYNC_STORE": str(store_root)})
    tick = sensor_ticker(settings)

    def no_reading(self, key, *args, **kwargs):
        raise AssertionError(f"the sensor read {key}")

    for name in ("read", "read_versioned", "open_versioned"):
        monkeypatch.setattr(LocalStore, name, no_reading)
    for name in ("of_handle", "of_data", "of_path"):  # a content digest takes a read
        monkeypatch.setattr(Digests, name, no_reading)
    (request,), cursor = tick(None)
    assert request.tags["convsync/upload"] == "incoming/2026-02-11/huge.csv"
    assert tick(cursor)[0] == []


def _ingest_run(settings, instance, upload: str, etag: str | None):
    """A run of the ingest job; without `etag` as new_upload_sensor requests it."""
    definitions = build_definitions(settings)
    job = definitions.resolve_job_def("convsync_ingest")
    config = {"upload": upload} if etag is None else {"upload": upload, "etag": etag}
    return job.execute_in_process(
        run_config={"ops": {"ingest_upload": {"config": config}}},
        resources=build_resources(settings),
        instance=instance,
    )


def _after_success(settings, instance, result):
    """`ingested_upload_sensor` evaluated for the ingest run's success event."""
    sensor = build_definitions(settings).resolve_sensor_def("ingested_upload_sensor")
    [event] = [
        e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS
    ]
    with build_run_status_sensor_context(
        sensor_name="ingested_upload_sensor",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources=build_resources(settings),
    ) as context:
        return sensor(context) or []


def test_an_ingest_run_stages_the_upload_and_its_dates_runs_follow(store_factory):
    store = store_factory()
    settings = settings_for(store_factory.env(store))
    rows = (*ROWS_11_12, ("old", "2020-01-01T10:00:00Z", "user", "before the partitions"))
    store.write("incoming/x/first.csv", csv_upload(*rows, ("", "bad", "user", "no id")))
    [info] = store.list("incoming/x/first.csv")
    with instance_for_test() as instance:
        result = _ingest_run(settings, instance, info.key, None)  # as the sensor asks
        assert result.success
        [materialized] = [
            e for e in result.all_events if e.event_type == DagsterEventType.STEP_OUTPUT
        ]
        metadata = {k: v.value for k, v in materialized.step_output_data.metadata.items()}
        assert metadata["status"] == "ingested"
        assert (metadata["records_in"], metadata["records_accepted"],
                metadata["records_quarantined"]) == (4, 3, 1)
        assert metadata["date_count"] == 3 and metadata["bytes"] == info.size
        assert metadata["peak_memory_mb"] > 0 and metadata["seconds"] >= 0
        requests = _after_success(settings, instance, result)
        uid = upload_id(info.key, info.etag)
        assert [(r.partition_key, r.run_key) for r in requests] == [
            ("2026-02-11", f"{uid}:2026-02-11"), ("2026-02-12", f"{uid}:2026-02-12"),
        ]  # 2020-01-01 is outside the partitions: not requested
        assert all(r.job_name in (None, "convsync_daily") for r in requests)

        again = _ingest_run(settings, instance, info.key, info.etag)  # one version, again
        [output] = [e for e in again.all_events if e.event_type == DagsterEventType.STEP_OUTPUT]
        assert output.step_output_data.metadata["status"].value == "already ingested"
        assert [r.run_key for r in _after_success(settings, instance, again)] == [
            r.run_key for r in requests
        ]  # the same keys: the daemon starts none of them twice
    assert len(list(store.list("quarantine/"))) == 1


@pytest.mark.parametrize(
    ("timezone", "tick_time", "expected"),
    [
        ("UTC", dt.datetime(2026, 2, 12, 0, 15, tzinfo=dt.UTC), "2026-02-11"),
        (
            "America/New_York",
            dt.datetime(2026, 2, 12, 0, 15, tzinfo=ZoneInfo("America/New_York")),
            "2026-02-11",
        ),
        ("Asia/Tokyo", dt.datetime(2026, 3, 1, 0, 15, tzinfo=ZoneInfo("Asia/Tokyo")), "2026-02-28"),
    ],
)
def test_schedule_requests_the_previous_day(tmp_path, timezone, tick_time, expected):
    settings = settings_for({"CONVSYNC_STORE": str(tmp_path), "CONVSYNC_TIMEZONE": timezone})
    definitions = build_definitions(settings)
    schedule = definitions.resolve_schedule_def("convsync_daily_schedule")
    assert schedule.execution_timezone == timezone
    context = build_schedule_context(
        scheduled_execution_time=tick_time, repository_def=definitions.get_repository_def()
    )
    request = schedule.evaluate_tick(context)
    (run,) = request.run_requests
    assert run.partition_key == expected


def test_a_bomb_ends_its_ingest_run_green_counted_and_requests_no_date(store_factory):
    store = store_factory()
    settings = settings_for(store_factory.env(store), CONVSYNC_MAX_INFLATE_RATIO="10")
    line = b'{"conversation_id": "b", "timestamp": "2026-02-11T10:00:00Z"}\n'
    store.write("incoming/x/bomb.jsonl.gz", gzip.compress(line * 100_000, 9) * 20)
    [info] = store.list("incoming/x/bomb.jsonl.gz")
    with instance_for_test() as instance:
        result = _ingest_run(settings, instance, info.key, info.etag)
        assert result.success  # the upload's content never fails the run
        [output] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_OUTPUT]
        metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
        assert (metadata["records_in"], metadata["records_accepted"],
                metadata["records_quarantined"], metadata["date_count"]) == (1, 0, 1, 0)
        assert _after_success(settings, instance, result) == []
    assert list(store.list("staging/")) == []
    [quarantined] = store.list("quarantine/")
    assert b"decompression bomb" in (store.read(quarantined.key) or b"")


def test_a_daily_run_leaves_an_upload_to_its_running_ingest_run(tmp_path):
    """Backfills and the schedule still ingest what is not ingested yet, except an upload
    whose ingest run is queued or running: that run ingests it, and its dates follow."""
    settings = settings_for({"CONVSYNC_STORE": str(tmp_path)})
    store = LocalStore(tmp_path)
    store.write("incoming/x/queued.csv", csv_upload(("q", "2026-02-11T10:00:00Z", "user", "a")))
    store.write("incoming/x/plain.csv", csv_upload(("p", "2026-02-11T11:00:00Z", "user", "b")))
    [queued] = store.list("incoming/x/queued.csv")
    ingest_job = build_definitions(settings).resolve_job_def("convsync_ingest")
    with instance_for_test() as instance:
        request = ingest_run_request(queued)
        instance.create_run_for_job(
            ingest_job,
            run_config=request.run_config,
            tags={**ingest_job.tags, **request.tags},
            status=DagsterRunStatus.STARTED,
        )
        assert run_date(settings, "2026-02-11", instance=instance).success
    [indexed] = [
        UploadReport.from_json(store.read(i.key) or b"") for i in store.list("state/uploads/")
    ]
    assert indexed.upload == "incoming/x/plain.csv"
    document = json.loads(store.read("conversations/2026-02-11.json") or b"")
    assert [c["id"] for c in document["conversations"]] == ["p"]


def test_a_large_backlog_is_requested_over_several_ticks_each_upload_once(
    sensor_env, monkeypatch
):
    store, tick = sensor_env
    monkeypatch.setattr(sensors, "REQUESTS_PER_TICK", 3)
    keys = [f"incoming/backlog/{n:02d}.csv" for n in range(8)]
    for key in keys:
        store.write(key, csv_upload(("c", "2026-02-11T10:00:00Z", "user", key)))
    requested, cursor, sizes = [], None, []
    for _ in range(6):
        requests, cursor = tick(cursor)
        sizes.append(len(requests))
        requested += _uploads(requests)
    assert sizes == [3, 3, 2, 0, 0, 0]
    assert sorted(requested) == keys
