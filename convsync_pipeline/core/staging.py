"""One upload's conversations of one date, staged between ingest and merge (internal format).

Ingest renders every new conversation once, exactly as a date document will hold it (the
text `dump_json` writes for a `pending` conversation as an item of the `conversations`
list), and stages them per (date, upload version) as an Arrow IPC stream: one row per
conversation, its id and its text. The merge then decodes no JSON and builds no Python object
per message: it picks the new ids by the one merge rule and splices their text into the
document (`core.conversations.merge_staged`).

The text is assembled column-wise by Arrow in its final order (`stage_messages`); what
that path cannot take goes through `group_by_date` and `dump_json`'s own encoder
(`StagedUpload.from_records`), which the property tests hold it equal to.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from convsync_pipeline.core.conversations import ConversationRecord, group_by_date
from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.document import (
    LIST_LEVEL,
    SEPARATOR,
    Conversation,
    JsonFragmentError,
    json_fragment,
    json_string,
)

FORMAT = "convsync-staging/1"
_TEXT = pa.large_string()
_SCHEMA = pa.schema([("id", pa.string()), ("text", _TEXT)])
# JSON text repeats its keys and indentation: zstd at level 1 makes it ~12x smaller for about
# the time the saved bytes take to write and fsync locally (and far less than to upload).
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))
# Messages rendered at a time: ~20 MB of text, so two chunks in flight stay small next to the
# upload's columns while each Arrow call still works on enough rows to pay for itself.
CHUNK_MESSAGES = 1 << 17


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
        writer = _StagingWriter(self.upload, self.etag, self.date)
        writer.write(self.ids, self.texts)
        return writer.finish()

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


# --------------------------------------------------------------------------- column-wise

_NEEDS_ESCAPE = '[\\x00-\\x1f"\\\\]'  # what json escapes when ensure_ascii=False (RE2 syntax)
_RARE_ESCAPE = "[\\x00-\\x07\\x0b\\x0e-\\x1f]"  # the control characters json writes as \u00XX
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"),
            ("\x08", "\\b"), ("\x0c", "\\f"))
_META_CACHE_LIMIT = 4096
# dump_json's layout of a conversation in a date document: the conversation at level 2, its
# messages at level 4; each level is one more space of indentation.
_N = ["\n" + " " * level for level in range(7)]
_MESSAGE_PARTS = (
    "{" + _N[5] + '"role": "', '",' + _N[5] + '"content": "', '",' + _N[5] + '"timestamp": "',
    '",' + _N[5] + '"meta": ', _N[4] + "}",
)
_CONVERSATION_HEAD = "{%s" + '"id": %s,%s"startedAt": %s,%s"endedAt": %s,%s"messages": [%s'
_CONVERSATION_TAIL = (
    _N[3] + "]," + _N[3] + '"source": %s,' + _N[3] + '"processingStatus": "pending",'
    + _N[3] + '"retryCount": 0,' + _N[3] + '"processingError": null,' + _N[3]
    + '"processedAt": null,' + _N[3] + '"analysis": null' + _N[2] + "}"
)
_MESSAGE_LEVEL = 5  # a message's meta sits five containers deep


def _scalar(text: str) -> pa.Scalar:
    return pa.scalar(text, type=_TEXT)


def _escaped(values: pa.Array) -> pa.Array:
    """Each string as json writes it between its quotes; vectorised, only where needed."""
    needs = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if not pc.any(needs).as_py():
        return values
    subset = values.filter(needs)
    escaped = subset
    for char, replacement in _ESCAPES:
        escaped = pc.replace_substring(escaped, char, replacement)
    rare = np.asarray(pc.match_substring_regex(escaped, _RARE_ESCAPE).to_numpy(
        zero_copy_only=False), bool)
    if rare.any():  # the few with other control characters: json's own function
        rows = np.flatnonzero(rare)
        exact = [json_string(v)[1:-1] for v in subset.take(pa.array(rows)).to_pylist()]
        escaped = pc.replace_with_mask(escaped, pa.array(rare), pa.array(exact, type=_TEXT))
    return pc.replace_with_mask(values, needs, escaped)


def _meta_texts(metas: list[Any]) -> list[str]:
    """Each message's `meta` as dump_json writes it inside a message of a document.

    Exports repeat a few meta values (a channel, a queue) over and over: texts of dicts of
    strings are cached by their items (str never equals a non-str, so the cache cannot answer
    for a dict with other values).
    """
    cache: dict[tuple[tuple[str, str], ...], str] = {}
    get = cache.get
    texts = []
    append = texts.append
    for meta in metas:
        if type(meta) is dict:
            if not meta:
                append("{}")
                continue
            try:
                items = tuple(meta.items())
                text = get(items)
            except TypeError:  # an unhashable value: a list or a dict inside meta
                items, text = None, None
            if text is None:
                text = json_fragment(meta, _MESSAGE_LEVEL)
                if items is not None and len(cache) < _META_CACHE_LIMIT and all(
                    type(key) is str and type(value) is str for key, value in items
                ):
                    cache[items] = text
            append(text)
        else:
            append(json_fragment(meta, _MESSAGE_LEVEL))
    return texts


def _meta_column(meta: pd.Series) -> pa.Array:
    """Each message's `meta` text: column-wise for a CSV's extra columns (a struct per row,
    null where blank: no key), one dict at a time otherwise."""
    if not isinstance(meta.dtype, pd.ArrowDtype):
        return pa.array(_meta_texts(meta.tolist()), type=_TEXT)
    struct = pa.array(meta.array)
    if isinstance(struct, pa.ChunkedArray):
        struct = struct.combine_chunks()
    if not pa.types.is_struct(struct.type) or struct.null_count:
        raise TypeError("meta is not a struct of text columns")
    if struct.type.num_fields == 0:
        return pa.repeat(_scalar("{}"), len(struct))
    by_combination = _meta_by_combination(struct)
    return by_combination if by_combination is not None else _meta_by_columns(struct)


def _meta_by_combination(struct: pa.StructArray) -> pa.Array | None:
    """Extra columns usually hold a few values (a channel, a queue): each distinct combination
    of cells is rendered once by dump_json's encoder, then placed by index. None when there
    are too many combinations for that to pay."""
    combination = np.zeros(len(struct), dtype=np.int64)
    fields: list[tuple[str, list[str], int, int]] = []  # name, values, radix, size
    radix = 1
    for index, field in enumerate(struct.type):
        encoded = pc.struct_field(struct, [index]).dictionary_encode()
        size = len(encoded.dictionary) + 1  # code 0: a blank cell, no key
        if size > _META_CACHE_LIMIT or radix * size > _META_CACHE_LIMIT**2:
            return None
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        combination += (codes + 1) * radix
        fields.append((field.name, encoded.dictionary.to_pylist(), radix, size))
        radix *= size
    # The combinations present, in order, and each row's index among them (radix is at most
    # _META_CACHE_LIMIT squared, so a table by code is cheaper than sorting the rows).
    present = np.zeros(radix, dtype=bool)
    present[combination] = True
    distinct = np.flatnonzero(present)
    index_of = np.zeros(radix, dtype=np.int64)
    index_of[distinct] = np.arange(len(distinct))
    position = index_of[combination]
    if len(distinct) > _META_CACHE_LIMIT:
        return None
    texts = []
    for code in distinct.tolist():
        present = {}
        for name, values, step, size in fields:
            cell = (code // step) % size
            if cell:
                present[name] = values[cell - 1]
        texts.append(json_fragment(present, _MESSAGE_LEVEL))
    return pa.array(texts, type=_TEXT).take(pa.array(position))


def _meta_by_columns(struct: pa.StructArray) -> pa.Array:
    """The same text built by Arrow a column at a time, for extra columns of many values."""
    items = []  # each present cell as ",<newline>key: value"; an absent one as ""
    for index, field in enumerate(struct.type):
        values = pc.struct_field(struct, [index]).cast(_TEXT)
        item = pc.binary_join_element_wise(
            _scalar("," + _N[6] + json_string(field.name) + ': "'),
            _escaped(values.fill_null("")),
            _scalar('"'),
            _scalar(""),
        )
        items.append(pc.if_else(values.is_valid(), item, _scalar("")))
    joined = pc.binary_join_element_wise(*items, _scalar(""))
    wrapped = pc.binary_join_element_wise(
        _scalar("{"), pc.utf8_slice_codeunits(joined, 1), _scalar(_N[5] + "}"), _scalar("")
    )
    return pc.if_else(pc.equal(pc.utf8_length(joined), 0), _scalar("{}"), wrapped)


def _text_column(frame: pd.DataFrame, name: str) -> pa.Array:
    column = pa.array(frame[name].array, type=_TEXT)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"{name} has missing values")
    return column


def stage_messages(
    messages: pd.DataFrame,
    source: str,
    etag: str,
    tz: ZoneInfo,
    *,
    chunk_messages: int = CHUNK_MESSAGES,
) -> Iterator[StagedUpload]:
    """One upload's messages as staged conversations per date, without a dict per message.

    Equal to ``StagedUpload.from_records(source, etag, date, group_by_date(messages, source,
    tz)[date])`` for each date: the same grouping, order, dating and text, but assembled
    column-wise by Arrow, in its final order. Columns it cannot take that way (missing values,
    non-text, text Arrow refuses, a meta value dump_json would hand to json.dumps) take exactly
    that expression instead. `staged_bodies` is the same, encoded a chunk at a time.
    """
    for date, chunks in _dated_chunks(messages, source, etag, tz, chunk_messages):
        ids, texts = zip(*chunks, strict=True)
        yield StagedUpload(
            upload=source,
            etag=etag,
            date=date,
            ids=pa.concat_arrays(list(ids)),
            texts=pa.chunked_array(texts, type=_TEXT),
        )


def staged_bodies(
    messages: pd.DataFrame,
    source: str,
    etag: str,
    tz: ZoneInfo,
    *,
    chunk_messages: int = CHUNK_MESSAGES,
) -> Iterator[tuple[str, int, bytes]]:
    """(date, conversations, `StagedUpload.encode()`d body) for each date of the upload.

    Rendered and compressed `chunk_messages` messages at a time, so an upload's text is never
    held whole and uncompressed: ingest's memory is its columns plus one chunk per thread.
    """
    for date, chunks in _dated_chunks(messages, source, etag, tz, chunk_messages):
        writer = _StagingWriter(source, etag, date)
        for ids, texts in chunks:
            writer.write(ids, texts)
        yield date, writer.rows, writer.finish()


class _StagingWriter:
    """`StagedUpload.encode`'s IPC stream, written a record batch at a time."""

    def __init__(self, upload: str, etag: str, date: str) -> None:
        self.schema = _SCHEMA.with_metadata(
            {"format": FORMAT, "upload": upload, "etag": etag, "date": date}
        )
        self.rows = 0
        self._sink = pa.BufferOutputStream()
        self._writer = pa.ipc.new_stream(self._sink, self.schema, options=_WRITE_OPTIONS)

    def write(self, ids: pa.Array, texts: pa.Array | pa.ChunkedArray) -> None:
        self._writer.write_table(pa.Table.from_arrays([ids, texts], schema=self.schema))
        self.rows += len(ids)

    def finish(self) -> bytes:
        self._writer.close()
        return self._sink.getvalue().to_pybytes()


