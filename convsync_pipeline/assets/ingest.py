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
from convsync_pipeline.core.keys import staging_prefix
from convsync_pipeline.partitions import daily_partitions
from convsync_pipeline.pipeline.ingest import ingest_new_uploads
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.resources.convsync import ConvsyncResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError


def build_ingest_assets(settings: Settings) -> list:
    partitions = daily_partitions(settings)

    @asset(partitions_def=partitions, group_name="convsync")
    def raw_conversations(
        context: AssetExecutionContext, convsync: ConvsyncResource
    ) -> MaterializeResult:
        """Parse every upload not ingested yet (once in total), stage its conversations by date."""
        date = context.partition_key
        store = convsync.store_for_run(context.instance)
        reports = list(ingest_new_uploads(store, convsync.settings()))
        staged_for_date = sum(1 for _ in store.list(staging_prefix(date)))
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
                "uploads_staged_for_date": staged_for_date,
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
        # Only store and lock trouble raise here; wait for a running analysis with backoff.
        retry_policy=RetryPolicy(
            max_retries=6, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
        ),
    )
    def normalized_conversations(
        context: AssetExecutionContext, convsync: ConvsyncResource
    ) -> MaterializeResult:
        """Merge the date's staged conversations into `conversations/D.json` (new ids only)."""
        date = context.partition_key
        try:
            report = merge_date(
                convsync.store_for_run(context.instance), convsync.settings(), date, context.run_id
            )
        except DateLockedError as error:
            if context.retry_number >= 6:
                raise Failure(str(error), allow_retries=False) from None
            raise
        context.log.info(
            f"{date}: {report.added} new conversations, {report.already_present} already present"
        )
        return MaterializeResult(
            metadata={
                "new_conversations": report.added,
                "already_present": report.already_present,
                "total_conversations": report.total,
                "document_version": report.version,
                "document_written": report.wrote,
                "uploads_merged": MetadataValue.json(report.uploads_merged),
            }
        )

    return [raw_conversations, normalized_conversations]
