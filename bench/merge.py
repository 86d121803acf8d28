"""Benchmark of merging many small uploads into one large date (`merge_date`).

    .venv/bin/python bench/merge.py [--uploads 200] [--conversations 250] [--store local|s3]
        [--window 20] [--code DIR]

What it does: for each of `--uploads` uploads of `--conversations` new four-message
conversations (all of one date), writes the CSV to `incoming/`, ingests it (untimed), then
merges it into the date with the real `merge_date` (date lock, merge rule, log entry or
document save, merged-marker) and times that merge alone. At the end the date holds
uploads x conversations conversations (50,000 by default). The store is a folder in a temp
directory (`--store local`) or a bucket on a real `moto_server` started for the run
(`--store s3`). `--code DIR` imports convsync_pipeline from another checkout (before/after).

Printed as `key: value` lines:

    uploads, conversations_per_upload, store, total_conversations,
    first_mean_s / last_mean_s (mean seconds per merge of the first and last `--window`
    merges), last_vs_first (their ratio: the target is at most 2), max_s (the slowest merge),
    writes / bytes_written (objects and bytes the merges handed the store, counted at the
    Store interface), bytes_written_per_merge_first / _last (mean of each window),
    document_saves (writes of conversations/D.json), seconds_total,
    load_1m_before / load_1m_after, per_merge_s (every merge, in order).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/merge.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import S3Server, WriteCounter, wait_quiet  # noqa: E402

DATE = "2026-02-11"
TEXTS = (
    ("user", "Hi, I was charged twice for my subscription this month, order {n}."),
    ("agent", "Sorry about that! I can see both charges and have refunded the second one."),
    ("user", "Thanks, the refund shows as pending. How long will it take?"),
    ("agent", "Usually three to five business days. Anything else I can help with?"),
)


def upload_csv(first: int, count: int) -> bytes:
    rows = ["conversation_id,timestamp,role,content"]
    for n in range(first, first + count):
        minute = n % (24 * 60)
        for index, (role, text) in enumerate(TEXTS):
            stamp = f"{DATE}T{minute // 60:02d}:{minute % 60:02d}:{index * 10:02d}Z"
            rows.append(f'merge-{n:07d},{stamp},{role},"{text.format(n=n)}"')
    return ("\n".join(rows) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=250, help="per upload")
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--window", type=int, default=20, help="merges in first/last means")
    parser.add_argument("--code", type=Path, help="import convsync_pipeline from this checkout")
    parser.add_argument(
        "--quiet-load", type=float, help="first wait (up to 15 min) for a 1-minute load under this"
    )
    args = parser.parse_args(argv)
    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))

    from convsync_pipeline.pipeline.ingest import ingest_new_uploads
    from convsync_pipeline.pipeline.merge_date import merge_date

    try:
        from convsync_pipeline.resources.blob_lock import locks_from_settings
    except ImportError:  # a `--code` checkout from before the resources split
        locks_from_settings = None
    from convsync_pipeline.settings import load_settings
    from convsync_pipeline.store.local import LocalStore

    s3 = S3Server() if args.store == "s3" else None
    with tempfile.TemporaryDirectory(prefix="convsync-bench-merge-") as tmp:
        env = {"CONVSYNC_STORE": str(Path(tmp) / "store"), "CONVSYNC_START_DATE": "2026-01-01"}
        if s3 is not None:
            from convsync_pipeline.store.s3 import S3Store

            env["CONVSYNC_STORE"] = f"s3://{s3.bucket()}/bench"
            env["CONVSYNC_S3_ENDPOINT_URL"] = s3.endpoint
            store: Any = S3Store.from_url(env["CONVSYNC_STORE"], s3.endpoint)
        else:
            store = LocalStore(env["CONVSYNC_STORE"])
        try:
            settings = load_settings(env)
            # Code before the resources split (a `--code` baseline) took the settings here.
            locks = (
                locks_from_settings(store, settings)
                if "locks" in inspect.signature(merge_date).parameters
                else settings
            )
            counter = WriteCounter(store)
            times: list[float] = []
            written: list[int] = []
            load_before = wait_quiet(args.quiet_load)
            for number in range(args.uploads):
                data = upload_csv(number * args.conversations, args.conversations)
                store.write(f"incoming/{DATE}/upload-{number:04d}.csv", data)
                list(ingest_new_uploads(store, settings))
                before = counter.bytes
                counter.counting = True
                started = time.perf_counter()
                report = merge_date(store, locks, DATE, f"bench-merge-{number}")
                times.append(time.perf_counter() - started)
                counter.counting = False
                written.append(counter.bytes - before)
                assert report.added == args.conversations, report
            load_after = os.getloadavg()[0]
            total = report.total
        finally:
            if s3 is not None:
                s3.close()

    window = min(args.window, len(times))
    first, last = statistics.mean(times[:window]), statistics.mean(times[-window:])
    lines = {
        "uploads": args.uploads,
        "conversations_per_upload": args.conversations,
        "store": args.store,
        "total_conversations": total,
        "first_mean_s": f"{first:.4f}",
        "last_mean_s": f"{last:.4f}",
        "last_vs_first": f"{last / first:.2f}",
        "max_s": f"{max(times):.4f}",
        "writes": counter.writes,
        "bytes_written": counter.bytes,
        "bytes_written_per_merge_first": f"{statistics.mean(written[:window]):.0f}",
        "bytes_written_per_merge_last": f"{statistics.mean(written[-window:]):.0f}",
        "document_saves": counter.document_saves,
        "seconds_total": f"{sum(times):.2f}",
        "load_1m_before": f"{load_before:.2f}",
        "load_1m_after": f"{load_after:.2f}",
        "per_merge_s": " ".join(f"{t:.3f}" for t in times),
    }
    for key, value in lines.items():
        print(f"{key}: {value}")
    ok = last / first <= 2.0
    print(f"target_met: {'yes' if ok else 'no'} (last_vs_first <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
