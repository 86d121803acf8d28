"""Messages -> conversations dated by their first message, and the one merge (seed fix 3).

Every entry point (sensor, schedule, backfill, CLI) goes through `merge_conversations`, so
there is exactly one definition of "already present".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.document import (
    Conversation,
    DateDocument,
    JsonFragmentError,
    json_fragment,
    json_string,
)

ConversationRecord = dict[str, Any]  # a conversation in the document's JSON shape


def group_by_date(
    messages: pd.DataFrame, source: str, tz: ZoneInfo
) -> dict[str, list[ConversationRecord]]:
    """Group one upload's messages into conversations and file each under its first day.

    Messages are ordered by time (ties keep upload order); a conversation whose messages
    straddle midnight belongs to the day of its earliest message only. Conversations keep the
    order in which they first appear in the upload.
    """
    if messages.empty:
        return {}
    ordered = messages.sort_values(["conversation_id", "ts_ns", "record_no"], kind="stable")
    ids = ordered["conversation_id"].to_numpy()
    cut = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(ids)]))

    timestamps = ordered["timestamp"].tolist()
    all_messages = [
        {"role": role, "content": content, "timestamp": stamp, "meta": meta}
        for role, content, stamp, meta in zip(
            ordered["role"].tolist(),
            ordered["content"].tolist(),
            timestamps,
            ordered["meta"].tolist(),
            strict=True,
        )
    ]
    first_ns = ordered["ts_ns"].to_numpy()[starts]
    days = local_dates(pd.Series(first_ns), tz).tolist()
    first_seen = np.minimum.reduceat(ordered["record_no"].to_numpy(), starts)

    by_date: dict[str, list[tuple[int, ConversationRecord]]] = {}
    for index, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        record: ConversationRecord = {
            "id": ids[start],
            "startedAt": timestamps[start],
            "endedAt": timestamps[end - 1],
            "messages": all_messages[start:end],
            "source": source,
            "processingStatus": "pending",
            "retryCount": 0,
            "processingError": None,
            "processedAt": None,
            "analysis": None,
        }
        by_date.setdefault(days[index], []).append((int(first_seen[index]), record))
    return {
        day: [record for _, record in sorted(entries, key=lambda entry: entry[0])]
        for day, entries in by_date.items()
    }


# --------------------------------------------------------------------------- staging, columnar

_TEXT = pa.large_string()
_NEEDS_ESCAPE = '[\\x00-\\x1f"\\\\]'  # what json escapes when ensure_ascii=False (RE2 syntax)
_RARE_ESCAPE = "[\\x00-\\x07\\x0b\\x0e-\\x1f]"  # the control characters json writes as \u00XX
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"),
            ("\x08", "\\b"), ("\x0c", "\\f"))
_META_CACHE_LIMIT = 4096
# dump_json's layout of a staging body: the body at level 0, its conversations at level 2,
# their messages at level 4; each level is one more space of indentation.
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
_BODY_HEAD = (
    "{" + _N[1] + '"upload": %s,' + _N[1] + '"etag": %s,' + _N[1] + '"date": %s,' + _N[1]
    + '"conversations": [' + _N[2]
)
_BODY_TAIL = (_N[1] + "]" + _N[0] + "}").encode()


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
    """Each message's `meta` as dump_json writes it inside a staged message (level 5).

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
                text = json_fragment(meta, 5)
                if items is not None and len(cache) < _META_CACHE_LIMIT and all(
                    type(key) is str and type(value) is str for key, value in items
                ):
                    cache[items] = text
            append(text)
        else:
            append(json_fragment(meta, 5))
    return texts


def _text_column(frame: pd.DataFrame, name: str) -> pa.Array:
    column = pa.array(frame[name].array, type=_TEXT)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"{name} has missing values")
    return column


