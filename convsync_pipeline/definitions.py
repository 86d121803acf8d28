"""`defs`: everything Dagster loads, built from the validated CONVSYNC_* settings.

A bad variable fails loading with one message naming it (`SettingsError`). The settings give
the definitions their shape (partitions, retry policy, kinds) and the resources their
defaults (`resources/`), which a run may override from the launchpad.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from convsync_pipeline.assets.analysis import build_analysis_asset
from convsync_pipeline.assets.ingest import build_ingest_assets
from convsync_pipeline.assets.operations import build_operations_definitions
from convsync_pipeline.assets.summary import build_summary_asset
from convsync_pipeline.assets.upload_ingest import build_ingest_job
from convsync_pipeline.jobs import convsync_daily_job
from convsync_pipeline.resources import build_resources
from convsync_pipeline.schedules import build_daily_schedule
from convsync_pipeline.sensors import build_ingested_upload_sensor, build_upload_sensor
from convsync_pipeline.settings import Settings, load_settings


def build_assets(settings: Settings) -> list:
    return [
        *build_ingest_assets(settings),
        build_analysis_asset(settings),
        build_summary_asset(settings),
    ]


def build_definitions(settings: Settings) -> Definitions:
    """The four steps run in one process: they are sequential, and a process per step costs
    ~1.5 s each (NOTES), far more than the work of a typical day."""
    operations = build_operations_definitions(settings)
    ingest_job = build_ingest_job(settings)
    return Definitions(
        assets=[*build_assets(settings), *operations["assets"]],
        jobs=[convsync_daily_job, ingest_job, *operations["jobs"]],
        schedules=[build_daily_schedule(settings)],
        sensors=[
            build_upload_sensor(ingest_job),
            build_ingested_upload_sensor(settings, ingest_job),
        ],
        resources=build_resources(settings),
        executor=in_process_executor,
    )


defs = build_definitions(load_settings())
