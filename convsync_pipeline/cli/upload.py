"""`convsync upload FILE…`: put exports into `incoming/<today>/` of the configured store."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from convsync_pipeline.core.keys import INCOMING, is_upload
from convsync_pipeline.resources.blob_store import open_store
from convsync_pipeline.settings import load_settings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("upload", help="upload export files into incoming/")
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
    return 0
