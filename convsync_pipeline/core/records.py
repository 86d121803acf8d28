"""Uploads to message records (SPEC section 4): CSV / JSON / JSONL / NDJSON, each maybe gzipped.

`parse_upload` (bytes) and `parse_upload_stream` (a stream: a CSV is never held whole) are
the only readers of upload bytes, and give the same result. They never raise on what an
upload contains: every record they cannot use becomes a `QuarantinedRecord` naming the
upload, the row / line / record number and the reason, so that for every upload
``records_in == len(messages) + len(quarantined)``. A file that does not parse at all is one
quarantined record (``position_kind == "file"``).

Counting: a record is a message. A conversation object with N messages is N records; one
with no id or no usable messages list is one (quarantined) record. Blank CSV rows and blank
JSONL lines are not records. Positions are 1-based: CSV data rows (header and blank rows not
counted), JSONL physical lines, JSON list items. A message inside a conversation object is
located by its conversation's position plus ``message`` (its 1-based index in the list).

CSV is read by Arrow, all columns as text, vectorised a block at a time; only a file Arrow
refuses (ragged rows, invalid UTF-8, a syntax it does not take) is read again row by row, so
the quarantined rows keep their true numbers and the rest still goes through.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from convsync_pipeline.core import dates

UTC = dates.UTC

PositionKind = Literal["row", "line", "record", "file"]
MESSAGE_COLUMNS = (
    "conversation_id", "timestamp", "ts_ns", "role", "content", "meta", "record_no"
)
SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson")

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
_FILE_RAW_LIMIT = 65536  # a whole-file failure keeps this much of the file as its raw text
_CSV_WIDTH = 256  # columns typed as text up front; a wider file is read again
_CSV_BLOCK = 1 << 22  # Arrow's CSV block: a field longer than this needs the whole file
_BOMS = (codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32 LE starts as 16 LE
# Lenient about raw control characters inside strings (sloppy exporters write tabs).
_DECODER = json.JSONDecoder(strict=False)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


_RANK: dict[str, tuple[str, int]] = {
    _fold(alias): (name, rank) for name, aliases in _ALIASES.items()
    for rank, alias in enumerate(aliases)
}
_CONVERSATION_RANK = {_fold(alias): rank for rank, alias in enumerate(_CONVERSATION_ID)}


def _clean_text(text: str) -> str:
    """Text that can be written as UTF-8: lone surrogates (undecodable bytes) become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
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
            object.__setattr__(self, name, _clean_text(getattr(self, name)))

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
    """An upload's usable messages (one row each, in upload order) and what was rejected."""

    upload: str
    messages: pd.DataFrame
    quarantined: list[QuarantinedRecord]
    records_in: int

    @property
    def accepted(self) -> int:
        return len(self.messages)


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


def parse_upload(
    key: str, data: bytes, *, tz: ZoneInfo = UTC, day_first: bool = False
) -> ParsedUpload:
    """Read one upload into messages and quarantined records; never raises on the content."""
    fmt = upload_format(key)
    if fmt is None:
        raise ValueError(f"{key!r} is not an upload: its name must end in one of {SUFFIXES}"
                         " (optionally followed by .gz)")
    suffix, gzipped = fmt
    if gzipped:
        if not data:  # Python reads b"" as an empty stream; it is a truncated upload
            return _file_failure(key, "not a valid gzip file: the file is empty", data)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            return _file_failure(key, f"not a valid gzip file: {exc}", data)
    try:
        data = _utf8_from_bom(data)
    except UnicodeDecodeError as exc:
        return _file_failure(key, f"not valid text in the encoding its BOM names: {exc}", data)
    if suffix == ".csv":
        return _parse_csv(key, data, tz, day_first)
    if suffix == ".json":
        return _parse_json(key, data, tz, day_first)
    return _parse_jsonl(key, data, tz, day_first)


