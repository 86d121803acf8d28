"""The partitioned job that materialises the four assets of one date (schedule, sensor).

Backfills from the UI target the assets, not this job: with the assets' backfill policy a
range of dates is one run (see partitions.py). `dagster job backfill -j convsync_daily` still
launches one run per date.
"""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

DAILY_JOB_NAME = "convsync_daily"

convsync_daily_job = define_asset_job(
    DAILY_JOB_NAME,
    selection=AssetSelection.groups("convsync"),
    description="Ingest, merge, analyse and summarise one date.",
)

ANALYSE_JOB_NAME = "convsync_analyse"

# What a finished OpenAI batch needs: its date's analysis (which folds it in) and summary.
convsync_analyse_job = define_asset_job(
    ANALYSE_JOB_NAME,
    selection=AssetSelection.assets("ai_analysis", "daily_summary"),
    description="Analyse one date (folding in its finished OpenAI batches) and summarise it.",
)