Chunks = Iterator[tuple[pa.Array, pa.Array]]


def _dated_chunks(
    messages: pd.DataFrame, source: str, etag: str, tz: ZoneInfo, chunk_messages: int
) -> Iterator[tuple[str, Chunks]]:
    """(date, its (ids, texts) chunks in order) for each date; the fast path or the slow one."""
    if messages.empty:
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="convsync-stage") as pool:
        # The message columns are copied into one piece each on the workers meanwhile.
        pending = {
            name: pool.submit(_text_column, messages, name)
            for name in ("timestamp", "role", "content")
        }
        try:
            conversation_ids = _text_column(messages, "conversation_id")
            metas = _meta_column(messages["meta"])
            columns = {name: future.result() for name, future in pending.items()}
        except (pa.ArrowException, ValueError, TypeError, UnicodeError, JsonFragmentError):
            for staged in _stage_slowly(messages, source, etag, tz):
                yield staged.date, iter([(staged.ids, staged.texts)])
            return
        filing = _Filing.of(messages, conversation_ids, tz)
        for date, first, end in filing.dates():
            ranges = filing.chunks(first, end, chunk_messages)
            rendered = _ahead(
                pool, lambda span: _render(filing, columns, metas, source, *span), ranges
            )
            yield date, ((filing.ids.slice(a, b - a), texts) for (a, b), texts in rendered)


