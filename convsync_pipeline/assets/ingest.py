"""`raw_conversations` and `normalized_conversations`: uploads in, date document merged."""

from dagster import (
    AssetExecutionContext,
    Backoff,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from convsync_pipeline.assets.markdown import table
from convsync_pipeline.assets.ranges import (
    dates_for_this_try,
    is_range,
    note_finished_earlier,
    remember_for_retry,
    set_aside_locked,
)
from convsync_pipeline.assets.upload_ingest import uploads_being_ingested
from convsync_pipeline.core.keys import staging_prefix
from convsync_pipeline.partitions import BACKFILL_POLICY, daily_partitions
from convsync_pipeline.pipeline.ingest import ingest_new_uploads
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource, store_kind
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError

LOCK_RETRIES = 6


class DatesLockedError(Exception):
    """Some dates of a range run are locked by other runs; the step retries those dates."""


def build_ingest_assets(settings: Settings) -> list:
    partitions = daily_partitions(settings)
    kinds = {store_kind(settings.store)}

    @asset(
        partitions_def=partitions,
        group_name="convsync",
        backfill_policy=BACKFILL_POLICY,
        kinds=kinds,
    )
    def raw_conversations(
        context: AssetExecutionContext, blob_store: BlobStoreResource
    ) -> MaterializeResult:
        """Parse every upload not ingested yet (once in total, whatever the run's dates), stage
        its conversations by date; each date of the run records what is staged for it.

        Uploads an ingest run (`convsync_ingest`) is working on are left to it: their dates
        get runs of their own when it succeeds."""
        store = blob_store.store_for_run(context.instance)
        in_flight = uploads_being_ingested(context.instance)
        reports = list(ingest_new_uploads(store, settings, skip=in_flight))
        if in_flight:
            context.log.info(f"{len(in_flight)} uploads left to their ingest runs")
        for date in context.partition_keys:
            staged_for_date = sum(1 for _ in store.list(staging_prefix(date)))
            context.add_asset_metadata(
                {"uploads_staged_for_date": staged_for_date}, partition_key=date
            )
        for report in reports:
            context.log.info(
                f"ingested {report.upload}: {report.records_in} records in, {report.accepted} "
                f"accepted, {report.quarantined} quarantined, dates {report.dates}"
            )
        return MaterializeResult(
            metadata={
                "uploads_ingested": len(reports),
                "records_in": sum(r.records_in for r in reports),
                "records_accepted": sum(r.accepted for r in reports),
                "records_quarantined": sum(r.quarantined for r in reports),
                "uploads": MetadataValue.md(
                    table(
                        ["upload", "records in", "accepted", "quarantined", "dates"],
                        (
                            [r.upload, r.records_in, r.accepted, r.quarantined, ", ".join(r.dates)]
                            for r in reports
                        ),
                    )
                ),
            }
        )

    @asset(
        partitions_def=partitions,
        group_name="convsync",
        deps=[raw_conversations],
        backfill_policy=BACKFILL_POLICY,
        kinds=kinds,
        # Only store and lock trouble raise here; wait for a running analysis with backoff.
        retry_policy=RetryPolicy(
            max_retries=LOCK_RETRIES, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
        ),
    )
    def normalized_conversations(
        context: AssetExecutionContext, blob_store: BlobStoreResource, blob_lock: BlobLockResource
    ) -> MaterializeResult:
        """Merge each date's staged conversations into `conversations/D.json` (new ids only).

        One date at a time, each under its own lock. A date locked by another run does not stop
        the others: they are merged, then the step raises for a retry of the locked dates only.
        """
        store = blob_store.store_for_run(context.instance)
        dates = dates_for_this_try(context, "normalized_conversations")
        note_finished_earlier(context, [d for d in context.partition_keys if d not in dates])
        locked: list[DateLockedError] = []
        for date in dates:
            try:
                report = merge_date(store, blob_lock, date, context.run_id)
            except DateLockedError as error:
                if not is_range(context) and context.retry_number < LOCK_RETRIES:
                    raise  # the step's RetryPolicy waits for the holder
                set_aside_locked(context, error, locked)
                continue
            context.log.info(
                f"{date}: {report.added} new conversations, "
                f"{report.already_present} already present"
            )
            context.add_asset_metadata(
                {
                    "new_conversations": report.added,
                    "already_present": report.already_present,
                    "total_conversations": report.total,
                    "document_version": report.version,
                    "document_written": report.wrote,
                    "uploads_merged": MetadataValue.json(report.uploads_merged),
                },
                partition_key=date,
            )
        if locked:
            message = "; ".join(str(error) for error in locked)
            if context.retry_number >= LOCK_RETRIES:
                raise Failure(message, allow_retries=False)
            remember_for_retry(context, "normalized_conversations", [e.date for e in locked])
            raise DatesLockedError(f"{message} (the run's other dates are merged)")
        return MaterializeResult()

    return [raw_conversations, normalized_conversations]
