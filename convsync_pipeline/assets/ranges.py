"""Runs over a range of dates (backfill policy): which dates a try of a step works on.

Every partitioned asset carries `BackfillPolicy.single_run()`, so a backfill of a range is one
run whose steps loop over `context.partition_keys`, one date (and one date lock) at a time. A
run of one date — sensor, schedule, UI, CLI — is a range of one and behaves as before.

A step retry (the assets' `RetryPolicy`) starts the step again from scratch. In a range run
only the dates that asked for it must be worked on again: a date finished by an earlier try
is left alone (not even locked), so a retry costs nothing for it and the per-run bounds
(`CONVSYNC_BATCH_SIZE`) hold per date as in a run of that date alone. Before raising for a
retry, a try records the dates the next try must redo in a run tag (`convsync/<asset>.retry`,
with the run id and the try number, so a stale value — an older try, or a tag copied into a
re-executed run — is never taken for a fresh one). Without a valid tag a try redoes every
date, which is always safe: every step is idempotent per date.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dagster import AssetExecutionContext, Failure

from convsync_pipeline.store.base import DateLockedError

EARLIER_TRY = "finished in an earlier try of this run; its numbers are in that try's log"


def _tag(asset: str) -> str:
    return f"convsync/{asset}.retry"


def dates_for_this_try(context: AssetExecutionContext, asset: str) -> list[str]:
    """The run's dates this try works on: all of them, except on a retry of a range run."""
    dates = list(context.partition_keys)
    if len(dates) == 1 or context.retry_number == 0:
        return dates
    run = context.instance.get_run_by_id(context.run_id)
    raw = run.tags.get(_tag(asset)) if run is not None else None
    try:
        recorded = json.loads(raw) if raw else None
        if recorded["run"] != context.run_id or recorded["try"] != context.retry_number:
            return dates
        wanted = set(recorded["dates"])
    except (TypeError, KeyError, ValueError):
        return dates
    return [date for date in dates if date in wanted]


def remember_for_retry(context: AssetExecutionContext, asset: str, dates: Sequence[str]) -> None:
    """Call just before raising for a step retry: the next try redoes only `dates`."""
    if not is_range(context):
        return  # a one-date run redoes its date anyway; leave its tags as they always were
    value = {"run": context.run_id, "try": context.retry_number + 1, "dates": sorted(dates)}
    context.instance.add_run_tags(context.run_id, {_tag(asset): json.dumps(value)})


def note_finished_earlier(context: AssetExecutionContext, dates: Sequence[str]) -> None:
    """Metadata for the dates a retry left alone (their first numbers died with that try)."""
    for date in dates:
        context.add_asset_metadata({"this_try": EARLIER_TRY}, partition_key=date)


def is_range(context: AssetExecutionContext) -> bool:
    return len(context.partition_keys) > 1


def set_aside_locked(
    context: AssetExecutionContext, error: DateLockedError, locked: list[DateLockedError]
) -> None:
    """A date another run holds: a run of that one date fails at once, naming the holder (no
    step retry: the run's own retries take it again); a range logs it, sets it aside in
    `locked` and goes on with its other dates."""
    if not is_range(context):
        raise Failure(str(error), allow_retries=False) from None
    context.log.warning(f"{error.date}: {error}")
    locked.append(error)
