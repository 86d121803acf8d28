"""Dagster side of the operations: the `dead_letters` view and the `convsync_migrate` job.

Both call the same functions as `convsync failed` / `convsync migrate`, so the UI and the
command line always agree. `dead_letters` sits in its own group: the daily job selects the
`convsync` group, and an unpartitioned asset there would break that partitioned job.

No `from __future__ import annotations` here: Dagster inspects the `context`, `config` and
resource annotations at definition time and rejects them as strings.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    asset,
    job,
    op,
)

from convsync_pipeline.assets.markdown import table
from convsync_pipeline.operations import stored_dates
from convsync_pipeline.operations.deadletters import list_failed
from convsync_pipeline.operations.migrate import MigrationReport, migrate
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource, store_kind
from convsync_pipeline.settings import Settings

OPERATIONS_GROUP = "convsync_operations"
MIGRATE_JOB_NAME = "convsync_migrate"
DEAD_LETTER_ROWS = 200


class MigrateConfig(Config):
    """`dry_run: true` is `convsync migrate --dry-run`: no lock taken, nothing written."""

    dry_run: bool = False


def build_operations_definitions(settings: Settings) -> dict[str, list[Any]]:
    """{"assets": [dead_letters], "jobs": [convsync_migrate]}, for `Definitions(...)`."""

    @asset(
        group_name=OPERATIONS_GROUP,
        deps=["ai_analysis"],
        description=(
            "Conversations that failed all their analysis attempts "
            f"(CONVSYNC_MAX_ATTEMPTS={settings.max_attempts}), across every date: review "
            "them, then `convsync requeue DATE [--id ID…]`."
        ),
        kinds={store_kind(settings.store)},
    )
    def dead_letters(
        context: AssetExecutionContext, blob_store: BlobStoreResource
    ) -> MaterializeResult:
        """A view: reads every date document, writes nothing to the store."""
        store = blob_store.store_for_run(context.instance)
        listing = list_failed(store, stored_dates(store))
        for problem in listing.problems:
            context.log.warning(f"not listed: {problem}")
        per_date = listing.by_date()
        metadata: dict[str, Any] = {
            "failed": len(listing.entries),
            "dates_with_failed": len(per_date),
            "dates_checked": listing.dates_checked,
            "unreadable_documents": len(listing.problems),
            "dead_letters": MetadataValue.md(
                table(
                    ["date", "id", "attempts", "last error", "first customer words"],
                    [
                        [e.date, e.id, e.attempts, e.error_shown, e.first_words]
                        for e in listing.entries
                    ],
                    limit=DEAD_LETTER_ROWS,
                )
                if listing.entries
                else "No failed conversations."
            ),
            "failed_per_date": MetadataValue.md(
                table(["date", "failed"], sorted(per_date.items()))
                if per_date
                else "No failed conversations."
            ),
        }
        if listing.problems:
            metadata["unreadable"] = MetadataValue.md(
                table(["document", "reason"], [[p.key, p.reason] for p in listing.problems])
            )
        return MaterializeResult(metadata=metadata)

    @op(
        name="migrate_date_documents",
        out=Out(dict, description="Documents per outcome."),
        description="Give legacy date documents processingStatus & co. (`convsync migrate`).",
    )
    def migrate_date_documents(
        context: OpExecutionContext,
        config: MigrateConfig,
        blob_store: BlobStoreResource,
        blob_lock: BlobLockResource,
    ):
        report = migrate(
            blob_store.store_for_run(context.instance),
            blob_lock,
            owner=context.run_id,
            dry_run=config.dry_run,
        )
        for document in report.documents:
            log = context.log.warning if document.outcome == "skipped" else context.log.info
            log(document.describe())
        context.log.info(report.describe())
        metadata = _migration_metadata(report)
        if report.skipped:
            raise Failure(
                description=f"{len(report.skipped)} document(s) skipped, left untouched: "
                + ", ".join(d.key for d in report.skipped),
                metadata=metadata,
                allow_retries=False,
            )
        yield Output(_counts(report), metadata=metadata)

    @job(
        name=MIGRATE_JOB_NAME,
        description="Migrate legacy date documents; set `dry_run: true` to only see changes.",
    )
    def convsync_migrate() -> None:
        migrate_date_documents()

    return {"assets": [dead_letters], "jobs": [convsync_migrate]}


def _counts(report: MigrationReport) -> dict[str, int]:
    outcomes = ("migrated", "would_migrate", "up_to_date", "skipped", "ignored")
    return {outcome: report.count(outcome) for outcome in outcomes}


def _migration_metadata(report: MigrationReport) -> dict[str, Any]:
    rows = []
    for d in report.documents:
        plan = d.plan
        rows.append(
            [
                d.key,
                d.outcome,
                plan.to_success if plan else "",
                plan.to_pending if plan else "",
                ""
                if plan is None
                else f"{plan.processed_count_before} -> {plan.processed_count_after}",
                d.version_after if d.version_after is not None else "",
                d.reason or "",
            ]
        )
    return {
        "dry_run": report.dry_run,
        **_counts(report),
        "documents": MetadataValue.md(
            table(
                [
                    "document",
                    "outcome",
                    "to success",
                    "to pending",
                    "processedCount",
                    "new version",
                    "reason",
                ],
                rows,
                limit=500,
            )
        ),
    }
