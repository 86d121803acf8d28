"""Uploads -> staged conversations per date, each upload version parsed exactly once.

An upload is indexed under `state/uploads/<id>.json` only after its staging and quarantine
objects are written, so a crash in between just parses it again with the same, deterministic
result: re-running never quarantines a record twice and never stages twice.
"""

from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import dump_json
from convsync_pipeline.core.formats import read_upload, source_of
from convsync_pipeline.core.formats.streams import ReadLimits, SourceReadError
from convsync_pipeline.core.keys import (
    INCOMING,
    is_upload,
    quarantine_key,
    staging_key,
    staging_prefix,
    upload_id,
    upload_index_key,
)
from convsync_pipeline.core.records import ParsedUpload
from convsync_pipeline.core.rendering import render_messages
from convsync_pipeline.core.spill import Grouping
from convsync_pipeline.core.staging import StagedUpload, StagingWriter
from convsync_pipeline.core.tombstone import Tombstone, tombstone_key
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import ObjectInfo, Store, StoreError

INDEX_PREFIX = "state/uploads/"
MERGED_PREFIX = "state/merged/"


@dataclass
class UploadReport:
    """What one upload brought: the numbers SPEC section 4 says must add up."""

    upload: str
    etag: str
    records_in: int
    accepted: int
    quarantined: int
    conversations_by_date: dict[str, int] = field(default_factory=dict)
    quarantine_key: str | None = None
    ingested_at: str = ""
    bytes: int = 0  # the upload's stored size
    seconds: float = 0.0  # reading, grouping, staging and quarantining it
    spilled_bytes: int = 0  # written to local disk because it did not fit the budget

    @property
    def dates(self) -> list[str]:
        return sorted(self.conversations_by_date)

    def to_json(self) -> bytes:
        return dump_json(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> UploadReport:
        return cls(**json.loads(data))


@contextlib.contextmanager
def bulk_work() -> Iterator[None]:
    """Hold CPython's cyclic garbage collector off during bulk work, and give the memory
    Arrow's allocator kept back to the system when it ends.

    Parsing, staging and merging a large upload create millions of small objects; each 700
    allocations the collector runs, and its older generations walk everything alive, which
    more than doubled the cost of those steps. Reference counting still frees everything at
    once; only cycles wait for the end. Arrow's allocator (mimalloc, a heap per thread) keeps
    what it freed for reuse: after a 1M-row ingest that was ~500 MB the next step could not
    use, so the merge after it started from 790 MB instead of 260 MB.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        pa.default_memory_pool().release_unused()


class _UploadReplaced(Exception):
    """The upload was replaced between two reads of one version."""


def unindexed_uploads(store: Store, *, skip: frozenset[str] = frozenset()) -> list[ObjectInfo]:
    """Uploads in `incoming/` whose current version has not been ingested yet (apart from the
    keys in `skip`, whose versions are not even worked out)."""
    indexed = {info.key[len(INDEX_PREFIX) : -len(".json")] for info in store.list(INDEX_PREFIX)}
    return [
        info
        for info in store.list(INCOMING)
        if is_upload(info.key) and info.key not in skip
        and upload_id(info.key, info.etag) not in indexed
    ]


def read_upload_report(store: Store, upload_key: str, etag: str) -> UploadReport | None:
    data = store.read(upload_index_key(upload_key, etag))
    return None if data is None else UploadReport.from_json(data)


def already_ingested(store: Store, upload_key: str) -> UploadReport | None:
    """The index entry of the upload's current version, if that version was ingested."""
    for info in store.list(upload_key):
        if info.key == upload_key:
            return read_upload_report(store, upload_key, info.etag)
    return None


def ingest_upload(store: Store, settings: Settings, info: ObjectInfo) -> UploadReport | None:
    """Parse, group, stage and quarantine the upload's current version; None if it vanished."""
    return ingest_version(store, settings, info.key)


def ingest_version(
    store: Store, settings: Settings, key: str, etag: str | None = None
) -> UploadReport | None:
    """Parse, group, stage and quarantine one upload version (`etag`; None: the current
    one); None if that version is gone meanwhile.

    The upload is streamed from the store and read a part at a time (`core.formats`); its
    messages are grouped within CONVSYNC_INGEST_MEMORY_MB, spilling to local disk past it
    (`core.spill`); staging and quarantine objects are written from local files. A second
    read, if the parser needs one, is of the same version or nothing.
    """
    started = time.monotonic()
    with store.open_versioned(key, etag) as found:
        if found is None:
            return None
        etag, unread = found.token, [found.stream]

        @contextlib.contextmanager
        def open_this_version() -> Iterator[BinaryIO]:
            if unread:  # the first read: the stream already open
                yield unread.pop()
                return
            with store.open_versioned(key, etag) as same:
                if same is None:
                    raise _UploadReplaced
                yield same.stream

        limits = read_limits(settings)
        source = source_of(key, open_this_version, size=found.size, limits=limits)
        with (
            bulk_work(),
            tempfile.TemporaryDirectory(prefix="convsync-ingest-", dir=settings.spill_dir) as tmp,
            Grouping(key, settings.tz, budget_bytes=settings.ingest_memory_bytes,
                     directory=tmp) as grouping,
        ):
            sink = _IngestSink(grouping, Path(tmp) / "quarantine.jsonl")
            try:
                read_upload(source, sink, tz=settings.tz, day_first=settings.day_first)
            except _UploadReplaced:
                return None  # its new version is a new upload, ingested on its own
            except SourceReadError as error:
                raise StoreError(str(error)) from error
            finally:
                sink.close()
            conversations_by_date: dict[str, int] = {}
            staged = Path(tmp) / "staged.arrow"
            for date, chunks in grouping.dates():
                # Erased conversations (`convsync forget`) are not staged again: a re-upload
                # of the same export never brings their words back into the store.
                tombstone = Tombstone.from_json(date, store.read(tombstone_key(date)))
                with pa.OSFile(str(staged), "wb") as file:
                    writer = StagingWriter(file, key, etag, date)
                    for ids, texts in chunks:
                        if tombstone:
                            keep = pa.array([i not in tombstone for i in ids.to_pylist()])
                            ids, texts = ids.filter(keep), texts.filter(keep)
                        writer.write(ids, texts)
                    writer.close()
                store.write_file(staging_key(date, key, etag), str(staged))
                conversations_by_date[date] = writer.rows
            quarantined_at = None
            if sink.quarantined:
                quarantined_at = quarantine_key(key, etag)
                store.write_file(quarantined_at, str(sink.quarantine_path))
            spill = grouping.stats
    report = UploadReport(
        upload=key,
        etag=etag,
        records_in=sink.records_in,
        accepted=sink.accepted,
        quarantined=sink.quarantined,
        conversations_by_date=dict(sorted(conversations_by_date.items())),
        quarantine_key=quarantined_at,
        ingested_at=utc_now_iso(),
        bytes=found.size or 0,
        seconds=round(time.monotonic() - started, 3),
        spilled_bytes=spill.spilled_bytes,
    )
    store.write(upload_index_key(key, etag), report.to_json())
    return report


def read_limits(settings: Settings) -> ReadLimits:
    """What reading one upload may cost: the inflate limits, and the largest JSON value
    parsed whole (a tenth of the budget: parsed JSON takes several times its text)."""
    return ReadLimits(
        max_inflate_ratio=settings.max_inflate_ratio,
        max_inflated_bytes=settings.max_inflated_mb * 2**20,
        max_json_bytes=settings.ingest_memory_bytes // 10,
    )


class _IngestSink:
    """Parts of an upload as they are read: messages rendered and grouped, quarantined records
    appended to a local file, every record counted (SPEC 4: in = accepted + quarantined).

    A part is rendered and grouped on a worker thread while the reader reads the next one
    (Arrow's kernels release the GIL); at most two parts are in flight.
    """

    def __init__(self, grouping: Grouping, quarantine_path: Path) -> None:
        self.grouping = grouping
        self.quarantine_path = quarantine_path
        self._quarantine = quarantine_path.open("wb")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsync-group")
        self._pending: deque[Future[None]] = deque()
        self.records_in = self.accepted = self.quarantined = 0

    def add(self, part: ParsedUpload) -> None:
        self.records_in += part.records_in
        self.accepted += part.accepted
        self.quarantined += len(part.quarantined)
        if part.accepted:
            if len(self._pending) > 1:
                self._pending.popleft().result()
            self._pending.append(self._pool.submit(self._group, part))
        if part.quarantined:
            lines = "".join(record.to_json_line() + "\n" for record in part.quarantined)
            self._quarantine.write(lines.encode("utf-8"))

    def _group(self, part: ParsedUpload) -> None:
        self.grouping.add(render_messages(part.messages))

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def reset(self) -> None:
        self._drain()
        self.grouping.reset()
        self._quarantine.seek(0)
        self._quarantine.truncate()
        self.records_in = self.accepted = self.quarantined = 0

    def close(self) -> None:
        """Wait for the parts in flight; the grouping then holds every message."""
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._quarantine.close()


def ingest_new_uploads(
    store: Store, settings: Settings, *, skip: frozenset[str] = frozenset()
) -> Iterator[UploadReport]:
    """Ingest every upload not yet indexed, in key order, except the upload keys in `skip`
    (those an ingest run is working on)."""
    for info in unindexed_uploads(store, skip=skip):
        report = ingest_upload(store, settings, info)
        if report is not None:
            yield report


def staged_uploads(
    store: Store, date: str, *, skip: frozenset[str] = frozenset()
) -> list[tuple[str, StagedUpload]]:
    """Uploads' contributions to `date` as (staging key, staged), except the keys in `skip`."""
    batches = []
    for info in store.list(staging_prefix(date)):
        if info.key in skip:
            continue
        data = store.read(info.key)
        if data is None:
            continue
        batches.append((info.key, StagedUpload.decode(data, info.key)))
    return batches


def merged_marker_key(date: str) -> str:
    return f"{MERGED_PREFIX}{date}.json"
