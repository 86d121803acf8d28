"""`defs`: everything Dagster loads, built from the validated CONVSYNC_* settings.

A bad variable fails loading with one message naming it (`SettingsError`).
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, in_process_executor

from convsync_pipeline.assets.analysis import build_analysis_asset
from convsync_pipeline.assets.ingest import build_ingest_assets
from convsync_pipeline.assets.operations import build_operations_definitions
from convsync_pipeline.assets.summary import build_summary_asset
from convsync_pipeline.jobs import convsync_daily_job
from convsync_pipeline.resources.convsync import ConvsyncResource
from convsync_pipeline.schedules import build_daily_schedule
from convsync_pipeline.sensors import build_upload_sensor
from convsync_pipeline.settings import Settings, load_settings

# `dg launch --assets '*'` (or `group:…`) is how README launches a date; with dagster==1.13.27
# each such selection prints a BetaWarning about a parameter Dagster passes itself.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `include_sources` of function `AssetSelection\.",
    category=BetaWarning,
)


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
    return Definitions(
        assets=[*build_assets(settings), *operations["assets"]],
        jobs=[convsync_daily_job, *operations["jobs"]],
        schedules=[build_daily_schedule(settings)],
        sensors=[build_upload_sensor(settings)],
        resources={"convsync": ConvsyncResource.from_settings(settings)},
        executor=in_process_executor,
    )


defs = build_definitions(load_settings())