def _ahead(pool: ThreadPoolExecutor, work: Callable[[Any], Any], items: list[Any]) -> Iterator:
    """(item, work(item)) in order, the next item's work running while this one is used.

    Arrow's kernels release the GIL: one chunk renders on a worker while the caller
    compresses (or concatenates) the one before. At most two chunks are in memory at once.
    """
    pending: deque = deque()
    for item in items:
        pending.append((item, pool.submit(work, item)))
        if len(pending) == 2:
            done, future = pending.popleft()
            yield done, future.result()
    while pending:
        done, future = pending.popleft()
        yield done, future.result()


@dataclass(frozen=True)
class _Filing:
    """Where every message and conversation of an upload goes, as index arrays.

    Conversations: grouped by id (codes in order of first appearance), each one's messages
    ordered by (time, record number) as group_by_date's stable sort does, dated by the
    earliest message, and filed per date by first appearance in the upload (ties, only
    possible with repeated record numbers, in group_by_date's id order). `final` lists the
    messages in that order: a conversation's messages are one contiguous run of it.
    """

    final: np.ndarray  # message row of each position
    starts: np.ndarray  # per filed conversation: position of its first message
    lengths: np.ndarray  # per filed conversation: its number of messages
    days: np.ndarray  # per filed conversation: index into day_values
    day_values: Sequence[str]  # the dates, sorted
    ids: pa.Array  # per filed conversation: its id

    @classmethod
    def of(cls, messages: pd.DataFrame, conversation_id: pa.Array, tz: ZoneInfo) -> _Filing:
        encoded = conversation_id.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        ts_ns = messages["ts_ns"].to_numpy(dtype=np.int64)
        record_no = messages["record_no"].to_numpy(dtype=np.int64)
        order = np.lexsort((record_no, ts_ns, codes))
        sorted_codes = codes[order]
        cut = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
        starts = np.concatenate(([0], cut))
        lengths = np.diff(np.concatenate((starts, [len(order)])))
        group_codes = sorted_codes[starts]
        first_seen = np.minimum.reduceat(record_no[order], starts)
        id_rank = np.empty(len(encoded.dictionary), dtype=np.int64)
        id_rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(id_rank))
        day_of_group, day_values = pd.factorize(
            local_dates(pd.Series(ts_ns[order][starts]), tz), sort=True
        )
        filing = np.lexsort((id_rank[group_codes], first_seen, day_of_group))
        filed_lengths = lengths[filing]
        filed_starts = np.concatenate(([0], np.cumsum(filed_lengths)[:-1]))
        shift = np.repeat(starts[filing] - filed_starts, filed_lengths)
        return cls(
            final=order[shift + np.arange(len(order))],
            starts=filed_starts,
            lengths=filed_lengths,
            days=day_of_group[filing],
            day_values=day_values,
            ids=encoded.dictionary.take(pa.array(group_codes[filing])).cast(pa.string()),
        )

    def dates(self) -> Iterator[tuple[str, int, int]]:
        """(date, first conversation, end conversation) for each date, in date order."""
        first_in_date = np.ones(len(self.days), dtype=bool)
        first_in_date[1:] = self.days[1:] != self.days[:-1]
        date_starts = np.flatnonzero(first_in_date)
        date_ends = np.append(date_starts[1:], len(self.days))
        for first, end in zip(date_starts.tolist(), date_ends.tolist(), strict=True):
            yield str(self.day_values[self.days[first]]), first, end

    def chunks(self, first: int, end: int, size: int) -> list[tuple[int, int]]:
        """Conversation ranges of [first, end) holding about `size` messages each (a
        conversation is never split)."""
        bounds = [first]
        while bounds[-1] < end:
            target = self.starts[bounds[-1]] + max(size, 1)
            next_bound = int(np.searchsorted(self.starts[:end], target, side="left"))
            bounds.append(min(max(next_bound, bounds[-1] + 1), end))
        return list(itertools.pairwise(bounds))

    def positions(self, first: int, end: int) -> tuple[int, int]:
        """The message positions [lo, hi) of conversations [first, end)."""
        lo = int(self.starts[first])
        return lo, lo + int(self.lengths[first:end].sum())


