"""`convsync demo`: a week of realistic uploads, every date materialised, a table printed."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from convsync_pipeline.cli.sample import build_sample
from convsync_pipeline.core.keys import summary_key
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.blob_store import open_store
from convsync_pipeline.settings import Settings, load_settings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="write a sample week into incoming/ and materialise every date it touches"
    )
    parser.add_argument("--days", type=int, default=7, help="days of sample data (default 7)")
    parser.set_defaults(handler=run)


def materialize_date(settings: Settings, date: str) -> bool:
    """Run the four assets for one date in this process, on DAGSTER_HOME's instance if set."""
    import os

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
    return result.success


def run(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError

    settings = load_settings()
    store = open_store(settings)
    last_day = dt.datetime.now(settings.tz).date() - dt.timedelta(days=1)
    uploads = build_sample(last_day, days=args.days)
    for key, data in uploads.items():
        store.write(key, data)
    print(f"wrote {len(uploads)} sample uploads into {store.url}/incoming/")
    dates = [(last_day - dt.timedelta(days=n)).isoformat() for n in range(args.days - 1, -1, -1)]
    failed_dates = []
    header = f"{'date':<11} {'total':>5} {'success':>7} {'failed':>6} {'pending':>7} {'ver':>4}"
    rows = []
    for date in dates:
        print(f"materialising {date} …", flush=True)
        if not materialize_date(settings, date):
            failed_dates.append(date)
        document = load_document(store, date).document
        counts = document.count_statuses()
        rows.append(
            f"{date:<11} {counts.total:>5} {counts.success:>7} {counts.failed:>6} "
            f"{counts.pending:>7} {document.version:>4}"
        )
    print()
    print(header)
    print("\n".join(rows))
    quarantined = sum(
        len(store.read(info.key).splitlines()) for info in store.list("quarantine/")
    )
    print(f"\nquarantined records: {quarantined} (each with its reason under quarantine/)")
    latest = store.read(summary_key(dates[-1]))
    if latest is not None:
        summary = json.loads(latest)
        print(f"\nsummaries/{dates[-1]}.json:")
        for name in ("sentiment", "topTopics", "escalationRate", "successRate"):
            print(f"  {name}: {json.dumps(summary[name])}")
    if failed_dates:
        raise CommandError(f"materialisation failed for {', '.join(failed_dates)}")
    return 0
