"""The partitioned job that materialises the four assets of one date."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

DAILY_JOB_NAME = "convsync_daily"

convsync_daily_job = define_asset_job(
    DAILY_JOB_NAME,
    selection=AssetSelection.groups("convsync"),
    description="Ingest, merge, analyse and summarise one date.",
)
