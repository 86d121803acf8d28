"""Out-of-core grouping: which engine groups an upload larger than memory best, here?

    .venv/bin/python bench/spill.py --rows 10000000 --budget-mb 512 [--only NAME]

DuckDB and Polars are not dependencies of convsync (the comparison chose neither): install
them into the venv to run their candidates (`.venv/bin/pip install duckdb polars`); without
them those candidates report an import error and the others still run.

The job ingest has to do once the messages are parsed: group messages by conversation id,
order each conversation's messages by (time, record number), date it by its earliest
message, and hand out each date's conversations in order of first appearance in the upload,
each as one text, in a memory budget. Every candidate gets the same stream of message
batches (id, ts_ns, record_no, timestamp text, rendered message text; ~10 messages per
conversation, 1 % of conversations re-exported at random later positions, 5 dates) and must
produce the same digest per date. Each runs in a fresh subprocess; output is `key: value`
lines with seconds and peak RSS (the process's high-water mark, which includes the
interpreter and pyarrow, ~110 MB).

- `duckdb`: batches inserted into a DuckDB table (memory_limit = budget, temp_directory),
  one `JOIN` with the per-conversation minimum and an `ORDER BY` streamed back as Arrow;
- `polars`: batches spilled as Arrow IPC, then a lazy join + sort run by the streaming
  engine into an IPC file, read back by batches;
- `dataset`: pyarrow's dataset writer partitions the batches by a bucket column (hive
  folders of Arrow IPC files), then the same grouping as `bucketing`;
- `bucketing`: hand-written: batches hashed by id into buckets on disk (Arrow IPC), each
  bucket grouped in memory with numpy, then the buckets' sorted runs merged by first
  appearance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY_NS = 86_400 * 10**9
START_NS = 1_770_595_200 * 10**9  # 2026-02-09T00:00:00Z
BATCH = 1 << 17
SEP = ",\n    "
SCHEMA = pa.schema(
    [("cid", pa.string()), ("ts_ns", pa.int64()), ("rec", pa.int64()), ("ts", pa.string()),
     ("msg", pa.large_string())]
)


def batches(rows: int, seed: int = 7) -> Iterator[pa.RecordBatch]:
    """Synthetic parsed messages, generated a batch at a time (bounded whatever `rows`)."""
    rng = np.random.default_rng(seed)
    conversations = rows // 10
    starts = START_NS + rng.integers(0, 5 * DAY_NS - 3_600 * 10**9, conversations + 1)
    for first in range(0, rows, BATCH):
        rec = np.arange(first, min(first + BATCH, rows), dtype=np.int64) + 1
        conv = (rec - 1) // 10
        again = rng.random(len(rec)) < 0.001  # a re-export of an earlier conversation
        conv[again] = rng.integers(0, max(conv[0], 1), int(again.sum()))
        ts_ns = starts[conv] + ((rec - 1) % 10) * 60 * 10**9 + rng.integers(0, 50 * 10**9, len(rec))
        cid = pc.binary_join_element_wise("c", pa.array(conv).cast(pa.string()), "")
        ts = pa.array(ts_ns.astype("datetime64[ns]")).cast(pa.string())
        msg = pc.binary_join_element_wise(
            '{\n     "role": "user",\n     "content": "The app keeps crashing when I upload '
            'photos, message #', pa.array(rec).cast(pa.string()),
            '",\n     "timestamp": "', ts, '",\n     "meta": {\n      "channel": "web"\n     }'
            "\n    }", "",
        ).cast(pa.large_string())
        yield pa.RecordBatch.from_arrays([cid, pa.array(ts_ns), pa.array(rec), ts, msg],
                                         schema=SCHEMA)


class Digests:
    """Each date's conversations, in order, hashed: what every candidate must agree on."""

    def __init__(self) -> None:
        self.by_day: dict[int, hashlib._Hash] = {}
        self.conversations = 0
        self.bytes = 0

    def add(self, days: np.ndarray, texts: pa.Array) -> None:
        if not len(texts):
            return
        self.conversations += len(texts)
        self.bytes += texts.nbytes
        for day in np.unique(days).tolist():
            chosen = texts.filter(pa.array(days == day))
            digest = self.by_day.setdefault(day, hashlib.sha256())
            for lo in range(0, len(chosen), 4096):  # small pieces: the digest stays small
                piece = chosen.slice(lo, 4096).to_pylist()
                digest.update("\x00".join(piece).encode() + b"\x00")

    def result(self) -> dict[str, str]:
        return {str(day): d.hexdigest()[:16] for day, d in sorted(self.by_day.items())}