def parse_upload_stream(
    key: str,
    stream: BinaryIO,
    read_whole: Callable[[], bytes],
    *,
    tz: ZoneInfo = UTC,
    day_first: bool = False,
    block_size: int = _CSV_BLOCK,
) -> ParsedUpload:
    """`parse_upload` of the bytes `stream` yields, without holding a CSV upload whole.

    A CSV (gzipped or not) is read a block at a time: each block's rows are validated and
    shaped as they come, and only the resulting columns are kept. Whatever the streaming
    reader does not take - a UTF-16/32 byte-order mark, a header it cannot use, a row Arrow
    refuses, a broken gzip stream - is parsed from ``read_whole()`` (the same version's
    bytes, whole) by `parse_upload`, so the result is always exactly `parse_upload`'s.
    JSON and JSONL are read whole: a JSON document is one value.
    """
    fmt = upload_format(key)
    if fmt is not None and fmt[0] == ".csv":
        parsed = _stream_csv(key, stream, fmt[1], tz, day_first, block_size)
        if parsed is not None:
            return parsed
        return parse_upload(key, read_whole(), tz=tz, day_first=day_first)
    return parse_upload(key, stream.read(), tz=tz, day_first=day_first)


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `stream` (what was peeked at, put back)."""

    def __init__(self, head: bytes, stream: BinaryIO | gzip.GzipFile) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                size = len(self._head)
            piece, self._head = bytes(self._head[:size]), self._head[size:]
            return piece
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def _stream_csv(
    key: str, stream: BinaryIO, gzipped: bool, tz: ZoneInfo, day_first: bool, block_size: int
) -> ParsedUpload | None:
    """A CSV read block by block into messages; None when it needs the whole-bytes path.

    Each block's rows are shaped on a worker thread (Arrow's kernels release the GIL) while
    this one takes the next block from the reader; at most two blocks are in flight.
    """
    parts: list[Future[ParsedUpload]] = []
    plan: _Plan | None = None
    rows_before = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsync-parse") as pool:
        try:
            source = gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream
            head = source.read(_FILE_RAW_LIMIT)
            if not head or head.isspace() or head.startswith(_BOMS):
                return None
            options = _csv_options(_CSV_WIDTH, block_size)
            reader = pacsv.open_csv(_Prefixed(head, source), **options)
            if reader.schema.names[_CSV_WIDTH:]:  # wider than typed: the whole-file path
                return None
            for batch in reader:
                columns = batch.columns
                if plan is None:
                    if batch.num_rows == 0:
                        continue
                    header = _header_of(columns)
                    plan = _plan(header)
                    if _header_problem(plan, header):
                        return None
                    columns = [column.slice(1) for column in columns]
                if len(parts) > 1:
                    parts[-2].result()  # bound the blocks in flight
                parts.append(
                    pool.submit(_csv_rows, key, columns, plan, rows_before, tz, day_first)
                )
                rows_before += len(columns[0])
        except (pa.ArrowException, OSError, EOFError, zlib.error):
            return None
    if plan is None:
        return None
    done = [part.result() for part in parts]
    quarantined = [record for part in done for record in part.quarantined]
    messages = (
        pd.concat([part.messages for part in done], ignore_index=True)
        if len(done) > 1 else done[0].messages
    )
    return _finish(key, messages, quarantined, rows_before)


def _utf8_from_bom(data: bytes) -> bytes:
    """UTF-16 / UTF-32 with a byte-order mark (Excel's "Unicode text") re-encoded as UTF-8."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding).encode("utf-8")
    return data


def _file_failure(key: str, reason: str, data: bytes) -> ParsedUpload:
    raw = data[:_FILE_RAW_LIMIT].decode("utf-8", "replace")
    if len(data) > _FILE_RAW_LIMIT:
        reason += f" (raw text: the first {_FILE_RAW_LIMIT} bytes)"
    record = QuarantinedRecord(key, "file", None, reason, raw)
    return ParsedUpload(key, _empty_messages(), [record], 1)


def _empty_messages() -> pd.DataFrame:
    return _frame([], [], np.zeros(0, np.int64), [], [], [], np.zeros(0, np.int64))


def _frame(
    ids: Sequence[str] | pa.Array,
    timestamps: Sequence[str] | pa.Array,
    ts_ns: np.ndarray,
    roles: Sequence[str] | pa.Array,
    contents: Sequence[str] | pa.Array,
    metas: Sequence[dict[str, Any]] | pa.StructArray,
    record_nos: np.ndarray,
) -> pd.DataFrame:
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


def _finish(
    key: str, messages: pd.DataFrame, quarantined: list[QuarantinedRecord], records_in: int
) -> ParsedUpload:
    quarantined.sort(key=lambda q: (q.position or 0, q.message or 0))
    if records_in != len(messages) + len(quarantined):  # an invariant, not an input problem
        raise RuntimeError(
            f"{key}: {records_in} records in, {len(messages)} accepted, "
            f"{len(quarantined)} quarantined"
        )
    return ParsedUpload(key, messages, quarantined, records_in)


# --------------------------------------------------------------------------- header mapping

@dataclass(frozen=True)
class _Plan:
    """Which column / key feeds each field; the rest go to `meta` under their own names."""

    source: dict[str, int]  # field -> column index
    extras: tuple[tuple[int, str], ...]  # (column index, meta key)


def _plan(names: Sequence[str]) -> _Plan:
    best: dict[str, tuple[int, int]] = {}  # field -> (rank, index)
    for index, name in enumerate(names):
        hit = _RANK.get(_fold(name))
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
    return _Plan(source, tuple(extras))


# --------------------------------------------------------------------------- CSV

def _parse_csv(key: str, data: bytes, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
    if not data or data.isspace():
        return _file_failure(key, "empty file: no CSV header row", data)
    table = _arrow_csv(data)
    if table is None:
        return _csv_row_by_row(key, data, tz, day_first)
    if table.num_rows == 0:
        return _file_failure(key, "empty file: no CSV header row", data)
    columns = [table.column(i) for i in range(table.num_columns)]
    header = _header_of(columns)
    plan = _plan(header)
    problem = _header_problem(plan, header)
    if problem:
        return _file_failure(key, problem, data)
    return _csv_rows(key, [column.slice(1) for column in columns], plan, 0, tz, day_first)


def _header_of(columns: Sequence[pa.Array | pa.ChunkedArray]) -> list[str]:
    return [str(column[0].as_py()) for column in columns]


def _csv_rows(
    key: str,
    body: Sequence[pa.Array | pa.ChunkedArray],
    plan: _Plan,
    rows_before: int,
    tz: ZoneInfo,
    day_first: bool,
) -> ParsedUpload:
    """Data rows read by Arrow (numbered from `rows_before` + 1) as messages and quarantine."""
    rows = np.arange(rows_before + 1, rows_before + 1 + len(body[0]), dtype=np.int64)

    def raw_rows(indices: np.ndarray) -> list[str]:
        taken = [column.take(pa.array(indices)).to_pylist() for column in body]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        lines = []
        for fields in zip(*taken, strict=True):
            out.seek(0)
            out.truncate()
            writer.writerow(fields)
            lines.append(out.getvalue()[:-1])
        return lines

    return _csv_assemble(key, body, plan, rows, raw_rows, [], len(rows), tz, day_first)


def _csv_options(width: int, block_size: int) -> dict[str, Any]:
    """Arrow's reader: every column as text (header included as row 0), quoted newlines."""
    return {
        "read_options": pacsv.ReadOptions(autogenerate_column_names=True, block_size=block_size),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(width)},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }


def _arrow_csv(data: bytes) -> pa.Table | None:
    """The whole CSV as text columns (header included as row 0), or None if Arrow refuses."""
    width = _CSV_WIDTH
    block = _CSV_BLOCK
    for _ in range(3):
        try:
            table = pacsv.read_csv(io.BytesIO(data), **_csv_options(width, block))
        except pa.ArrowInvalid as exc:
            if "straddling" in str(exc) and block < len(data) + 1:
                block = len(data) + 1  # a field bigger than a block: read in one block
                continue
            return None
        except pa.ArrowException:
            return None
        if table.num_columns > width:  # more columns than typed: type them all and re-read
            width = table.num_columns
            continue
        if all(pa.types.is_string(f.type) for f in table.schema):
            return table
        return None
    return None


def _header_problem(plan: _Plan, header: Sequence[str]) -> str | None:
    missing = [name for name in ("conversation_id", "timestamp") if name not in plan.source]
    if not missing:
        return None
    shown = ", ".join(repr(_clean_text(h)[:40]) for h in header[:8])
    more = ", …" if len(header) > 8 else ""
    return (
        f"not a usable CSV: the header row has no {' and no '.join(missing)} column"
        f" (header: {shown}{more})"
    )


class _LineTap:
    """Feeds lines to `csv.reader` and remembers them, so a bad row keeps its exact raw text."""

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text, newline="")
        self.taken: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.taken.append(line)
        return line

    def raw(self) -> str:
        text = "".join(self.taken)
        return text[:-2] if text.endswith("\r\n") else text.rstrip("\r\n")


