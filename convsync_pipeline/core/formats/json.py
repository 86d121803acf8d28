"""JSON uploads: one document, a list of message records or of conversation objects, or an
object `{"conversations": [...]}` (SPEC section 4).

A JSON document is one value: it is parsed whole, so its size is bounded by the memory budget
(`ReadLimits.max_json_bytes`, from CONVSYNC_INGEST_MEMORY_MB). A larger one is quarantined
whole, with a reason that says to split it or export JSONL (streamed a line at a time), after
reading no more than that limit.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from convsync_pipeline.core.formats.json_values import (
    DECODER,
    JsonRecords,
    json_kind,
    may_hold_surrogates,
)
from convsync_pipeline.core.formats.streams import Source, read_at_most
from convsync_pipeline.core.records import PartSink, file_failure, fold


def read_json(source: Source, sink: PartSink, *, tz: ZoneInfo, day_first: bool) -> None:
    """Hand the JSON upload's records to `sink` as one part (or its whole-file failure)."""
    limit = source.limits.max_json_bytes
    with source.open() as stream:
        data = read_at_most(stream, limit + 1)
    key = source.key
    if len(data) > limit:
        sink.add(file_failure(
            key,
            f"a JSON document larger than {limit // 2**20} MB is not parsed: a document is read "
            "whole, and this one would not fit the ingest memory budget "
            "(CONVSYNC_INGEST_MEMORY_MB). Split it into smaller files, or export it as JSONL "
            "(one record per line, read as it streams)",
            data, longer=True,
        ))
        return
    text, suspicious = _decode(data)
    try:
        document = DECODER.decode(text)
    except RecursionError:
        sink.add(file_failure(key, "not valid JSON: nested too deeply", data))
        return
    except ValueError as exc:
        sink.add(file_failure(key, f"not valid JSON: {exc}", data))
        return
    del text
    if isinstance(document, dict):
        inner = next((document[k] for k in document if fold(k) == "conversations"), None)
        if not isinstance(inner, list):
            keys = ", ".join(repr(k) for k in list(document)[:8])
            sink.add(file_failure(
                key, "unknown top-level shape: a JSON object without a \"conversations\" list"
                f" (keys: {keys})", data,
            ))
            return
        items: list[Any] = inner
    elif isinstance(document, list):
        items = document
    else:
        sink.add(file_failure(
            key, f"unknown top-level shape: {json_kind(document)}, not a list or an object", data
        ))
        return
    records = JsonRecords(key, "record", suspicious)
    try:
        for position, item in enumerate(items, start=1):
            records.item(item, position, None)
    except RecursionError:
        sink.add(file_failure(key, "not usable JSON: nested too deeply", data))
        return
    sink.add(records.take_part(tz, day_first))


def _decode(data: bytes) -> tuple[str, bool]:
    """Text with undecodable bytes kept as lone surrogates; whether any text needs a check."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"), True
    return text.removeprefix("\ufeff"), may_hold_surrogates(text)