def conversation_texts(cid: pa.Array, ts: pa.Array, msg: pa.Array, starts: np.ndarray,
                       ) -> pa.Array:
    """Whole conversations from messages already in final order (`starts`: first rows)."""
    lengths = np.diff(np.append(starts, len(msg)))
    lasts = starts + lengths - 1
    heads = pc.binary_join_element_wise(
        '{\n   "id": "', cid.take(pa.array(starts)), '",\n   "startedAt": "',
        ts.take(pa.array(starts)), '",\n   "endedAt": "', ts.take(pa.array(lasts)),
        '",\n   "messages": [\n    ', "",
    ).cast(pa.large_string())
    head_index = np.zeros(len(msg), dtype=np.int64)
    head_index[starts] = np.arange(1, len(starts) + 1)
    prefix = pa.concat_arrays([pa.array([SEP], pa.large_string()), heads]).take(
        pa.array(head_index))
    tail_index = np.zeros(len(msg), dtype=np.int64)
    tail_index[lasts] = 1
    suffix = pa.array(["", '\n   ],\n   "source": "incoming/x.csv"\n  }'],
                      pa.large_string()).take(pa.array(tail_index))
    text = pc.binary_join_element_wise(prefix, msg.cast(pa.large_string()), suffix,
                                       pa.scalar("", pa.large_string()))
    _, offsets_buffer, data = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[text.offset:]
    bounds = np.append(offsets[starts], offsets[len(text)])
    return pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(bounds), data)


def from_sorted_stream(stream: Iterator[pa.RecordBatch], digests: Digests) -> None:
    """Rows ordered by (first_seen, ts_ns, rec) with first_seen and first_ns: conversations
    are contiguous runs; a batch's last run waits for the next batch."""
    carry: pa.Table | None = None
    for batch in stream:
        table = pa.Table.from_batches([batch])
        if carry is not None:
            table = pa.concat_tables([carry, table])
        first_seen = table.column("first_seen").to_numpy()
        cut = np.flatnonzero(first_seen[1:] != first_seen[:-1]) + 1
        if not len(cut):
            carry = table
            continue
        done, carry = table.slice(0, cut[-1]), table.slice(cut[-1])
        _emit(done.combine_chunks(), np.concatenate(([0], cut[:-1])), digests)
    if carry is not None and carry.num_rows:
        carry = carry.combine_chunks()
        seen = carry.column("first_seen").to_numpy()
        _emit(carry, np.concatenate(([0], np.flatnonzero(seen[1:] != seen[:-1]) + 1)), digests)


def _emit(table: pa.Table, starts: np.ndarray, digests: Digests) -> None:
    def col(name: str) -> pa.Array:
        column = table.column(name)
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if pa.types.is_string_view(column.type):
            column = column.cast(pa.string())
        return column

    texts = conversation_texts(col("cid"), col("ts"), col("msg").cast(pa.large_string()), starts)
    days = col("first_ns").to_numpy()[starts] // DAY_NS
    digests.add(days, texts)


# --------------------------------------------------------------------------- candidates

def run_duckdb(rows: int, budget_mb: int, spill: Path) -> Digests:
    import duckdb

    con = duckdb.connect(config={
        "memory_limit": f"{budget_mb}MB", "temp_directory": str(spill), "threads": 2,
        # False lets the streamed result of an ORDER BY come out of order (measured).
        "preserve_insertion_order": True,
    })
    con.execute("CREATE TABLE m (cid VARCHAR, ts_ns BIGINT, rec BIGINT, ts VARCHAR, msg VARCHAR)")
    for batch in batches(rows):
        view = pa.Table.from_batches([batch])  # noqa: F841 (DuckDB scans it by name)
        con.execute("INSERT INTO m SELECT * FROM view")
    result = con.sql(
        "WITH c AS (SELECT cid, min(rec) AS first_seen, min(ts_ns) AS first_ns FROM m "
        "GROUP BY cid) SELECT m.cid, m.ts, m.msg, c.first_seen, c.first_ns FROM m "
        "JOIN c USING (cid) ORDER BY c.first_seen, m.ts_ns, m.rec"
    )
    digests = Digests()
    from_sorted_stream(iter(result.to_arrow_reader(BATCH)), digests)
    return digests


