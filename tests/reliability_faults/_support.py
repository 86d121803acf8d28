"""Helpers shared by the fault scenarios: whole-store scans and the numbers they report.

`record_numbers` prints one `[reliability-faults] {...}` line per scenario and backend and,
when CONVSYNC_FAULTS_REPORT names a file, appends the same JSON there: docs/reliability-faults.md
is written from those lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from convsync_pipeline.store.base import Store
from convsync_pipeline.store.local import LocalStore
from convsync_pipeline.store.s3 import S3Store
from tests.fixtures.moto import make_s3_client

# Every top-level prefix the pipeline (or a user, for incoming/) may create in a store.
KNOWN_PREFIXES = (
    "incoming/",
    "conversations/",
    "summaries/",
    "locks/",
    "journal/",  # the date's log and its id index (SPEC 5a)
    "quarantine/",
    "staging/",
    "state/",
    ".convsync/",  # folder store only: per-key compare-and-swap guards
)


def record_numbers(scenario: str, backend: str, **numbers: Any) -> None:
    line = json.dumps({"scenario": scenario, "backend": backend, **numbers}, sort_keys=True)
    print(f"\n[reliability-faults] {line}")
    target = os.environ.get("CONVSYNC_FAULTS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def raw_objects(store: Store, endpoint_url: str | None = None) -> dict[str, bytes]:
    """Every object of the store, by its key relative to the root, with its bytes.

    Below the Store API on purpose: a folder store is walked as files (internal folders and
    names the API would skip included), an S3 store is listed with a plain boto3 client.
    """
    objects: dict[str, bytes] = {}
    if isinstance(store, LocalStore):
        root = store.root
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder, name)
                objects[path.relative_to(root).as_posix()] = path.read_bytes()
        return objects
    assert isinstance(store, S3Store) and endpoint_url
    client = make_s3_client(endpoint_url)
    prefix = f"{store.prefix}/" if store.prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            body = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
            objects[key.removeprefix(prefix) if key.startswith(prefix) else f"!{key}"] = body
    return objects


def tree_listing(directory: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Files (and symlinks) under `directory` with size and mtime, except the `skip` subtree."""
    listing: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(directory):
        here = Path(folder)
        if skip is not None:
            dirs[:] = [d for d in dirs if (here / d) != skip]
        for name in [*files, *dirs]:
            path = here / name
            stat = path.lstat()
            size = stat.st_size if path.is_file() else -1
            listing[path.relative_to(directory).as_posix()] = (size, stat.st_mtime_ns)
    return listing


def local_day(iso_utc: str, tz: ZoneInfo) -> str:
    """The calendar date in `tz` of a normalised `...Z` timestamp."""
    moment = dt.datetime.fromisoformat(iso_utc.replace("Z", "+00:00"))
    return moment.astimezone(tz).date().isoformat()
