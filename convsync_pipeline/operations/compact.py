"""`convsync compact [--prune]`: fold every date's log into its document, on request.

The pipeline checkpoints at the end of each run's work on a date, so unfolded entries are
left only by a crashed run or by merges that no analysis followed (SPEC 5a). `compact`
checkpoints those dates (under the date lock, like any writer), so `conversations/D.json`
alone is current. With `--prune` it then removes the entries each document has folded from a
folder store: they are never needed again. convsync never deletes anything otherwise; on S3
a lifecycle rule on `journal/` does that job (README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from convsync_pipeline.core.keys import entry_key, entry_number, journal_prefix
from convsync_pipeline.operations import (
    OperationError,
    Progress,
    date_from_key,
    read_document,
)
from convsync_pipeline.pipeline.documents import CorruptDocumentError, DateWriter
from convsync_pipeline.store.base import (
    ConflictError,
    DateLockedError,
    DateLocks,
    LeaseLostError,
    Store,
)
from convsync_pipeline.store.local import LocalStore

_JOURNAL_DATE = re.compile(r"^journal/(\d{4}-\d{2}-\d{2})/")


@dataclass
class DateCompaction:
    date: str
    folded: int = 0  # entries folded into the document now
    version: int | None = None  # the document version written, if any
    pruned: int = 0
    skipped: str | None = None  # why nothing was done

    def describe(self) -> str:
        if self.skipped:
            return f"{self.date}: skipped, {self.skipped}"
        parts = []
        if self.folded:
            parts.append(f"folded {self.folded} log entries (version {self.version})")
        if self.pruned:
            parts.append(f"removed {self.pruned} folded entries")
        return f"{self.date}: " + (", ".join(parts) if parts else "nothing to do")


@dataclass
class CompactReport:
    dates: list[DateCompaction] = field(default_factory=list)

    @property
    def skipped(self) -> list[DateCompaction]:
        return [d for d in self.dates if d.skipped]


def journal_dates(store: Store) -> list[str]:
    """Dates with a log or a document, in order."""
    dates = {date for info in store.list("conversations/") if (date := date_from_key(info.key))}
    for info in store.list("journal/"):
        match = _JOURNAL_DATE.match(info.key)
        if match:
            dates.add(match.group(1))
    return sorted(dates)


def compact(
    store: Store,
    locks: DateLocks,
    *,
    owner: str,
    prune: bool = False,
    dates: list[str] | None = None,
    progress: Progress | None = None,
) -> CompactReport:
    """Checkpoint each date with unfolded entries; with `prune`, remove folded entries."""
    if prune and not isinstance(store, LocalStore):
        raise OperationError(
            "--prune removes files of a folder store; on S3 let a lifecycle rule on journal/ "
            "expire folded entries (see README)"
        )
    chosen = journal_dates(store) if dates is None else dates
    report = CompactReport()
    for done, date in enumerate(chosen, start=1):
        report.dates.append(_compact_date(store, locks, date, owner, prune))
        if progress is not None:
            progress(done, len(chosen), date)
    return report


def _compact_date(
    store: Store, locks: DateLocks, date: str, owner: str, prune: bool
) -> DateCompaction:
    result = DateCompaction(date)
    try:
        # An unlocked look first: a date with nothing to fold or prune takes no lock.
        if not read_document(store, date).unfolded_entries and not prune:
            return result
        with locks.date_lock(date, owner) as lease:
            loaded = read_document(store, date)
            if loaded.unfolded_entries:
                result.folded = loaded.unfolded_entries
                result.version = DateWriter.over(store, loaded, lease).checkpoint()
            checkpoint = loaded.last_entry if loaded.unfolded_entries else loaded.checkpoint
            if prune and isinstance(store, LocalStore):
                lease.ensure_held()
                result.pruned = _prune(store, date, checkpoint)
    except (DateLockedError, ConflictError, LeaseLostError, CorruptDocumentError) as error:
        result.skipped = str(error)
    return result


def _prune(store: LocalStore, date: str, checkpoint: int) -> int:
    """Remove the entries a document has folded (numbers up to its checkpoint)."""
    removed = 0
    for info in list(store.list(journal_prefix(date))):
        number = entry_number(info.key, date)
        if number is not None and number <= checkpoint and info.key == entry_key(date, number):
            removed += store.delete(info.key)
    return removed
