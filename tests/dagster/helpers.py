"""Running the real assets of one date (or a range) with `dagster.materialize`."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, materialize

from convsync_pipeline.definitions import build_assets
from convsync_pipeline.resources import build_resources
from convsync_pipeline.settings import Settings, load_settings


def settings_for(env: dict[str, str], **extra: str) -> Settings:
    return load_settings({"CONVSYNC_START_DATE": "2026-01-01", **env, **extra})


def run_date(settings: Settings, date: str, instance: DagsterInstance | None = None) -> Any:
    """Materialise the four assets of `date`, exactly as a run of the daily job does."""
    return materialize(
        build_assets(settings),
        partition_key=date,
        resources=build_resources(settings),
        instance=instance,
        raise_on_error=False,
    )


def run_range(
    settings: Settings,
    first: str,
    last: str,
    instance: DagsterInstance | None = None,
    selection: list[str] | None = None,
) -> Any:
    """Materialise the assets over `first`..`last` in one run, as a backfill with the assets'
    `BackfillPolicy.single_run()` does: the run carries the range tags, not a partition."""
    return materialize(
        build_assets(settings),
        resources=build_resources(settings),
        instance=instance,
        raise_on_error=False,
        selection=selection,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )


CSV_HEADER = "conversation_id,timestamp,role,content\n"


def csv_upload(*rows: tuple[str, str, str, str]) -> bytes:
    lines = [",".join(f'"{cell}"' for cell in row) for row in rows]
    return (CSV_HEADER + "\n".join(lines) + "\n").encode()


def sensor_ticker(settings: Settings):
    """Evaluate `new_upload_sensor` as the daemon does: tick(cursor) -> (run requests, cursor)."""
    from dagster import SensorResult, build_sensor_context

    from convsync_pipeline.definitions import build_definitions

    sensor = build_definitions(settings).resolve_sensor_def("new_upload_sensor")
    resources = build_resources(settings)
    instance = DagsterInstance.ephemeral()

    def tick(cursor: str | None) -> tuple[list, str | None]:
        with build_sensor_context(cursor=cursor, resources=resources, instance=instance) as context:
            result = sensor(context)
        if isinstance(result, SensorResult):
            return list(result.run_requests), result.cursor
        return [], cursor

    return tick
