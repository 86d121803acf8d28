"""Benchmark of the analysis pass (`analyse_date`) against a fake OpenAI server.

    .venv/bin/python bench/analysis.py [--conversations 1000] [--latency 0.2]
        [--concurrency 8] [--rpm 5000] [--store local|s3] [--baseline-concurrency 1]
        [--baseline-conversations 100] [--repeat 1] [--profile] [--code DIR]
        [--mode live|batch]

`--mode batch` measures the Batch API path instead: a pass that submits the date, the
provider ending the batch (not timed: that is OpenAI's time), a pass that collects. It prints
requests per batch, submit and collect seconds per 10,000 conversations, and the estimated
cost at batch prices against live prices for the same token counts (`cost_ratio_vs_live`).

What it does: starts the fake OpenAI-compatible server (tests/fixtures/openai_server.py) in a
separate process, so its threads do not compete with the client for this process's GIL; seeds
a store (`--store local`: a folder in a temporary directory; `--store s3`: a bucket on a real
`moto_server` started for the run, as the tests start it) with one upload of N conversations
and runs the real ingest and merge; then runs the real analysis pass (date lock, `processing`
written before sending, sliding window, log entries and checkpoints) with the real `openai`
analyser. `--code DIR` imports convsync_pipeline from another checkout (a before/after copy).
The same is done for a baseline (by default one request at a time, over fewer conversations
so the bench stays short) and both are printed side by side as `key: value` lines:

    conversations, latency_s, concurrency, rpm_limit, seconds, conversations_per_second,
    theoretical_per_second (= min(concurrency / latency, rpm / 60)), efficiency (the ratio),
    sent_total, sent_twice (conversations the server saw more than once: must be 0),
    writes (objects the pass wrote: log entries, document checkpoints, the id index),
    document_saves (whole-document writes), log_entries, bytes_written (what the pass handed
    the store, counted at the Store interface, so the same on both backends),
    bytes_written_per_conversation, os_write_bytes (the kernel's count for this process,
    /proc/self/io: the folder store's bytes as the disk sees them), cpu_ms_per_conversation
    (this process) and server_cpu_seconds (the fake server's process), load_1m_before /
    load_1m_after (the machine's 1-minute load average: the client, the server and anything
    else running share its cores), ...

With `--repeat N` the main measurement runs N times; its lines are those of the median run
(by efficiency), and `runs_efficiency` / `runs_load_1m` list every run.

The clock starts after the openai SDK is imported. Importing it takes about 0.7 s (more on a
loaded machine); a process pays it once, not per conversation, so it is measured and printed
separately (`sdk_import_seconds`), and `efficiency_with_sdk_import` charges it to the main
run as a fresh Dagster step process would. (Before, whichever measurement ran first paid it:
the main run, never the baseline.)

Defaults, and why: 200 ms is the latency the issue sets (real completions take 0.5-5 s,
which only makes the client's own costs smaller in comparison). The concurrency is the
project's default CONVSYNC_CONCURRENCY (8), because that is what a run gets: at real latencies
of 1-2 s it sends 240-480 requests a minute, under the 500 RPM of OpenAI's first usage tier.
The limit, 5,000 requests per minute, is OpenAI's gpt-4o-mini limit on usage tiers 2-3,
enforced by both the client (CONVSYNC_REQUESTS_PER_MINUTE) and the server; at 8 / 0.2 s = 40
requests/s = 2,400 a minute it does not bind, so the bound is concurrency / latency. (A limit
below the run's size is not a fair bench: the limiter is a sliding one-minute window, so the
first minute may burst.) `--concurrency 16` (80/s = 4,800 a minute) is the most that limit
allows at this latency.

The server runs in this same script (`--serve`), because the fixture module's own entry point
cannot report how many requests each conversation got; on the line `stats` it answers with
its per-conversation counts as one JSON line, on `reset` it forgets them, on EOF it stops.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/analysis.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.common import S3Server, WriteCounter, os_write_bytes, wait_quiet  # noqa: E402

DATE = "2026-02-11"
FAKE_KEY = "sk-bench-not-a-real-key-000000"  # the server is fake; never send a real key to it

TEXTS = (
    ("user", "Hi, I was charged twice for my subscription this month, order {n}."),
    ("agent", "Sorry about that! I can see both charges and have refunded the second one."),
    ("user", "Thanks, the refund shows as pending. How long will it take?"),
    ("agent", "Usually three to five business days. Anything else I can help with?"),
)


# ----------------------------------------------------------------------------- server process
def serve(latency: float, rpm: int | None) -> None:
    """`--serve`: run the fake server here, print its URL, answer `stats` / `reset` lines."""
    from tests.fixtures.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(latency=latency, requests_per_minute=rpm).start()
    print(server.base_url, flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                counts = server.sent_counts()
                print(
                    json.dumps(
                        {
                            "counts": counts,
                            "total": server.total_requests,
                            "rate_limited": server.rate_limited,
                            "max_in_flight": server.max_in_flight,
                            "model_lookups": server.model_lookups,
                        }
                    ),
                    flush=True,
                )
            elif command == "reset":
                server.reset()
                print("ok", flush=True)
            elif command == "batch_end":  # the provider's own processing: not timed
                server.batch.run_to_end()
                print("ok", flush=True)
            elif command == "batch_stats":
                print(
                    json.dumps(
                        {
                            "submitted": server.batch.submitted_counts(),
                            "creates": server.batch.creates,
                        }
                    ),
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


class ServerProcess:
    """The fake server in a child process, driven over its stdin/stdout."""

    def __init__(self, latency: float, rpm: int | None) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        command += ["--latency", str(latency), "--rpm", str(rpm or 0)]  # 0: no limit
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.base_url = self._line()

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system), from /proc."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fake OpenAI server process did not start")
        return line.strip()

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line()

    def stats(self) -> dict[str, Any]:
        return json.loads(self._ask("stats"))

    def reset(self) -> None:
        self._ask("reset")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----------------------------------------------------------------------------- one measurement
@dataclass
class Result:
    conversations: int
    latency_s: float
    concurrency: int
    rpm_limit: int | None
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    sent_total: int
    sent_twice: int
    never_sent: int
    document_saves: int
    log_entries: int
    writes: int
    bytes_written: int
    os_write_bytes: int
    store: str
    succeeded: int
    failed_attempts: int
    server_rate_limited: int
    server_max_in_flight: int
    document_bytes: int
    load_1m_before: float
    load_1m_after: float

    @property
    def conversations_per_second(self) -> float:
        return self.conversations / self.seconds if self.seconds else 0.0

    @property
    def theoretical_per_second(self) -> float:
        bound = self.concurrency / self.latency_s if self.latency_s > 0 else float("inf")
        if self.rpm_limit is not None:
            bound = min(bound, self.rpm_limit / 60.0)
        return bound

    @property
    def efficiency(self) -> float:
        return self.conversations_per_second / self.theoretical_per_second

    def lines(self) -> dict[str, str]:
        return {
            "conversations": str(self.conversations),
            "latency_s": f"{self.latency_s:g}",
            "concurrency": str(self.concurrency),
            "rpm_limit": str(self.rpm_limit) if self.rpm_limit is not None else "none",
            "seconds": f"{self.seconds:.2f}",
            "conversations_per_second": f"{self.conversations_per_second:.2f}",
            "theoretical_per_second": f"{self.theoretical_per_second:.2f}",
            "efficiency": f"{self.efficiency:.3f}",
            "sent_total": str(self.sent_total),
            "sent_twice": str(self.sent_twice),
            "never_sent": str(self.never_sent),
            "succeeded": str(self.succeeded),
            "failed_attempts": str(self.failed_attempts),
            "store": self.store,
            "writes": str(self.writes),
            "document_saves": str(self.document_saves),
            "log_entries": str(self.log_entries),
            "bytes_written": str(self.bytes_written),
            "bytes_written_per_conversation": f"{self.bytes_written / self.conversations:.0f}",
            "os_write_bytes": str(self.os_write_bytes),
            "document_bytes": str(self.document_bytes),
            "cpu_seconds": f"{self.cpu_seconds:.2f}",
            "cpu_ms_per_conversation": f"{1000 * self.cpu_seconds / self.conversations:.2f}",
            "server_cpu_seconds": f"{self.server_cpu_seconds:.2f}",
            "server_rate_limited": str(self.server_rate_limited),
            "server_max_in_flight": str(self.server_max_in_flight),
            "load_1m_before": f"{self.load_1m_before:.2f}",
            "load_1m_after": f"{self.load_1m_after:.2f}",
        }


def seed(store: Any, settings: Any, conversations: int) -> None:
    """One CSV upload of `conversations` four-message conversations, ingested and merged."""
    from convsync_pipeline.pipeline.ingest import ingest_new_uploads
    from convsync_pipeline.pipeline.merge_date import merge_date
    from convsync_pipeline.resources.blob_lock import locks_from_settings

    rows = ["conversation_id,timestamp,role,content"]
    for n in range(conversations):
        minute = n % (24 * 60)
        for index, (role, text) in enumerate(TEXTS):
            stamp = f"{DATE}T{minute // 60:02d}:{minute % 60:02d}:{index * 10:02d}Z"
            rows.append(f'bench-{n:06d},{stamp},{role},"{text.format(n=n)}"')
    store.write(f"incoming/{DATE}/bench.csv", ("\n".join(rows) + "\n").encode())
    reports = list(ingest_new_uploads(store, settings))
    assert reports and reports[0].accepted == conversations * len(TEXTS), reports
    merged = merge_date(store, locks_from_settings(store, settings), DATE, "bench-seed")
    assert merged.added == conversations, merged


def measure(
    server: ServerProcess,
    *,
    conversations: int,
    latency: float,
    concurrency: int,
    rpm: int | None,
    timeout: float,
    profile: bool,
    s3: S3Server | None = None,
    quiet_load: float | None = None,
) -> Result:
    from convsync_pipeline.core.keys import document_key
    from convsync_pipeline.pipeline.analyse import analyse_date
    from convsync_pipeline.resources.analyzer import make_analyzer
    from convsync_pipeline.resources.blob_lock import locks_from_settings
    from convsync_pipeline.settings import load_settings
    from convsync_pipeline.store.local import LocalStore

    server.reset()
    with tempfile.TemporaryDirectory(prefix="convsync-bench-") as tmp:
        root = Path(tmp) / "store"
        location = str(root) if s3 is None else f"s3://{s3.bucket()}/bench"
        env = {
            "CONVSYNC_STORE": location,
            "CONVSYNC_START_DATE": "2026-01-01",
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": FAKE_KEY,
            "OPENAI_BASE_URL": server.base_url,
            "CONVSYNC_CONCURRENCY": str(concurrency),
            "CONVSYNC_REQUEST_TIMEOUT_SECONDS": str(timeout),
        }
        if rpm is not None:
            env["CONVSYNC_REQUESTS_PER_MINUTE"] = str(rpm)
        if s3 is not None:
            from convsync_pipeline.store.s3 import S3Store

            env["CONVSYNC_S3_ENDPOINT_URL"] = s3.endpoint
            store: Any = S3Store.from_url(location, s3.endpoint)
        else:
            store = LocalStore(root)
        settings = load_settings(env)
        seed(store, settings, conversations)
        counter = WriteCounter(store)
        counter.counting = True
        os_bytes_before = os_write_bytes()

        profiler = cProfile.Profile() if profile else None
        wait_quiet(quiet_load)
        load_before = os.getloadavg()[0]
        server_cpu_started = server.cpu_seconds()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        locks = locks_from_settings(store, settings)
        report = analyse_date(
            store, locks, settings, lambda: make_analyzer(settings), DATE, "bench"
        )
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        server_cpu = server.cpu_seconds() - server_cpu_started
        counter.counting = False
        os_bytes = os_write_bytes() - os_bytes_before
        load_after = os.getloadavg()[0]
        document = store.read(document_key(DATE)) or b""

    stats = server.stats()
    counts: dict[str, int] = stats["counts"]
    if profiler is not None:
        out = io.StringIO()
        order = os.environ.get("BENCH_PROFILE_SORT", "cumulative")  # or tottime
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(60)
        print(out.getvalue(), file=sys.stderr)
    return Result(
        conversations=conversations,
        latency_s=latency,
        concurrency=concurrency,
        rpm_limit=rpm,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        server_cpu_seconds=server_cpu,
        sent_total=int(stats["total"]),
        sent_twice=sum(1 for count in counts.values() if count > 1),
        never_sent=conversations - len(counts),
        document_saves=report.saves,
        log_entries=getattr(report, "entries", 0),
        writes=counter.writes,
        bytes_written=counter.bytes,
        os_write_bytes=os_bytes,
        store="local" if s3 is None else "s3",
        succeeded=report.succeeded,
        failed_attempts=report.failed_attempts,
        server_rate_limited=int(stats["rate_limited"]),
        server_max_in_flight=int(stats["max_in_flight"]),
        document_bytes=len(document),
        load_1m_before=load_before,
        load_1m_after=load_after,
    )


def measure_batch(server: ServerProcess, *, conversations: int, s3: S3Server | None) -> None:
    """`--mode batch`: one pass that submits, the provider finishes (not timed), one pass
    that collects; prints requests per batch, both times per 10,000 conversations and the
    cost against live prices for the same token counts."""
    from convsync_pipeline.analyzers.openai import estimate_cost_usd
    from convsync_pipeline.analyzers.openai_batch import BatchClient
    from convsync_pipeline.pipeline.analyse import analyse_date
    from convsync_pipeline.resources.analyzer import make_analyzer
    from convsync_pipeline.resources.blob_lock import locks_from_settings
    from convsync_pipeline.settings import load_settings
    from convsync_pipeline.store.local import LocalStore

    server.reset()
    with tempfile.TemporaryDirectory(prefix="convsync-bench-") as tmp:
        root = Path(tmp) / "store"
        location = str(root) if s3 is None else f"s3://{s3.bucket()}/bench"
        env = {
            "CONVSYNC_STORE": location,
            "CONVSYNC_START_DATE": "2026-01-01",
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": FAKE_KEY,
            "OPENAI_BASE_URL": server.base_url,
            "CONVSYNC_OPENAI_MODE": "batch",
        }
        if s3 is not None:
            from convsync_pipeline.store.s3 import S3Store

            env["CONVSYNC_S3_ENDPOINT_URL"] = s3.endpoint
            store: Any = S3Store.from_url(location, s3.endpoint)
        else:
            store = LocalStore(root)
        settings = load_settings(env)
        seed(store, settings, conversations)
        counter = WriteCounter(store)
        counter.counting = True
        locks = locks_from_settings(store, settings)

        def one_pass(owner: str) -> Any:
            return analyse_date(
                store,
                locks,
                settings,
                lambda: make_analyzer(settings),
                DATE,
                owner,
                make_batch_client=lambda: BatchClient(base_url=server.base_url),
            )

        load_before = os.getloadavg()[0]
        server_cpu = server.cpu_seconds()
        cpu_started, started = time.process_time(), time.perf_counter()
        submitted = one_pass("bench-submit")
        submit_seconds = time.perf_counter() - started
        submit_cpu = time.process_time() - cpu_started
        submit_server_cpu = server.cpu_seconds() - server_cpu
        server._ask("batch_end")
        server_cpu = server.cpu_seconds()
        cpu_started, started = time.process_time(), time.perf_counter()
        collected = one_pass("bench-collect")
        collect_seconds = time.perf_counter() - started
        collect_cpu = time.process_time() - cpu_started
        collect_server_cpu = server.cpu_seconds() - server_cpu
        counter.counting = False
    stats = json.loads(server._ask("batch_stats"))
    outcome = collected.batch
    assert submitted.batch is not None and outcome is not None
    batches = len(submitted.batch.submitted)
    live = estimate_cost_usd(settings.openai_model, outcome.usage)
    batch = estimate_cost_usd(settings.openai_model, outcome.usage, batch=True)
    per_10k = 10_000 / conversations
    lines = {
        "mode": "batch",
        "store": "local" if s3 is None else "s3",
        "conversations": conversations,
        "batches": batches,
        "requests_per_batch": f"{submitted.batch.requests / max(batches, 1):.0f}",
        "submit_seconds": f"{submit_seconds:.2f}",
        "collect_seconds": f"{collect_seconds:.2f}",
        "submit_seconds_per_10k": f"{submit_seconds * per_10k:.2f}",
        "collect_seconds_per_10k": f"{collect_seconds * per_10k:.2f}",
        "submit_cpu_seconds_per_10k": f"{submit_cpu * per_10k:.2f}",
        "collect_cpu_seconds_per_10k": f"{collect_cpu * per_10k:.2f}",
        # The fake server's CPU while the client waited on it (parsing the upload, serving
        # files): the provider's side of the transfer, included in the seconds above.
        "submit_server_cpu_seconds_per_10k": f"{submit_server_cpu * per_10k:.2f}",
        "collect_server_cpu_seconds_per_10k": f"{collect_server_cpu * per_10k:.2f}",
        "succeeded": collected.succeeded,
        "failed_attempts": collected.failed_attempts,
        "submitted_twice": sum(1 for n in stats["submitted"].values() if n > 1),
        "batches_created": stats["creates"],
        "writes": counter.writes,
        "bytes_written_per_conversation": f"{counter.bytes / conversations:.0f}",
        "prompt_tokens": outcome.usage.promptTokens,
        "completion_tokens": outcome.usage.completionTokens,
        "cost_live_usd": f"{live:.6f}" if live is not None else "-",
        "cost_batch_usd": f"{batch:.6f}" if batch is not None else "-",
        "cost_ratio_vs_live": f"{batch / live:.2f}" if live and batch is not None else "-",
        "load_1m_before": f"{load_before:.2f}",
        "load_1m_after": f"{os.getloadavg()[0]:.2f}",
    }
    for key, value in lines.items():
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per answer")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--rpm", type=int, default=5000, help="requests per minute, client and server; 0: none"
    )
    parser.add_argument("--baseline-concurrency", type=int, default=1)
    parser.add_argument(
        "--baseline-conversations",
        type=int,
        default=100,
        help="conversations of the baseline run (0: skip it)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="client request timeout")
    parser.add_argument(
        "--repeat", type=int, default=1, help="main measurements; the median one is printed"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the main run (stderr)")
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument(
        "--quiet-load",
        type=float,
        help="before each measurement, wait (up to 15 min) for a 1-minute load under this",
    )
    parser.add_argument(
        "--writes",
        choices=("auto", "loop", "thread"),
        default="auto",
        help="where the pass writes: as it chooses, or forced onto the loop / a worker thread",
    )
    parser.add_argument(
        "--code", type=Path, help="import convsync_pipeline from this checkout (before/after)"
    )
    parser.add_argument(
        "--mode",
        choices=("live", "batch"),
        default="live",
        help="batch: submit through the Batch API, end it, collect (times exclude the provider)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rpm = args.rpm or None

    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))
    if args.serve:
        serve(args.latency, rpm)
        return 0

    os.environ["OPENAI_API_KEY"] = FAKE_KEY  # read by the SDK itself
    os.environ.pop("OPENAI_BASE_URL", None)
    # What the pass imports anyway (and the seeding would import before the clock starts),
    # then the analyser and its SDK: the import the pass itself used to pay.
    import convsync_pipeline.pipeline.analyse
    import convsync_pipeline.pipeline.ingest
    import convsync_pipeline.pipeline.merge_date
    import convsync_pipeline.resources.analyzer

    if args.writes != "auto":
        from convsync_pipeline.pipeline import analyse

        analyse.THREAD_SAVE_AFTER_SECONDS = -1.0 if args.writes == "thread" else float("inf")
    import_started = time.perf_counter()
    import convsync_pipeline.analyzers.openai  # noqa: F401  (the SDK: once per process)

    sdk_import_seconds = time.perf_counter() - import_started
    server = ServerProcess(args.latency, rpm)
    s3 = S3Server() if args.store == "s3" else None
    if args.mode == "batch":
        try:
            measure_batch(server, conversations=args.conversations, s3=s3)
        finally:
            server.close()
            if s3 is not None:
                s3.close()
        return 0
    try:
        runs = {}
        repeats = [
            measure(
                server,
                conversations=args.conversations,
                latency=args.latency,
                concurrency=args.concurrency,
                rpm=rpm,
                timeout=args.timeout,
                profile=args.profile,
                s3=s3,
                quiet_load=args.quiet_load,
            )
            for _ in range(max(1, args.repeat))
        ]
        runs["run"] = sorted(repeats, key=lambda result: result.efficiency)[len(repeats) // 2]
        if args.baseline_conversations > 0:
            runs["baseline"] = measure(
                server,
                conversations=args.baseline_conversations,
                latency=args.latency,
                concurrency=args.baseline_concurrency,
                rpm=rpm,
                timeout=args.timeout,
                profile=False,
                s3=s3,
            )
    finally:
        server.close()
        if s3 is not None:
            s3.close()

    chosen = runs["run"]
    for key, value in chosen.lines().items():
        print(f"{key}: {value}")
    print(f"sdk_import_seconds: {sdk_import_seconds:.2f}")
    cold = (
        chosen.conversations / (chosen.seconds + sdk_import_seconds) / chosen.theoretical_per_second
    )
    print(f"efficiency_with_sdk_import: {cold:.3f}")
    if len(repeats) > 1:
        print("runs_efficiency: " + ", ".join(f"{r.efficiency:.3f}" for r in repeats))
        print("runs_load_1m: " + ", ".join(f"{r.load_1m_before:.2f}" for r in repeats))
    if "baseline" in runs:
        baseline = runs["baseline"]
        for key, value in baseline.lines().items():
            print(f"baseline_{key}: {value}")
        speedup = chosen.conversations_per_second / baseline.conversations_per_second
        print(f"speedup_vs_baseline: {speedup:.2f}")
    everything = [*repeats, *([runs["baseline"]] if "baseline" in runs else [])]
    ok = chosen.efficiency >= 0.9 and all(r.sent_twice == 0 for r in everything)
    print(f"target_met: {'yes' if ok else 'no'} (efficiency >= 0.9 and sent_twice == 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
