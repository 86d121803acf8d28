"""Staged conversations of one date -> its date document, under the date lock."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from convsync_pipeline.core.conversations import StagedMerge, merge_staged
from convsync_pipeline.core.document import dump_json
from convsync_pipeline.core.journal import IdState, checkpoint_due
from convsync_pipeline.core.keys import entry_key
from convsync_pipeline.core.tombstone import Tombstone, tombstone_key
from convsync_pipeline.pipeline.documents import (
    DateWriter,
    Draft,
    load_document,
    load_ids,
)
from convsync_pipeline.pipeline.ingest import bulk_work, merged_marker_key, staged_uploads
from convsync_pipeline.store.base import DateLocks, Lease, Store

log = logging.getLogger("convsync")


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

    The new conversations become one log entry (SPEC 5a), so a merge costs what the upload
    holds, not what the date holds: it reads the date's id index instead of its document, and
    checkpoints only when the unfolded log has grown past `core.journal.checkpoint_due` (the
    end of the run's analysis and summary checkpoint anyway). When that checkpoint would be
    due at once and nothing else is unfolded (a new date, an upload as large as the date),
    the document is written alone, the conversations spliced in as text. Nothing new:
    nothing written, not even the version. The merged-marker is written last: a crash before
    it merely merges the same batches again, which the merge turns into "already present".
    """
    with (
        bulk_work(),
        locks.date_lock(date, owner) as lease,
    ):
        merged = _merged_keys(store, date)
        fresh = staged_uploads(store, date, skip=frozenset(merged))
        staged_keys = [key for key, _ in fresh]
        staged = _without_forgotten(store, date, [batch for _, batch in fresh])
        del fresh
        view = load_ids(store, date)
        loaded = None
        if view is not None:
            writer = DateWriter.over_ids(store, view, lease, date)
        else:  # no index yet (a new date, or a store written before the log): read it all
            loaded = load_document(store, date)
            writer = DateWriter.over(store, loaded, lease)
        report = MergeReport(date=date, version=writer.document_version)
        found = merge_staged(writer.state.ids, staged)  # the one merge rule
        if found.changed and _merged_into_checkpoint(writer, found):
            report.wrote = True
        elif found.changed:
            outcome = [found]

            def draft() -> Draft:
                # Against the ids as of the entry before ours (recomputed if an older
                # holder's entry took our number); the conversations as text, never decoded.
                outcome[:] = [merge_staged(writer.state.ids, staged)]
                return Draft(appended_json=outcome[0].appended_json, appended_ids=outcome[0].added)

            number = writer.append(draft)
            found = outcome[0]
            if number is not None:
                log.info(
                    "[Journal] wrote %s: %d new conversations",
                    entry_key(date, number),
                    len(found.added),
                )
                report.wrote = True
                _checkpoint_after_merge(store, writer, found, lease)
        elif loaded is not None and loaded.token is None:  # a day with no uploads
            writer.checkpoint()
            report.wrote = True
        state = writer.state
        report.total = len(state.known) if isinstance(state, IdState) else len(state.positions)
        report.uploads_merged = found.uploads
        report.added = len(found.added) if report.wrote else 0
        report.already_present = len(found.already_present)
        report.already_present_ids = found.already_present[:50]
        report.version = writer.document_version
        if staged_keys:
            lease.ensure_held()
            keys = sorted({*merged, *staged_keys})
            store.write(merged_marker_key(date), dump_json({"date": date, "staged": keys}))
        return report


def _without_forgotten(store: Store, date: str, staged: list) -> list:
    """The staged uploads minus the conversations erased by `convsync forget`: a re-upload of
    the same export never brings them back."""
    tombstone = Tombstone.from_json(date, store.read(tombstone_key(date)))
    if not tombstone:
        return staged
    kept = []
    for batch in staged:
        keep = [conversation_id not in tombstone for conversation_id in batch.ids.to_pylist()]
        if not all(keep):
            log.info(
                "[Merge] %s: %d conversation(s) of %s were erased (forget), not merged",
                date, keep.count(False), tombstone_key(date),
            )
            batch = batch.keeping(keep)
        kept.append(batch)
    return kept


def _merged_into_checkpoint(writer: DateWriter, found: StagedMerge) -> bool:
    """When the checkpoint would be due as soon as the entry exists and nothing else is
    unfolded (a new date, an upload as large as the date), write the document alone, the new
    conversations spliced in: the entry would be folded at once and never read."""
    if writer.unfolded_entries:
        return False
    size = sum(len(piece) for piece in found.appended_json)
    if not checkpoint_due(size, 1, writer.document_bytes):
        return False
    return writer.checkpoint_appending(found.appended_json, found.added, in_entry=False) is not None


def _checkpoint_after_merge(
    store: Store, writer: DateWriter, found: StagedMerge, lease: Lease
) -> None:
    """Checkpoint if due, else record the new ids in the index (what the next merge reads)."""
    if not writer.checkpoint_due():
        writer.write_index(writer.state.ids, writer.last_entry)
        return
    # Our entry the only unfolded one: splice its text into the document as stored, no model
    # per message. Otherwise fold everything.
    if writer.checkpoint_appending(found.appended_json, found.added, in_entry=True) is not None:
        return
    full = DateWriter.over(store, load_document(store, writer.date), lease)
    full.checkpoint()
    writer.document_version = full.document_version
