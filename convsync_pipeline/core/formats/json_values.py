"""JSON values to message records: what JSON and JSONL uploads share (SPEC section 4).

A top-level JSON item (a list item of a JSON upload, a line of a JSONL upload) is either a
message record or a conversation object `{"id" | "conversation_id", "messages": [...], ...}`
whose other fields every message inherits into `meta`. `JsonRecords` gathers candidates,
then validates a batch of them at once (timestamps in one vectorised pass).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from convsync_pipeline.core import dates
from convsync_pipeline.core.records import (
    CONVERSATION_RANK,
    SURROGATE,
    ParsedUpload,
    PositionKind,
    QuarantinedRecord,
    finish,
    fold,
    frame,
    plan,
)

# Lenient about raw control characters inside strings (sloppy exporters write tabs).
DECODER = json.JSONDecoder(strict=False)


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _has_surrogates(value: object) -> bool:
    """Whether any string in a JSON value holds a lone surrogate (iterative: depth is hostile)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _id_text(value: object) -> tuple[str | None, str | None]:
    """An id as text (ints as str(int), strings stripped), or the reason there is none."""
    if _blank(value):
        return None, "missing conversation_id"
    if isinstance(value, str):
        return value.strip(), None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"conversation_id is {json_kind(value)}, not a string or number"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"conversation_id is {value!r}, not a usable id"
    return str(value), None


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return repr(value)


