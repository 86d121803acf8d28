"""One upload's conversations of one date, staged between ingest and merge (internal format).

Ingest renders every new conversation once, exactly as a date document will hold it (the
text `dump_json` writes for a `pending` conversation as an item of the `conversations`
list), and stages them per (date, upload version) as an Arrow IPC stream: one row per
conversation, its id and its text. The merge then decodes no JSON and builds no Python object
per message: it picks the new ids by the one merge rule and splices their text into the
document (`core.conversations.merge_staged`).

The text is assembled column-wise by Arrow (`core.rendering`; a large upload a bucket at a
time, `core.spill`); `group_by_date` rendered by `dump_json`'s own encoder
(`StagedUpload.from_records`) is the reference the property tests hold it equal to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa

from convsync_pipeline.core.conversations import ConversationRecord, group_by_date
from convsync_pipeline.core.document import LIST_LEVEL, SEPARATOR, Conversation, json_fragment
from convsync_pipeline.core.rendering import filed_chunks, render_messages
from convsync_pipeline.core.spill import CHUNK_MESSAGES

FORMAT = "convsync-staging/1"
_TEXT = pa.large_string()
_SCHEMA = pa.schema([("id", pa.string()), ("text", _TEXT)])
# JSON text repeats its keys and indentation: zstd at level 1 makes it ~12x smaller for about
# the time the saved bytes take to write and fsync locally (and far less than to upload).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))


class StagingFormatError(ValueError):
    """A staged object is not in a format this version reads; the message names the key."""


@dataclass(frozen=True)
class StagedUpload:
    """The conversations one upload version brings to one date, each rendered as pending."""

    upload: str
    etag: str
    date: str
    ids: pa.Array  # string, unique within the object
    texts: pa.Array | pa.ChunkedArray  # large_string: each conversation's list item text

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self) -> bytes:
        """An Arrow IPC stream (zstd); upload, etag and date ride in the schema's metadata."""
        sink = pa.BufferOutputStream()
        writer = StagingWriter(sink, self.upload, self.etag, self.date)
        writer.write(self.ids, self.texts)
        writer.close()
        return sink.getvalue().to_pybytes()

    @classmethod
    def decode(cls, data: bytes, key: str) -> StagedUpload:
        """Read what `encode` wrote (zero-copy); a staging body of the JSON format before it
        is re-rendered from its records, so an upgrade never strands staged uploads."""
        if data[:1] == b"{":
            return cls._from_json_body(data, key)
        try:
            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except pa.ArrowInvalid as error:
            raise StagingFormatError(f"{key} is not a staged upload: {error}") from None
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if meta.get("format") != FORMAT or table.schema.remove_metadata() != _SCHEMA:
            raise StagingFormatError(
                f"{key} is staged in format {meta.get('format')!r}, not {FORMAT!r}"
            )
        return cls(
            upload=meta["upload"],
            etag=meta["etag"],
            date=meta["date"],
            ids=table.column("id").combine_chunks(),
            texts=table.column("text"),  # kept in its chunks: the merge copies it only once
        )

    @classmethod
    def _from_json_body(cls, data: bytes, key: str) -> StagedUpload:
        try:
            body = json.loads(data)
            return cls.from_records(
                body["upload"], body["etag"], body["date"], body["conversations"]
            )
        except (ValueError, KeyError, TypeError) as error:
            raise StagingFormatError(f"{key} is not a staged upload: {error}") from None

    @classmethod
    def from_records(
        cls, upload: str, etag: str, date: str, records: Sequence[ConversationRecord]
    ) -> StagedUpload:
        """Stage conversation records the general way: each validated as a `Conversation`,
        reset to pending, and written by dump_json's encoder (the reference for the
        column-wise path; invalid records raise pydantic's ValidationError)."""
        texts = []
        for record in records:
            model = Conversation.model_validate(record).model_copy(update=_PENDING)
            texts.append(json_fragment(model.model_dump(by_alias=True), LIST_LEVEL))
        return cls(
            upload=upload,
            etag=etag,
            date=date,
            ids=pa.array([record["id"] for record in records], type=pa.string()),
            texts=pa.array(texts, type=_TEXT),
        )

    def keeping(self, keep: Sequence[bool]) -> StagedUpload:
        """The same upload with only the rows where `keep` is true (erasure, tombstones)."""
        mask = pa.array(keep, type=pa.bool_())
        return StagedUpload(
            upload=self.upload,
            etag=self.etag,
            date=self.date,
            ids=self.ids.filter(mask),
            texts=self.texts.filter(mask),
        )

    def conversations(self) -> list[ConversationRecord]:
        """The staged conversations as JSON records (for inspection and tests)."""
        return json.loads("[" + SEPARATOR.join(self.texts.to_pylist()) + "]")


_PENDING = {
    "processing_status": "pending",
    "retry_count": 0,
    "processing_error": None,
    "processed_at": None,
    "analysis": None,
}


def stage_messages(
    messages: pd.DataFrame,
    source: str,
    etag: str,
    tz: ZoneInfo,
    *,
    chunk_messages: int = CHUNK_MESSAGES,
) -> Iterator[StagedUpload]:
    """One upload's messages (in memory) as staged conversations per date.

    Equal to ``StagedUpload.from_records(source, etag, date, group_by_date(messages, source,
    tz)[date])`` for each date: the same grouping, order, dating and text, but assembled
    column-wise (`core.rendering`).
    """
    for date, chunks in _dated_chunks(messages, source, tz, chunk_messages):
        ids, texts = zip(*chunks, strict=True)
        yield StagedUpload(
            upload=source,
            etag=etag,
            date=date,
            ids=pa.concat_arrays(list(ids)),
            texts=pa.chunked_array(texts, type=_TEXT),
        )


def _dated_chunks(
    messages: pd.DataFrame, source: str, tz: ZoneInfo, chunk_messages: int
) -> Iterator[tuple[str, Iterator[tuple[pa.Array, pa.Array]]]]:
    rendered = render_messages(messages)
    for date, chunks in filed_chunks(rendered, source, tz, chunk_messages):
        yield date, ((ids, texts) for ids, texts, _ in chunks)


class StagingWriter:
    """A staged object (`StagedUpload.encode`'s IPC stream) written a record batch at a time
    to `sink` (a file on local disk for a large upload, memory for a small one)."""

    def __init__(self, sink: Any, upload: str, etag: str, date: str) -> None:
        self.schema = _SCHEMA.with_metadata(
            {"format": FORMAT, "upload": upload, "etag": etag, "date": date}
        )
        self.rows = 0
        self._writer = pa.ipc.new_stream(sink, self.schema, options=_WRITE_OPTIONS)

    def write(self, ids: pa.Array, texts: pa.Array | pa.ChunkedArray) -> None:
        self._writer.write_table(pa.Table.from_arrays([ids, texts], schema=self.schema))
        self.rows += len(ids)

    def close(self) -> None:
        self._writer.close()


def _stage_slowly(
    messages: pd.DataFrame, source: str, etag: str, tz: ZoneInfo
) -> Iterator[StagedUpload]:
    for day, conversations in group_by_date(messages, source, tz).items():
        yield StagedUpload.from_records(source, etag, day, conversations)
