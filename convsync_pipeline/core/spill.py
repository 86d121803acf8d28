"""One upload's messages grouped into dated conversations within a memory budget: the one
place ingest spills to local disk.

Rendered messages (`core.rendering.MESSAGES`) are held in memory while they fit a *unit* (a
third of the budget: grouping a unit takes about two and a half times its size). Past that,
all of them are hashed by conversation id into `FANOUT` bucket files (Arrow IPC,
uncompressed: LZ4 made the files 5x smaller but the ingest 20 % slower) in one temporary
folder, so each conversation's messages share a bucket whatever their order in
the upload. At the end every bucket - or memory, if nothing spilled - is grouped, dated and
rendered by `core.rendering` exactly as a whole upload is; a bucket still larger than a unit
is split again with another hash. A spilled bucket's conversations go to a *run* file, each
date's in order of first appearance; a date is then the merge of the runs by first appearance
(the record number of a conversation's first record, unique within an upload), read forward
a small batch at a time. Buckets are deleted as they are grouped, runs when the grouping is
closed, and the folder with them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from convsync_pipeline.core.rendering import MESSAGES, TEXT, filed_chunks

FANOUT = 32
MAX_SPLITS = 3  # a bucket split this often is one conversation's messages: grouped as it is
RUN_BATCH = 1024  # conversations per batch of a run file (a merge holds one batch per run)
MERGE_CHUNK = 8192  # conversations handed on at a time by a merge
# Messages rendered at a time: ~20 MB of text, so two chunks in flight stay small next to the
# messages held while each Arrow call still works on enough rows to pay for itself.
CHUNK_MESSAGES = 1 << 17
_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)  # read back once, soon: page cache
_RUN = pa.schema([("id", pa.string()), ("text", TEXT)])

Chunks = Iterator[tuple[pa.Array, pa.Array]]


@dataclass
class SpillStats:
    """What spilling cost, for the run's metadata."""

    spilled_bytes: int = 0  # bytes written to local disk (buckets and runs, compressed)
    buckets: int = 0  # bucket files written
    units: int = 0  # groups of messages grouped in memory at a time


@dataclass
class _Run:
    """One grouped bucket's conversations on disk: for each date a row range, in order of
    first appearance, with those first appearances kept in memory (8 bytes each)."""

    path: Path
    dates: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)  # date -> (row, fs)
    batch_rows: list[int] = field(default_factory=list)


