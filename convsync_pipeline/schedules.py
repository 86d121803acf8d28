"""The daily schedule: complete the previous day shortly after midnight in CONVSYNC_TIMEZONE.

With `end_offset=1` `build_schedule_from_partitioned_job` would request today, so the key is
computed here from the tick's own time.
"""


import datetime as dt

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from convsync_pipeline.jobs import convsync_daily_job
from convsync_pipeline.settings import Settings


def previous_day(moment: dt.datetime, settings: Settings) -> str:
    local = moment.astimezone(settings.tz) if moment.tzinfo else moment.replace(tzinfo=settings.tz)
    return (local.date() - dt.timedelta(days=1)).isoformat()


def build_daily_schedule(settings: Settings):
    @schedule(
        name="convsync_daily_schedule",
        cron_schedule="15 0 * * *",
        job=convsync_daily_job,
        execution_timezone=settings.timezone,
    )
    def convsync_daily_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        moment = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        date = previous_day(moment, settings)
        if not settings.reanalyse_on_version_change:
            return RunRequest(run_key=f"scheduled:{date}", partition_key=date)
        # CONVSYNC_REANALYSE_ON_VERSION_CHANGE: the day's answers of another analysis version
        # are made due again by the same run (exactly once per version, as any re-analysis).
        return RunRequest(
            run_key=f"scheduled:{date}",
            partition_key=date,
            run_config={"ops": {"ai_analysis": {"config": {"reanalyse": True}}}},
            tags={"convsync/reanalyse": "on-version-change"},
        )

    return convsync_daily_schedule
