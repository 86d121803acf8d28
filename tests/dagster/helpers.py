"""Running the real assets of one date with `dagster.materialize` against a test store."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, materialize

from convsync_pipeline.definitions import build_assets
from convsync_pipeline.resources.convsync import ConvsyncResource
from convsync_pipeline.settings import Settings, load_settings


def settings_for(env: dict[str, str], **extra: str) -> Settings:
    return load_settings({"CONVSYNC_START_DATE": "2026-01-01", **env, **extra})


def run_date(settings: Settings, date: str, instance: DagsterInstance | None = None) -> Any:
    """Materialise the four assets of `date`, exactly as a run of the daily job does."""
    return materialize(
        build_assets(settings),
        partition_key=date,
        resources={"convsync": ConvsyncResource.from_settings(settings)},
        instance=instance,
        raise_on_error=False,
    )


CSV_HEADER = "conversation_id,timestamp,role,content\n"


def csv_upload(*rows: tuple[str, str, str, str]) -> bytes:
    lines = [",".join(f'"{cell}"' for cell in row) for row in rows]
    return (CSV_HEADER + "\n".join(lines) + "\n").encode()
