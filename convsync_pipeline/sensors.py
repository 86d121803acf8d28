"""`new_upload_sensor`: one run per (new upload, date it contains), found with a cursor.

Each tick lists `incoming/` (paginated) and looks only at uploads modified at or after the
cursor's watermark minus a slack window, skipping those the cursor already handled; that
catches same-second arrivals and keys arriving out of lexical order without re-reading old
uploads. The dates an upload contains are known only by parsing it, so the sensor runs the
shared ingest (parse once, stage, quarantine, index); the runs it requests then find the
upload already ingested. Run keys `<upload id>:<date>` make a repeated request a no-op.
"""


import datetime as dt
import json
import time
from dataclasses import dataclass, field

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from convsync_pipeline.core.keys import INCOMING, is_upload, upload_id
from convsync_pipeline.jobs import convsync_daily_job
from convsync_pipeline.partitions import daily_partitions
from convsync_pipeline.pipeline.ingest import ingest_upload, read_upload_report
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import ObjectInfo

SLACK = dt.timedelta(minutes=10)
TICK_BUDGET_SECONDS = 40.0


@dataclass
class UploadCursor:
    """A watermark on LastModified plus the uploads handled inside the slack window."""

    watermark: dt.datetime | None = None
    handled: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (etag, modified)

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
        return seen is None or seen[0] != info.etag


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
    entries.update({i.key: (i.etag, i.last_modified.isoformat()) for i in handled})
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


def build_upload_sensor(settings: Settings):
    partitions = daily_partitions(settings)

    @sensor(
        name="new_upload_sensor",
        job=convsync_daily_job,
        minimum_interval_seconds=30,
        description="Requests a run for every date that a new upload in incoming/ contains.",
    )
    def new_upload_sensor(
        context: SensorEvaluationContext, blob_store: BlobStoreResource
    ) -> SensorResult | SkipReason:
        store = blob_store.store_for_run(context.instance)
        cursor = UploadCursor.decode(context.cursor)
        fresh = new_uploads(list(store.list(INCOMING)), cursor)
        if not fresh:
            return SkipReason("no new uploads in incoming/")
        valid_dates = set(partitions.get_partition_keys(dynamic_partitions_store=None))
        started = time.monotonic()
        handled: list[ObjectInfo] = []
        requests: list[RunRequest] = []
        for position, info in enumerate(fresh):
            if time.monotonic() - started > TICK_BUDGET_SECONDS:
                context.log.info(
                    f"tick budget spent; {len(fresh) - position} uploads left for later"
                )
                break
            report = read_upload_report(store, info.key, info.etag) or ingest_upload(
                store, settings, info
            )
            handled.append(info)
            if report is None:
                continue
            for date in report.dates:
                if date not in valid_dates:
                    context.log.warning(
                        f"{info.key} has conversations dated {date}, outside the partitions "
                        f"({settings.start_date} .. today): not requested"
                    )
                    continue
                requests.append(
                    RunRequest(
                        run_key=f"{upload_id(info.key, report.etag)}:{date}",
                        partition_key=date,
                        tags={"convsync/upload": info.key[:200]},
                    )
                )
        left = fresh[len(handled) :]
        return SensorResult(run_requests=requests, cursor=advance(cursor, handled, left).encode())

    return new_upload_sensor