def dump(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return repr(value)


@dataclass(frozen=True)
class _Layout:
    """How to read a JSON object with a given set of keys (worked out once per key set)."""

    messages_key: str | None  # set: a conversation object
    id_key: str | None
    timestamp_key: str | None
    role_key: str | None
    content_key: str | None
    extras: tuple[str, ...]  # keys kept in meta
    conversation_id_keys: tuple[str, ...]  # id-like keys of a conversation object, best first


def _layout(keys: tuple[str, ...]) -> _Layout:
    key_plan = plan(keys)

    def key_of(name: str) -> str | None:
        index = key_plan.source.get(name)
        return None if index is None else keys[index]

    return _Layout(
        messages_key=next((k for k in keys if fold(k) == "messages"), None),
        id_key=key_of("conversation_id"),
        timestamp_key=key_of("timestamp"),
        role_key=key_of("role"),
        content_key=key_of("content"),
        extras=tuple(keys[index] for index, _ in key_plan.extras),
        conversation_id_keys=tuple(sorted(
            (k for k in keys if fold(k) in CONVERSATION_RANK),
            key=lambda k: CONVERSATION_RANK[fold(k)],
        )),
    )


@dataclass
class JsonRecords:
    """Message records gathered from JSON values, validated a part at a time (`take_part`)."""

    key: str
    kind: PositionKind
    check_utf8: bool
    # One entry per candidate message in each list (columns: no transposing at the end).
    ids: list[str | None] = field(default_factory=list)
    id_errors: list[str | None] = field(default_factory=list)
    timestamps: list[object] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    metas: list[dict[str, Any]] = field(default_factory=list)
    record_nos: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    indexes: list[int | None] = field(default_factory=list)
    raws: list[object] = field(default_factory=list)  # str, or the object to re-serialise
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    count: int = 0  # records so far, in the whole upload: the next record's number - 1
    counted_before: int = 0  # records handed out in earlier parts
    _layouts: dict[tuple[str, ...], _Layout] = field(default_factory=dict)

    def reject(self, position: int, reason: str, raw: str, message: int | None = None) -> None:
        self.count += 1
        self.quarantined.append(
            QuarantinedRecord(self.key, self.kind, position, reason, raw, message)
        )

    def _layout_for(self, keys: tuple[str, ...]) -> _Layout:
        layout = self._layouts.get(keys)
        if layout is None:
            layout = self._layouts[keys] = _layout(keys)
        return layout

    def item(self, value: object, position: int, raw: str | None) -> None:
        """One top-level JSON item or JSONL line: a message record or a conversation object."""
        if type(value) is not dict:
            noun = "line" if self.kind == "line" else "record"
            self.reject(position, f"{noun} is {json_kind(value)}, not a JSON object",
                        raw if raw is not None else dump(value))
            return
        layout = self._layout_for(tuple(value))
        if layout.messages_key is None:
            self.message(value, layout, position, None, raw, None, None)
        else:
            self.conversation(value, layout, position, raw)

    def conversation(
        self, obj: dict[str, Any], layout: _Layout, position: int, raw: str | None
    ) -> None:
        messages_key = layout.messages_key
        assert messages_key is not None
        id_keys = layout.conversation_id_keys
        conv_id, id_error = (
            _id_text(obj[id_keys[0]]) if id_keys
            else (None, 'missing conversation_id (no "id" field)')
        )
        messages = obj[messages_key]
        problems = []
        if id_error:
            problems.append(f"conversation object: {id_error}")
        if not isinstance(messages, list):
            problems.append(f"conversation {messages_key!r} is {json_kind(messages)}, "
                            "not a list of messages")
        elif not messages:
            problems.append("conversation has no messages")
        shared = {k: v for k, v in obj.items() if k != messages_key and k not in id_keys[:1]}
        if not problems and self.check_utf8 and _has_surrogates(shared):
            problems.append("not valid UTF-8")
        if problems:
            self.reject(position, "; ".join(problems), raw if raw is not None else dump(obj))
            return
        inherited = {k: v for k, v in shared.items() if not _blank(v)}
        for index, message in enumerate(messages, start=1):
            if type(message) is not dict:
                self.reject(position, f"message is {json_kind(message)}, not a JSON object",
                            dump(message), index)
                continue
            self.message(message, self._layout_for(tuple(message)), position, index, None,
                         conv_id, inherited)

    def message(
        self,
        record: dict[str, Any],
        layout: _Layout,
        position: int,
        index: int | None,
        raw: str | None,
        conv_id: str | None,
        inherited: dict[str, Any] | None,
    ) -> None:
        if self.check_utf8 and _has_surrogates(record):
            self.reject(position, "not valid UTF-8", raw if raw is not None else dump(record),
                        index)
            return
        meta = {k: record[k] for k in layout.extras if not _blank(record[k])}
        if inherited:
            meta = {**inherited, **meta}  # the message's own fields win
        id_key = layout.id_key
        raw_id = record.get(id_key) if id_key is not None else None
        id_error = None
        if conv_id is not None:  # in a conversation object the conversation's id rules
            own_id: str | None = conv_id
            if not _blank(raw_id) and _id_text(raw_id)[0] != conv_id:
                meta[id_key] = raw_id  # type: ignore[index]
        elif type(raw_id) is str and raw_id.strip():
            own_id = raw_id.strip()
        else:
            own_id, id_error = _id_text(raw_id)
        role = record.get(layout.role_key) if layout.role_key is not None else None
        if type(role) is str:
            role = role.strip() or "unknown"
        else:
            role = "unknown" if _blank(role) else _as_text(role).strip() or "unknown"
        content = record.get(layout.content_key) if layout.content_key is not None else None
        if type(content) is not str:
            content = "" if content is None else _as_text(content)

        self.count += 1
        self.ids.append(own_id)
        self.id_errors.append(id_error)
        self.timestamps.append(
            record.get(layout.timestamp_key) if layout.timestamp_key is not None else None
        )
        self.roles.append(role)
        self.contents.append(content)
        self.metas.append(meta)
        self.record_nos.append(self.count)
        self.positions.append(position)
        self.indexes.append(index)
        self.raws.append(raw if raw is not None else record)

    @property
    def pending(self) -> int:
        """Records gathered since the last part."""
        return self.count - self.counted_before

    def take_part(self, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
        """The records gathered since the last part: timestamps in one vectorised pass, then
        split into messages and quarantine; the gathering starts afresh (numbers go on)."""
        parsed = dates._parse_objects(self.timestamps, tz, day_first)
        id_errors = self.id_errors
        id_ok = np.fromiter((e is None for e in id_errors), dtype=bool, count=len(id_errors))
        good = id_ok & parsed.ok
        for i in np.flatnonzero(~good).tolist():
            reasons = [r for r in (id_errors[i], parsed.errors.get(i)) if r]
            raw = self.raws[i]
            self.quarantined.append(QuarantinedRecord(
                self.key, self.kind, self.positions[i], "; ".join(reasons),
                raw if isinstance(raw, str) else dump(raw), self.indexes[i],
            ))
        keep = np.flatnonzero(good).tolist()
        everything = len(keep) == len(id_errors)

        def pick(values: list[Any]) -> list[Any]:
            return values if everything else [values[i] for i in keep]

        messages = frame(
            pick(self.ids),
            parsed.iso(good),
            parsed.ms[good] * 1_000_000,
            pick(self.roles),
            pick(self.contents),
            pick(self.metas),
            np.asarray(self.record_nos, dtype=np.int64)[good],
        )
        part = finish(self.key, messages, self.quarantined, self.count - self.counted_before)
        for name in ("ids", "id_errors", "timestamps", "roles", "contents", "metas", "record_nos",
                     "positions", "indexes", "raws"):
            setattr(self, name, [])
        self.quarantined = []
        self.counted_before = self.count
        return part


def may_hold_surrogates(text: str) -> bool:
    """Valid UTF-8 JSON can still decode to a lone surrogate through a \\uD800-\\uDFFF escape;
    this cheap superset test decides whether records need the deep check."""
    return "\\ud" in text or "\\uD" in text