def staged_bodies(
    messages: pd.DataFrame, source: str, etag: str, tz: ZoneInfo
) -> Iterator[tuple[str, int, bytes]]:
    """(date, conversations, staging body) for each date of one upload, without a dict per message.

    The body is byte for byte ``dump_json({"upload": source, "etag": etag, "date": date,
    "conversations": group_by_date(messages, source, tz)[date]})``: the same grouping, order and
    dating, but the JSON text is assembled column-wise by Arrow, in its final order, instead of
    from a Python dict per message and conversation (most of the cost of staging a large
    upload). Columns it cannot take that way (missing values, non-text, text Arrow refuses, a
    meta value dump_json would hand to json.dumps) fall back to exactly that expression.
    """
    if messages.empty:
        return
    try:
        columns = {
            name: _text_column(messages, name)
            for name in ("conversation_id", "timestamp", "role", "content")
        }
        metas = pa.array(_meta_texts(messages["meta"].tolist()), type=_TEXT)
    except (pa.ArrowException, ValueError, TypeError, UnicodeError, JsonFragmentError):
        yield from _staged_bodies_slowly(messages, source, etag, tz)
        return

    # Conversations: group by id (codes in order of first appearance), order each one's
    # messages by (time, record number) as group_by_date's stable sort does, and date it by
    # its earliest message.
    encoded = columns["conversation_id"].dictionary_encode()
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
    days = np.asarray(local_dates(pd.Series(ts_ns[order][starts]), tz).tolist(), dtype=object)
    # Filed per date by first appearance in the upload; ties (only possible with repeated
    # record numbers) in group_by_date's id order.
    id_rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    id_rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(id_rank))
    day_values, day_of_group = np.unique(days, return_inverse=True)
    filing = np.lexsort((id_rank[group_codes], first_seen, day_of_group))
    filed_days = day_of_group[filing]
    filed_lengths = lengths[filing]

    # Every message in its final place: conversations in filing order, each one's messages in
    # time order. Then each message's text carries what precedes it in the body (its
    # conversation's head, or the separator after the previous message) and what follows it
    # (its conversation's tail, after the last message): a date's body is one contiguous run.
    filed_starts = np.concatenate(([0], np.cumsum(filed_lengths)[:-1]))
    final = order[
        np.repeat(starts[filing] - filed_starts, filed_lengths) + np.arange(len(order))
    ]
    take = pa.array(final)
    stamps = _escaped(columns["timestamp"].take(take))
    first_in_date = np.ones(len(filing), dtype=bool)
    first_in_date[1:] = filed_days[1:] != filed_days[:-1]
    ids = [json_string(text) for text in encoded.dictionary.take(
        pa.array(group_codes[filing])).to_pylist()]
    started = stamps.take(pa.array(filed_starts)).to_pylist()
    ended = stamps.take(pa.array(filed_starts + filed_lengths - 1)).to_pylist()
    heads = [
        ("" if lead else "," + _N[2])
        + _CONVERSATION_HEAD % (_N[3], cid, _N[3], f'"{begin}"', _N[3], f'"{end}"', _N[3], _N[4])
        for lead, cid, begin, end in zip(first_in_date.tolist(), ids, started, ended, strict=True)
    ]
    del ids, started, ended
    head_index = np.zeros(len(order), dtype=np.int64)
    head_index[filed_starts] = np.arange(1, len(filing) + 1)
    prefix = pa.array(["," + _N[4], *heads], type=_TEXT).take(pa.array(head_index))
    del heads
    tail_index = np.zeros(len(order), dtype=np.int64)
    tail_index[filed_starts + filed_lengths - 1] = 1
    tail = _CONVERSATION_TAIL % json_string(source)
    suffix = pa.array(["", tail], type=_TEXT).take(pa.array(tail_index))
    text = pc.binary_join_element_wise(
        prefix,
        _scalar(_MESSAGE_PARTS[0]), _escaped(columns["role"].take(take)),
        _scalar(_MESSAGE_PARTS[1]), _escaped(columns["content"].take(take)),
        _scalar(_MESSAGE_PARTS[2]), stamps,
        _scalar(_MESSAGE_PARTS[3]), metas.take(take),
        _scalar(_MESSAGE_PARTS[4]), suffix,
        _scalar(""),
    )
    del prefix, suffix, stamps, metas, columns
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[text.offset :]
    date_starts = np.flatnonzero(first_in_date)  # index of each date's first conversation
    date_ends = np.concatenate((date_starts[1:], [len(filing)]))
    for first, last in zip(date_starts.tolist(), date_ends.tolist(), strict=True):
        day = day_values[filed_days[first]]
        head = _BODY_HEAD % (json_string(source), json_string(etag), json_string(day))
        lo = int(offsets[filed_starts[first]])
        hi = int(offsets[filed_starts[last - 1] + filed_lengths[last - 1]])
        yield day, last - first, b"".join((head.encode(), memoryview(data)[lo:hi], _BODY_TAIL))


