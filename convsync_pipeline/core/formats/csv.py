"""CSV uploads: a header row, one message per row (SPEC section 4).

Read by Arrow a block at a time, all columns as text, each block validated and shaped
column-wise while the next is read. Only a file Arrow refuses (ragged rows, invalid UTF-8, a
field longer than a block, more than 256 columns, a syntax it does not take) is read again,
from the start, row by row with the csv module - still a block of rows at a time - so the
quarantined rows keep their true numbers and the rest still goes through. Both ways give the
same result for what both can read.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from convsync_pipeline.core import dates
from convsync_pipeline.core.formats.streams import Source, with_head
from convsync_pipeline.core.records import (
    FILE_RAW_LIMIT,
    SURROGATE,
    ParsedUpload,
    PartSink,
    Plan,
    QuarantinedRecord,
    clean_text,
    file_failure,
    finish,
    frame,
    plan,
)

CSV_WIDTH = 256  # columns typed as text up front; a wider file is read row by row
CSV_BLOCK = 1 << 22  # Arrow's CSV block: a field longer than this is read row by row
ROW_BLOCK = 1 << 16  # rows shaped at a time on the row-by-row path
_EMPTY = "empty file: no CSV header row"


def read_csv(
    source: Source,
    sink: PartSink,
    *,
    tz: ZoneInfo,
    day_first: bool,
    block_size: int = CSV_BLOCK,
) -> None:
    """Hand the CSV upload's parts to `sink` in row order (Arrow, else row by row)."""
    with source.open() as stream:
        if _arrow_blocks(source.key, stream, sink, tz, day_first, block_size):
            return
    sink.reset()
    with source.open() as stream:
        _row_by_row(source.key, stream, sink, tz, day_first)


def _arrow_blocks(
    key: str, stream: BinaryIO, sink: PartSink, tz: ZoneInfo, day_first: bool, block_size: int
) -> bool:
    """The CSV read by Arrow a block at a time; False when it must be read row by row.

    Each block's rows are shaped on a worker thread (Arrow's kernels release the GIL) while
    this one takes the next block from the reader; at most two blocks are in flight.
    """
    head, stream = with_head(stream)
    if not head.strip() and len(head) <= FILE_RAW_LIMIT:
        sink.add(file_failure(key, _EMPTY, head))
        return True
    parts: list[Future[ParsedUpload]] = []
    csv_plan: Plan | None = None
    rows_before = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsync-parse") as pool:
        try:
            reader = pacsv.open_csv(stream, **csv_options(CSV_WIDTH, block_size))
            if reader.schema.names[CSV_WIDTH:]:
                return False
            for batch in reader:
                columns = batch.columns
                if csv_plan is None:
                    if batch.num_rows == 0:
                        continue
                    header = _header_of(columns)
                    csv_plan = plan(header)
                    problem = header_problem(csv_plan, header)
                    if problem:
                        sink.add(file_failure(key, problem, head))
                        return True
                    columns = [column.slice(1) for column in columns]
                if len(parts) > 1:
                    sink.add(parts.pop(0).result())  # bound the blocks in flight
                parts.append(
                    pool.submit(csv_rows, key, columns, csv_plan, rows_before, tz, day_first)
                )
                rows_before += len(columns[0])
        except pa.ArrowException:
            for part in parts:
                part.cancel()
            return False
        for part in parts:
            sink.add(part.result())
    if csv_plan is None:  # only blank lines: no header row
        sink.add(file_failure(key, _EMPTY, head))
    return True


def csv_options(width: int, block_size: int) -> dict[str, Any]:
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


def _header_of(columns: Sequence[pa.Array | pa.ChunkedArray]) -> list[str]:
    return [str(column[0].as_py()) for column in columns]


def header_problem(csv_plan: Plan, header: Sequence[str]) -> str | None:
    missing = [name for name in ("conversation_id", "timestamp") if name not in csv_plan.source]
    if not missing:
        return None
    shown = ", ".join(repr(clean_text(h)[:40]) for h in header[:8])
    more = ", …" if len(header) > 8 else ""
    return (
        f"not a usable CSV: the header row has no {' and no '.join(missing)} column"
        f" (header: {shown}{more})"
    )


