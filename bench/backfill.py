"""Backfill benchmark: K days through a running `dagster dev`, beside the same work in-process.

    .venv/bin/python bench/backfill.py --days 7 [--variant single_run|per_date|multi_run:N]

Writes K days of small uploads (one CSV per day, `--conversations` conversations of four
messages each) into a fresh folder store, then:

- `dev_*`: starts `dagster dev` (tests/fixtures/dagster_dev.py) on a fresh DAGSTER_HOME holding
  the repository's dagster.yaml, launches a backfill of the four assets over the K dates with
  the GraphQL mutation the UI sends (`launchPartitionBackfill`), and polls
  `partitionBackfillOrError` until COMPLETED_SUCCESS: total seconds from the launch, seconds
  per partition, runs, runs per second, and where the time went (until the first run started,
  first start to last end, last end until the backfill reported success);
- `inprocess_*`: the same work on a fresh copy of the store in one process:
  `dagster.materialize` of the four assets per date in a loop (`inprocess_loop_s`), the
  pipeline functions directly (`inprocess_direct_s`: ingest once, then merge, analyse and
  summarise each date), and one `materialize` of the whole range (`inprocess_range_s`, what
  the backfill's one run does).

`--variant single_run` (the default) runs the code as it is: the assets carry
`BackfillPolicy.single_run()` (convsync_pipeline/partitions.py), so the backfill is one run
that goes through the dates one at a time, each under its own lock. `per_date` and
`multi_run:N` run a scratch copy of `convsync_pipeline` whose `BACKFILL_POLICY` is replaced by
`None` (Dagster's default: one run per date, each run a range of one date — the behaviour before
the policy) or by `BackfillPolicy.multi_run(N)`; nothing else differs. The repository itself is
never modified. Every date's document and summary are checked afterwards. Output: `key: value`
lines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POLICY_LINE = "BACKFILL_POLICY = BackfillPolicy.single_run()"
ASSETS = ["raw_conversations", "normalized_conversations", "ai_analysis", "daily_summary"]
FIRST_DAY = dt.date(2026, 2, 1)
MODULE = "convsync_pipeline.definitions"

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""
ASSET_POLICIES = """
query Policies {
  assetNodes {
    assetKey { path }
    backfillPolicy { policyType maxPartitionsPerRun }
    partitionStats { numMaterialized numFailed }
  }
}
"""
QUESTIONS = (
    ("The app keeps crashing when I upload photos", "Sorry! Please update to 4.2."),
    ("I was charged twice this month", "Refunded, thanks for your patience."),
    ("How do I export my data?", "Settings, then Export: you get a CSV."),
)


def dates_for(days: int) -> list[str]:
    return [(FIRST_DAY + dt.timedelta(days=n)).isoformat() for n in range(days)]


def write_uploads(store: Path, dates: list[str], conversations: int) -> None:
    """One upload per day: `conversations` conversations of four messages."""
    for date in dates:
        rows = ["conversation_id,timestamp,role,content"]
        for number in range(conversations):
            question, answer = QUESTIONS[number % len(QUESTIONS)]
            cid = f"b-{date}-{number}"
            minute = number % 60
            rows += [
                f"{cid},{date}T09:{minute:02d}:00Z,user,{question}",
                f'{cid},{date}T09:{minute:02d}:30Z,agent,"{answer}"',
                f"{cid},{date}T09:{minute:02d}:40Z,user,thanks",
                f"{cid},{date}T09:{minute:02d}:50Z,agent,Anything else?",
            ]
        target = store / "incoming" / date / "export.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(rows) + "\n", encoding="utf-8")


def check_store(store: Path, dates: list[str], conversations: int) -> list[str]:
    """Dates whose document or summary is missing or incomplete."""
    bad = []
    for date in dates:
        try:
            doc = json.loads((store / "conversations" / f"{date}.json").read_bytes())
            summary = json.loads((store / "summaries" / f"{date}.json").read_bytes())
        except (OSError, ValueError):
            bad.append(date)
            continue
        done = [c for c in doc["conversations"] if c["processingStatus"] == "success"]
        if len(done) != conversations or summary["documentVersion"] != doc["_blobMeta"]["version"]:
            bad.append(date)
    return bad


# --------------------------------------------------------------------------- code variants


def scratch_code(variant: str, workdir: Path) -> Path | None:
    """None for the code as it is; else a copy of convsync_pipeline (its parent dir) whose
    backfill policy is swapped for the variant's."""
    if variant == "single_run":
        return None
    if variant == "per_date":
        replacement = "BACKFILL_POLICY = None  # bench/backfill.py --variant per_date"
    elif variant.startswith("multi_run:"):
        size = int(variant.split(":", 1)[1])
        replacement = f"BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run={size})"
    else:
        raise SystemExit(f"unknown variant {variant!r}: single_run, per_date or multi_run:N")
    root = workdir / "code"
    shutil.copytree(
        ROOT / "convsync_pipeline",
        root / "convsync_pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    path = root / "convsync_pipeline" / "partitions.py"
    text = path.read_text()
    if text.count(POLICY_LINE) != 1:
        raise SystemExit(f"{POLICY_LINE!r} not found once in {path}: update bench/backfill.py")
    path.write_text(text.replace(POLICY_LINE, replacement))
    return root


def _env(store: Path, code: Path | None) -> dict[str, str | None]:
    from tests.fixtures.dagster_dev import convsync_env

    env = convsync_env(store)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


# --------------------------------------------------------------------------- dagster dev


def run_dev(
    workdir: Path,
    code: Path | None,
    dates: list[str],
    conversations: int,
    ranges: bool,
    timeout: float,
) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.dagster_dev import BACKFILL_DONE, dagster_dev

    store, home = workdir / "dev-store", workdir / "dev-home"
    write_uploads(store, dates, conversations)
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    result: dict[str, Any] = {}
    started_dev = time.monotonic()
    with dagster_dev(
        home, env=_env(store, code), cwd=code or ROOT, log_path=workdir / "dagster-dev.log"
    ) as dev:
        dev.wait_for_location(MODULE, timeout=240)
        result["dev_startup_s"] = round(time.monotonic() - started_dev, 1)
        policies = {
            "/".join(node["assetKey"]["path"]): node["backfillPolicy"]
            for node in dev.graphql(ASSET_POLICIES)["assetNodes"]
        }
        result["backfill_policy"] = json.dumps(policies.get("normalized_conversations"))
        if ranges:  # the UI's "partitionsByAssets" form, one range for every asset
            params: dict[str, Any] = {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": [name]},
                        "partitions": {"range": {"start": dates[0], "end": dates[-1]}},
                    }
                    for name in ASSETS
                ]
            }
        else:  # the asset graph's "Materialize" with the dates picked
            params = {
                "assetSelection": [{"path": [name]} for name in ASSETS],
                "partitionNames": dates,
            }
        launched_wall = time.time()
        launched = time.monotonic()
        backfill_id = dev.launch_partition_backfill(params)
        while True:
            dev.check_alive()
            backfill = dev.backfill(backfill_id)
            if backfill["status"] in BACKFILL_DONE:
                break
            if time.monotonic() - launched > timeout:
                raise SystemExit(
                    f"backfill not done after {timeout} s: {backfill}\n{dev.log_tail()}"
                )
            time.sleep(0.5)
        total = time.monotonic() - launched
        done_wall = time.time()
        runs = dev.graphql(
            RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}
        )["runsOrError"]["results"]
        stats = {
            "/".join(node["assetKey"]["path"]): node["partitionStats"]
            for node in dev.graphql(ASSET_POLICIES)["assetNodes"]
        }
    result["dev_partitions_materialized"] = ",".join(
        f"{name}={(stats.get(name) or {}).get('numMaterialized')}" for name in ASSETS
    )
    result["dev_run_tags"] = ",".join(
        sorted(
            {
                tag["key"]
                for run in runs
                for tag in run["tags"]
                if tag["key"]
                in {
                    "dagster/partition",
                    "dagster/asset_partition_range_start",
                    "dagster/asset_partition_range_end",
                }
            }
        )
    )
    result["dev_stopped_s"] = round(time.monotonic() - started_dev, 1)
    starts = [r["startTime"] for r in runs if r["startTime"]]
    ends = [r["endTime"] for r in runs if r["endTime"]]
    result.update(
        {
            "dev_status": backfill["status"],
            "dev_total_s": round(total, 2),
            "dev_s_per_partition": round(total / len(dates), 2),
            "dev_runs": len(runs),
            "dev_runs_per_s": round(len(runs) / total, 3),
            "dev_run_statuses": ",".join(sorted({r["status"] for r in runs})),
            "dev_until_first_run_s": round(min(starts) - launched_wall, 1) if starts else None,
            "dev_runs_span_s": round(max(ends) - min(starts), 1) if starts and ends else None,
            "dev_mean_run_s": round(
                statistics.mean(
                    r["endTime"] - r["startTime"] for r in runs if r["startTime"] and r["endTime"]
                ),
                2,
            )
            if ends
            else None,
            "dev_after_last_run_s": round(done_wall - max(ends), 1) if ends else None,
            "dev_bad_dates": ",".join(check_store(store, dates, conversations)) or "none",
        }
    )
    return result