def render_pending(records: list[ConversationRecord]) -> bytes | None:
    """The text dump_json writes for `records` as items of a `conversations` list (level 2),
    joined by its separators: column-wise, like a staging body. Records must be what
    `merge_staged` returns (every field as its model dumps it, status pending); None when one
    has no messages (dump_json writes `[]` there) or a meta dump_json would hand to json.dumps.
    """
    if not records:
        return b""
    lengths = np.fromiter((len(r["messages"]) for r in records), np.int64, len(records))
    if not lengths.all():
        return None
    messages = [message for record in records for message in record["messages"]]
    try:
        metas = pa.array(_meta_texts([m["meta"] for m in messages]), type=_TEXT)
    except JsonFragmentError:
        return None
    roles = pa.array([m["role"] for m in messages], type=_TEXT)
    contents = pa.array([m["content"] for m in messages], type=_TEXT)
    stamps = pa.array([m["timestamp"] for m in messages], type=_TEXT)
    del messages
    heads = [
        ("," + _N[2] if index else "")
        + _CONVERSATION_HEAD % (
            _N[3], json_string(r["id"]), _N[3], json_string(r["startedAt"]), _N[3],
            json_string(r["endedAt"]), _N[3], _N[4],
        )
        for index, r in enumerate(records)
    ]
    firsts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    head_index = np.zeros(len(roles), dtype=np.int64)
    head_index[firsts] = np.arange(1, len(records) + 1)
    prefix = pa.array(["," + _N[4], *heads], type=_TEXT).take(pa.array(head_index))
    tails = ["", *(_CONVERSATION_TAIL % json_string(r["source"]) for r in records)]
    tail_index = np.zeros(len(roles), dtype=np.int64)
    tail_index[firsts + lengths - 1] = np.arange(1, len(records) + 1)
    suffix = pa.array(tails, type=_TEXT).take(pa.array(tail_index))
    text = pc.binary_join_element_wise(
        prefix,
        _scalar(_MESSAGE_PARTS[0]), _escaped(roles),
        _scalar(_MESSAGE_PARTS[1]), _escaped(contents),
        _scalar(_MESSAGE_PARTS[2]), _escaped(stamps),
        _scalar(_MESSAGE_PARTS[3]), metas,
        _scalar(_MESSAGE_PARTS[4]), suffix,
        _scalar(""),
    )
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[text.offset :]
    return memoryview(data)[int(offsets[0]) : int(offsets[len(text)])].tobytes()


def _staged_bodies_slowly(
    messages: pd.DataFrame, source: str, etag: str, tz: ZoneInfo
) -> Iterator[tuple[str, int, bytes]]:
    from convsync_pipeline.core.document import dump_json

    for day, conversations in group_by_date(messages, source, tz).items():
        body = {"upload": source, "etag": etag, "date": day, "conversations": conversations}
        yield day, len(conversations), dump_json(body)


@dataclass(frozen=True)
class StagedBatch:
    """The conversations one upload contributes to one date."""

    upload: str
    conversations: list[ConversationRecord]


@dataclass
class MergeOutcome:
    document: DateDocument
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def _first_uploads_win(
    known: set[str], batches: Iterable[StagedBatch]
) -> tuple[list[ConversationRecord], list[str]]:
    """The rule of the one merge: (records whose id is new, in order; ids already present).

    Batches are taken in upload-key order, so among uploads merged together the first key
    that brings an id decides its messages. An id already present is never duplicated,
    overwritten or reset, even when a later record for it is earlier in time. `known` is
    updated with the new ids.
    """
    new: list[ConversationRecord] = []
    present: list[str] = []
    for batch in sorted(batches, key=lambda staged: staged.upload):
        for record in batch.conversations:
            conversation_id = record["id"]
            if conversation_id in known:
                present.append(conversation_id)
                continue
            known.add(conversation_id)
            new.append(record)
    return new, present


_RESET = {
    "processing_status": "pending",
    "retry_count": 0,
    "processing_error": None,
    "processed_at": None,
    "analysis": None,
}


