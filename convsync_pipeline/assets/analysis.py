"""`ai_analysis`: one pass over each date's due conversations, retried by Dagster's policy."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Backoff,
    Config,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from convsync_pipeline.assets.markdown import date_totals, plain, table
from convsync_pipeline.assets.ranges import (
    dates_for_this_try,
    note_finished_earlier,
    remember_for_retry,
    set_aside_locked,
)
from convsync_pipeline.core.document import DateDocument
from convsync_pipeline.core.status import batch_of
from convsync_pipeline.core.summary import answer_versions
from convsync_pipeline.partitions import BACKFILL_POLICY, daily_partitions
from convsync_pipeline.pipeline.analyse import (
    AnalysisReport,
    AnalysisSystemError,
    Reanalyse,
    analyse_date,
)
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.analyzer import AnalyzerNotReadyError, AnalyzerResource
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource, store_kind
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError, StoreError

CHECK_DESCRIPTIONS = {
    "ids_unique": "Every conversation id appears once in the date document (seed bug 3).",
    "processed_count_matches": (
        "processedCount equals the number of `success` conversations (no drift, seed bug 5)."
    ),
    "nothing_left_processing": (
        "No conversation is left `processing` after the pass, except those waiting on a live "
        "OpenAI batch; one left by a dead run is recovered by the next pass at the cost of "
        "one attempt."
    ),
    "no_failed": (
        "No conversation has used up CONVSYNC_MAX_ATTEMPTS; failed ones wait for review: "
        "`convsync failed DATE`, then `convsync requeue DATE`. A warning: it does not fail runs."
    ),
    "single_analysis_version": (
        "All the date's answers come from one analysis version (analyser, model, prompt). "
        "Mixed versions are a warning: `convsync reanalyse --from D --to D` brings the date "
        "up to the current one."
    ),
}
CHECKS = tuple(CHECK_DESCRIPTIONS)


class AnalysisConfig(Config):
    """Per-run choices of `ai_analysis` (the launchpad of a run or of a backfill)."""

    reanalyse: bool = Field(
        default=False,
        description="Re-analyse: make each date's `success` conversations whose analysis "
        "version is not the current one due again, once per version (their old answers stay "
        "until the new ones succeed). Same as `convsync reanalyse --from D1 --to D2`.",
    )
    if_version_not: str | None = Field(
        default=None,
        description="With `reanalyse`: also leave alone answers of this version (as "
        "`--if-version-not V`).",
    )


def build_analysis_asset(settings: Settings):
    @asset(
        partitions_def=daily_partitions(settings),
        group_name="convsync",
        deps=["normalized_conversations"],
        backfill_policy=BACKFILL_POLICY,
        retry_policy=RetryPolicy(
            max_retries=max(settings.max_attempts - 1, 0),
            delay=settings.retry_delay_seconds,
            backoff=Backoff.EXPONENTIAL,
            jitter=Jitter.PLUS_MINUS,
        ),
        check_specs=[
            AssetCheckSpec(name, asset="ai_analysis", description=description)
            for name, description in CHECK_DESCRIPTIONS.items()
        ],
        kinds=analysis_kinds(settings),
    )
    def ai_analysis(
        context: AssetExecutionContext,
        config: AnalysisConfig,
        blob_store: BlobStoreResource,
        blob_lock: BlobLockResource,
        analyzer: AnalyzerResource,
    ) -> MaterializeResult:
        """Analyse each date's pending conversations; raise while some may still succeed.

        One date at a time, each under its own lock for its whole pass. Every date of a range
        gets its pass before the step raises for a retry, and the retry redoes only the dates
        that asked for it (assets/ranges.py): a conversation gets one attempt per try, as in a
        run of its date alone. A date locked by another run does not stop the others; a system
        failure (bad key, store unreachable) stops the run at once with its one message.
        """
        run_settings = analyzer.pass_settings(settings)
        try:
            store = blob_store.store_for_run(context.instance)
            analyzer.check_ready()
        except (StoreError, AnalyzerNotReadyError) as error:
            raise Failure(str(error), allow_retries=False) from None
        current = analyzer.analysis_version()
        reanalyse = (
            Reanalyse(target=current, if_version_not=config.if_version_not)
            if config.reanalyse
            else None
        )
        last_try = context.retry_number >= max(settings.max_attempts - 1, 0)
        dates = dates_for_this_try(context, "ai_analysis")
        note_finished_earlier(context, [d for d in context.partition_keys if d not in dates])
        retry: list[AnalysisReport] = []
        locked: list[DateLockedError] = []
        after: dict[str, DateDocument] = {}  # each date's document as its pass left it
        for date in dates:
            try:
                report = analyse_date(
                    store,
                    blob_lock,
                    run_settings,
                    analyzer.make,
                    date,
                    context.run_id,
                    make_batch_client=analyzer.batch_client_factory(),
                    reanalyse=reanalyse,
                )
            except DateLockedError as error:
                set_aside_locked(context, error, locked)
                continue
            except (StoreError, AnalysisSystemError) as error:
                # The whole system is at fault (store unreachable, bad key): no attempt was
                # spent, and retrying the step, or going on with the next date, would not help.
                raise Failure(str(error), allow_retries=False) from None
            context.log.info(
                f"{date}: {report.succeeded} analysed, {report.failed_attempts} failed attempts, "
                f"{report.newly_failed} now failed, {report.still_due} still due, "
                f"{report.recovered_interrupted} interrupted recovered"
            )
            if report.needs_retry and not last_try:
                retry.append(report)
                continue
            after[date] = load_document(store, date).document
            context.add_asset_metadata(
                date_totals(after[date].count_statuses())
                | _metadata(report, settings)
                | version_metadata(after[date], current),
                partition_key=date,
            )
        if retry:
            # The only place a retried pass shows in the UI: say why it failed. A locked date
            # rides along: the retry is its next chance, and a lock conflict costs no attempt.
            remember_for_retry(
                context, "ai_analysis", [r.date for r in retry] + [e.date for e in locked]
            )
            raise RuntimeError(_retry_message(retry, locked))
        if locked:
            raise Failure(
                "; ".join(str(error) for error in locked) + " (the run's other dates are analysed)",
                allow_retries=False,
            )
        documents = {
            date: after[date] if date in after else load_document(store, date).document
            for date in context.partition_keys
        }
        return MaterializeResult(check_results=_checks_over(documents))

    return ai_analysis


def analysis_kinds(settings: Settings) -> set[str]:
    """The asset graph shows where the data lives and, with `openai`, who reads it."""
    kinds = {store_kind(settings.store)}
    if settings.analyzer == "openai":
        kinds.add("openai")
    return kinds


def version_metadata(document: DateDocument, current: str) -> dict:
    versions = answer_versions(document)
    metadata: dict = {
        "analysis_version": current,
        "at_current_version": versions.get(current, 0),
        "other_versions": sum(n for v, n in versions.items() if v != current),
    }
    if versions:
        metadata["analysis_versions"] = MetadataValue.md(
            table(["analysis version", "answers"], versions.most_common())
        )
    return metadata


def _retry_message(retry: list[AnalysisReport], locked: list[DateLockedError]) -> str:
    def common(report: AnalysisReport) -> str:
        top = report.errors.most_common(1)
        return f" (most common error, {top[0][1]}x: {top[0][0]})" if top else ""

    if len(retry) == 1 and not locked:  # a run of one date: the message it always had
        (report,) = retry
        return (
            f"{report.still_due} conversations of {report.date} failed this attempt and have "
            "attempts left; retrying the step" + common(report)
        )
    return (
        "; ".join(f"{r.still_due} conversations of {r.date}{common(r)}" for r in retry)
        + " failed this attempt and have attempts left; retrying the step for those dates"
        + "".join(f"; {error}" for error in locked)
    )


def _metadata(report, settings: Settings) -> dict:
    usage = report.usage
    cost = None
    metadata_batch_cost = None
    batch = report.batch
    if report.analyzer == "openai" or batch is not None:
        from convsync_pipeline.analyzers.openai import estimate_cost_usd

        cost = estimate_cost_usd(report.model or settings.openai_model, usage)
        if batch is not None and batch.collected:
            # Each batch priced with its own model, at batch prices (the ledger's figures).
            costs = [row["estimatedCostUsd"] for row in batch.collected]
            batch_cost = None if None in costs else sum(costs)
            cost = None if cost is None or batch_cost is None else cost + batch_cost
            if batch_cost is not None:
                metadata_batch_cost = round(batch_cost, 6)
        usage = _sum_usage(usage, batch.usage) if batch is not None else usage
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
        "reanalysis_marked": report.reanalysis_marked,
        "reanalysis_failed": report.reanalysis_failed,
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
    metadata["openai_mode"] = report.mode
    if batch is not None:
        metadata["batch_requests_submitted"] = batch.requests
        metadata["batches_submitted"] = len(batch.submitted)
        metadata["batches_collected"] = len(batch.collected)
        metadata["batches_open"] = len(batch.open)
        metadata["batch_released_unattempted"] = batch.released
        if metadata_batch_cost is not None:
            metadata["estimated_batch_cost_usd"] = metadata_batch_cost
        rows = [
            [
                row["batch"],
                kind,
                row["state"],
                row["requests"],
                row["completed"],
                row["failed"],
                row["succeeded"],
                row["failedAttempts"],
                "-" if row["estimatedCostUsd"] is None else f"{row['estimatedCostUsd']:.6f}",
            ]
            for kind, rows_of in (
                ("submitted", batch.submitted),
                ("collected", batch.collected),
                ("open", batch.open),
            )
            for row in rows_of
        ]
        if rows:
            metadata["batches"] = MetadataValue.md(
                table(
                    [
                        "batch",
                        "this run",
                        "state",
                        "requests",
                        "completed",
                        "failed",
                        "succeeded",
                        "failed attempts",
                        "cost USD (batch price)",
                    ],
                    rows,
                )
            )
    if report.errors:
        metadata["errors"] = MetadataValue.md(
            table(["error", "count"], report.errors.most_common(20))
        )
    return metadata


def _sum_usage(a, b):
    from convsync_pipeline.pipeline.batch import add_usage

    return add_usage(a, b)


def _checks_over(documents: dict) -> list[AssetCheckResult]:
    """The checks of a one-date run as they always were; over a range, each check once for all
    its dates (Dagster 1.13 records one evaluation per check and run: an `AssetCheckResult`
    cannot name a partition), failing dates named with their numbers."""
    if len(documents) == 1:
        return _checks(next(iter(documents.values())))
    by_date = {date: _checks(document) for date, document in documents.items()}
    results = []
    for index, name in enumerate(CHECKS):
        first = next(iter(by_date.values()))[index]
        failing = {
            date: checks[index] for date, checks in by_date.items() if not checks[index].passed
        }
        rows = [
            [date, ", ".join(f"{key} {plain(item.value)}" for key, item in result.metadata.items())]
            for date, result in failing.items()
        ]
        results.append(
            AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=first.severity,
                description=CHECK_DESCRIPTIONS[name],
                metadata={
                    "dates": len(by_date),
                    "first_date": min(by_date),
                    "last_date": max(by_date),
                    "failing_dates": MetadataValue.json(sorted(failing)),
                    "failing": MetadataValue.md(table(["date", "values"], rows))
                    if rows
                    else "none",
                },
            )
        )
    return results


def _checks(document) -> list[AssetCheckResult]:
    ids = [c.id for c in document.conversations]
    counts = document.count_statuses()
    failed = [c for c in document.conversations if c.processing_status == "failed"]
    versions = answer_versions(document)
    in_batches = sum(1 for c in document.conversations if batch_of(c) is not None)
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
            passed=counts.processing == in_batches,
            metadata={"processing": counts.processing, "in_open_batches": in_batches},
        ),
        AssetCheckResult(
            check_name="no_failed",
            passed=not failed,
            severity=AssetCheckSeverity.WARN,
            description=CHECK_DESCRIPTIONS["no_failed"],
            metadata={
                "failed": len(failed),
                "failed_ids": MetadataValue.json([c.id for c in failed[:100]]),
            },
        ),
        AssetCheckResult(
            check_name="single_analysis_version",
            passed=len(versions) <= 1,
            severity=AssetCheckSeverity.WARN,
            description=CHECK_DESCRIPTIONS["single_analysis_version"],
            metadata={
                "versions": len(versions),
                "answers_by_version": MetadataValue.json(dict(versions.most_common())),
            },
        ),
    ]
