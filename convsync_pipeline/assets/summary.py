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

from convsync_pipeline.assets.markdown import table
from convsync_pipeline.partitions import daily_partitions
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.pipeline.summarise import write_daily_summary
from convsync_pipeline.resources.convsync import ConvsyncResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError


def build_summary_asset(settings: Settings):
    @asset(
        partitions_def=daily_partitions(settings),
        group_name="convsync",
        deps=["ai_analysis"],
        check_specs=[AssetCheckSpec("summary_matches_document", asset="daily_summary")],
    )
    def daily_summary(
        context: AssetExecutionContext, convsync: ConvsyncResource
    ) -> MaterializeResult:
        """Write the day's summary from one document version, and say which version."""
        date = context.partition_key
        store = convsync.store_for_run(context.instance)
        try:
            summary = write_daily_summary(store, convsync.settings(), date, context.run_id)
        except DateLockedError as error:
            raise Failure(str(error), allow_retries=False) from None
        current = load_document(store, date).document.version
        counts = summary.summary
        return MaterializeResult(
            metadata={
                "total": counts.total,
                "success": counts.success,
                "failed": counts.failed,
                "pending": counts.pending,
                "processed_count": summary.processedCount,
                "success_rate": summary.successRate if summary.successRate is not None else 0.0,
                "mean_sentiment": summary.meanSentimentScore or 0.0,
                "escalation_rate": summary.escalationRate or 0.0,
                "document_version": summary.documentVersion,
                "summary": MetadataValue.md(
                    table(
                        ["measure", "value"],
                        [
                            ["conversations", counts.total],
                            ["analysed", counts.success],
                            ["failed", counts.failed],
                            ["pending", counts.pending],
                            ["sentiment", summary.sentiment],
                            ["top topics", ", ".join(t.topic for t in summary.topTopics[:5])],
                            ["escalations", summary.escalations],
                            ["messages / conversation", summary.messagesPerConversation.mean],
                        ],
                    )
                ),
            },
            check_results=[
                AssetCheckResult(
                    check_name="summary_matches_document",
                    passed=summary.documentVersion == current,
                    metadata={
                        "summary_version": summary.documentVersion,
                        "document_version": current,
                    },
                )
            ],
        )

    return daily_summary
