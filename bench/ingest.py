"""Ingest benchmark: convsync against the CSV parser's floor and a row-by-row baseline.

    .venv/bin/python bench/ingest.py --rows 1000000 [--repeat 3] [--isolate]

Generates one CSV upload of N message rows in a temp dir (mixed timestamp styles: ISO `Z`,
offsets, space-separated naive, epoch ms and a few human forms; ~10 messages per
conversation over a few dates; an extra `channel` column that lands in `meta`; quoted commas,
quotes, newlines and non-ASCII text; ~1 % of conversations exported twice; ~1 % already in the
store from an earlier upload; ~0.1 % bad rows), then times, in one run:

- `floor_s`: `pyarrow.csv.read_csv` of the file (the speed of the CSV parser);
- `rowwise_s`: `bench/rowwise.py` (csv module, dateutil per row, dict merge, json dump);
- `convsync_s`: the pipeline: `ingest_upload` (read, parse, normalise, group, stage,
  quarantine, index) and `merge_date` for every date it touches, on a LocalStore;
- `writes_s`: writing and fsyncing the bytes convsync stored, and nothing else (the floor
  the output sets), with `writes_vs_floor` and `ratio_vs_floor_plus_writes`.

Both implementations start from the same store state (the earlier upload merged) and their
date documents are compared (`documents_match`). Every phase runs in this one process by
default, each after `gc.collect()`, with a sampling thread recording its peak RSS; `--isolate`
runs each phase in a fresh subprocess instead (cleaner per-phase peaks, same timings). With
`--repeat R` each figure is the median of R runs. Output: `key: value` lines.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import gzip
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import rowwise  # noqa: E402

UPLOAD_KEY = "incoming/2026-02-13/export.csv"
EARLIER_KEY = "incoming/2026-02-08/earlier.csv"
FIRST_DAY = dt.datetime(2026, 2, 9, tzinfo=dt.UTC)
_PAGE = os.sysconf("SC_PAGE_SIZE")

PHRASES = (
    "The app keeps crashing when I upload photos",
    "Sorry about that! Could you tell me which version you are on?",
    "I was charged twice this month, please refund one",
    "Thanks, that fixed it",
    "Where can I download my invoices?",
    'It says "payment declined", but my card works elsewhere',
    "Can I change my plan, keep my data, and add a seat?",
    "Merci beaucoup, ça marche très bien",
    "注文がまだ届いていません",
    "Line one\nline two of a pasted log",
    "I need to talk to a manager",
    "Let me check that for you.",
)
CHANNELS = ("web", "email", "chat", "", "mobile")
OFFSETS = ((2, 0), (-5, 0), (5, 30), (0, 0), (-8, 0))


# --------------------------------------------------------------------------- generator

def _stamp(ms: int, rng: random.Random) -> str:
    """One timestamp text for instant `ms` in a randomly chosen style."""
    moment = FIRST_DAY + dt.timedelta(milliseconds=ms - int(FIRST_DAY.timestamp() * 1000))
    pick = rng.random()
    if pick < 0.45:  # canonical ISO Z
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    if pick < 0.65:  # ISO with an offset
        hours, minutes = OFFSETS[rng.randrange(len(OFFSETS))]
        sign = -1 if hours < 0 else 1
        zone = dt.timezone(sign * dt.timedelta(hours=abs(hours), minutes=minutes))
        local = moment.astimezone(zone)
        return local.isoformat(timespec="milliseconds" if pick < 0.55 else "seconds")
    if pick < 0.80:  # naive, space-separated (read in CONVSYNC_TIMEZONE = UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S" if pick < 0.78 else "%Y-%m-%d %H:%M")
    if pick < 0.98:  # epoch milliseconds
        return str(ms)
    if pick < 0.99:  # human forms
        return moment.strftime("%m/%d/%Y %I:%M %p").replace(" 0", " ")
    return moment.strftime("%b %d, %Y %H:%M")


def generate(
    path: Path,
    rows: int,
    *,
    days: int = 5,
    seed: int = 7,
    duplicate_fraction: float = 0.01,
    earlier_fraction: float = 0.01,
    bad_fraction: float = 0.001,
    earlier_path: Path | None = None,
) -> dict[str, int]:
    """Write the upload (and the earlier upload) row by row; small memory whatever `rows`."""
    rng = random.Random(seed)
    start_ms = int(FIRST_DAY.timestamp() * 1000)
    span_ms = days * 86_400_000
    header = ["conversation_id", "timestamp", "role", "content", "channel"]
    duplicates: list[list[list[str]]] = []
    earlier: list[list[str]] = []
    written = bad = conversations = 0
    bad_every = max(int(1 / bad_fraction), 1) if bad_fraction else 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        while True:
            pending = sum(len(conversation) for conversation in duplicates)
            if written + pending >= rows:
                break
            conversations += 1
            cid = f"c{conversations:07d}"
            ms = start_ms + rng.randrange(span_ms - 3_600_000)
            length = rng.randint(6, 14)
            this: list[list[str]] = []
            for index in range(length):
                if written + pending >= rows:
                    break
                written += 1
                if bad_every and written % bad_every == 0:
                    bad += 1
                    kind = (written // bad_every) % 3
                    writer.writerow([
                        "" if kind == 0 else cid,
                        "not a date" if kind == 1 else "1850-03-01 10:00:00" if kind == 2
                        else _stamp(ms, rng),
                        "user", "a bad row", "web",
                    ])
                    continue
                ms += rng.randrange(2_000, 300_000)
                row = [
                    cid,
                    _stamp(ms, rng),
                    ("user" if index % 2 == 0 else "agent") if rng.random() > 0.01 else " ",
                    PHRASES[rng.randrange(len(PHRASES))] + f" #{index}",
                    CHANNELS[rng.randrange(len(CHANNELS))],
                ]
                writer.writerow(row)
                this.append(row)
            if this and rng.random() < duplicate_fraction:
                duplicates.append(this)
            if this and rng.random() < earlier_fraction:
                earlier.append([cid, this[0][1], "user", "an earlier export of this id", "web"])
        for conversation in duplicates:
            for row in conversation:
                if written >= rows:
                    break
                writer.writerow(row)
                written += 1
    if earlier_path is not None:
        with earlier_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(earlier)
    return {
        "rows": written,
        "bad_rows": bad,
        "conversations_generated": conversations,
        "duplicated_conversations": len(duplicates),
        "earlier_conversations": len(earlier),
        "bytes": path.stat().st_size,
    }


# --------------------------------------------------------------------------- memory

class PeakRss:
    """Samples this process's RSS every few ms: the peak during a phase, not since start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.current()
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def _mb(n: float) -> float:
    return round(n / 2**20, 1)