def _csv_row_by_row(key: str, data: bytes, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
    """The careful path: every row on its own, for files the vectorised reader refused."""
    if csv.field_size_limit() < sys.maxsize:
        csv.field_size_limit(sys.maxsize)  # huge fields are data, not an attack on us
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    tap = _LineTap(text)
    reader = csv.reader(tap)
    header: list[str] | None = None
    plan: _Plan | None = None
    good: list[list[str]] = []
    good_rows: list[int] = []
    good_raws: list[str] = []
    quarantined: list[QuarantinedRecord] = []
    row_no = 0
    while True:
        tap.taken.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                return _file_failure(key, f"not a usable CSV: {exc}", data)
            row_no += 1
            quarantined.append(
                QuarantinedRecord(key, "row", row_no, f"CSV syntax error: {exc}", tap.raw())
            )
            continue
        if not fields:
            continue  # a blank line is not a record
        if header is None:
            header = [_clean_text(name) for name in fields]
            plan = _plan(header)
            problem = _header_problem(plan, header)
            if problem:
                return _file_failure(key, problem, data)
            continue
        row_no += 1
        raw = tap.raw()
        if len(fields) != len(header):
            reason = f"row has {len(fields)} fields, the header has {len(header)}"
        elif _SURROGATE.search(raw):
            reason = "not valid UTF-8"
        else:
            good.append(fields)
            good_rows.append(row_no)
            good_raws.append(raw)
            continue
        quarantined.append(QuarantinedRecord(key, "row", row_no, reason, raw))
    if header is None or plan is None:
        return _file_failure(key, "empty file: no CSV header row", data)
    columns = [
        pa.array([fields[i] for fields in good], type=pa.string()) for i in range(len(header))
    ]

    def raw_rows(indices: np.ndarray) -> list[str]:
        return [good_raws[i] for i in indices.tolist()]

    rows = np.asarray(good_rows, dtype=np.int64)
    return _csv_assemble(key, columns, plan, rows, raw_rows, quarantined, row_no, tz, day_first)


def _csv_assemble(
    key: str,
    columns: Sequence[pa.Array],
    plan: _Plan,
    rows: np.ndarray,
    raw_rows: Callable[[np.ndarray], list[str]],
    quarantined: list[QuarantinedRecord],
    records_in: int,
    tz: ZoneInfo,
    day_first: bool,
) -> ParsedUpload:
    """Validate and shape well-formed rows, column by column."""
    ids = pc.utf8_trim_whitespace(columns[plan.source["conversation_id"]])
    id_ok = np.asarray(pc.greater(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False))
    parsed = dates._parse_strings(columns[plan.source["timestamp"]], tz, day_first)
    good = id_ok & parsed.ok

    bad = np.flatnonzero(~good)
    if len(bad):
        for index, raw in zip(bad.tolist(), raw_rows(bad), strict=True):
            reasons = [] if id_ok[index] else ["missing conversation_id"]
            if index in parsed.errors:
                reasons.append(parsed.errors[index])
            quarantined.append(
                QuarantinedRecord(key, "row", int(rows[index]), "; ".join(reasons), raw)
            )
    keep = pa.array(good)
    if "role" in plan.source:
        roles = pc.utf8_trim_whitespace(columns[plan.source["role"]].filter(keep))
        roles = pc.if_else(pc.equal(pc.utf8_length(roles), 0), "unknown", roles)
    else:
        roles = pa.array(["unknown"] * int(good.sum()), type=pa.string())
    if "content" in plan.source:
        contents = columns[plan.source["content"]].filter(keep)
    else:
        contents = pa.array([""] * int(good.sum()), type=pa.string())
    metas = _csv_meta(columns, plan, keep, int(good.sum()))
    messages = _frame(
        ids.filter(keep),
        parsed.iso(good),
        parsed.ms[good] * 1_000_000,
        roles,
        contents,
        metas,
        rows[good],
    )
    return _finish(key, messages, quarantined, records_in)


def _csv_meta(
    columns: Sequence[pa.Array], plan: _Plan, keep: pa.Array, count: int
) -> pa.StructArray:
    """The kept rows' extra columns as one struct per row, null where blank: each row's `meta`
    (see `meta_dicts`), built column by column without a dict per row."""
    if not plan.extras:
        return pa.StructArray.from_buffers(pa.struct([]), count, [None])
    fields = []
    for index, _ in plan.extras:
        column = columns[index].filter(keep)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        column = column.cast(pa.string())
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
        fields.append(pc.if_else(blank, pa.scalar(None, pa.string()), column))
    return pa.StructArray.from_arrays(fields, names=[name for _, name in plan.extras])


def meta_dicts(meta: pd.Series) -> list[dict[str, Any]]:
    """Each message's `meta` as a dict. A CSV's extra columns arrive as a struct per row, null
    where the cell was blank: a blank cell is no key at all."""
    if isinstance(meta.dtype, pd.ArrowDtype):
        return [
            {key: value for key, value in row.items() if value is not None}
            for row in meta.tolist()
        ]
    return meta.tolist()


# --------------------------------------------------------------------------- JSON / JSONL

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
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _id_text(value: object) -> tuple[str | None, str | None]:
    """An id as text (ints as str(int), strings stripped), or the reason there is none."""
    if _blank(value):
        return None, "missing conversation_id"
    if isinstance(value, str):
        return value.strip(), None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"conversation_id is {_json_kind(value)}, not a string or number"
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


def _dump(value: object) -> str:
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
    plan = _plan(keys)

    def key_of(name: str) -> str | None:
        index = plan.source.get(name)
        return None if index is None else keys[index]

    return _Layout(
        messages_key=next((k for k in keys if _fold(k) == "messages"), None),
        id_key=key_of("conversation_id"),
        timestamp_key=key_of("timestamp"),
        role_key=key_of("role"),
        content_key=key_of("content"),
        extras=tuple(keys[index] for index, _ in plan.extras),
        conversation_id_keys=tuple(sorted(
            (k for k in keys if _fold(k) in _CONVERSATION_RANK),
            key=lambda k: _CONVERSATION_RANK[_fold(k)],
        )),
    )


@dataclass
class _Records:
    """Message records gathered from JSON, validated together once all are in."""

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
    count: int = 0
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
            self.reject(position, f"{noun} is {_json_kind(value)}, not a JSON object",
                        raw if raw is not None else _dump(value))
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
            problems.append(f"conversation {messages_key!r} is {_json_kind(messages)}, "
                            "not a list of messages")
        elif not messages:
            problems.append("conversation has no messages")
        shared = {k: v for k, v in obj.items() if k != messages_key and k not in id_keys[:1]}
        if not problems and self.check_utf8 and _has_surrogates(shared):
            problems.append("not valid UTF-8")
        if problems:
            self.reject(position, "; ".join(problems), raw if raw is not None else _dump(obj))
            return
        inherited = {k: v for k, v in shared.items() if not _blank(v)}
        for index, message in enumerate(messages, start=1):
            if type(message) is not dict:
                self.reject(position, f"message is {_json_kind(message)}, not a JSON object",
                            _dump(message), index)
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
            self.reject(position, "not valid UTF-8", raw if raw is not None else _dump(record),
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

    def finish(self, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
        """Timestamps in one vectorised pass, then split into messages and quarantine."""
        parsed = dates._parse_objects(self.timestamps, tz, day_first)
        id_errors = self.id_errors
        id_ok = np.fromiter((e is None for e in id_errors), dtype=bool, count=len(id_errors))
        good = id_ok & parsed.ok
        for i in np.flatnonzero(~good).tolist():
            reasons = [r for r in (id_errors[i], parsed.errors.get(i)) if r]
            raw = self.raws[i]
            self.quarantined.append(QuarantinedRecord(
                self.key, self.kind, self.positions[i], "; ".join(reasons),
                raw if isinstance(raw, str) else _dump(raw), self.indexes[i],
            ))
        keep = np.flatnonzero(good).tolist()
        everything = len(keep) == len(id_errors)

        def pick(values: list[Any]) -> list[Any]:
            return values if everything else [values[i] for i in keep]

        messages = _frame(
            pick(self.ids),
            parsed.iso(good),
            parsed.ms[good] * 1_000_000,
            pick(self.roles),
            pick(self.contents),
            pick(self.metas),
            np.asarray(self.record_nos, dtype=np.int64)[good],
        )
        return _finish(self.key, messages, self.quarantined, self.count)


def _decode(data: bytes) -> tuple[str, bool]:
    """Text with undecodable bytes kept as lone surrogates; whether any text needs a check."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"), True
    return text.removeprefix("\ufeff"), _may_hold_surrogates(text)


def _may_hold_surrogates(text: str) -> bool:
    """Valid UTF-8 JSON can still decode to a lone surrogate through a \\uD800-\\uDFFF escape;
    this cheap superset test decides whether records need the deep check."""
    return "\\ud" in text or "\\uD" in text


def _parse_json(key: str, data: bytes, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
    text, suspicious = _decode(data)
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        return _file_failure(key, "not valid JSON: nested too deeply", data)
    except ValueError as exc:
        return _file_failure(key, f"not valid JSON: {exc}", data)
    if isinstance(document, dict):
        inner = next((document[k] for k in document if _fold(k) == "conversations"), None)
        if not isinstance(inner, list):
            keys = ", ".join(repr(k) for k in list(document)[:8])
            return _file_failure(
                key, "unknown top-level shape: a JSON object without a \"conversations\" list"
                f" (keys: {keys})", data,
            )
        items: list[Any] = inner
    elif isinstance(document, list):
        items = document
    else:
        return _file_failure(
            key, f"unknown top-level shape: {_json_kind(document)}, not a list or an object",
            data,
        )
    records = _Records(key, "record", suspicious)
    try:
        for position, item in enumerate(items, start=1):
            records.item(item, position, None)
    except RecursionError:
        return _file_failure(key, "not usable JSON: nested too deeply", data)
    return records.finish(tz, day_first)


def _parse_jsonl(key: str, data: bytes, tz: ZoneInfo, day_first: bool) -> ParsedUpload:
    records = _Records(key, "line", False)
    for line_no, chunk in enumerate(data.split(b"\n"), start=1):
        line = chunk[:-1] if chunk.endswith(b"\r") else chunk
        if line_no == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if not line.strip():
            continue  # a blank line is not a record
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            records.reject(line_no, "not valid UTF-8", line.decode("utf-8", "replace"))
            continue
        records.check_utf8 = _may_hold_surrogates(text)
        try:
            value = _DECODER.decode(text)
        except RecursionError:
            records.reject(line_no, "line is not valid JSON: nested too deeply", text)
            continue
        except ValueError as exc:
            records.reject(line_no, f"line is not valid JSON: {exc}", text)
            continue
        records.item(value, line_no, text)
    return records.finish(tz, day_first)
