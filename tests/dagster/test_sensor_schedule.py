"""`new_upload_sensor` and the daily schedule, evaluated the way Dagster's daemon does."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from dagster import build_schedule_context

from convsync_pipeline.definitions import build_definitions
from tests.dagster.helpers import csv_upload, sensor_ticker, settings_for

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


def test_requests_exactly_the_dates_each_new_upload_contains_once(sensor_env):
    store, tick = sensor_env
    store.write("incoming/x/first.csv", csv_upload(*ROWS_11_12))
    requests, cursor = tick(None)
    assert sorted(r.partition_key for r in requests) == ["2026-02-11", "2026-02-12"]
    assert len({r.run_key for r in requests}) == 2

    again, cursor = tick(cursor)
    assert again == [], "an upload is requested once"

    store.write(
        "incoming/a-earlier-key.csv", csv_upload(("c", "2026-02-13T01:00:00Z", "user", "x"))
    )
    store.write("incoming/z/last.csv", csv_upload(("d", "2026-02-11T05:00:00Z", "user", "y")))
    newer, cursor = tick(cursor)
    assert sorted(r.partition_key for r in newer) == ["2026-02-11", "2026-02-13"]
    assert {r.tags["convsync/upload"] for r in newer} == {
        "incoming/a-earlier-key.csv",
        "incoming/z/last.csv",
    }
    assert tick(cursor)[0] == []


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


def test_non_uploads_and_dates_outside_the_partitions_are_not_requested(sensor_env):
    store, tick = sensor_env
    store.write("incoming/readme.txt", b"not an upload")
    store.write("incoming/old.csv", csv_upload(("o", "2020-01-01T10:00:00Z", "user", "x")))
    requests, _ = tick(None)
    assert requests == []


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
