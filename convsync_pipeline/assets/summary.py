"""`daily_summary`: `summaries/D.json` and numbers the UI can plot across partitions."""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from convsync_pipeline.assets.markdown import date_totals, table
from convsync_pipeline.assets.ranges import set_aside_locked
from convsync_pipeline.core.summary import DailySummary
from convsync_pipeline.partitions import BACKFILL_POLICY, daily_partitions
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.pipeline.summarise import write_daily_summary
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource, store_kind
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError

CHECK = "summary_matches_document"
CHECK_DESCRIPTION = (
    "summaries/D.json was computed from the date document's current version "
    "(its documentVersion); a stale one is rewritten by materialising daily_summary."
)


def build_summary_asset(settings: Settings):
    @asset(
        partitions_def=daily_partitions(settings),
        group_name="convsync",
        deps=["ai_analysis"],
        backfill_policy=BACKFILL_POLICY,
        check_specs=[AssetCheckSpec(CHECK, asset="daily_summary", description=CHECK_DESCRIPTION)],
        kinds={store_kind(settings.store)},
    )
    def daily_summary(
        context: AssetExecutionContext, blob_store: BlobStoreResource, blob_lock: BlobLockResource
    ) -> MaterializeResult:
        """Write each date's summary from one document version, and say which version.

        One date at a time, each under its own lock. A date locked by another run does not stop
        the others: their summaries are written, then the step fails naming the locked dates
        (rewriting a summary is idempotent, so the run's retry may redo every date).
        """
        store = blob_store.store_for_run(context.instance)
        versions: dict[str, tuple[int, int]] = {}  # date -> (summary's version, document's)
        locked: list[DateLockedError] = []
        for date in context.partition_keys:
            try:
                summary = write_daily_summary(store, blob_lock, date, context.run_id)
            except DateLockedError as error:
                set_aside_locked(context, error, locked)
                continue
            current = load_document(store, date).document.version
            versions[date] = (summary.documentVersion, current)
            context.add_asset_metadata(_metadata(summary), partition_key=date)
        if locked:
            raise Failure(
                "; ".join(str(error) for error in locked)
                + " (the run's other dates are summarised)",
                allow_retries=False,
            )
        return MaterializeResult(check_results=[_check(versions)])

    return daily_summary


def _metadata(summary: DailySummary) -> dict:
    """The date's totals by status (as `ai_analysis` records them), then what the summary says;
    the sentiment mix as JSON and in the table, never as a Python repr."""
    counts = summary.summary
    return date_totals(counts) | {
        "processed_count": summary.processedCount,
        "success_rate": summary.successRate if summary.successRate is not None else 0.0,
        "mean_sentiment": summary.meanSentimentScore or 0.0,
        "escalation_rate": summary.escalationRate or 0.0,
        "document_version": summary.documentVersion,
        "analysis_versions": MetadataValue.json(summary.analysisVersions),
        "mixed_versions": summary.mixedVersions,
        "awaiting_reanalysis": summary.awaitingReanalysis,
        "sentiment": MetadataValue.json(summary.sentiment),
        "top_topics": MetadataValue.md(
            table(["topic", "conversations"], [[t.topic, t.count] for t in summary.topTopics])
            if summary.topTopics
            else "No analysed conversation names a topic."
        ),
        "summary": MetadataValue.md(
            table(
                ["measure", "value"],
                [
                    ["conversations", counts.total],
                    ["analysed", counts.success],
                    ["failed", counts.failed],
                    ["pending", counts.pending],
                    ["processing", counts.processing],
                    ["sentiment", summary.sentiment],
                    ["top topics", [t.topic for t in summary.topTopics[:5]] or "-"],
                    ["escalations", summary.escalations],
                    ["messages / conversation", summary.messagesPerConversation.mean],
                ],
            )
        ),
    }


def _check(versions: dict[str, tuple[int, int]]) -> AssetCheckResult:
    """One date: as it always was. A range: one evaluation for all its dates (Dagster 1.13
    records one per check and run), the dates whose summary is stale named."""
    if len(versions) == 1:
        ((summary_version, document_version),) = versions.values()
        return AssetCheckResult(
            check_name=CHECK,
            passed=summary_version == document_version,
            metadata={"summary_version": summary_version, "document_version": document_version},
        )
    stale = {date: pair for date, pair in sorted(versions.items()) if pair[0] != pair[1]}
    return AssetCheckResult(
        check_name=CHECK,
        passed=not stale,
        metadata={
            "dates": len(versions),
            "first_date": min(versions),
            "last_date": max(versions),
            "stale_dates": MetadataValue.json(list(stale)),
            "stale": MetadataValue.md(
                table(
                    ["date", "summary version", "document version"],
                    [[d, *p] for d, p in stale.items()],
                )
            )
            if stale
            else "none",
        },
    )