# --------------------------------------------------------------------------- in-process


def run_inprocess(
    workdir: Path, code: Path | None, dates: list[str], conversations: int, modes: list[str]
) -> dict[str, Any]:
    """Each mode in a fresh subprocess (so it imports the variant's code) on a fresh store."""
    result: dict[str, Any] = {}
    for mode in modes:
        store = workdir / f"store-{mode}"
        write_uploads(store, dates, conversations)
        env = {
            k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
        }
        env.update({k: v for k, v in _env(store, code).items() if v is not None})
        env["PYTHONPATH"] = str(code or ROOT)
        command = [sys.executable, __file__, "--child", mode, "--child-dates", ",".join(dates)]
        output = subprocess.run(
            command, env=env, cwd=code or ROOT, check=True, capture_output=True, text=True
        ).stdout
        seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
        result[f"inprocess_{mode}_s"] = round(seconds, 2)
        result[f"inprocess_{mode}_s_per_partition"] = round(seconds / len(dates), 3)
        result[f"inprocess_{mode}_bad_dates"] = (
            ",".join(check_store(store, dates, conversations)) or "none"
        )
    return result


def _child(mode: str, dates: list[str]) -> int:
    """Runs inside the variant's code: one mode, timed after the imports."""
    from dagster import DagsterInstance, materialize

    from convsync_pipeline.definitions import build_assets
    from convsync_pipeline.pipeline.analyse import analyse_date
    from convsync_pipeline.pipeline.ingest import ingest_new_uploads
    from convsync_pipeline.pipeline.merge_date import merge_date
    from convsync_pipeline.pipeline.summarise import write_daily_summary
    from convsync_pipeline.resources import build_resources
    from convsync_pipeline.resources.analyzer import make_analyzer
    from convsync_pipeline.resources.blob_lock import locks_from_settings
    from convsync_pipeline.resources.blob_store import open_store
    from convsync_pipeline.settings import load_settings

    settings = load_settings()
    resources = build_resources(settings)
    started = time.perf_counter()
    if mode == "direct":
        store = open_store(settings)
        locks = locks_from_settings(store, settings)
        list(ingest_new_uploads(store, settings))
        for date in dates:
            merge_date(store, locks, date, "bench")
            analyse_date(store, locks, settings, lambda: make_analyzer(settings), date, "bench")
            write_daily_summary(store, locks, date, "bench")
    else:
        with DagsterInstance.ephemeral() as instance:
            if mode == "loop":
                for date in dates:
                    outcome = materialize(
                        build_assets(settings),
                        partition_key=date,
                        resources=resources,
                        instance=instance,
                    )
                    assert outcome.success, date
            elif mode == "range":
                outcome = materialize(
                    build_assets(settings),
                    resources=resources,
                    instance=instance,
                    tags={
                        "dagster/asset_partition_range_start": dates[0],
                        "dagster/asset_partition_range_end": dates[-1],
                    },
                )
                assert outcome.success
            else:
                raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


# --------------------------------------------------------------------------- main


def _machine() -> dict[str, Any]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        else:
            model = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "load_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--conversations", type=int, default=20, help="per day")
    parser.add_argument(
        "--variant",
        default="single_run",
        help="single_run (the code as is), per_date or multi_run:N (a copy with "
        "the backfill policy swapped)",
    )
    parser.add_argument(
        "--ranges",
        action="store_true",
        help="launch with partitionsByAssets ranges instead of partitionNames",
    )
    parser.add_argument("--skip-dev", action="store_true")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dates", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.child_dates.split(","))

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="convsync-backfill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    dates = dates_for(args.days)
    lines: dict[str, Any] = {
        "days": args.days,
        "conversations_per_day": args.conversations,
        "variant": args.variant,
        **_machine(),
    }
    try:
        code = scratch_code(args.variant, workdir)
        if not args.skip_dev:
            lines.update(
                run_dev(workdir, code, dates, args.conversations, args.ranges, args.timeout)
            )
        if not args.skip_inprocess:
            modes = ["loop", "direct", "range"]
            lines.update(run_inprocess(workdir, code, dates, args.conversations, modes))
        for key, value in lines.items():
            print(f"{key}: {value}")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
