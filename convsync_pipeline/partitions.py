"""The one daily partitioning every asset shares: calendar days of CONVSYNC_TIMEZONE."""

from __future__ import annotations

import warnings

from dagster import BackfillPolicy, BetaWarning, DailyPartitionsDefinition

from convsync_pipeline.settings import Settings

# A backfill of a date range is one run (one process, one start-up) instead of one run per
# date: every asset loops over `context.partition_keys`, taking each date's lock one date at a
# time (assets/ranges.py). Runs of one date (sensor, schedule, UI, CLI) are unchanged: their
# `partition_keys` is `[date]`. Range runs are tagged `dagster/asset_partition_range_start`,
# not `dagster/partition`: dagster.yaml limits both tags (see there).
BACKFILL_POLICY = BackfillPolicy.single_run()
# Known and pinned (dagster==1.13.27): say it once here rather than four times per code load.
warnings.filterwarnings(
    "ignore", message="Parameter `backfill_policy` of function `asset`", category=BetaWarning
)


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """`end_offset=1` includes today, so today's uploads are processed as they arrive."""
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        timezone=settings.timezone,
        end_offset=1,
    )
