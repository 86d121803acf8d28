"""Upload bytes -> message records, one module per format over `core.records`' types.

`read_upload` is the one reader of upload bytes: it picks the format by the key's suffix
(`.csv`, `.json`, `.jsonl` / `.ndjson`, each maybe `.gz`), opens the bytes as UTF-8 text
(`streams`: gunzipped within limits, UTF-16/32 re-encoded) and hands the records to a
`PartSink` a part at a time, in upload order. It never raises on what an upload contains:
a file unreadable as a whole (broken gzip, decompression bomb, bad encoding, a JSON document
too large for the budget) is one quarantined record. `parse_upload` is the same, collected
in memory (small uploads, tests).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from convsync_pipeline.core import dates
from convsync_pipeline.core.formats.csv import CSV_BLOCK, read_csv
from convsync_pipeline.core.formats.json import read_json
from convsync_pipeline.core.formats.jsonl import read_jsonl
from convsync_pipeline.core.formats.streams import (
    Opener,
    ReadLimits,
    Source,
    UnreadableUpload,
    bytes_opener,
)
from convsync_pipeline.core.records import (
    SUFFIXES,
    CollectedParts,
    ParsedUpload,
    PartSink,
    file_failure,
    upload_format,
)

__all__ = ["ReadLimits", "Source", "parse_upload", "parse_upload_stream", "read_upload"]


def source_of(
    key: str, open_raw: Opener, *, size: int | None, limits: ReadLimits = ReadLimits()
) -> Source:
    fmt = upload_format(key)
    if fmt is None:
        raise ValueError(f"{key!r} is not an upload: its name must end in one of {SUFFIXES}"
                         " (optionally followed by .gz)")
    return Source(key, open_raw, size, fmt[1], limits)


def read_upload(
    source: Source,
    sink: PartSink,
    *,
    tz: ZoneInfo = dates.UTC,
    day_first: bool = False,
    block_size: int = CSV_BLOCK,
) -> None:
    """Hand the upload's parts to `sink`, in upload order; never raises on the content."""
    suffix = upload_format(source.key)[0]  # type: ignore[index]
    try:
        if suffix == ".csv":
            read_csv(source, sink, tz=tz, day_first=day_first, block_size=block_size)
        elif suffix == ".json":
            read_json(source, sink, tz=tz, day_first=day_first)
        else:
            read_jsonl(source, sink, tz=tz, day_first=day_first)
    except UnreadableUpload as error:
        sink.reset()
        head, longer = source.head()
        sink.add(file_failure(source.key, error.reason, head, longer=longer))


def parse_upload_stream(
    key: str,
    open_raw: Opener,
    *,
    size: int | None = None,
    tz: ZoneInfo = dates.UTC,
    day_first: bool = False,
    block_size: int = CSV_BLOCK,
    limits: ReadLimits = ReadLimits(),
) -> ParsedUpload:
    """The whole upload's records in memory, read from (re)openable streams of its bytes."""
    parts = CollectedParts()
    read_upload(source_of(key, open_raw, size=size, limits=limits), parts, tz=tz,
                day_first=day_first, block_size=block_size)
    return ParsedUpload.combined(key, parts.parts)


def parse_upload(
    key: str,
    data: bytes,
    *,
    tz: ZoneInfo = dates.UTC,
    day_first: bool = False,
    limits: ReadLimits = ReadLimits(),
) -> ParsedUpload:
    """Read one upload's bytes into messages and quarantined records."""
    return parse_upload_stream(key, bytes_opener(data), size=len(data), tz=tz,
                               day_first=day_first, limits=limits)
