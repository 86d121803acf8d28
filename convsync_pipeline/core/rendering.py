"""The text a date document holds for each new conversation, built column-wise by Arrow.

Two steps, so that the second can run on any subset of an upload (all of it in memory, or a
bucket of it spilled to disk, `core.spill`):

- `render_messages`: each message of a part, as dump_json writes it inside a conversation of
  a date document (escaped role, content and timestamp, and its `meta`), with the columns
  that group and order it (id, time, record number);
- `Filing` + `conversation_texts`: messages grouped by conversation id, ordered by (time,
  record number), dated by the earliest (in the partitions' timezone), filed per date by
  first appearance in the upload, and joined with the conversation's head and tail.

Equal, byte for byte, to `group_by_date` rendered record by record by dump_json's encoder
(`core.staging.StagedUpload.from_records`): the property tests hold them together. Values
the column-wise way cannot take are rendered one message at a time by that encoder.
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

from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.document import JsonFragmentError, Message, json_fragment, json_string
from convsync_pipeline.core.records import meta_dicts

TEXT = pa.large_string()
# A part's messages, rendered: what `Filing` groups and what `core.spill` writes to disk.
MESSAGES = pa.schema([
    ("conversation_id", pa.string()),
    ("ts_ns", pa.int64()),
    ("record_no", pa.int64()),
    ("timestamp", pa.string()),
    ("message", TEXT),
])

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
    return pa.scalar(text, type=TEXT)


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
        escaped = pc.replace_with_mask(escaped, pa.array(rare), pa.array(exact, type=TEXT))
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
        return pa.array(_meta_texts(meta.tolist()), type=TEXT)
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
    return pa.array(texts, type=TEXT).take(pa.array(position))


def _meta_by_columns(struct: pa.StructArray) -> pa.Array:
    """The same text built by Arrow a column at a time, for extra columns of many values."""
    items = []  # each present cell as ",<newline>key: value"; an absent one as ""
    for index, field in enumerate(struct.type):
        values = pc.struct_field(struct, [index]).cast(TEXT)
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
    column = pa.array(frame[name].array, type=TEXT)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"{name} has missing values")
    return column


def render_messages(messages: pd.DataFrame) -> pa.Table:
    """A part's messages (`core.records.MESSAGE_COLUMNS`) as `MESSAGES` rows, in part order.

    Column-wise; a part whose columns that way cannot take (missing values, non-text, text
    Arrow refuses, a meta value dump_json would hand to json.dumps) is rendered one message at
    a time by dump_json's own encoder instead, to the same text.
    """
    try:
        ids = pa.array(messages["conversation_id"].array, type=pa.string())
        stamps = _text_column(messages, "timestamp")
        text = pc.binary_join_element_wise(
            _scalar(_MESSAGE_PARTS[0]), _escaped(_text_column(messages, "role")),
            _scalar(_MESSAGE_PARTS[1]), _escaped(_text_column(messages, "content")),
            _scalar(_MESSAGE_PARTS[2]), _escaped(stamps),
            _scalar(_MESSAGE_PARTS[3]), _meta_column(messages["meta"]),
            _scalar(_MESSAGE_PARTS[4]),
            _scalar(""),
        )
    except (pa.ArrowException, ValueError, TypeError, UnicodeError, JsonFragmentError):
        ids = pa.array(messages["conversation_id"].tolist(), type=pa.string())
        stamps = pa.array(messages["timestamp"].tolist(), type=pa.string())
        text = pa.array(_messages_one_by_one(messages), type=TEXT)
    return pa.Table.from_arrays(
        [
            ids,
            pa.array(messages["ts_ns"].to_numpy(dtype=np.int64)),
            pa.array(messages["record_no"].to_numpy(dtype=np.int64)),
            stamps.cast(pa.string()),
            text,
        ],
        schema=MESSAGES,
    )


def _messages_one_by_one(messages: pd.DataFrame) -> list[str]:
    """Each message as dump_json writes it inside a conversation of a document, the general
    way (a message model, dumped); what dump_json leaves to json.dumps gets json.dumps' text,
    indented to where the message sits (json escapes newlines inside strings, so every
    newline of its text is layout)."""
    texts = []
    for role, content, stamp, meta in zip(
        messages["role"].tolist(), messages["content"].tolist(),
        messages["timestamp"].tolist(), meta_dicts(messages["meta"]), strict=True,
    ):
        body = Message(role=role, content=content, timestamp=stamp, meta=meta).model_dump()
        try:
            texts.append(json_fragment(body, _MESSAGE_LEVEL - 1))
        except JsonFragmentError:
            indent = "\n" + " " * (_MESSAGE_LEVEL - 1)
            texts.append(json.dumps(body, ensure_ascii=False, indent=1).replace("\n", indent))
    return texts


def ahead(pool: ThreadPoolExecutor, work: Callable[[Any], Any], items: list[Any]) -> Iterator:
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
class Filing:
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
    first_seen: np.ndarray  # per filed conversation: its first record number in the upload

    @classmethod
    def of(cls, messages: pa.Table, tz: ZoneInfo) -> Filing:
        """The filing of `MESSAGES` rows (one chunk or many: the texts are never copied)."""
        encoded = messages.column("conversation_id").combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        ts_ns = messages.column("ts_ns").to_numpy()
        record_no = messages.column("record_no").to_numpy()
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
            first_seen=first_seen[filing],
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




def conversation_texts(
    filing: Filing, messages: pa.Table, source: str, first: int, end: int
) -> pa.Array:
    """The texts of filed conversations [first, end), one large_string each.

    Each message's text carries its conversation's head (before the first message) or the
    separator after the previous message, and its conversation's tail (after the last one),
    so a conversation's text is one contiguous run of the joined message texts.
    """
    lo, hi = filing.positions(first, end)
    rows = pa.array(filing.final[lo:hi])
    stamps = messages.column("timestamp").take(rows)
    starts = filing.starts[first:end] - lo
    lasts = starts + filing.lengths[first:end] - 1
    started = stamps.take(pa.array(starts)).to_pylist()
    ended = stamps.take(pa.array(lasts)).to_pylist()
    heads = [
        _CONVERSATION_HEAD % (
            _N[3], json_string(cid), _N[3], json_string(begin), _N[3], json_string(stop),
            _N[3], _N[4],
        )
        for cid, begin, stop in zip(
            filing.ids.slice(first, end - first).to_pylist(), started, ended, strict=True
        )
    ]
    head_index = np.zeros(hi - lo, dtype=np.int64)
    head_index[starts] = np.arange(1, end - first + 1)
    prefix = pa.array(["," + _N[4], *heads], type=TEXT).take(pa.array(head_index))
    tail_index = np.zeros(hi - lo, dtype=np.int64)
    tail_index[lasts] = 1
    suffix = pa.array(["", _CONVERSATION_TAIL % json_string(source)], type=TEXT).take(
        pa.array(tail_index)
    )
    body = messages.column("message").take(rows)
    if isinstance(body, pa.ChunkedArray):
        body = body.combine_chunks()
    text = pc.binary_join_element_wise(prefix, body, suffix, _scalar(""))
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[text.offset :]
    bounds = np.append(offsets[starts], offsets[len(text)])
    return pa.LargeStringArray.from_buffers(end - first, pa.py_buffer(bounds), data)


def filed_chunks(
    messages: pa.Table, source: str, tz: ZoneInfo, chunk_messages: int
) -> Iterator[tuple[str, Iterator[tuple[pa.Array, pa.Array, np.ndarray]]]]:
    """(date, its (ids, texts, first appearances) chunks in filing order) for each date.

    Chunks of about `chunk_messages` messages (a conversation is never split); one renders
    on a worker while the caller uses the one before, so at most two are in memory.
    """
    if not messages.num_rows:
        return
    filing = Filing.of(messages, tz)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsync-render") as pool:
        for date, first, end in filing.dates():
            rendered = ahead(
                pool,
                lambda span: conversation_texts(filing, messages, source, *span),
                filing.chunks(first, end, chunk_messages),
            )
            yield date, (
                (filing.ids.slice(a, b - a), texts, filing.first_seen[a:b])
                for (a, b), texts in rendered
            )
