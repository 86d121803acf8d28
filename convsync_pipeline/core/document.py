"""The date document `conversations/YYYY-MM-DD.json` (SPEC section 5) as pydantic models.

`DateDocument.sealed()` is the only way a document is prepared for saving: it recomputes
`processedCount` and `summary` from the conversations and bumps `_blobMeta.version`, so the
counts can never drift from the data (seed fix 5).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from convsync_pipeline.core.dates import utc_now_iso

LIST_LEVEL = 2  # conversations are items of a list two containers deep in a date document
SEPARATOR = ",\n  "  # dump_json's separator between those items
Status = Literal["pending", "processing", "success", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "processing", "success", "failed")


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class Message(_Model):
    role: str
    content: str
    timestamp: str
    meta: dict[str, Any] = Field(default_factory=dict)


# Fields a conversation carries only while they mean something (a re-analysis, SPEC 7): absent
# otherwise, so a document whose conversations were never re-analysed is byte for byte what it
# was. Kept as pydantic extras; `core.status.transition` drops a cleared one
# (DROPPED_WHEN_CLEARED).
PREVIOUS_ANALYSIS = "previousAnalysis"  # the standing answer while a re-analysis is due
REANALYSIS = "reanalysis"  # the re-analysis asked for: versions, when, and how it ended
BATCH_ID = "batchId"  # the batch token a `processing` conversation waits on (batch mode)
OPTIONAL_FIELDS = (PREVIOUS_ANALYSIS, REANALYSIS, BATCH_ID)
# Dropped, not written as null, once cleared (`batchId` stays as null once a conversation
# has been in a batch: batch mode's choice).
DROPPED_WHEN_CLEARED = (PREVIOUS_ANALYSIS, REANALYSIS)


class Conversation(_Model):
    id: str
    started_at: str = Field(alias="startedAt")
    ended_at: str = Field(alias="endedAt")
    messages: list[Message]
    source: str
    # Required: a legacy document (no status) must be migrated, never guessed as pending.
    processing_status: Status = Field(alias="processingStatus")
    retry_count: int = Field(default=0, alias="retryCount")
    processing_error: str | None = Field(default=None, alias="processingError")
    processed_at: str | None = Field(default=None, alias="processedAt")
    # Kept as a plain dict: a legacy analysis is kept verbatim (SPEC section 9); new ones are
    # validated by `core.analysis.Analysis` before they get here.
    analysis: dict[str, Any] | None = None

    def value_of(self, name: str) -> Any:
        """An attribute, or one of OPTIONAL_FIELDS (None when absent)."""
        if name in OPTIONAL_FIELDS:
            return (self.__pydantic_extra__ or {}).get(name)
        return getattr(self, name)

    @property
    def previous_analysis(self) -> dict[str, Any] | None:
        return self.value_of(PREVIOUS_ANALYSIS)

    @property
    def reanalysis(self) -> dict[str, Any] | None:
        return self.value_of(REANALYSIS)


class StatusSummary(_Model):
    total: int = 0
    pending: int = 0
    processing: int = 0
    success: int = 0
    failed: int = 0


class BlobMeta(_Model):
    version: int = 0
    updated_at: str | None = Field(default=None, alias="updatedAt")
    lock_generation: int | None = Field(default=None, alias="lockGeneration")
    # The last entry of the date's log (`journal/D/<n>.json`, SPEC 5a) folded into this
    # document: readers fold the entries after it. 0: none (every document before the log).
    journal_entry: int = Field(default=0, alias="journalEntry")


class DateDocument(_Model):
    date: str
    conversations: list[Conversation] = Field(default_factory=list)
    processed_count: int = Field(default=0, alias="processedCount")
    summary: StatusSummary = Field(default_factory=StatusSummary)
    blob_meta: BlobMeta = Field(default_factory=BlobMeta, alias="_blobMeta")

    @property
    def version(self) -> int:
        return self.blob_meta.version

    def by_id(self) -> dict[str, Conversation]:
        return {conversation.id: conversation for conversation in self.conversations}

    def count_statuses(self) -> StatusSummary:
        counts = dict.fromkeys(STATUSES, 0)
        for conversation in self.conversations:
            counts[conversation.processing_status] += 1
        return StatusSummary(total=len(self.conversations), **counts)

    def sealed(
        self, lock_generation: int | None = None, journal_entry: int | None = None
    ) -> DateDocument:
        """A copy ready to save: counts recomputed, version + 1, update time and fence set,
        and the last log entry it folds (unchanged unless given)."""
        return self.model_copy(
            update=self._seal(self.count_statuses(), lock_generation, journal_entry)
        )

    def _seal(
        self, summary: StatusSummary, lock_generation: int | None, journal_entry: int | None
    ) -> dict[str, Any]:
        return {
            "summary": summary,
            "processed_count": summary.success,
            "blob_meta": BlobMeta(
                version=self.blob_meta.version + 1,
                updated_at=utc_now_iso(),
                lock_generation=lock_generation,
                journal_entry=(
                    self.blob_meta.journal_entry if journal_entry is None else journal_entry
                ),
            ),
        }

    def to_json_bytes(self) -> bytes:
        return dump_json(self.model_dump(by_alias=True, exclude_none=False))

    def sealed_json_appending(
        self,
        appended_json: Sequence[bytes | memoryview],
        appended: int,
        lock_generation: int | None = None,
        journal_entry: int | None = None,
    ) -> tuple[bytes, int]:
        """(bytes, version) of this document with `appended` new pending conversations, sealed.

        `appended_json` is the text dump_json writes for those conversations as items of the
        `conversations` list, separators between them included, in consecutive pieces
        (`core.staging.joined_texts`). The result is byte for byte what
        `sealed(lock_generation, journal_entry).to_json_bytes()` writes for the document
        holding them as models, but a large upload is merged without a model per message.
        """
        counts = self.count_statuses()
        summary = counts.model_copy(
            update={"total": counts.total + appended, "pending": counts.pending + appended}
        )
        update = self._seal(summary, lock_generation, journal_entry)
        body = self.model_copy(update=update).model_dump(by_alias=True, exclude_none=False)
        if appended:
            body["conversations"].append(_Verbatim(*appended_json))
        return dump_json(body), update["blob_meta"].version

    @classmethod
    def empty(cls, date: str) -> DateDocument:
        return cls(date=date)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DateDocument:
        return cls.model_validate_json(data)


_EMPTY_CONVERSATIONS = b'"conversations": []'


class DocumentEncoder:
    """`DateDocument.to_json_bytes()`, re-encoding only conversations not encoded before.

    A long pass checkpoints the same date several times; most conversations are the very
    objects encoded at the previous checkpoint (the status machine replaces a conversation,
    never mutates it), so their text is reused. The bytes are exactly `to_json_bytes()`: each
    conversation is encoded by `dump_json` on its own and re-indented to its depth (JSON
    strings escape newlines, so every newline in a fragment is layout). One encoder per
    writer; not thread-safe (a writer runs one checkpoint at a time).
    """

    def __init__(self) -> None:
        # (conversation, its encoding) by position, as last encoded. Conversations are
        # replaced in place and appended, never reordered, so a position whose object is the
        # very one encoded before is reused without a dictionary lookup.
        self._encoded: list[tuple[Conversation, bytes]] = []

    def encode(self, document: DateDocument) -> bytes:
        shell = dump_json(
            document.model_copy(update={"conversations": []}).model_dump(
                by_alias=True, exclude_none=False
            )
        )
        conversations = document.conversations
        if not conversations:
            return shell
        head, found, tail = shell.partition(_EMPTY_CONVERSATIONS)
        if not found or _EMPTY_CONVERSATIONS in tail:  # an encoding this splice does not know
            return document.to_json_bytes()
        previous = self._encoded
        known = len(previous)
        current: list[tuple[Conversation, bytes]] = []
        for index, conversation in enumerate(conversations):
            hit = previous[index] if index < known else None
            if hit is None or hit[0] is not conversation:
                encoded = dump_json(conversation.model_dump(by_alias=True, exclude_none=False))
                hit = (conversation, encoded.replace(b"\n", b"\n  "))  # depth 2
            current.append(hit)
        self._encoded = current
        # One join, one copy of the whole document: the list's opening and closing (with the
        # rest of the shell) ride on the first and last fragment.
        pieces = [hit[1] for hit in current]
        pieces[0] = head + b'"conversations": [\n  ' + pieces[0]
        pieces[-1] = pieces[-1] + b"\n ]" + tail
        return b",\n  ".join(pieces)


def dump_json(value: Any) -> bytes:
    """The one JSON encoding of every document the pipeline writes (UTF-8, stable key order).

    Exactly ``json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")``, several times
    faster: with `indent`, the standard library falls back to its pure-Python generator
    encoder, which is most of the cost of saving a large date document. `_encode` produces the
    same text (same separators, escaping by the same C function, same number forms); anything
    it does not handle itself (an unsupported type, a circular or too deeply nested value) is
    handed to `json.dumps`, which then produces the very result or error it always did.
    """
    chunks: list[str | bytes | memoryview] = []
    try:
        _write(value, 0, chunks)
    except (_Unsupported, RecursionError):
        return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")
    try:
        return b"".join([c.encode("utf-8") if type(c) is str else c for c in chunks])
    except UnicodeEncodeError:  # a lone surrogate: raise exactly the error json's text raises
        return "".join(c if type(c) is str else bytes(c).decode() for c in chunks).encode("utf-8")


class _Verbatim:
    """Text dump_json already wrote (UTF-8, in consecutive pieces), placed as is: one or more
    items of a list."""

    __slots__ = ("pieces",)

    def __init__(self, *pieces: bytes | memoryview) -> None:
        self.pieces = pieces


Verbatim = _Verbatim  # for callers splicing list items into their own dump_json output


class JsonFragmentError(Exception):
    """A value `_encode` leaves to `json.dumps` (which encodes it or raises its own error)."""


_Unsupported = JsonFragmentError
_string = json.encoder.encode_basestring  # the C function json uses when ensure_ascii=False
json_string = _string  # a str as dump_json writes it: quoted, escaped, non-ASCII kept


def json_fragment(value: Any, level: int) -> str:
    """`value` exactly as dump_json writes it where it sits `level` containers deep.

    Raises JsonFragmentError for what dump_json hands to `json.dumps` (unsupported types,
    circular or very deep values): callers then take the general way.
    """
    try:
        return _encode(value, level)
    except RecursionError:
        raise JsonFragmentError("too deeply nested") from None


_int = int.__repr__
_float_repr = float.__repr__
_INF = float("inf")
# "\n" + indentation and ",\n" + indentation per nesting level, grown on demand.
_NEWLINE: list[str] = ["\n" + " " * level for level in range(16)]
_SEPARATOR: list[str] = ["," + newline for newline in _NEWLINE]
_MESSAGE_KEYS = ("role", "content", "timestamp", "meta")


def _newline(level: int) -> str:
    while level >= len(_NEWLINE):
        _NEWLINE.append("\n" + " " * len(_NEWLINE))
        _SEPARATOR.append("," + _NEWLINE[-1])
    return _NEWLINE[level]


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return _float_repr(value)


def _key(key: object) -> str:
    """A dict key as json turns it into a string (same checks, same order)."""
    if isinstance(key, str):
        return key
    if isinstance(key, float):
        return _float(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return _int(key)
    raise _Unsupported


_CHUNKED_LEVELS = 2  # containers this near the top are written as chunks, not one string


def _write(value: Any, level: int, chunks: list[str | bytes | memoryview]) -> None:
    """`_encode`, appending to `chunks` instead of concatenating: a large document is never
    copied once per nesting level (each copy of a 100 MB string costs a tenth of a second)."""
    kind = type(value)
    if kind is _Verbatim:
        chunks.extend(value.pieces)
    elif kind is dict and value and level < _CHUNKED_LEVELS:
        inner = level + 1
        separator = _SEPARATOR[inner] if inner < len(_SEPARATOR) else "," + _newline(inner)
        chunks.append("{" + _newline(inner))
        for index, (key, item) in enumerate(value.items()):
            name = _string(key if type(key) is str else _key(key))
            chunks.append((separator if index else "") + name + ": ")
            _write(item, inner, chunks)
        chunks.append(_NEWLINE[level] + "}")
    elif kind is list and value and level < _CHUNKED_LEVELS:
        inner = level + 1
        newline = _newline(inner)
        separator = _SEPARATOR[inner]
        chunks.append("[" + newline)
        first = True
        for item in value:
            if not first:
                chunks.append(separator)
            first = False
            _write(item, inner, chunks)
        chunks.append(_NEWLINE[level] + "]")
    else:
        chunks.append(_encode(value, level))


def _encode(value: Any, level: int) -> str:
    """`value` as json.dumps(indent=1) writes it when it starts at nesting `level`."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is dict:
        return _encode_dict(value, level)
    if kind is list:
        return _encode_list(value, level)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return _int(value)
    if kind is float:
        return _float(value)
    # Subclasses and tuples, tested in the order json tests them.
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, list | tuple):
        return _encode_list(value, level)
    if isinstance(value, dict):
        return _encode_dict(value, level)
    raise _Unsupported


