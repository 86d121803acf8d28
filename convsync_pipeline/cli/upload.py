"""`convsync upload FILE…`: put exports into `incoming/<today>/` of the configured store.

It ends with the next step: the dates the files hold (read here with the pipeline's own
parser, for files small enough to read twice) and how to get those dates processed.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pandas as pd

from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.formats import parse_upload
from convsync_pipeline.core.keys import INCOMING, is_upload
from convsync_pipeline.resources.blob_store import open_store
from convsync_pipeline.settings import Settings, load_settings

PREVIEW_BYTES = 64 * 1024 * 1024
"""Up to this many bytes in total, upload reads its files once more to name their dates."""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "upload",
        help="upload export files into incoming/",
        description=(
            "Upload export files (.csv, .json, .jsonl, .ndjson, optionally .gz) into "
            "incoming/<today>/ of CONVSYNC_STORE (created if needed), then say which dates "
            "they hold and how to process them."
        ),
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--prefix",
        default=None,
        help="folder under incoming/ (default: today's date in CONVSYNC_TIMEZONE)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError

    settings = load_settings()
    prefix = (args.prefix or dt.datetime.now(settings.tz).date().isoformat()).strip("/")
    planned = []
    for path in args.files:
        if path.is_dir():
            raise CommandError(
                f"{path}: is a directory; give the files in it, e.g. `convsync upload {path}/*`"
            )
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        key = f"{INCOMING}{prefix}/{path.name}"
        if not is_upload(key):
            raise CommandError(
                f"{path}: not an upload (.csv, .json, .jsonl or .ndjson, optionally .gz)"
            )
        planned.append((path, key))
    store = open_store(settings)
    for path, key in planned:
        store.write(key, path.read_bytes())
        print(f"uploaded {path} -> {store.url}/{key}")
    for line in next_steps(settings, planned):
        print(line)
    return 0


def upload_dates(settings: Settings, planned: list[tuple[Path, str]]) -> list[str] | None:
    """The dates (partitions) the files' conversations belong to; None if too big to read."""
    if sum(path.stat().st_size for path, _ in planned) > PREVIEW_BYTES:
        return None
    dates: set[str] = set()
    for path, key in planned:
        parsed = parse_upload(key, path.read_bytes(), tz=settings.tz, day_first=settings.day_first)
        messages = parsed.messages
        if messages.empty:
            continue
        first = messages.groupby("conversation_id", sort=False)["ts_ns"].min()
        dates.update(local_dates(pd.Series(first.to_numpy()), settings.tz).dropna().tolist())
    return sorted(dates)


def next_steps(settings: Settings, planned: list[tuple[Path, str]]) -> list[str]:
    """What to do now, with the exact commands for the dates (partitions) the files hold."""
    dates = upload_dates(settings, planned)
    lines = [""]
    if dates is None:
        lines.append("next: process them")
    elif not dates:
        lines.append(
            "these files hold no usable conversation: once ingested, every record is in "
            "quarantine/ with its reason"
        )
        return lines
    else:
        first, today = settings.start_date.isoformat(), dt.datetime.now(settings.tz).date()
        span = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        lines.append(f"they hold conversations of {len(dates)} date(s): {span}")
        early = [d for d in dates if d < first]
        if early:
            lines.append(
                f"  {len(early)} of them before CONVSYNC_START_DATE={first}, the first "
                "partition: set CONVSYNC_START_DATE earlier to process them"
            )
        late = [d for d in dates if d > today.isoformat()]
        if late:
            lines.append(f"  {len(late)} of them after today: processed once their day comes")
        dates = [d for d in dates if first <= d <= today.isoformat()]
        lines.append("next: process them")
    lines.append("  - as uploads land: turn on new_upload_sensor (`dg dev`, Automation tab)")
    if dates:
        # A range is one run (the assets' single-run backfill policy); `dg launch` accepts a
        # range only for a selection of such assets, hence the group rather than '*'.
        target = (
            f"'*' --partition {dates[0]}"
            if len(dates) == 1
            else f"'group:convsync' --partition-range {dates[0]}...{dates[-1]}"
        )
        lines.append(f"  - now, from this shell: dg launch --assets {target}")
    elif dates is None:
        lines.append("  - now, from this shell: dg launch --assets '*' --partition DATE")
    return lines