def run_polars(rows: int, budget_mb: int, spill: Path) -> Digests:
    import polars as pl

    files = []
    with pa.OSFile(str(spill / "in.arrow"), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as w:
        for batch in batches(rows):
            w.write_batch(batch)
    files.append(spill / "in.arrow")
    messages = pl.scan_ipc(files)
    firsts = messages.group_by("cid").agg(
        first_seen=pl.col("rec").min(), first_ns=pl.col("ts_ns").min()
    )
    out = spill / "sorted.arrow"
    (
        messages.join(firsts, on="cid")
        .sort(["first_seen", "ts_ns", "rec"])
        .select("cid", "ts", "msg", "first_seen", "first_ns")
        .sink_ipc(out, engine="streaming")
    )
    digests = Digests()
    reader = pa.ipc.open_file(pa.OSFile(str(out)))
    from_sorted_stream(
        (reader.get_batch(i) for i in range(reader.num_record_batches)), digests
    )
    return digests


def _bucket_of(cid: pa.Array, buckets: int) -> np.ndarray:
    """A stable hash of each id's bytes, vectorised (only balance depends on its quality)."""
    _, offsets_buffer, data = cid.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[cid.offset: cid.offset + len(cid) + 1]
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]: offsets[-1]].astype(np.uint64)
    position = np.arange(len(raw), dtype=np.uint64) - np.repeat(
        (offsets[:-1] - offsets[0]).astype(np.uint64), np.diff(offsets)
    )
    weight = position * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0xBF58476D1CE4E5B9)
    mixed = (raw + np.uint64(1)) * weight
    starts = (offsets[:-1] - offsets[0]).astype(np.int64)
    sums = np.add.reduceat(mixed, starts) if len(raw) else mixed
    sums ^= sums >> np.uint64(31)
    sums *= np.uint64(0x94D049BB133111EB)
    sums ^= sums >> np.uint64(29)
    return (sums % np.uint64(buckets)).astype(np.int64)


