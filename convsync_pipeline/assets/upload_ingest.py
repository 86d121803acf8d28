"""`convsync_ingest`: one run per upload version, parsing, staging and quarantining it.

`new_upload_sensor` only lists `incoming/` and requests this job for each new upload version
(run key = upload id); the work happens here, in a run of its own: its own process (or pod),
its own memory budget (CONVSYNC_INGEST_MEMORY_MB, overridable per run in the launchpad), its
own event log, and a retry policy for store trouble. Whatever an upload contains never fails
the run: unusable records, decompression bombs and oversized documents are quarantined and
counted. When the run succeeds, `ingested_upload_sensor` requests the runs of the dates the
upload touched.
"""

from typing import Any

from dagster import (
    Backoff,
    Config,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Jitter,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    RunRequest,
    RunsFilter,
    job,
    op,
)
from pydantic import Field

from convsync_pipeline.assets.markdown import table
from convsync_pipeline.core.keys import upload_id
from convsync_pipeline.pipeline.ingest import (
    UploadReport,
    already_ingested,
    ingest_version,
    read_upload_report,
)
from convsync_pipeline.pipeline.memory import PeakMemory, peak_memory
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import ObjectInfo

INGEST_JOB_NAME = "convsync_ingest"
UPLOAD_TAG = "convsync/upload"
ETAG_TAG = "convsync/ingested_etag"  # added by the run: the version it ingested
# Runs of this job not finished yet: their uploads are being ingested (raw_conversations
# leaves those to them).
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


class UploadConfig(Config):
    """Which upload to ingest; what it may cost."""

    upload: str = Field(description="The upload's key, under incoming/.")
    etag: str | None = Field(
        default=None,
        description="Only this version (its store token); unset: the version there now (a "
        "newer one than the sensor saw is then ingested here, and found done by its own run).",
    )
    memory_mb: int | None = Field(
        default=None,
        ge=16,
        description="CONVSYNC_INGEST_MEMORY_MB for this run only (a larger pod for a huge "
        "upload); unset: the deployment's.",
    )


def ingest_run_request(info: ObjectInfo) -> RunRequest:
    """The one run of `convsync_ingest` for an upload version as listed: its run key is the
    upload id of the listing's version mark, so asking again (another tick, a restarted
    daemon) never starts a second one, and nothing here reads the upload."""
    return RunRequest(
        run_key=upload_id(info.key, info.listed_version),
        run_config={"ops": {"ingest_upload": {"config": {"upload": info.key}}}},
        tags={UPLOAD_TAG: info.key[:200]},
    )


def _upload_of(run: DagsterRun) -> str | None:
    config = run.run_config.get("ops", {}).get("ingest_upload", {}).get("config", {})
    return config.get("upload")


def ingested_version(run: DagsterRun) -> tuple[str, str] | None:
    """(upload key, etag) an ingest run ingested (None: the upload was gone)."""
    upload, etag = _upload_of(run), run.tags.get(ETAG_TAG)
    return (upload, etag) if upload and etag else None


def uploads_being_ingested(instance: DagsterInstance) -> frozenset[str]:
    """Keys of the uploads whose `convsync_ingest` run is queued or running."""
    records = instance.get_run_records(
        filters=RunsFilter(job_name=INGEST_JOB_NAME, statuses=IN_FLIGHT)
    )
    return frozenset(
        upload for record in records if (upload := _upload_of(record.dagster_run))
    )


def build_ingest_job(settings: Settings) -> Any:
    @op(
        name="ingest_upload",
        description="Parse, stage and quarantine one upload version, once in total.",
        # What it made is in the store (staging, quarantine, the upload index): the output
        # carries metadata only, nothing for an IO manager to keep.
        out=Out(Nothing),
        # Only store trouble raises here (an upload's content never does): wait and retry.
        retry_policy=RetryPolicy(
            max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
        ),
    )
    def ingest_upload_op(
        context: OpExecutionContext, config: UploadConfig, blob_store: BlobStoreResource
    ) -> Output[None]:
        store = blob_store.store_for_run(context.instance)
        run_settings = settings
        if config.memory_mb is not None:
            run_settings = settings.model_copy(update={"ingest_memory_mb": config.memory_mb})
        done = (
            read_upload_report(store, config.upload, config.etag)
            if config.etag is not None else already_ingested(store, config.upload)
        )
        if done is not None:
            context.log.info(f"{config.upload} was ingested already ({done.ingested_at})")
            context.instance.add_run_tags(context.run_id, {ETAG_TAG: done.etag})
            return Output(None, metadata=_metadata(done, "already ingested", None))
        with peak_memory() as peak:
            report = ingest_version(store, run_settings, config.upload, config.etag)
        if report is None:
            context.log.warning(
                f"{config.upload} is gone (or no longer at version {config.etag}): nothing to "
                "ingest; a new version is another upload, with a run of its own"
            )
            return Output(None, metadata={"status": "gone", "upload": config.upload})
        context.instance.add_run_tags(context.run_id, {ETAG_TAG: report.etag})
        context.log.info(
            f"ingested {report.upload}: {report.records_in} records in, {report.accepted} "
            f"accepted, {report.quarantined} quarantined, dates {report.dates}"
        )
        return Output(None, metadata=_metadata(report, "ingested", peak))

    @job(
        name=INGEST_JOB_NAME,
        description="Ingest one upload version (requested by new_upload_sensor).",
        tags={"convsync/ingest": "true"},
    )
    def convsync_ingest() -> None:
        ingest_upload_op()

    return convsync_ingest


def _metadata(report: UploadReport, status: str, peak: PeakMemory | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "status": status,
        "upload": report.upload,
        "records_in": report.records_in,
        "records_accepted": report.accepted,
        "records_quarantined": report.quarantined,
        "dates": MetadataValue.md(
            table(["date", "conversations"], sorted(report.conversations_by_date.items()))
            if report.conversations_by_date else "No conversations."
        ),
        "date_count": len(report.conversations_by_date),
        "bytes": report.bytes,
        "seconds": report.seconds,
        "spilled_mb": round(report.spilled_bytes / 2**20, 1),
    }
    if report.quarantine_key:
        metadata["quarantine"] = report.quarantine_key
    if peak is not None:
        metadata["peak_memory_mb"] = peak.mb
        if peak.since_start:
            metadata["peak_memory_note"] = "the process's peak since it started"
    return metadata


def ingested_dates_requests(
    report: UploadReport, valid_dates: set[str], log: Any
) -> list[RunRequest]:
    """One run of each date the upload touched, once per (upload, date)."""
    requests = []
    uid = upload_id(report.upload, report.etag)
    for date in report.dates:
        if date not in valid_dates:
            log.warning(
                f"{report.upload} has conversations dated {date}, outside the partitions: "
                "not requested"
            )
            continue
        requests.append(RunRequest(
            run_key=f"{uid}:{date}",
            partition_key=date,
            tags={UPLOAD_TAG: report.upload[:200]},
        ))
    return requests

