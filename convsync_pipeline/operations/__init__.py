"""Hand-run operations on the store: migration, dead letters, status and the HTML report.

Pure functions over a `Store` and `Settings`: no Dagster, no printing. The CLI
(`cli/operations.py`) and the Dagster side (`assets/operations.py`) are thin shells around
them, so both show the same numbers. This module holds the helpers they share: which dates
exist, date arguments, and reading documents for a view without stopping at a bad one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from convsync_pipeline.core.keys import document_key
from convsync_pipeline.pipeline.documents import (
    CorruptDocumentError,
    LoadedDocument,
    load_document,
)
from convsync_pipeline.store.base import Store

DOCUMENT_PREFIX = "conversations/"
_DOCUMENT_KEY = re.compile(r"^conversations/(\d{4}-\d{2}-\d{2})\.json$")

Progress = Callable[[int, int, str], None]
"""Called as `progress(done, total, item)` after each date, so a shell can draw a bar."""


class OperationError(Exception):
    """A user-facing failure of an operation (bad date, missing document): one line."""


@dataclass(frozen=True)
class DocumentProblem:
    """A date document an operation could not use; it is reported and left untouched."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


def date_from_key(key: str) -> str | None:
    """`conversations/2026-02-11.json` -> `2026-02-11`; None for anything else."""
    match = _DOCUMENT_KEY.match(key)
    if match is None:
        return None
    try:
        dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return match.group(1)


def parse_date(value: str, what: str = "date") -> str:
    """Check a `YYYY-MM-DD` argument, so a typo is an error and not an empty listing."""
    text = value.strip()
    try:
        parsed = dt.date.fromisoformat(text)
    except ValueError:
        raise OperationError(f"{what} must be a date as YYYY-MM-DD, got {value!r}") from None
    if parsed.isoformat() != text:
        raise OperationError(f"{what} must be a date as YYYY-MM-DD, got {value!r}")
    return text


def check_range(start: str | None, end: str | None) -> tuple[str | None, str | None]:
    start = parse_date(start, "--from") if start else None
    end = parse_date(end, "--to") if end else None
    if start and end and start > end:
        raise OperationError(f"--from {start} is after --to {end}")
    return start, end


def stored_dates(store: Store, start: str | None = None, end: str | None = None) -> list[str]:
    """Dates that have a document, in order, within [start, end] (both optional, inclusive).

    Listing only discovers the keys; every document is then read by its exact key.
    """
    dates = []
    for info in store.list(DOCUMENT_PREFIX):
        date = date_from_key(info.key)
        if date is None or (start and date < start) or (end and date > end):
            continue
        dates.append(date)
    return dates


def owner_id(action: str) -> str:
    """The lock owner of a hand-run operation: says what, where and which process."""
    return f"convsync-{action}@{socket.gethostname()}:{os.getpid()}"


def read_document(store: Store, date: str) -> LoadedDocument:
    """`load_document`, with any unreadable document reported as CorruptDocumentError.

    `load_document` currently trips (IndexError) over bytes that are not JSON at all, since
    pydantic reports those with an empty error location; this keeps that one bad document
    from stopping a whole listing.
    """
    try:
        return load_document(store, date)
    except CorruptDocumentError as error:
        if MIGRATE_HINT in str(error):
            _check_migrate_can_fix(store, date)
        raise
    except (IndexError, ValueError):
        raise CorruptDocumentError(f"{document_key(date)} is not valid JSON") from None


MIGRATE_HINT = "convsync migrate"


def _check_migrate_can_fix(store: Store, date: str) -> None:
    """A document sent to `convsync migrate` that migrate would skip gets the real next step
    instead, so a person is never sent in a circle between two commands."""
    from convsync_pipeline.operations.migrate import UnreadableDocumentError, plan_migration

    key = document_key(date)
    data = store.read(key)
    if data is None:
        return
    try:
        plan_migration(date, data)
    except UnreadableDocumentError as error:
        raise CorruptDocumentError(
            f"{key} is not a valid date document ({error}), and `convsync migrate` cannot fix "
            "it: repair or replace the file by hand; until then every step leaves it untouched"
        ) from None


def load_many(
    store: Store, dates: Iterable[str], progress: Progress | None = None
) -> Iterator[tuple[str, LoadedDocument | DocumentProblem]]:
    """Each date's document, or the problem with it: one bad document never hides the rest."""
    dates = list(dates)
    for done, date in enumerate(dates, start=1):
        try:
            loaded = read_document(store, date)
        except CorruptDocumentError as error:
            key = document_key(date)
            reason = str(error).removeprefix(f"{key} ").removeprefix("is ")
            yield date, DocumentProblem(key, reason)
        else:
            if loaded.token is None:
                yield date, DocumentProblem(document_key(date), "no such document")
            else:
                yield date, loaded
        if progress is not None:
            progress(done, len(dates), date)
