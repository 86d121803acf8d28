"""Staged conversations of one date -> its date document, under the date lock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from convsync_pipeline.core.conversations import merge_staged
from convsync_pipeline.core.document import dump_json
from convsync_pipeline.pipeline.documents import load_document, save_appended
from convsync_pipeline.pipeline.ingest import bulk_work, merged_marker_key, staged_uploads
from convsync_pipeline.store.base import DateLocks, Store


@dataclass
class MergeReport:
    date: str
    uploads_merged: list[str] = field(default_factory=list)
    added: int = 0
    already_present: int = 0
    already_present_ids: list[str] = field(default_factory=list)
    total: int = 0
    version: int = 0
    wrote: bool = False


def _merged_keys(store: Store, date: str) -> list[str]:
    data = store.read(merged_marker_key(date))
    return [] if data is None else list(json.loads(data)["staged"])


def merge_date(store: Store, locks: DateLocks, date: str, owner: str) -> MergeReport:
    """Merge what is staged for `date` and not merged yet; an untouched day gets an empty document.

    The document is saved only when something is new, so re-running changes nothing, not even
    the version. The merged-marker is written after the document: a crash in between merely
    merges the same batches again, which the merge turns into "already present".
    """
    with (
        bulk_work(),
        locks.date_lock(date, owner) as lease,
    ):
        loaded = load_document(store, date)
        merged = _merged_keys(store, date)
        fresh = staged_uploads(store, date, skip=frozenset(merged))
        # The one merge rule; the new conversations come as their text, never decoded.
        outcome = merge_staged(loaded.document, [staged for _, staged in fresh])
        staged_keys = [key for key, _ in fresh]
        del fresh
        report = MergeReport(
            date=date,
            uploads_merged=outcome.uploads,
            added=len(outcome.added),
            already_present=len(outcome.already_present),
            already_present_ids=outcome.already_present[:50],
            total=len(loaded.document.conversations),
            version=loaded.document.version,
        )
        if outcome.changed or loaded.token is None:
            report.version = save_appended(
                store, loaded, outcome.appended_json, len(outcome.added), lease
            )
            report.wrote = True
            report.total += len(outcome.added)
        if staged_keys:
            lease.ensure_held()
            keys = sorted({*merged, *staged_keys})
            store.write(merged_marker_key(date), dump_json({"date": date, "staged": keys}))
        return report
