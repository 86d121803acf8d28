"""How long a `new_upload_sensor` tick takes with a large upload waiting (folder store).

    .venv/bin/python bench/sensor_tick.py [--gigabytes 1] [--small 1000] [--repeat 5]

Lays out a folder store holding one upload of `--gigabytes` (a sparse file: the sensor must
never read it, so its bytes need not exist on disk) and `--small` small uploads, then times
the sensor's first tick (everything new: one ingest request per upload) and a tick with
nothing new, each the median of `--repeat`, evaluated as the daemon does (resources, a real
ephemeral instance). Before issue #14 the first tick parsed every upload inside the tick.
Output: `key: value` lines, with the load average they were measured at.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CSV = b"conversation_id,timestamp,role,content\nc1,2026-02-11T10:00:00Z,user,hello\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    from dagster import DagsterInstance, SensorResult, build_sensor_context

    from convsync_pipeline.definitions import build_definitions
    from convsync_pipeline.resources import build_resources
    from convsync_pipeline.settings import load_settings

    root = Path(tempfile.mkdtemp(prefix="convsync-sensor-bench-"))
    try:
        big = root / "incoming" / "2026-02-11" / "huge.csv"
        big.parent.mkdir(parents=True)
        with big.open("wb") as handle:
            handle.truncate(int(args.gigabytes * 2**30))
        for n in range(args.small):
            (root / "incoming" / "2026-02-11" / f"small-{n:05d}.csv").write_bytes(CSV)
        settings = load_settings({"CONVSYNC_STORE": str(root), "CONVSYNC_START_DATE": "2026-01-01"})
        sensor = build_definitions(settings).resolve_sensor_def("new_upload_sensor")
        resources = build_resources(settings)
        instance = DagsterInstance.ephemeral()

        def tick(cursor: str | None) -> tuple[float, int, str | None]:
            started = time.perf_counter()
            with build_sensor_context(cursor=cursor, resources=resources,
                                      instance=instance) as context:
                result = sensor(context)
            seconds = time.perf_counter() - started
            if isinstance(result, SensorResult):
                return seconds, len(result.run_requests or []), result.cursor
            return seconds, 0, cursor

        firsts, idles = [], []
        requests = ticks = 0
        for _ in range(args.repeat):
            seconds, requests, cursor = tick(None)
            firsts.append(seconds)
            total, ticks = requests, 1
            while True:  # the backlog, REQUESTS_PER_TICK at a time
                _, more, cursor = tick(cursor)
                if not more:
                    break
                total, ticks = total + more, ticks + 1
            assert total == args.small + 1
            idle, idle_requests, _ = tick(cursor)
            assert idle_requests == 0
            idles.append(idle)
        print(f"load_1min: {os.getloadavg()[0]:.2f}")
        print(f"large_upload_gb: {args.gigabytes:g}")
        print(f"small_uploads: {args.small}")
        print(f"requests_first_tick: {requests}")
        print(f"ticks_to_request_all: {ticks}")
        print(f"first_tick_s: {statistics.median(firsts):.3f}")
        print(f"first_tick_runs_s: {' '.join(f'{s:.3f}' for s in firsts)}")
        print(f"idle_tick_s: {statistics.median(idles):.3f}")
        print(f"load_1min_after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