def _bucket_count(rows: int, budget_mb: int) -> int:
    estimate = rows * 260  # bytes a message takes in Arrow (the real code measures)
    return max(1, -(-estimate * 3 // (budget_mb * 2**20)))


def run_bucketing(rows: int, budget_mb: int, spill: Path) -> Digests:
    """Buckets written by hand: one Arrow IPC stream per bucket."""
    buckets = _bucket_count(rows, budget_mb)
    writers = []
    for b in range(buckets):
        sink = pa.OSFile(str(spill / f"in-{b}.arrow"), "wb")
        writers.append((sink, pa.ipc.new_stream(sink, SCHEMA)))
    for batch in batches(rows):
        bucket = _bucket_of(batch.column(0), buckets)
        order = np.argsort(bucket, kind="stable")
        taken = batch.take(pa.array(order))
        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        for b in range(buckets):
            if bounds[b + 1] > bounds[b]:
                writers[b][1].write_batch(taken.slice(bounds[b], bounds[b + 1] - bounds[b]))
    for sink, writer in writers:
        writer.close()
        sink.close()

    def read(b: int) -> pa.Table:
        table = pa.ipc.open_stream(pa.OSFile(str(spill / f"in-{b}.arrow"))).read_all()
        os.unlink(spill / f"in-{b}.arrow")
        return table

    return _grouped_buckets(buckets, read, spill)


def run_dataset(rows: int, budget_mb: int, spill: Path) -> Digests:
    """Buckets written by pyarrow's dataset writer (hive partitions on a bucket column)."""
    import pyarrow.dataset as ds

    buckets = _bucket_count(rows, budget_mb)
    schema = SCHEMA.append(pa.field("bucket", pa.int32()))

    def with_bucket() -> Iterator[pa.RecordBatch]:
        for batch in batches(rows):
            bucket = pa.array(_bucket_of(batch.column(0), buckets).astype(np.int32))
            yield pa.RecordBatch.from_arrays([*batch.columns, bucket], schema=schema)

    partitioning = ds.partitioning(pa.schema([("bucket", pa.int32())]), flavor="hive")
    ds.write_dataset(with_bucket(), spill / "buckets", schema=schema, format="ipc",
                     partitioning=partitioning, max_open_files=buckets + 8,
                     existing_data_behavior="overwrite_or_ignore")

    def read(b: int) -> pa.Table:
        folder = spill / "buckets" / f"bucket={b}"
        if not folder.exists():
            return SCHEMA.empty_table()
        table = ds.dataset(folder, format="ipc").to_table(columns=SCHEMA.names)
        shutil.rmtree(folder)
        return table

    return _grouped_buckets(buckets, read, spill)


def _grouped_buckets(buckets: int, read: Any, spill: Path) -> Digests:
    """Each bucket grouped in memory, written as a run sorted by first appearance; then the
    runs merged."""
    out_schema = pa.schema([("first_seen", pa.int64()), ("day", pa.int64()),
                            ("text", pa.large_string())])
    firsts = []
    for b in range(buckets):
        table = read(b).combine_chunks()
        if not table.num_rows:
            firsts.append(np.zeros(0, dtype=np.int64))
            with pa.OSFile(str(spill / f"out-{b}.arrow"), "wb") as sink, \
                    pa.ipc.new_file(sink, out_schema):
                pass
            continue
        codes = table.column("cid").chunk(0).dictionary_encode().indices.to_numpy().astype(
            np.int64)
        rec = table.column("rec").to_numpy()
        ts_ns = table.column("ts_ns").to_numpy()
        order = np.lexsort((rec, ts_ns, codes))
        sorted_codes = codes[order]
        starts = np.concatenate(([0], np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1))
        first_seen = np.minimum.reduceat(rec[order], starts)
        first_ns = ts_ns[order][starts]
        rows_taken = pa.array(order)
        texts = conversation_texts(
            table.column("cid").chunk(0).take(rows_taken), table.column("ts").chunk(0).take(
                rows_taken), table.column("msg").chunk(0).take(rows_taken), starts)
        del table
        filed = np.argsort(first_seen, kind="stable")
        out = pa.table([pa.array(first_seen[filed]), pa.array(first_ns[filed] // DAY_NS),
                        texts.take(pa.array(filed))], schema=out_schema)
        with pa.OSFile(str(spill / f"out-{b}.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, out_schema) as writer:
            writer.write_table(out, max_chunksize=8192)
        firsts.append(first_seen[filed])
        del out, texts
    digests = Digests()
    merge_runs([spill / f"out-{b}.arrow" for b in range(buckets)], firsts, digests)
    return digests


class _Run:
    """One sorted run read forward a batch at a time."""

    def __init__(self, path: Path) -> None:
        self.reader = pa.ipc.open_file(pa.OSFile(str(path)))
        self.index = 0
        self.batch: pa.RecordBatch | None = None
        self.offset = 0

    def take(self, count: int) -> list[pa.RecordBatch]:
        out = []
        while count:
            if self.batch is None or self.offset == self.batch.num_rows:
                self.batch = self.reader.get_batch(self.index)
                self.index += 1
                self.offset = 0
            piece = self.batch.slice(self.offset, min(count, self.batch.num_rows - self.offset))
            self.offset += piece.num_rows
            count -= piece.num_rows
            out.append(piece)
        return out


def merge_runs(paths: list[Path], firsts: list[np.ndarray], digests: Digests,
               chunk: int = 65536) -> None:
    """Runs sorted by first appearance, merged into one order: each chunk of the global
    order takes a contiguous piece of every run."""
    runs = [_Run(path) for path in paths]
    keys = np.concatenate(firsts)
    run_of = np.concatenate([np.full(len(f), r) for r, f in enumerate(firsts)])
    sequence = run_of[np.argsort(keys, kind="stable")]
    for lo in range(0, len(sequence), chunk):
        part = sequence[lo: lo + chunk]
        counts = np.bincount(part, minlength=len(runs))
        pieces = [b for r, n in enumerate(counts.tolist()) if n for b in runs[r].take(n)]
        table = pa.Table.from_batches(pieces).combine_chunks()
        # rows of the pieces are grouped by run; put them back in the chunk's order
        start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        order = np.argsort(part, kind="stable")
        position = np.empty(len(part), dtype=np.int64)
        position[order] = np.arange(len(part))
        del start
        table = table.take(pa.array(position))
        digests.add(table.column("day").to_numpy(), table.column("text").combine_chunks())


CANDIDATES = {
    "duckdb": run_duckdb,
    "polars": run_polars,
    "dataset": run_dataset,
    "bucketing": run_bucketing,
}


def child(name: str, rows: int, budget_mb: int) -> None:
    spill = Path(tempfile.mkdtemp(prefix=f"spill-{name}-"))
    started = time.perf_counter()
    try:
        digests = CANDIDATES[name](rows, budget_mb, spill)
        spilled = None
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    print(json.dumps({
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "conversations": digests.conversations,
        "text_mb": round(digests.bytes / 2**20),
        "digest": digests.result(),
        "spilled": spilled,
    }))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--budget-mb", type=int, default=512)
    parser.add_argument("--only", action="append")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows, args.budget_mb)
        return 0
    print(f"rows: {args.rows}\nbudget_mb: {args.budget_mb}\nload_1min: {os.getloadavg()[0]:.2f}")
    digests = {}
    for name in args.only or CANDIDATES:
        command = [sys.executable, __file__, "--child", name, "--rows", str(args.rows),
                   "--budget-mb", str(args.budget_mb)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}_error: {done.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        digests[name] = result.pop("digest")
        for key, value in result.items():
            print(f"{name}_{key}: {value}")
    print(f"digests_agree: {len({json.dumps(d, sort_keys=True) for d in digests.values()}) == 1}")
    print(f"load_1min_after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