def merge_conversations(document: DateDocument, batches: Iterable[StagedBatch]) -> MergeOutcome:
    """Append conversations whose id is new to the document, as `pending`; touch nothing else.

    Batches are taken in upload-key order, so among uploads merged together the first key
    that brings an id decides its messages. An id already present is never duplicated,
    overwritten or reset, even when a later record for it is earlier in time.
    """
    known = {conversation.id for conversation in document.conversations}
    new, present = _first_uploads_win(known, batches)
    outcome = MergeOutcome(document=document, already_present=present)
    appended: list[Conversation] = []
    for record in new:
        appended.append(Conversation.model_validate(record).model_copy(update=_RESET))
        outcome.added.append(record["id"])
    if appended:
        outcome.document = document.model_copy(
            update={"conversations": [*document.conversations, *appended]}
        )
    return outcome


@dataclass
class StagedMerge:
    """`merge_conversations`' answer as plain records: what `merge_date` saves, unmodelled."""

    document: DateDocument  # the document as it was: `records` are appended on save
    records: list[ConversationRecord] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def merge_staged(
    document: DateDocument, batches: Iterable[StagedBatch], *, from_json: bool = False
) -> StagedMerge:
    """`merge_conversations` without a pydantic model per new conversation and message.

    The same rule (`_first_uploads_win`) picks the same conversations; each comes back as
    exactly the record its `Conversation` model, reset to `pending`, dumps by alias, ready for
    `DateDocument.sealed_json_appending`. Staged records in the shape ingest writes them take
    no validation round trip; any other record goes through the model, as before (and fails
    the same way when it is invalid). `from_json`: the batches were just decoded by json.loads,
    so every mapping key is already a str (one check less per message).
    """
    known = {conversation.id for conversation in document.conversations}
    new, present = _first_uploads_win(known, batches)
    plain = _plain_json_message if from_json else _plain_message
    return StagedMerge(
        document=document,
        records=[_pending_record(record, plain) for record in new],
        added=[record["id"] for record in new],
        already_present=present,
    )


_CONVERSATION_KEYS = (
    "id", "startedAt", "endedAt", "messages", "source",
    "processingStatus", "retryCount", "processingError", "processedAt", "analysis",
)
_MESSAGE_KEYS = ("role", "content", "timestamp", "meta")


def _pending_record(
    record: ConversationRecord, plain: Callable[[Any], bool]
) -> ConversationRecord:
    """`Conversation.model_validate(record)`, reset to pending, dumped by alias; fast when the
    record already has exactly that shape (then validation would change nothing)."""
    if type(record) is dict and tuple(record) == _CONVERSATION_KEYS:
        conversation_id, started, ended, messages, source = (
            record["id"], record["startedAt"], record["endedAt"], record["messages"],
            record["source"],
        )
        if (
            type(conversation_id) is str
            and type(started) is str
            and type(ended) is str
            and type(source) is str
            and type(messages) is list
            and all(map(plain, messages))
        ):
            return {
                "id": conversation_id,
                "startedAt": started,
                "endedAt": ended,
                "messages": messages,
                "source": source,
                "processingStatus": "pending",
                "retryCount": 0,
                "processingError": None,
                "processedAt": None,
                "analysis": None,
            }
    model = Conversation.model_validate(record).model_copy(update=_RESET)
    return model.model_dump(by_alias=True, exclude_none=False)


def _plain_json_message(message: Any) -> bool:
    """`_plain_message` for decoded JSON, where mapping keys can only be strings."""
    return (
        type(message) is dict
        and tuple(message) == _MESSAGE_KEYS
        and type(message["role"]) is str
        and type(message["content"]) is str
        and type(message["timestamp"]) is str
        and type(message["meta"]) is dict
    )


def _plain_message(message: Any) -> bool:
    """A message dict with exactly Message's fields, text where text is due, a str-keyed meta."""
    if type(message) is not dict or tuple(message) != _MESSAGE_KEYS:
        return False
    meta = message["meta"]
    return (
        type(message["role"]) is str
        and type(message["content"]) is str
        and type(message["timestamp"]) is str
        and type(meta) is dict
        and (not meta or all(type(key) is str for key in meta))
    )
