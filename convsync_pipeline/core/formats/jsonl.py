"""JSONL / NDJSON uploads: one message record or conversation object per line (SPEC 4).

Streamed a line at a time and handed on in parts of about `PART_RECORDS` records, so an
upload of any length is read in bounded memory. A line is one JSON value: one longer than
`ReadLimits.max_json_bytes` is quarantined (its first bytes kept) without being held whole.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO
from zoneinfo import ZoneInfo

from convsync_pipeline.core.formats.json_values import DECODER, JsonRecords, may_hold_surrogates
from convsync_pipeline.core.formats.streams import Source
from convsync_pipeline.core.records import FILE_RAW_LIMIT, PartSink

PART_RECORDS = 1 << 16
PART_BYTES = 1 << 25  # or this much line text, whichever comes first


def read_jsonl(source: Source, sink: PartSink, *, tz: ZoneInfo, day_first: bool) -> None:
    """Hand the JSONL upload's records to `sink` in line order, a part at a time."""
    records = JsonRecords(source.key, "line", False)
    limit = source.limits.max_json_bytes
    text_bytes = 0
    with source.open() as stream:
        for line_no, line, whole in _lines(stream, limit):
            if line_no == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not whole:
                records.reject(
                    line_no,
                    f"line longer than {limit // 2**20} MB: a line is one JSON value, read "
                    "whole, and this one would not fit the ingest memory budget "
                    f"(CONVSYNC_INGEST_MEMORY_MB); raw text: its first {FILE_RAW_LIMIT} bytes",
                    line[:FILE_RAW_LIMIT].decode("utf-8", "replace"),
                )
            elif line.strip():  # a blank line is not a record
                _line(records, line_no, line)
                text_bytes += len(line)
            if records.pending >= PART_RECORDS or text_bytes >= PART_BYTES:
                sink.add(records.take_part(tz, day_first))
                text_bytes = 0
    sink.add(records.take_part(tz, day_first))


def _lines(stream: BinaryIO, limit: int):
    """(line number, line without its end, whether it is whole) for each physical line; a
    line past `limit` bytes comes with its beginning only, the rest skipped unread."""
    line_no = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        line_no += 1
        if len(line) > limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(1 << 20)
            yield line_no, line[:FILE_RAW_LIMIT], False
            continue
        line = line.removesuffix(b"\n")
        yield line_no, line.removesuffix(b"\r"), True


def _line(records: JsonRecords, line_no: int, line: bytes) -> None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        records.reject(line_no, "not valid UTF-8", line.decode("utf-8", "replace"))
        return
    records.check_utf8 = may_hold_surrogates(text)
    try:
        value = DECODER.decode(text)
    except RecursionError:
        records.reject(line_no, "line is not valid JSON: nested too deeply", text)
        return
    except ValueError as exc:
        records.reject(line_no, f"line is not valid JSON: {exc}", text)
        return
    records.item(value, line_no, text)
