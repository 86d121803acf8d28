"""The record types every upload format shares (SPEC section 4), and the rules they share.

A record is a message. The format modules (`core.formats.csv`, `.json`, `.jsonl`) turn an
upload into `ParsedUpload` parts: usable messages as columns, one row each in upload order,
plus a `QuarantinedRecord` for every record they cannot use, naming the upload, the row /
line / record number and the reason. Every part keeps
``records_in == accepted + len(quarantined)``, and so does the whole upload. A file that does
not parse at all is one quarantined record (``position_kind == "file"``).

Counting: a conversation object with N messages is N records; one with no id or no usable
messages list is one (quarantined) record. Blank CSV rows and blank JSONL lines are not
records. Positions are 1-based: CSV data rows (header and blank rows not counted), JSONL
physical lines, JSON list items. A message inside a conversation object is located by its
conversation's position plus ``message`` (its 1-based index in the list).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

PositionKind = Literal["row", "line", "record", "file"]
MESSAGE_COLUMNS = (
    "conversation_id", "timestamp", "ts_ns", "role", "content", "meta", "record_no"
)
SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson")
FILE_RAW_LIMIT = 65536  # a whole-file failure keeps this much of the file as its raw text

# Field name -> accepted header names, in priority order (the canonical name first). Names
# are compared case-insensitively and ignoring spaces, "_" and "-": `createdAt`, `created_at`
# and `Created At` are one name.
_ALIASES: dict[str, tuple[str, ...]] = {
    "conversation_id": ("conversation_id", "conversationId", "conversation"),
    "timestamp": ("timestamp", "created_at", "createdAt", "time", "datetime", "date"),
    "role": ("role", "sender", "author", "speaker"),
    "content": ("content", "message", "text", "body"),
}
_CONVERSATION_ID = ("conversation_id", "id", "conversationId", "conversation")
SURROGATE = re.compile("[\ud800-\udfff]")


def fold(name: str) -> str:
    """A field name as compared against the aliases."""
    return re.sub(r"[\s_\-]+", "", name).lower()


_RANK: dict[str, tuple[str, int]] = {
    fold(alias): (name, rank) for name, aliases in _ALIASES.items()
    for rank, alias in enumerate(aliases)
}
CONVERSATION_RANK = {fold(alias): rank for rank, alias in enumerate(_CONVERSATION_ID)}


def clean_text(text: str) -> str:
    """Text that can be written as UTF-8: lone surrogates (undecodable bytes) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE.sub("\ufffd", text)
    return text


@dataclass(frozen=True)
class QuarantinedRecord:
    """One rejected input record: where it was, why, and its raw text (for a person to fix)."""

    upload: str
    position_kind: str
    position: int | None
    reason: str
    raw: str
    message: int | None = None  # 1-based index inside a conversation object's messages

    def __post_init__(self) -> None:
        for name in ("upload", "reason", "raw"):
            object.__setattr__(self, name, clean_text(getattr(self, name)))

    def to_json_line(self) -> str:
        """One line of UTF-8 JSON, the quarantine file format; `raw` unescaped inside it."""
        body: dict[str, Any] = {"upload": self.upload, self.position_kind: self.position}
        if self.message is not None:
            body["message"] = self.message
        body["reason"] = self.reason
        body["raw"] = self.raw
        return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, eq=False)
class ParsedUpload:
    """An upload's (or a part of it's) usable messages, one row each in upload order, and
    what was rejected."""

    upload: str
    messages: pd.DataFrame
    quarantined: list[QuarantinedRecord]
    records_in: int

    @property
    def accepted(self) -> int:
        return len(self.messages)

    @classmethod
    def combined(cls, upload: str, parts: Sequence[ParsedUpload]) -> ParsedUpload:
        """Consecutive parts of one upload as one."""
        if not parts:
            return cls(upload, empty_messages(), [], 0)
        if len(parts) == 1:
            return parts[0]
        return cls(
            upload,
            pd.concat([part.messages for part in parts], ignore_index=True),
            [record for part in parts for record in part.quarantined],
            sum(part.records_in for part in parts),
        )


class PartSink(Protocol):
    """Where a format reader hands an upload's parts, in upload order.

    `reset` drops every part handed so far: the reader starts over (another way of reading
    the same bytes) or the whole file turned out unusable.
    """

    def add(self, part: ParsedUpload) -> None: ...

    def reset(self) -> None: ...


class CollectedParts:
    """A `PartSink` keeping the parts in memory (a small upload, or a test)."""

    def __init__(self) -> None:
        self.parts: list[ParsedUpload] = []

    def add(self, part: ParsedUpload) -> None:
        self.parts.append(part)

    def reset(self) -> None:
        self.parts.clear()