class Grouping:
    """Dated conversations of one upload, grouped within `budget_bytes` of memory."""

    def __init__(
        self,
        source: str,
        tz: ZoneInfo,
        *,
        budget_bytes: int,
        directory: str | None = None,
        chunk_messages: int = CHUNK_MESSAGES,
    ) -> None:
        self.source, self.tz = source, tz
        self.unit_bytes = max(budget_bytes // 3, 1)
        self.chunk_messages = chunk_messages
        self.stats = SpillStats()
        self._parent = directory
        self._folder: Path | None = None
        self._held: list[pa.Table] = []
        self._held_bytes = 0
        self._buckets: _Buckets | None = None
        self._runs: list[_Run] = []
        # Unlinking a large file frees its extents for a while (1.8 s of a 10M-row ingest):
        # done on a thread of its own while the next bucket is grouped.
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convsync-unlink")
        self._deleting: list[Future[None]] = []

    def __enter__(self) -> Grouping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._deleter.shutdown(wait=True)

    def add(self, messages: pa.Table) -> None:
        """One part's rendered messages, in upload order."""
        if self._buckets is not None:
            self._buckets.write(messages)
            return
        self._held.append(messages)
        self._held_bytes += messages.nbytes
        if self._held_bytes > self.unit_bytes:
            self._buckets = _Buckets(self._new_folder(), "b", salt=0, stats=self.stats)
            for held in self._held:
                self._buckets.write(held)
            self._held, self._held_bytes = [], 0

    def reset(self) -> None:
        """Forget every message added (the reader starts over)."""
        self.close()
        self.stats = SpillStats()

    def close(self) -> None:
        self._held, self._held_bytes, self._buckets, self._runs = [], 0, None, []
        for deleting in self._deleting:
            deleting.result()
        self._deleting = []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def spilled(self) -> bool:
        return self._buckets is not None

    def dates(self) -> Iterator[tuple[str, Chunks]]:
        """(date, its (ids, texts) chunks in order of first appearance), dates in order; a
        date's chunks are read before the next date is asked for."""
        if self._buckets is None:
            self.stats.units = 1 if self._held else 0
            table = pa.concat_tables(self._held) if self._held else MESSAGES.empty_table()
            for date, chunks in filed_chunks(table, self.source, self.tz, self.chunk_messages):
                yield date, ((ids, texts) for ids, texts, _ in chunks)
            return
        self._buckets.close()
        for path, size in self._buckets.files():
            self._group(path, size, salt=1)
        all_dates = sorted({date for run in self._runs for date in run.dates})
        for date in all_dates:
            yield date, self._merged(date)

    # -- spilled -----------------------------------------------------------------------

    def _new_folder(self) -> Path:
        self._folder = Path(tempfile.mkdtemp(prefix="convsync-ingest-", dir=self._parent))
        return self._folder

    def _group(self, path: Path, size: int, salt: int) -> None:
        """Group one bucket into a run, or split it again when it is larger than a unit."""
        assert self._folder is not None
        if size > self.unit_bytes and salt <= MAX_SPLITS:
            buckets = _Buckets(self._folder, f"{path.stem}-", salt=salt, stats=self.stats)
            with pa.OSFile(str(path)) as handle:
                for batch in pa.ipc.open_stream(handle):
                    buckets.write(pa.Table.from_batches([batch]))
            self._delete(path)
            buckets.close()
            for sub_path, sub_size in buckets.files():
                self._group(sub_path, sub_size, salt + 1)
            return
        with pa.OSFile(str(path)) as handle:
            table = pa.ipc.open_stream(handle).read_all()
        self._delete(path)
        self.stats.units += 1
        run = _Run(path.with_suffix(".run"))
        row = 0
        with pa.OSFile(str(run.path), "wb") as sink, pa.ipc.new_file(
            sink, _RUN, options=_OPTIONS
        ) as writer:
            for date, chunks in filed_chunks(table, self.source, self.tz, self.chunk_messages):
                first_seen = []
                start = row
                for ids, texts, seen in chunks:
                    writer.write_table(pa.Table.from_arrays([ids, texts], schema=_RUN),
                                       max_chunksize=RUN_BATCH)
                    run.batch_rows += _batch_sizes(len(ids))
                    first_seen.append(seen)
                    row += len(ids)
                run.dates[date] = (start, np.concatenate(first_seen))
        del table
        pa.default_memory_pool().release_unused()
        self.stats.spilled_bytes += os.path.getsize(run.path)
        self._runs.append(run)

    def _delete(self, path: Path) -> None:
        self._deleting.append(self._deleter.submit(path.unlink))

    def _merged(self, date: str) -> Chunks:
        """The date's conversations from every run, in order of first appearance."""
        runs = [run for run in self._runs if date in run.dates]
        keys = np.concatenate([run.dates[date][1] for run in runs])
        run_of = np.concatenate(
            [np.full(len(run.dates[date][1]), index) for index, run in enumerate(runs)]
        )
        sequence = run_of[np.argsort(keys, kind="stable")]
        cursors = [_Cursor(run, run.dates[date][0]) for run in runs]
        try:
            for lo in range(0, len(sequence), MERGE_CHUNK):
                part = sequence[lo : lo + MERGE_CHUNK]
                counts = np.bincount(part, minlength=len(runs))
                pieces = [
                    piece for index, count in enumerate(counts.tolist()) if count
                    for piece in cursors[index].take(count)
                ]
                table = pa.Table.from_batches(pieces, schema=_RUN).combine_chunks()
                position = np.empty(len(part), dtype=np.int64)
                position[np.argsort(part, kind="stable")] = np.arange(len(part))
                table = table.take(pa.array(position))
                yield table.column("id").chunk(0), table.column("text").chunk(0)
        finally:
            for cursor in cursors:
                cursor.close()


def _batch_sizes(rows: int) -> list[int]:
    whole, rest = divmod(rows, RUN_BATCH)
    return [RUN_BATCH] * whole + ([rest] if rest else [])


class _Cursor:
    """A run read forward from a row, a batch at a time."""

    def __init__(self, run: _Run, row: int) -> None:
        self._file = pa.OSFile(str(run.path))
        self._reader = pa.ipc.open_file(self._file)
        ends = np.cumsum(run.batch_rows)
        self._index = int(np.searchsorted(ends, row, side="right"))
        self._offset = row - (int(ends[self._index - 1]) if self._index else 0)
        self._batch: pa.RecordBatch | None = None

    def take(self, count: int) -> list[pa.RecordBatch]:
        pieces = []
        while count:
            if self._batch is None or self._offset == self._batch.num_rows:
                if self._batch is not None:
                    self._index, self._offset = self._index + 1, 0
                self._batch = self._reader.get_batch(self._index)
            piece = self._batch.slice(self._offset, min(count, self._batch.num_rows - self._offset))
            self._offset += piece.num_rows
            count -= piece.num_rows
            pieces.append(piece)
        return pieces

    def close(self) -> None:
        self._file.close()


class _Buckets:
    """`FANOUT` bucket files, each conversation id's messages all in one of them."""

    def __init__(self, folder: Path, prefix: str, *, salt: int, stats: SpillStats) -> None:
        self.salt, self.stats = salt, stats
        self.paths = [folder / f"{prefix}{index:02d}.arrow" for index in range(FANOUT)]
        self.sizes = [0] * FANOUT  # bytes of messages in memory terms (not compressed)
        self._sinks: list[pa.OSFile | None] = [None] * FANOUT
        self._writers: list[pa.ipc.RecordBatchStreamWriter | None] = [None] * FANOUT

    def write(self, messages: pa.Table) -> None:
        bucket = bucket_of(messages.column("conversation_id"), FANOUT, self.salt)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(FANOUT + 1))
        taken = messages.take(pa.array(order))
        for index in np.flatnonzero(np.diff(bounds)).tolist():
            piece = taken.slice(bounds[index], bounds[index + 1] - bounds[index])
            writer = self._writers[index]
            if writer is None:
                sink = self._sinks[index] = pa.OSFile(str(self.paths[index]), "wb")
                writer = self._writers[index] = pa.ipc.new_stream(sink, MESSAGES,
                                                                  options=_OPTIONS)
                self.stats.buckets += 1
            writer.write_table(piece)
            self.sizes[index] += piece.nbytes

    def close(self) -> None:
        for index, writer in enumerate(self._writers):
            if writer is not None:
                writer.close()
                self._sinks[index].close()  # type: ignore[union-attr]
                self.stats.spilled_bytes += os.path.getsize(self.paths[index])
                self._writers[index] = None

    def files(self) -> Iterator[tuple[Path, int]]:
        """(path, bytes of messages) of each bucket written."""
        for path, size in zip(self.paths, self.sizes, strict=True):
            if size:
                yield path, size


def bucket_of(ids: pa.Array | pa.ChunkedArray, buckets: int, salt: int) -> np.ndarray:
    """A bucket for each id, from a hash of its bytes (vectorised; stable across runs and
    processes; `salt` gives an independent hash for splitting a bucket again)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    _, offsets_buffer, data = ids.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[ids.offset : ids.offset + len(ids) + 1]
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    starts = (offsets[:-1] - offsets[0]).astype(np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.uint64)
    position = np.arange(len(raw), dtype=np.uint64) - np.repeat(
        starts.astype(np.uint64), np.diff(offsets)
    )
    with np.errstate(over="ignore"):
        # Each (position, byte) pair scrambled on its own (splitmix64), then summed per id: a
        # random table of every pair, added up, which spreads even ids that differ by one byte.
        terms = _mix((position << np.uint64(8)) + raw + np.uint64(salt) * np.uint64(0x9E3779B9))
        sums = np.zeros(len(ids), dtype=np.uint64)
        nonempty = np.diff(offsets) > 0
        if len(raw):
            sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
        sums = _mix(sums)
    return (sums % np.uint64(buckets)).astype(np.int64)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise (uint64, wrapping)."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
