"""Uploads to runs: `new_upload_sensor` requests an ingest run per new upload version;
`ingested_upload_sensor` requests the runs of the dates an ingested upload touched.

`new_upload_sensor` only looks: each tick lists `incoming/` (paginated) and considers only
uploads modified at or after the cursor's watermark minus a slack window, skipping those the
cursor already handled; that catches same-second arrivals and keys arriving out of lexical
order without re-reading old uploads. It never opens an upload, and tells versions apart by
what the listing gives (`ObjectInfo.listed_version`: S3's ETag; a file's inode, size and
times, not the folder store's content digest, which takes a read): a tick costs the same for
a 1 KB and a 5 GB upload. Each new version gets one run of `convsync_ingest` (run key = upload
id), which parses, stages and quarantines it in its own process and memory budget.

The dates an upload holds are known once that run has read it. `ingested_upload_sensor` is a
run-status sensor on the ingest job's successes: it reads the upload's index entry (one small
object) and requests each date's run of `convsync_daily` once per (upload, date), run key
`<upload id>:<date>`. A run-status sensor rather than an asset sensor or an
`AutomationCondition`: the ingest step is a job (a partitioned asset per upload would break
`--select '*' --partition D`), and which dates follow is data found by the run, not a
partition mapping the asset graph could declare.
"""


import datetime as dt
import json
import warnings
from dataclasses import dataclass, field

from dagster import (
    BetaWarning,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)

from convsync_pipeline.assets.upload_ingest import (
    ingest_run_request,
    ingested_dates_requests,
    ingested_version,
)
from convsync_pipeline.core.keys import INCOMING, is_upload
from convsync_pipeline.jobs import convsync_daily_job
from convsync_pipeline.partitions import daily_partitions
from convsync_pipeline.pipeline.ingest import read_upload_report
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import ObjectInfo

SLACK = dt.timedelta(minutes=10)
# Run requests one tick hands the daemon at most; a bucket's first listing may hold many
# thousands of uploads: the rest, oldest first, go to the next ticks.
REQUESTS_PER_TICK = 500
# Dagster's run-status sensor passes a beta parameter to its own SensorDefinition: pinned
# (dagster==1.13.27), said once here rather than at every code load.
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition.__init__`",
    category=BetaWarning,
)


@dataclass
class UploadCursor:
    """A watermark on LastModified plus the uploads handled inside the slack window."""

    watermark: dt.datetime | None = None
    # key -> (listed version, modified): the listing's own mark, so no upload is ever read
    handled: dict[str, tuple[str, str]] = field(default_factory=dict)

    def encode(self) -> str:
        mark = self.watermark.isoformat() if self.watermark else None
        return json.dumps({"watermark": mark, "handled": self.handled}, sort_keys=True)

    @classmethod
    def decode(cls, text: str | None) -> "UploadCursor":
        if not text:
            return cls()
        body = json.loads(text)
        mark = body.get("watermark")
        handled = {key: (etag, modified) for key, (etag, modified) in body["handled"].items()}
        return cls(dt.datetime.fromisoformat(mark) if mark else None, handled)

    def is_new(self, info: ObjectInfo) -> bool:
        if self.watermark is not None and info.last_modified < self.watermark - SLACK:
            return False
        seen = self.handled.get(info.key)
        return seen is None or seen[0] != info.listed_version


def new_uploads(objects: list[ObjectInfo], cursor: UploadCursor) -> list[ObjectInfo]:
    """Unhandled uploads, oldest first, so the watermark advances in arrival order."""
    fresh = [info for info in objects if is_upload(info.key) and cursor.is_new(info)]
    return sorted(fresh, key=lambda info: (info.last_modified, info.key))


def advance(
    cursor: UploadCursor, handled: list[ObjectInfo], left: list[ObjectInfo]
) -> UploadCursor:
    """Move the watermark over what was handled, never past anything left for a later tick.

    Entries older than the slack window are forgotten: the watermark covers them. Should one
    be seen again, its run key makes the repeated request a no-op.
    """
    entries = dict(cursor.handled)
    entries.update({i.key: (i.listed_version, i.last_modified.isoformat()) for i in handled})
    marks = [dt.datetime.fromisoformat(modified) for _, modified in entries.values()]
    if cursor.watermark:
        marks.append(cursor.watermark)
    if not marks:
        return cursor
    watermark = max(marks)
    if left:
        watermark = min(watermark, min(info.last_modified for info in left))
    keep = {
        key: value
        for key, value in entries.items()
        if dt.datetime.fromisoformat(value[1]) >= watermark - SLACK
    }
    return UploadCursor(watermark, keep)


def build_upload_sensor(ingest_job):
    @sensor(
        name="new_upload_sensor",
        job=ingest_job,
        minimum_interval_seconds=30,
        description="Requests one ingest run per new upload version in incoming/ (it never "
        "reads an upload: the run does).",
    )
    def new_upload_sensor(
        context: SensorEvaluationContext, blob_store: BlobStoreResource
    ) -> SensorResult | SkipReason:
        store = blob_store.store_for_run(context.instance)
        cursor = UploadCursor.decode(context.cursor)
        fresh = new_uploads(list(store.list(INCOMING)), cursor)
        if not fresh:
            return SkipReason("no new uploads in incoming/")
        handled, left = fresh[:REQUESTS_PER_TICK], fresh[REQUESTS_PER_TICK:]
        if left:
            context.log.info(f"{len(left)} more new uploads left for the next ticks")
        return SensorResult(
            run_requests=[ingest_run_request(info) for info in handled],
            cursor=advance(cursor, handled, left).encode(),
        )

    return new_upload_sensor


def build_ingested_upload_sensor(settings: Settings, ingest_job):
    partitions = daily_partitions(settings)

    @run_status_sensor(
        name="ingested_upload_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest_job],
        request_job=convsync_daily_job,
        # Dagster hands a run-status sensor one reacting run per evaluation: tick often, the
        # tick itself is one small read.
        minimum_interval_seconds=5,
        # It only acts on ingest runs, which only exist when someone asked for them.
        default_status=DefaultSensorStatus.RUNNING,
        description="When an upload's ingest run succeeds, requests the run of each date "
        "it touched, once per (upload, date).",
    )
    def ingested_upload_sensor(
        context: RunStatusSensorContext, blob_store: BlobStoreResource
    ) -> list[RunRequest] | None:
        # The version the run ingested is a tag it added: read the run as stored now.
        run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
        upload = ingested_version(run)
        if upload is None:  # gone before it was read: nothing staged, no date to run
            return None
        store = blob_store.store_for_run(context.instance)
        report = read_upload_report(store, *upload)
        if report is None:
            return None
        valid = set(partitions.get_partition_keys(dynamic_partitions_store=None))
        return ingested_dates_requests(report, valid, context.log) or None

    return ingested_upload_sensor