def csv_rows(
    key: str,
    body: Sequence[pa.Array | pa.ChunkedArray],
    csv_plan: Plan,
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

    return _assemble(key, body, csv_plan, rows, raw_rows, [], len(rows), tz, day_first)


class _LineTap:
    """Feeds lines to `csv.reader` and remembers them, so a bad row keeps its exact raw text."""

    def __init__(self, lines: io.TextIOBase) -> None:
        self._lines = lines
        self._first = True
        self.taken: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        if self._first:
            line, self._first = line.removeprefix("\ufeff"), False
        self.taken.append(line)
        return line

    def raw(self) -> str:
        text = "".join(self.taken)
        return text[:-2] if text.endswith("\r\n") else text.rstrip("\r\n")


def _row_by_row(key: str, stream: BinaryIO, sink: PartSink, tz: ZoneInfo, day_first: bool) -> None:
    """The careful path: every row on its own, for files the vectorised reader refused;
    shaped `ROW_BLOCK` rows at a time."""
    if csv.field_size_limit() < sys.maxsize:
        csv.field_size_limit(sys.maxsize)  # huge fields are data, not an attack on us
    head, stream = with_head(stream)
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    tap = _LineTap(text)
    reader = csv.reader(tap)
    header: list[str] | None = None
    csv_plan: Plan | None = None
    good: list[list[str]] = []
    good_rows: list[int] = []
    good_raws: list[str] = []
    quarantined: list[QuarantinedRecord] = []
    row_no = rows_before = 0

    def flush() -> None:
        nonlocal good, good_rows, good_raws, quarantined, rows_before
        assert header is not None and csv_plan is not None
        columns = [
            pa.array([fields[i] for fields in good], type=pa.string()) for i in range(len(header))
        ]
        raws = good_raws

        def raw_rows(indices: np.ndarray) -> list[str]:
            return [raws[i] for i in indices.tolist()]

        rows = np.asarray(good_rows, dtype=np.int64)
        sink.add(_assemble(key, columns, csv_plan, rows, raw_rows, quarantined,
                           row_no - rows_before, tz, day_first))
        good, good_rows, good_raws, quarantined, rows_before = [], [], [], [], row_no

    while True:
        tap.taken.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                sink.add(file_failure(key, f"not a usable CSV: {exc}", head))
                return
            row_no += 1
            quarantined.append(
                QuarantinedRecord(key, "row", row_no, f"CSV syntax error: {exc}", tap.raw())
            )
            continue
        if not fields:
            continue  # a blank line is not a record
        if header is None:
            header = [clean_text(name) for name in fields]
            csv_plan = plan(header)
            problem = header_problem(csv_plan, header)
            if problem:
                sink.add(file_failure(key, problem, head))
                return
            continue
        row_no += 1
        raw = tap.raw()
        if len(fields) != len(header):
            reason = f"row has {len(fields)} fields, the header has {len(header)}"
        elif SURROGATE.search(raw):
            reason = "not valid UTF-8"
        else:
            good.append(fields)
            good_rows.append(row_no)
            good_raws.append(raw)
            if len(good) >= ROW_BLOCK:
                flush()
            continue
        quarantined.append(QuarantinedRecord(key, "row", row_no, reason, raw))
    if header is None:
        sink.add(file_failure(key, _EMPTY, head))
        return
    flush()


def _assemble(
    key: str,
    columns: Sequence[pa.Array],
    csv_plan: Plan,
    rows: np.ndarray,
    raw_rows: Callable[[np.ndarray], list[str]],
    quarantined: list[QuarantinedRecord],
    records_in: int,
    tz: ZoneInfo,
    day_first: bool,
) -> ParsedUpload:
    """Validate and shape well-formed rows, column by column."""
    ids = pc.utf8_trim_whitespace(columns[csv_plan.source["conversation_id"]])
    id_ok = np.asarray(pc.greater(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False))
    parsed = dates._parse_strings(columns[csv_plan.source["timestamp"]], tz, day_first)
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
    kept = int(good.sum())
    if "role" in csv_plan.source:
        roles = pc.utf8_trim_whitespace(columns[csv_plan.source["role"]].filter(keep))
        roles = pc.if_else(pc.equal(pc.utf8_length(roles), 0), "unknown", roles)
    else:
        roles = pa.array(["unknown"] * kept, type=pa.string())
    if "content" in csv_plan.source:
        contents = columns[csv_plan.source["content"]].filter(keep)
    else:
        contents = pa.array([""] * kept, type=pa.string())
    messages = frame(
        ids.filter(keep),
        parsed.iso(good),
        parsed.ms[good] * 1_000_000,
        roles,
        contents,
        _meta(columns, csv_plan, keep, kept),
        rows[good],
    )
    return finish(key, messages, quarantined, records_in)


def _meta(
    columns: Sequence[pa.Array], csv_plan: Plan, keep: pa.Array, count: int
) -> pa.StructArray:
    """The kept rows' extra columns as one struct per row, null where blank: each row's `meta`
    (see `records.meta_dicts`), built column by column without a dict per row."""
    if not csv_plan.extras:
        return pa.StructArray.from_buffers(pa.struct([]), count, [None])
    fields = []
    for index, _ in csv_plan.extras:
        column = columns[index].filter(keep)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        column = column.cast(pa.string())
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
        fields.append(pc.if_else(blank, pa.scalar(None, pa.string()), column))
    return pa.StructArray.from_arrays(fields, names=[name for _, name in csv_plan.extras])
