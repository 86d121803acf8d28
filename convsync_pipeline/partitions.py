"""The one daily partitioning every asset shares: calendar days of CONVSYNC_TIMEZONE."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

from convsync_pipeline.settings import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """`end_offset=1` includes today, so today's uploads are processed as they arrive."""
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        timezone=settings.timezone,
        end_offset=1,
    )
