"""`convsync demo`: a week of realistic uploads, every date materialised, a table printed.

What it prints is what a new user needs: one progress line per date (a bar on a terminal),
the table, and the next steps with the exact commands. The store's own log lines
(`[Blob] wrote … at version n`) stay in each run's event log; `--verbose` shows them here too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
from pathlib import Path

from convsync_pipeline.cli.progress import ProgressLine
from convsync_pipeline.cli.sample import build_sample
from convsync_pipeline.core.keys import summary_key
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.blob_store import open_store
from convsync_pipeline.settings import Settings, load_settings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="write a sample week into incoming/ and materialise every date it touches",
        description=(
            "Write a sample week of support exports into incoming/ of CONVSYNC_STORE, run the "
            "pipeline for each of its dates (on DAGSTER_HOME's instance when it is set) and "
            "print the result. With --write-samples, only write the sample files into DIR."
        ),
    )
    parser.add_argument("--days", type=int, default=7, help="days of sample data (default 7)")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print the pipeline's log lines ([Blob] wrote …, [Lock] …)",
    )
    parser.add_argument(
        "--write-samples",
        type=Path,
        metavar="DIR",
        help="write the sample export files into DIR (for `convsync upload`) and stop",
    )
    parser.set_defaults(handler=run)


def materialize_date(settings: Settings, date: str) -> str | None:
    """Run the four assets for one date in this process, on DAGSTER_HOME's instance if set.

    Returns None on success, else the first failure's message."""
    from dagster import DagsterInstance, materialize

    from convsync_pipeline.definitions import build_assets
    from convsync_pipeline.resources import build_resources

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    result = materialize(
        build_assets(settings),
        partition_key=date,
        resources=build_resources(settings),
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if result.success:
        return None
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            return error.message.strip().splitlines()[0]
    return "the run failed"


def sample_dates(days: int, tz: dt.tzinfo) -> tuple[dt.date, list[str]]:
    """The demo's last day (yesterday) and its dates, oldest first."""
    last_day = dt.datetime.now(tz).date() - dt.timedelta(days=1)
    dates = [(last_day - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    return last_day, dates


def write_samples(folder: Path, days: int, tz: dt.tzinfo) -> int:
    last_day, _ = sample_dates(days, tz)
    uploads = build_sample(last_day, days=days)
    for key, data in uploads.items():
        path = folder / key.removeprefix("incoming/").replace("/", "-", 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    names = sorted(p.name for p in folder.iterdir())
    print(f"wrote {len(uploads)} sample export files into {folder}/:")
    for name in names:
        print(f"  {name}")
    print(f"\nnext: .venv/bin/convsync upload {shlex.quote(str(folder))}/*")
    return 0


def demo_settings(settings: Settings, first_day: str) -> Settings:
    """Partitions from the demo's first day (unless CONVSYNC_START_DATE is already earlier):
    the UI then shows this week, not hundreds of empty days since 2024."""
    first = dt.date.fromisoformat(first_day)
    if os.environ.get("CONVSYNC_START_DATE", "").strip():
        first = min(first, settings.start_date)
    return settings.model_copy(update={"start_date": first})


def run(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError

    if args.days < 1:
        raise CommandError(f"--days must be at least 1, got {args.days}")
    settings = load_settings()
    if args.write_samples is not None:
        return write_samples(args.write_samples, args.days, settings.tz)
    if args.verbose:
        from convsync_pipeline.cli import TERMINAL

        logging.getLogger("convsync").setLevel(logging.INFO)
        TERMINAL.setLevel(logging.INFO)
    last_day, dates = sample_dates(args.days, settings.tz)
    settings = demo_settings(settings, dates[0])
    store = open_store(settings)
    uploads = build_sample(last_day, days=args.days)
    for key, data in uploads.items():
        store.write(key, data)
    print(f"wrote {len(uploads)} sample uploads into {store.url}/incoming/")
    print(f"running the pipeline for {len(dates)} dates ({dates[0]} to {dates[-1]}):")
    failed: dict[str, str] = {}
    rows = []
    with ProgressLine("demo", plain_from=1) as progress:
        for done, date in enumerate(dates, start=1):
            # On a terminal the bar names the date at work; plain lines report finished ones.
            progress(done - 1, len(dates), f"{date} …" + (" (starting Dagster)" * (done == 1)))
            error = materialize_date(settings, date)
            if error is not None:
                failed[date] = error
            document = load_document(store, date).document
            counts = document.count_statuses()
            rows.append((date, counts, document.version))
            progress(done, len(dates), f"{date}: {counts.total} conversations")
    print()
    print(f"{'date':<11} {'total':>5} {'success':>7} {'failed':>6} {'pending':>7} {'ver':>4}")
    for date, counts, version in rows:
        print(
            f"{date:<11} {counts.total:>5} {counts.success:>7} {counts.failed:>6} "
            f"{counts.pending:>7} {version:>4}"
        )
    quarantined = sum(
        len(store.read(info.key).splitlines()) for info in store.list("quarantine/")
    )
    print(f"\nquarantined records: {quarantined} (each with its reason under quarantine/)")
    latest = store.read(summary_key(dates[-1]))
    if latest is not None:
        summary = json.loads(latest)
        topics = ", ".join(f"{t['topic']} {t['count']}" for t in summary["topTopics"][:6])
        mix = ", ".join(f"{name} {count}" for name, count in summary["sentiment"].items())
        print(f"\nsummaries/{dates[-1]}.json:")
        print(f"  sentiment:       {mix}")
        print(f"  top topics:      {topics or '-'}")
        print(f"  escalation rate: {percent(summary['escalationRate'])}")
        print(f"  success rate:    {percent(summary['successRate'])}")
    for line in next_steps(settings, dates[0]):
        print(line)
    if failed:
        raise CommandError(
            "materialisation failed for "
            + "; ".join(f"{date}: {error}" for date, error in failed.items())
        )
    return 0


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def next_steps(settings: Settings, first_day: str) -> list[str]:
    """The exact commands to look at what the demo made (paths as this run used them)."""
    here = Path.cwd().resolve()
    env = []
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if home:
        same = Path(home).resolve() == here
        env.append("DAGSTER_HOME=$PWD" if same else f"DAGSTER_HOME={shlex.quote(home)}")
    store = settings.store.removeprefix("file://")
    if store.startswith("s3://") or Path(store).resolve() != here / "convsync-store":
        env.append(f"CONVSYNC_STORE={shlex.quote(store)}")
    env.append(f"CONVSYNC_START_DATE={first_day}")
    return [
        "",
        "next:",
        f"  the Dagster UI on these dates:  {' '.join(env)} .venv/bin/dg dev",
        "                                  then http://127.0.0.1:3000 (Catalog -> ai_analysis)",
        "  the report in a browser:        .venv/bin/convsync report  (writes report.html)",
        "  counts and notes per date:      .venv/bin/convsync status",
    ]