def upload_format(key: str) -> tuple[str, bool] | None:
    """(".csv" | ".json" | ".jsonl" | ".ndjson", gzipped) for an upload key, None otherwise."""
    lower = key.lower()
    gzipped = lower.endswith(".gz")
    if gzipped:
        lower = lower[:-3]
    for suffix in SUFFIXES:
        if lower.endswith(suffix):
            return suffix, gzipped
    return None


def file_failure(key: str, reason: str, head: bytes, *, longer: bool | None = None) -> ParsedUpload:
    """The whole upload as one quarantined record; its raw text is the file's first bytes."""
    raw = head[:FILE_RAW_LIMIT].decode("utf-8", "replace")
    if longer if longer is not None else len(head) > FILE_RAW_LIMIT:
        reason += f" (raw text: the first {FILE_RAW_LIMIT} bytes)"
    record = QuarantinedRecord(key, "file", None, reason, raw)
    return ParsedUpload(key, empty_messages(), [record], 1)


def empty_messages() -> pd.DataFrame:
    return frame([], [], np.zeros(0, np.int64), [], [], [], np.zeros(0, np.int64))


def frame(
    ids: Sequence[str] | pa.Array,
    timestamps: Sequence[str] | pa.Array,
    ts_ns: np.ndarray,
    roles: Sequence[str] | pa.Array,
    contents: Sequence[str] | pa.Array,
    metas: Sequence[dict[str, Any]] | pa.StructArray,
    record_nos: np.ndarray,
) -> pd.DataFrame:
    """The message columns (`MESSAGE_COLUMNS`) as a frame; a CSV's `meta` is a struct column."""

    def text(values: Sequence[str] | pa.Array) -> pd.Series:
        if isinstance(values, pa.Array | pa.ChunkedArray):
            return pd.Series(values.to_pandas(), dtype="str")
        return pd.Series(values, dtype="str")

    if isinstance(metas, pa.StructArray):
        meta = pd.Series(pd.arrays.ArrowExtensionArray(metas))
    else:
        meta = np.empty(len(metas), dtype=object)
        meta[:] = metas
    return pd.DataFrame(
        {
            "conversation_id": text(ids),
            "timestamp": text(timestamps),
            "ts_ns": np.asarray(ts_ns, dtype=np.int64),
            "role": text(roles),
            "content": text(contents),
            "meta": meta if isinstance(meta, pd.Series) else pd.Series(meta, dtype=object),
            "record_no": np.asarray(record_nos, dtype=np.int64),
        }
    )


def finish(
    key: str, messages: pd.DataFrame, quarantined: list[QuarantinedRecord], records_in: int
) -> ParsedUpload:
    """A part, its quarantine in position order, its accounting checked."""
    quarantined.sort(key=lambda q: (q.position or 0, q.message or 0))
    if records_in != len(messages) + len(quarantined):  # an invariant, not an input problem
        raise RuntimeError(
            f"{key}: {records_in} records in, {len(messages)} accepted, "
            f"{len(quarantined)} quarantined"
        )
    return ParsedUpload(key, messages, quarantined, records_in)


def meta_dicts(meta: pd.Series) -> list[dict[str, Any]]:
    """Each message's `meta` as a dict. A CSV's extra columns arrive as a struct per row, null
    where the cell was blank: a blank cell is no key at all."""
    if isinstance(meta.dtype, pd.ArrowDtype):
        return [
            {key: value for key, value in row.items() if value is not None}
            for row in meta.tolist()
        ]
    return meta.tolist()


# --------------------------------------------------------------------------- header mapping

@dataclass(frozen=True)
class Plan:
    """Which column / key feeds each field; the rest go to `meta` under their own names."""

    source: dict[str, int]  # field -> column index
    extras: tuple[tuple[int, str], ...]  # (column index, meta key)


def plan(names: Sequence[str]) -> Plan:
    """The fields of a header row or of a JSON object's keys, by the aliases."""
    best: dict[str, tuple[int, int]] = {}  # field -> (rank, index)
    for index, name in enumerate(names):
        hit = _RANK.get(fold(name))
        if hit is not None:
            field_name, rank = hit
            if field_name not in best or rank < best[field_name][0]:
                best[field_name] = (rank, index)
    source = {name: index for name, (_, index) in best.items()}
    used = set(source.values())
    extras: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        if index in used:
            continue
        meta_key = name.strip() or f"column_{index + 1}"
        base, n = meta_key, 1
        while meta_key in seen:  # duplicate header names stay apart: "x", "x.1", ...
            meta_key, n = f"{base}.{n}", n + 1
        seen.add(meta_key)
        extras.append((index, meta_key))
    return Plan(source, tuple(extras))