def _render(
    filing: _Filing,
    columns: dict[str, pa.Array],
    metas: pa.Array,
    source: str,
    first: int,
    end: int,
) -> pa.Array:
    """The texts of filed conversations [first, end), one large_string each.

    Each message's text carries its conversation's head (before the first message) or the
    separator after the previous message, and its conversation's tail (after the last one),
    so a conversation's text is one contiguous run of the joined message texts.
    """
    lo, hi = filing.positions(first, end)
    rows = pa.array(filing.final[lo:hi])
    stamps, role, content = (
        _escaped(columns[name].take(rows)) for name in ("timestamp", "role", "content")
    )
    starts = filing.starts[first:end] - lo
    lasts = starts + filing.lengths[first:end] - 1
    started = stamps.take(pa.array(starts)).to_pylist()
    ended = stamps.take(pa.array(lasts)).to_pylist()
    heads = [
        _CONVERSATION_HEAD % (
            _N[3], json_string(cid), _N[3], f'"{begin}"', _N[3], f'"{stop}"', _N[3], _N[4]
        )
        for cid, begin, stop in zip(
            filing.ids.slice(first, end - first).to_pylist(), started, ended, strict=True
        )
    ]
    head_index = np.zeros(hi - lo, dtype=np.int64)
    head_index[starts] = np.arange(1, end - first + 1)
    prefix = pa.array(["," + _N[4], *heads], type=_TEXT).take(pa.array(head_index))
    tail_index = np.zeros(hi - lo, dtype=np.int64)
    tail_index[lasts] = 1
    suffix = pa.array(["", _CONVERSATION_TAIL % json_string(source)], type=_TEXT).take(
        pa.array(tail_index)
    )
    text = pc.binary_join_element_wise(
        prefix,
        _scalar(_MESSAGE_PARTS[0]), role,
        _scalar(_MESSAGE_PARTS[1]), content,
        _scalar(_MESSAGE_PARTS[2]), stamps,
        _scalar(_MESSAGE_PARTS[3]), metas.take(rows),
        _scalar(_MESSAGE_PARTS[4]), suffix,
        _scalar(""),
    )
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[text.offset :]
    bounds = np.append(offsets[starts], offsets[len(text)])
    return pa.LargeStringArray.from_buffers(end - first, pa.py_buffer(bounds), data)


def _stage_slowly(
    messages: pd.DataFrame, source: str, etag: str, tz: ZoneInfo
) -> Iterator[StagedUpload]:
    for day, conversations in group_by_date(messages, source, tz).items():
        yield StagedUpload.from_records(source, etag, day, conversations)