# --------------------------------------------------------------------------- phases

def _settings(store_root: Path):
    from convsync_pipeline.settings import load_settings

    env = {"CONVSYNC_STORE": str(store_root), "CONVSYNC_START_DATE": "2026-01-01"}
    if os.environ.get("CONVSYNC_INGEST_MEMORY_MB"):  # --memory-mb
        env["CONVSYNC_INGEST_MEMORY_MB"] = os.environ["CONVSYNC_INGEST_MEMORY_MB"]
    return load_settings(env)


def _settings_and_store(store_root: Path):
    from convsync_pipeline.store.local import LocalStore

    return _settings(store_root), LocalStore(store_root)


def prepare(workdir: Path, upload: Path, earlier: Path, upload_key: str) -> tuple[Path, Path]:
    """Fresh rowwise output and convsync store, each holding the earlier upload merged."""
    out, store_root = workdir / "rowwise-out", workdir / "store"
    for folder in (out, store_root):
        shutil.rmtree(folder, ignore_errors=True)
    rowwise.ingest_and_merge(earlier, EARLIER_KEY, out)
    for key, source in ((EARLIER_KEY, earlier), (upload_key, upload)):
        target = store_root.joinpath(*key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    from convsync_pipeline.store.local import LocalStore

    (info,) = [i for i in LocalStore(store_root).list(EARLIER_KEY)]
    from convsync_pipeline.pipeline.ingest import ingest_upload
    from convsync_pipeline.pipeline.merge_date import merge_date
    from convsync_pipeline.resources.blob_lock import locks_from_settings

    settings = _settings(store_root)
    report = ingest_upload(LocalStore(store_root), settings, info)
    store = LocalStore(store_root)
    for date in report.dates:
        merge_date(store, locks_from_settings(store, settings), date, "bench")
    return out, store_root


def phase_floor(upload: Path, **_: Any) -> dict[str, Any]:
    """Arrow's streaming CSV reader over the file (gunzipping it if it is gzipped): the speed
    of the parser alone, in the bounded memory ingest has (`read_csv` of a 10M-row file
    would itself take gigabytes)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Quoted fields may hold newlines (SPEC section 4): the parser must be told, as
    # core/formats/csv.py does; column types are Arrow's own inference.
    options = pacsv.ParseOptions(newlines_in_values=True)
    compression = "gzip" if upload.suffix == ".gz" else None
    started = time.perf_counter()
    rows = 0
    with pa.input_stream(str(upload), compression=compression) as stream:
        for batch in pacsv.open_csv(stream, parse_options=options):
            rows += batch.num_rows
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows}


def phase_rowwise(upload: Path, out: Path, **_: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = rowwise.ingest_and_merge(upload, UPLOAD_KEY, out)
    return {"seconds": time.perf_counter() - started, **result}


def phase_ingest(
    store_root: Path, key: str, profile: str | None = None, **_: Any
) -> dict[str, Any]:
    """`ingest_upload`: read, parse, normalise, group (spilling past the budget), stage,
    quarantine, index."""
    from convsync_pipeline.pipeline.ingest import ingest_upload

    settings, store = _settings_and_store(store_root)
    (info,) = [i for i in store.list(str(key)) if i.key == str(key)]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    report = ingest_upload(store, settings, info)
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return {
        "seconds": seconds,
        "records_in": report.records_in,
        "accepted": report.accepted,
        "quarantined": report.quarantined,
        "dates": report.dates,
        "spilled_mb": _mb(getattr(report, "spilled_bytes", 0)),
    }


def phase_merge(store_root: Path, **_: Any) -> dict[str, Any]:
    """`merge_date` for every date the upload touched (the staged objects it left)."""
    from convsync_pipeline.pipeline.merge_date import merge_date
    from convsync_pipeline.resources.blob_lock import locks_from_settings

    settings, store = _settings_and_store(store_root)
    locks = locks_from_settings(store, settings)
    dates = sorted({info.key.split("/")[1] for info in store.list("staging/")})
    started = time.perf_counter()
    merged = [merge_date(store, locks, date, "bench") for date in dates]
    return {
        "seconds": time.perf_counter() - started,
        "added": sum(m.added for m in merged),
        "already_present": sum(m.already_present for m in merged),
    }


def phase_writes(store_root: Path, **_: Any) -> dict[str, Any]:
    """Write and fsync the bytes convsync stored (documents, staging, quarantine, index), as
    the store writes them (temp file, fsync, rename): the floor the output itself sets. Each
    file is read first, untimed."""
    stored = [
        path
        for folder in ("conversations", "staging", "quarantine", "state")
        for path in sorted((store_root / folder).rglob("*"))
        if path.is_file()
    ]
    scratch = Path(tempfile.mkdtemp(prefix="writes-", dir=store_root.parent))
    seconds, written = 0.0, 0
    try:
        for number, path in enumerate(stored):
            data = path.read_bytes()
            started = time.perf_counter()
            temp = scratch / f"{number}.tmp"
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, scratch / f"{number}.out")
            seconds += time.perf_counter() - started
            written += len(data)
            del data
        started = time.perf_counter()
        directory = os.open(scratch, os.O_RDONLY)
        os.fsync(directory)
        os.close(directory)
        seconds += time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, "bytes": written}


PHASES: dict[str, Callable[..., dict[str, Any]]] = {
    "floor": phase_floor,
    "rowwise": phase_rowwise,
    "ingest": phase_ingest,
    "merge": phase_merge,
    "writes": phase_writes,
}


def _warm_imports() -> None:
    """Import what the phases use before timing them: no phase pays for module loading."""
    import importlib

    for module in ("pyarrow.csv", "convsync_pipeline.pipeline.ingest",
                   "convsync_pipeline.pipeline.merge_date", "convsync_pipeline.store.local"):
        importlib.import_module(module)


def run_phase(name: str, isolate: bool, **kwargs: Any) -> dict[str, Any]:
    if isolate:
        command = [sys.executable, __file__, "--phase", name, *_code_args(),
                   "--phase-args", json.dumps({k: str(v) for k, v in kwargs.items() if v})]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])
    gc.collect()
    cpu = time.process_time()
    with PeakRss() as rss:
        result = PHASES[name](**kwargs)
    cpu = time.process_time() - cpu
    return {**result, "cpu": cpu, "peak_rss": rss.peak, "start_rss": rss.start}


_CODE: list[str] = []


def _code_args() -> list[str]:
    return [arg for path in _CODE for arg in ("--code", path)]


def _child(name: str, raw: str) -> int:
    _warm_imports()
    kwargs = {k: Path(v) if k not in ("profile", "key") else v
              for k, v in json.loads(raw).items()}
    gc.collect()
    cpu = time.process_time()
    with PeakRss() as rss:
        result = PHASES[name](**kwargs)
    result["cpu"] = time.process_time() - cpu
    result["peak_rss"] = max(rss.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result["start_rss"] = rss.start
    print(json.dumps(result))
    return 0


def _module_root() -> str:
    import convsync_pipeline

    return str(Path(convsync_pipeline.__file__).resolve().parent.parent)


def compare_documents(out: Path, store_root: Path, dates: list[str]) -> list[str]:
    """Dates whose conversations, counts or summary differ between rowwise and convsync."""
    differ = []
    for date in dates:
        mine = json.loads((store_root / "conversations" / f"{date}.json").read_bytes())
        theirs = json.loads((out / "conversations" / f"{date}.json").read_bytes())
        for doc in (mine, theirs):
            doc.pop("_blobMeta")
        if mine != theirs:
            differ.append(date)
    return differ


def machine() -> dict[str, Any]:
    """What the figures were measured on (and how busy it was)."""
    model = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(total_kb / 2**20, 1),
        "python": sys.version.split()[0],
    }


def wait_quiet(threshold: float | None, timeout: float = 600) -> float:
    """Wait (up to `timeout`) until the 1-minute load is under `threshold`; the load then."""
    deadline = time.monotonic() + timeout
    while threshold is not None and os.getloadavg()[0] >= threshold:
        if time.monotonic() > deadline:
            break
        time.sleep(5)
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--isolate", action="store_true",
                        help="run each phase in a fresh subprocess (per-phase peak RSS)")
    parser.add_argument("--skip-rowwise", action="store_true",
                        help="leave the slow baseline out (no speedup, no document check)")
    parser.add_argument("--profile", help="write a cProfile of the (last) ingest phase here")
    parser.add_argument("--gzip", action="store_true",
                        help="upload the CSV gzipped (export.csv.gz; no row-by-row baseline)")
    parser.add_argument("--memory-mb", type=int,
                        help="CONVSYNC_INGEST_MEMORY_MB for the ingest (default: convsync's)")
    parser.add_argument("--keep", type=Path, help="use this folder instead of a temp dir")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: use the upload generated there by an earlier run")
    parser.add_argument("--quiet-load", type=float,
                        help="before each run, wait (up to 10 min) for a 1-min load under this")
    parser.add_argument("--code", action="append", default=[],
                        help="import convsync_pipeline from this folder (a before/after copy)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--phase-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _CODE[:] = [str(Path(path).resolve()) for path in args.code]
    sys.path[:0] = _CODE
    if args.phase:
        return _child(args.phase, args.phase_args)

    _warm_imports()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="convsync-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        upload, earlier = workdir / "export.csv", workdir / "earlier.csv"
        generated = workdir / f"generated-{args.rows}-{args.days}-{args.seed}.json"
        if args.reuse and generated.exists() and upload.exists() and earlier.exists():
            stats = json.loads(generated.read_text())
            print(f"reused: {upload}", flush=True)
        else:
            started = time.perf_counter()
            stats = generate(
                upload, args.rows, days=args.days, seed=args.seed, earlier_path=earlier
            )
            generated.write_text(json.dumps(stats))
            print(f"generate_s: {time.perf_counter() - started:.2f}", flush=True)
        key = UPLOAD_KEY
        if args.gzip:
            started = time.perf_counter()
            packed_path = Path(f"{upload}.gz")
            if not (args.reuse and packed_path.exists()):
                with upload.open("rb") as plain, gzip.open(packed_path, "wb", 6) as packed:
                    shutil.copyfileobj(plain, packed, 1 << 20)
            upload, key = packed_path, UPLOAD_KEY + ".gz"
            args.skip_rowwise = True
            print(f"gzip_s: {time.perf_counter() - started:.2f}", flush=True)
        if args.memory_mb:
            os.environ["CONVSYNC_INGEST_MEMORY_MB"] = str(args.memory_mb)

        runs: dict[str, list[dict[str, Any]]] = {
            "floor": [], "rowwise": [], "ingest": [], "merge": [], "writes": []
        }
        mismatched: list[str] = []
        loads = []
        for _ in range(args.repeat):
            out, store_root = prepare(workdir, upload, earlier, key)
            loads.append(wait_quiet(args.quiet_load))
            runs["floor"].append(run_phase("floor", args.isolate, upload=upload))
            if not args.skip_rowwise:
                runs["rowwise"].append(
                    run_phase("rowwise", args.isolate, upload=upload, out=out)
                )
            runs["ingest"].append(run_phase(
                "ingest", args.isolate, store_root=store_root, key=key, profile=args.profile
            ))
            runs["merge"].append(run_phase("merge", args.isolate, store_root=store_root))
            runs["writes"].append(run_phase("writes", args.isolate, store_root=store_root))
            if not args.skip_rowwise:
                mismatched = compare_documents(out, store_root, runs["ingest"][-1]["dates"])
            for name in runs:
                if runs[name]:
                    print(f"# run {len(runs[name])} {name}_s: {runs[name][-1]['seconds']:.3f}",
                          flush=True)

        def median(name: str, key: str = "seconds") -> float:
            return statistics.median(r[key] for r in runs[name])

        def convsync() -> float:
            return statistics.median(
                i["seconds"] + m["seconds"] for i, m in zip(runs["ingest"], runs["merge"],
                                                            strict=True)
            )

        last, merged = runs["ingest"][-1], runs["merge"][-1]
        lines: dict[str, Any] = {
            **machine(),
            "load_1min_at_runs": " ".join(str(load) for load in loads),
            "rows": stats["rows"],
            "bytes": upload.stat().st_size,
            "gzipped": args.gzip,
            "ingest_memory_mb": getattr(_settings(workdir), "ingest_memory_mb", None),
            "conversations": stats["conversations_generated"],
            "dates": len(last["dates"]),
            "records_in": last["records_in"],
            "accepted": last["accepted"],
            "quarantined": last["quarantined"],
            "added": merged["added"],
            "already_present": merged["already_present"],
            "spilled_mb": last["spilled_mb"],
            "repeat": args.repeat,
            "mode": "isolated subprocesses" if args.isolate else "one process",
            "code": _module_root(),
            "floor_s": round(median("floor"), 3),
        }
        if runs["rowwise"]:
            lines["rowwise_s"] = round(median("rowwise"), 3)
        lines["convsync_s"] = round(convsync(), 3)
        lines["ingest_s"] = round(median("ingest"), 3)
        lines["ingest_s_per_million_rows"] = round(median("ingest") / stats["rows"] * 1e6, 3)
        lines["merge_s"] = round(median("merge"), 3)
        lines["ratio_vs_floor"] = round(convsync() / median("floor"), 2)
        lines["ingest_vs_floor"] = round(median("ingest") / median("floor"), 2)
        lines["writes_s"] = round(median("writes"), 3)
        lines["written_mb"] = _mb(runs["writes"][-1]["bytes"])
        lines["writes_vs_floor"] = round(median("writes") / median("floor"), 2)
        lines["ratio_vs_floor_plus_writes"] = round(
            convsync() / (median("floor") + median("writes")), 2
        )
        if runs["rowwise"]:
            lines["speedup_vs_rowwise"] = round(median("rowwise") / convsync(), 1)
            lines["documents_match"] = not mismatched
            if mismatched:
                lines["documents_differ"] = ",".join(mismatched)
        for name in runs:
            if runs[name]:
                lines[f"{name}_cpu_s"] = round(median(name, "cpu"), 3)
        for name in runs:
            if runs[name]:
                lines[f"{name}_runs_s"] = " ".join(f"{r['seconds']:.3f}" for r in runs[name])
                lines[f"{name}_peak_rss_mb"] = _mb(max(r["peak_rss"] for r in runs[name]))
        lines["ingest_rss_increase_mb"] = _mb(
            max(r["peak_rss"] - r["start_rss"] for r in runs["ingest"])
        )
        lines["peak_rss_mb"] = _mb(
            max(r["peak_rss"] for name in runs for r in runs[name])
            if args.isolate
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        lines["load_1min_after"] = round(os.getloadavg()[0], 2)
        for key, value in lines.items():
            print(f"{key}: {value}")
        return 0 if not mismatched else 1
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