def _encode_list(values: list[Any] | tuple[Any, ...], level: int) -> str:
    if not values:
        return "[]"
    inner = level + 1
    newline = _newline(inner)
    if type(values[0]) is dict:
        items = [
            _encode_dict(item, inner) if type(item) is dict else _encode(item, inner)
            for item in values
        ]
    else:
        items = [_string(item) if type(item) is str else _encode(item, inner) for item in values]
    return "[" + newline + _SEPARATOR[inner].join(items) + _NEWLINE[level] + "]"


def _encode_dict(value: dict[Any, Any], level: int) -> str:
    if not value:
        return "{}"
    inner = level + 1
    newline = _newline(inner)
    if len(value) == 4 and tuple(value) == _MESSAGE_KEYS:
        text = _encode_message(value, level, inner)
        if text is not None:
            return text
    items = []
    append = items.append
    for key, item in value.items():
        name = _string(key if type(key) is str else _key(key))
        kind = type(item)
        if kind is str:
            append(name + ": " + _string(item))
        elif item is None:
            append(name + ": null")
        elif kind is dict:
            append(name + ": " + _encode_dict(item, inner))
        else:
            append(name + ": " + _encode(item, inner))
    return "{" + newline + _SEPARATOR[inner].join(items) + _NEWLINE[level] + "}"


