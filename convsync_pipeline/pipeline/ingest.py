"""Uploads -> staged conversations per date, each upload version parsed exactly once.

An upload is indexed under `state/uploads/<id>.json` only after its staging and quarantine
objects are written, so a crash in between just parses it again with the same, deterministic
result: re-running never quarantines a record twice and never stages twice.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import pyarrow as pa

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import dump_json
from convsync_pipeline.core.formats import parse_upload_stream
from convsync_pipeline.core.keys import (
    INCOMING,
    is_upload,
    quarantine_key,
    staging_key,
    staging_prefix,
    upload_id,
    upload_index_key,
)
from convsync_pipeline.core.staging import StagedUpload, staged_bodies
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import ObjectInfo, Store

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


def unindexed_uploads(store: Store) -> list[ObjectInfo]:
    """Uploads in `incoming/` whose current version has not been ingested yet."""
    indexed = {info.key[len(INDEX_PREFIX) : -len(".json")] for info in store.list(INDEX_PREFIX)}
    return [
        info
        for info in store.list(INCOMING)
        if is_upload(info.key) and upload_id(info.key, info.etag) not in indexed
    ]


def read_upload_report(store: Store, upload_key: str, etag: str) -> UploadReport | None:
    data = store.read(upload_index_key(upload_key, etag))
    return None if data is None else UploadReport.from_json(data)


def ingest_upload(store: Store, settings: Settings, info: ObjectInfo) -> UploadReport | None:
    """Parse, group, stage and quarantine one upload; None if it vanished meanwhile.

    The upload is streamed from the store (`parse_upload_stream`); a second read, if the
    parser needs one, is of the same version or nothing.
    """
    with store.open_versioned(info.key) as found:
        if found is None:
            return None
        etag, unread = found.token, [found.stream]

        @contextlib.contextmanager
        def open_this_version() -> Iterator[BinaryIO]:
            if unread:  # the first read: the stream already open
                yield unread.pop()
                return
            with store.open_versioned(info.key, etag) as same:
                if same is None:
                    raise _UploadReplaced
                yield same.stream

        with bulk_work():
            try:
                parsed = parse_upload_stream(
                    info.key, open_this_version, size=found.size, tz=settings.tz,
                    day_first=settings.day_first,
                )
            except _UploadReplaced:
                return None  # its new version is a new upload, ingested on its own
    with bulk_work():
        conversations_by_date: dict[str, int] = {}
        # Each conversation rendered once, as its date document will hold it (`core.staging`).
        for date, count, body in staged_bodies(parsed.messages, info.key, etag, settings.tz):
            store.write(staging_key(date, info.key, etag), body)
            conversations_by_date[date] = count
        quarantined_at = None
        if parsed.quarantined:
            quarantined_at = quarantine_key(info.key, etag)
            lines = "".join(record.to_json_line() + "\n" for record in parsed.quarantined)
            store.write(quarantined_at, lines.encode("utf-8"))
    report = UploadReport(
        upload=info.key,
        etag=etag,
        records_in=parsed.records_in,
        accepted=len(parsed.messages),
        quarantined=len(parsed.quarantined),
        conversations_by_date=dict(sorted(conversations_by_date.items())),
        quarantine_key=quarantined_at,
        ingested_at=utc_now_iso(),
    )
    store.write(upload_index_key(info.key, etag), report.to_json())
    return report


def ingest_new_uploads(
    store: Store, settings: Settings, *, time_budget_seconds: float | None = None
) -> Iterator[UploadReport]:
    """Ingest every upload not yet indexed, in key order; stop early when the budget is spent."""
    started = time.monotonic()
    for info in unindexed_uploads(store):
        if time_budget_seconds is not None and time.monotonic() - started > time_budget_seconds:
            return
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
