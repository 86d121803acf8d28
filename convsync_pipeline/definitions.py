"""`defs`: everything Dagster loads, built from the validated CONVSYNC_* settings.

A bad variable fails loading with one message naming it (`SettingsError`), and that message
is the first thing printed: Dagster would otherwise bury it under its loading traceback. The
settings give the definitions their shape (partitions, retry policy, kinds) and the resources
their defaults (`resources/`), which a run may override from the launchpad.
"""

from __future__ import annotations

import sys
import warnings
from types import TracebackType

from dagster import BetaWarning, Definitions, in_process_executor

from convsync_pipeline.assets.analysis import build_analysis_asset
from convsync_pipeline.assets.ingest import build_ingest_assets
from convsync_pipeline.assets.operations import build_operations_definitions
from convsync_pipeline.assets.summary import build_summary_asset
from convsync_pipeline.assets.upload_ingest import build_ingest_job
from convsync_pipeline.batch_sensor import build_batch_sensor
from convsync_pipeline.jobs import convsync_analyse_job, convsync_daily_job
from convsync_pipeline.resources import build_resources
from convsync_pipeline.schedules import build_daily_schedule
from convsync_pipeline.sensors import build_ingested_upload_sensor, build_upload_sensor
from convsync_pipeline.settings import Settings, SettingsError, load_settings

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
    ingest_job = build_ingest_job(settings)
    return Definitions(
        assets=[*build_assets(settings), *operations["assets"]],
        jobs=[convsync_daily_job, convsync_analyse_job, ingest_job, *operations["jobs"]],
        schedules=[build_daily_schedule(settings)],
        sensors=[
            build_upload_sensor(ingest_job),
            build_ingested_upload_sensor(settings, ingest_job),
            build_batch_sensor(settings),
        ],
        resources=build_resources(settings),
        executor=in_process_executor,
    )


def settings_or_say_why() -> Settings:
    """`load_settings()`, with a bad value said first, in one line, before Dagster's report.

    Where Dagster catches the error (`dg dev`, `dg check defs`, a code server) it still shows
    its traceback after this line and in the UI. Where nothing catches it (`dg launch`,
    `dagster asset materialize`) the process ends with exit code 1 and only this line: the
    traceback would show where Dagster imported us, not what to fix."""
    try:
        return load_settings()
    except SettingsError as error:
        print(f"convsync: error: {error}", file=sys.stderr, flush=True)
        previous = sys.excepthook

        def already_said(
            kind: type[BaseException], value: BaseException, trace: TracebackType | None
        ) -> None:
            if not _caused_by_settings(value):
                previous(kind, value, trace)

        sys.excepthook = already_said
        raise


def _caused_by_settings(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SettingsError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


defs = build_definitions(settings_or_say_why())