def _encode_message(message: dict[str, Any], level: int, inner: int) -> str | None:
    """The common message shape in one formatting step; None when it is not that shape."""
    role, content, timestamp, meta = message.values()
    try:  # the C function takes exactly what json passes it: str and its subclasses
        role, content, timestamp = _string(role), _string(content), _string(timestamp)
    except TypeError:
        return None
    if type(meta) is not dict:
        meta_text = _encode(meta, inner)
    elif not meta:
        meta_text = "{}"
    else:
        meta_text = _encode_flat_dict(meta, inner)
    return _message_format(level) % (role, content, timestamp, meta_text)


def _encode_flat_dict(value: dict[Any, Any], level: int) -> str:
    """A dict whose keys and values are all strings (most `meta`), else the general way."""
    inner = level + 1
    newline = _newline(inner)
    try:
        if len(value) == 1:
            for key, item in value.items():
                return "{" + newline + _string(key) + ": " + _string(item) + _NEWLINE[level] + "}"
        items = [_string(key) + ": " + _string(item) for key, item in value.items()]
    except TypeError:
        return _encode_dict(value, level)
    return "{" + newline + _SEPARATOR[inner].join(items) + _NEWLINE[level] + "}"


_MESSAGE_FORMATS: dict[int, str] = {}


def _message_format(level: int) -> str:
    found = _MESSAGE_FORMATS.get(level)
    if found is None:
        outer, inner = _newline(level), _newline(level + 1)
        found = _MESSAGE_FORMATS[level] = (
            "{" + inner + '"role": %s,' + inner + '"content": %s,' + inner
            + '"timestamp": %s,' + inner + '"meta": %s' + outer + "}"
        )
    return found


def joined_texts(texts: Sequence[pa.Array | pa.ChunkedArray]) -> list[memoryview | bytes]:
    """The texts, in order, joined by dump_json's list separator: the items to splice into a
    document's `conversations` list, as views of Arrow's memory between separators (nothing
    is copied until the document itself is joined)."""
    separator = SEPARATOR.encode()
    pieces: list[memoryview | bytes] = []
    for text in texts:
        for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
            if not len(chunk):
                continue
            _, offsets_buffer, data = chunk.buffers()
            offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
            offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
                chunk.offset : chunk.offset + len(chunk) + 1
            ].tolist()
            view = memoryview(data if data is not None else b"")
            for start, end in itertools.pairwise(offsets):
                pieces += (separator, view[start:end])
    return pieces[1:]
