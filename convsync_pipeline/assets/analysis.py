"""`ai_analysis`: one pass over the date's due conversations, retried by Dagster's policy."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
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
from convsync_pipeline.partitions import daily_partitions
from convsync_pipeline.pipeline.analyse import AnalysisSystemError, analyse_date
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.convsync import ConvsyncResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import StoreError

CHECKS = ("ids_unique", "processed_count_matches", "nothing_left_processing", "no_failed")


def build_analysis_asset(settings: Settings):
    @asset(
        partitions_def=daily_partitions(settings),
        group_name="convsync",
        deps=["normalized_conversations"],
        retry_policy=RetryPolicy(
            max_retries=max(settings.max_attempts - 1, 0),
            delay=settings.retry_delay_seconds,
            backoff=Backoff.EXPONENTIAL,
            jitter=Jitter.PLUS_MINUS,
        ),
        check_specs=[AssetCheckSpec(name, asset="ai_analysis") for name in CHECKS],
    )
    def ai_analysis(
        context: AssetExecutionContext, convsync: ConvsyncResource
    ) -> MaterializeResult:
        """Analyse the date's pending conversations; raise while some may still succeed."""
        date = context.partition_key
        run_settings = convsync.settings()
        try:
            store = convsync.store_for_run(context.instance)
            report = analyse_date(store, run_settings, convsync.make_analyzer, date, context.run_id)
        except (StoreError, AnalysisSystemError) as error:
            # The whole system is at fault (lock held, store unreachable, bad key): no attempt
            # was spent, and retrying the step would not help.
            raise Failure(str(error), allow_retries=False) from None
        context.log.info(
            f"{date}: {report.succeeded} analysed, {report.failed_attempts} failed attempts, "
            f"{report.newly_failed} now failed, {report.still_due} still due, "
            f"{report.recovered_interrupted} interrupted recovered"
        )
        last_try = context.retry_number >= max(run_settings.max_attempts - 1, 0)
        if report.needs_retry and not last_try:
            # The only place a retried pass shows in the UI: say why it failed.
            common = report.errors.most_common(1)
            raise RuntimeError(
                f"{report.still_due} conversations of {date} failed this attempt and have "
                "attempts left; retrying the step"
                + (f" (most common error, {common[0][1]}x: {common[0][0]})" if common else "")
            )
        document = load_document(store, date).document
        return MaterializeResult(
            metadata=_metadata(report, run_settings),
            check_results=_checks(document),
        )

    return ai_analysis


def _metadata(report, settings: Settings) -> dict:
    usage = report.usage
    cost = None
    if report.analyzer == "openai":
        from convsync_pipeline.analyzers.openai import estimate_cost_usd

        cost = estimate_cost_usd(report.model, usage)
    metadata = {
        "analyzer": report.analyzer or "none needed",
        "model": report.model or "-",
        "selected": report.selected,
        "succeeded": report.succeeded,
        "failed_attempts": report.failed_attempts,
        "newly_failed": report.newly_failed,
        "still_due": report.still_due,
        "deferred_by_batch_size": report.deferred,
        "recovered_interrupted": report.recovered_interrupted,
        "document_version": report.version,
        "document_saves": report.saves,
        "seconds": report.seconds,
        "conversations_per_second": round(report.selected / report.seconds, 2)
        if report.seconds
        else 0.0,
        "prompt_tokens": usage.promptTokens,
        "completion_tokens": usage.completionTokens,
        "cached_tokens": usage.cachedTokens,
        "max_attempts": settings.max_attempts,
    }
    if cost is not None:
        metadata["estimated_cost_usd"] = round(cost, 6)
    if report.errors:
        metadata["errors"] = MetadataValue.md(
            table(["error", "count"], report.errors.most_common(20))
        )
    return metadata


def _checks(document) -> list[AssetCheckResult]:
    ids = [c.id for c in document.conversations]
    counts = document.count_statuses()
    failed = [c for c in document.conversations if c.processing_status == "failed"]
    return [
        AssetCheckResult(
            check_name="ids_unique",
            passed=len(ids) == len(set(ids)),
            metadata={"conversations": len(ids), "distinct_ids": len(set(ids))},
        ),
        AssetCheckResult(
            check_name="processed_count_matches",
            passed=document.processed_count == counts.success,
            metadata={"processedCount": document.processed_count, "success": counts.success},
        ),
        AssetCheckResult(
            check_name="nothing_left_processing",
            passed=counts.processing == 0,
            metadata={"processing": counts.processing},
        ),
        AssetCheckResult(
            check_name="no_failed",
            passed=not failed,
            severity=AssetCheckSeverity.WARN,
            description="Failed conversations need manual review: `convsync failed` / `requeue`.",
            metadata={
                "failed": len(failed),
                "failed_ids": MetadataValue.json([c.id for c in failed[:100]]),
            },
        ),
    ]
