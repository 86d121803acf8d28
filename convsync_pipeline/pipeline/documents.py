"""Reading and writing a date's state: the only code that writes `conversations/D.json` and
`journal/D/` (SPEC 5 and 5a).

The state of a date is its document (the checkpoint) plus the log entries after the one the
document records (`_blobMeta.journalEntry`), folded in order by `core.journal`. Every reader
goes through `load_document`, so `convsync status`, the summary, the checks and the report
all see that same state; a store without `journal/` reads exactly as before.

Writes, all by the holder of the date lock (`DateWriter`):

- `append`: create the next entry, only if absent. Finding the number taken by a newer lock
  generation means the date was lost (LeaseLostError); an older generation's entry is folded
  and the change is recomputed on top of it (possible only before our first entry: after
  that, an older writer's next number is always one of ours, and it stops there).
- `checkpoint`: fold everything into the document: seal (counts recomputed, version + 1),
  compare-and-swap, and refresh the id index. Losing that race raises ConflictError's
  subclasses, never a silent overwrite (seed fixes 5 and 7).
- the id index `journal/D/ids.json`: the date's ids as of an entry, so a merge reads
  O(ids) bytes instead of the whole document (`load_ids`). It is derived and only a hint:
  missing, unreadable or behind, the merge reads the document and the log instead.

`save_document` remains the whole-document save for hand-run operations on documents that
have no log (migrate).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import ValidationError

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import DateDocument, DocumentEncoder, Verbatim, dump_json
from convsync_pipeline.core.journal import (
    Change,
    CorruptEntryError,
    DateState,
    Entry,
    IdState,
    checkpoint_due,
    fencing_lost,
)
from convsync_pipeline.core.keys import (
    document_key,
    entry_key,
    entry_number,
    id_index_key,
    journal_prefix,
)
from convsync_pipeline.store.base import (
    ConflictError,
    Lease,
    LeaseLostError,
    ObjectInfo,
    Store,
    StoreError,
)

log = logging.getLogger("convsync")

_PARALLEL_READS = 8  # entries read at once (S3: one request each)


class CorruptDocumentError(StoreError):
    """A stored date document or log entry is not valid; it is left untouched."""


@dataclass
class LoadedDocument:
    """A date's state as read: the document with the unfolded log folded into it."""

    document: DateDocument  # version: the stored document's; counts recomputed if entries folded
    token: str | None  # the stored document's; None: no document stored yet
    state: DateState | None = None  # the fold, for a writer (same conversations)
    stored: DateDocument | None = None  # the document exactly as stored
    document_bytes: int = 0
    # (number, stored size) of each entry after the document's checkpoint
    unfolded: list[tuple[int, int]] = field(default_factory=list)

    @property
    def unfolded_entries(self) -> int:
        return len(self.unfolded)

    @property
    def last_entry(self) -> int:
        return self.state.last_entry if self.state is not None else self.checkpoint

    @property
    def checkpoint(self) -> int:
        """The last entry folded into the stored document."""
        stored = self.stored if self.stored is not None else self.document
        return stored.blob_meta.journal_entry


def _parse_document(key: str, date: str, data: bytes) -> DateDocument:
    try:
        document = DateDocument.from_json_bytes(data)
    except ValidationError as error:
        if any(e["loc"] and e["loc"][-1] == "processingStatus" for e in error.errors()):
            raise CorruptDocumentError(
                f"{key} is a legacy document without processingStatus: run `convsync migrate`"
            ) from None
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise CorruptDocumentError(
            f"{key} is not a valid date document: {first['msg']} at {where}"
        ) from None
    if document.date != date:
        raise CorruptDocumentError(f"{key} holds the document of {document.date}, not {date}")
    return document


class _LogGap(Exception):
    """An entry after the checkpoint is missing (pruned or expired while we read)."""


def _entries_after(store: Store, date: str, after: int) -> list[tuple[Entry, int]]:
    """The entries after number `after`, in order, each with its stored size."""
    listed: list[tuple[int, ObjectInfo]] = []
    for info in store.list(journal_prefix(date), start_after=entry_key(date, after)):
        number = entry_number(info.key, date)
        if number is not None:
            listed.append((number, info))
    for expected, (number, _) in enumerate(listed, start=after + 1):
        if number != expected:
            raise _LogGap(entry_key(date, expected))
    if not listed:
        return []

    def read(item: tuple[int, ObjectInfo]) -> tuple[Entry, int]:
        number, info = item
        data = store.read(info.key)
        if data is None:
            raise _LogGap(info.key)
        try:
            entry = Entry.from_json_bytes(data, info.key)
        except CorruptEntryError as error:
            raise CorruptDocumentError(str(error)) from None
        if entry.date != date or entry.number != number:
            raise CorruptDocumentError(
                f"{info.key} holds entry {entry.number} of {entry.date}, not {number} of {date}"
            )
        return entry, len(data)

    if len(listed) <= 2:
        return [read(item) for item in listed]
    with ThreadPoolExecutor(max_workers=min(_PARALLEL_READS, len(listed))) as pool:
        return list(pool.map(read, listed))


def load_document(store: Store, date: str) -> LoadedDocument:
    """The date's state: its document plus the log entries after its checkpoint, folded."""
    try:
        return _load(store, date)
    except _LogGap:
        # Folded entries may be pruned between our reading the document and listing the log;
        # the document read again then records a later checkpoint.
        try:
            return _load(store, date)
        except _LogGap as gap:
            raise CorruptDocumentError(
                f"{gap} is missing but {document_key(date)} has not folded it: the date's log "
                "has a gap (were unfolded entries deleted?)"
            ) from None


def read_checkpoint(store: Store, date: str) -> tuple[DateDocument, str | None, int]:
    """The stored document alone (no log): (document, token, size); empty if none."""
    key = document_key(date)
    found = store.read_versioned(key)
    if found is None:
        return DateDocument.empty(date), None, 0
    return _parse_document(key, date, found.data), found.token, len(found.data)


def _load(store: Store, date: str) -> LoadedDocument:
    stored, token, size = read_checkpoint(store, date)
    state = DateState.of(stored)
    entries = _entries_after(store, date, stored.blob_meta.journal_entry)
    for entry, _ in entries:
        state.fold(entry)
    for skipped in state.skipped:
        log.warning(
            "[Journal] %s: entry %d: change of %s not applied (%s)",
            date, skipped.entry, skipped.id, skipped.reason,
        )
    return LoadedDocument(
        document=state.document(stored) if entries else stored,
        token=token,
        state=state,
        stored=stored,
        document_bytes=size,
        unfolded=[(entry.number, size) for entry, size in entries],
    )


@dataclass
class IdView:
    """What a merge reads of a date: its ids, without the document (`load_ids`)."""

    state: IdState
    checkpoint: int
    document_version: int
    document_bytes: int
    unfolded_bytes: int
    unfolded_entries: int


def load_ids(store: Store, date: str) -> IdView | None:
    """The date's ids from its id index plus the entries after it; None when the index is
    missing, unreadable or does not reach a contiguous log (then read `load_document`)."""
    data = store.read(id_index_key(date))
    if data is None:
        return None
    try:
        index = json.loads(data)
        through, ids = int(index["through"]), index["ids"]
        checkpoint, version = int(index["checkpoint"]), int(index["documentVersion"])
        document_bytes = int(index["documentBytes"])
        unfolded_bytes = int(index["unfoldedBytes"])
        unfolded_entries = int(index["unfoldedEntries"])
        if index["date"] != date or not isinstance(ids, list) or version < 1:
            return None
    except (ValueError, KeyError, TypeError):
        log.warning("[Journal] %s is unreadable: reading the document instead", id_index_key(date))
        return None
    state = IdState((str(i) for i in ids), through)
    try:
        entries = _entries_after(store, date, through)
    except _LogGap:
        return None
    for entry, _ in entries:
        state.fold(entry)
    return IdView(
        state=state,
        checkpoint=checkpoint,
        document_version=version,
        document_bytes=document_bytes,
        unfolded_bytes=unfolded_bytes + sum(size for _, size in entries),
        unfolded_entries=unfolded_entries + len(entries),
    )


@dataclass
class Draft:
    """The content of one entry: appended conversations (as their JSON text, with their ids)
    and status changes."""

    changes: Sequence[Change] = ()
    appended_json: Sequence[bytes | memoryview] = ()
    appended_ids: Sequence[str] = ()

    @property
    def empty(self) -> bool:
        return not self.changes and not self.appended_ids


def _entry_bytes(entry: Entry, appended_json: Sequence[bytes | memoryview]) -> bytes:
    """The entry's JSON; appended conversations sit at the document's depth (`conversations`
    at the top level), so the merge's splice text is written as is."""
    body = entry.header()
    body["conversations"] = [Verbatim(*appended_json)] if appended_json else []
    return dump_json(body)


@dataclass
class WriteCounts:
    """What a writer stored: for reports and benchmarks."""

    entries: int = 0
    entry_bytes: int = 0
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    index_bytes: int = 0

    @property
    def bytes_written(self) -> int:
        return self.entry_bytes + self.checkpoint_bytes + self.index_bytes


class DateWriter:
    """The lock holder's handle on a date: append entries, checkpoint, keep the index.

    Built over a full load (`load_document`: a `DateState` that entries are folded into) or
    over a merge's `IdView` (ids only: it can append, not checkpoint).
    """

    def __init__(
        self,
        store: Store,
        lease: Lease,
        date: str,
        state: DateState | IdState,
        *,
        stored: DateDocument | None,
        token: str | None,
        document_version: int,
        document_bytes: int,
        checkpoint: int,
        unfolded: Iterable[tuple[int, int]] = (),
        earlier_unfolded: tuple[int, int] = (0, 0),
    ) -> None:
        self.store = store
        self.lease = lease
        self.date = date
        self.state = state
        self.stored = stored
        self.token = token
        self.document_version = document_version
        self.document_bytes = document_bytes
        self.checkpointed = checkpoint
        # Entries after the checkpoint: known one by one, plus (bytes, count) of earlier ones
        # an id index summed up (a merge's writer, which never checkpoints).
        # A pass appends (event loop) while a checkpoint folds (worker thread): one lock.
        self._sizes_lock = threading.Lock()
        self._unfolded: deque[tuple[int, int]] = deque(unfolded)
        self._earlier_bytes, self._earlier_entries = earlier_unfolded
        self._unfolded_bytes = sum(size for _, size in self._unfolded)  # kept up to date
        self.wrote_entry = False
        self.counts = WriteCounts()
        self._encoder = DocumentEncoder()

    @classmethod
    def over(cls, store: Store, loaded: LoadedDocument, lease: Lease) -> DateWriter:
        assert loaded.state is not None and loaded.stored is not None
        return cls(
            store,
            lease,
            loaded.stored.date,
            loaded.state,
            stored=loaded.stored,
            token=loaded.token,
            document_version=loaded.stored.version,
            document_bytes=loaded.document_bytes,
            checkpoint=loaded.checkpoint,
            unfolded=loaded.unfolded,
        )

    @classmethod
    def over_ids(cls, store: Store, view: IdView, lease: Lease, date: str) -> DateWriter:
        return cls(
            store,
            lease,
            date,
            view.state,
            stored=None,
            token=None,
            document_version=view.document_version,
            document_bytes=view.document_bytes,
            checkpoint=view.checkpoint,
            earlier_unfolded=(view.unfolded_bytes, view.unfolded_entries),
        )

    @property
    def last_entry(self) -> int:
        return self.state.last_entry

    @property
    def unfolded_bytes(self) -> int:
        with self._sizes_lock:
            return self._earlier_bytes + self._unfolded_bytes

    @property
    def unfolded_entries(self) -> int:
        with self._sizes_lock:
            return self._earlier_entries + len(self._unfolded)

    def _add_unfolded(self, number: int, size: int) -> None:
        with self._sizes_lock:
            self._unfolded.append((number, size))
            self._unfolded_bytes += size

    # -- entries ---------------------------------------------------------------------------

    def append(self, build: Callable[[], Draft | None]) -> int | None:
        """Create the next entry from `build()`; its number, or None when there was nothing.

        `build` computes the draft from `self.state`; it is called again after an older
        writer's entry was folded at our number. The state has the entry folded on return.
        """
        while True:
            draft = build()
            if draft is None or draft.empty:
                return None
            number = self.state.last_entry + 1
            entry = Entry(
                date=self.date,
                number=number,
                generation=self.lease.generation,
                writer=self.lease.owner,
                written_at=utc_now_iso(),
                changes=tuple(draft.changes),
            )
            data = _entry_bytes(entry, draft.appended_json)
            key = entry_key(self.date, number)
            self.lease.ensure_held()
            try:
                self.store.compare_and_swap(key, data, None)
            except ConflictError:
                self._fold_found(number, data)
                continue
            self.wrote_entry = True
            self.counts.entries += 1
            self.counts.entry_bytes += len(data)
            self._add_unfolded(number, len(data))
            self._fold_own(entry, draft)
            return number

    def _fold_found(self, number: int, ours: bytes) -> None:
        key = entry_key(self.date, number)
        data = self.store.read(key)
        if data is None:  # cannot happen: entries are never deleted past the checkpoint
            raise StoreError(f"{key} was reported present but cannot be read")
        try:
            found = Entry.from_json_bytes(data, key)
        except CorruptEntryError as error:
            raise CorruptDocumentError(str(error)) from None
        if fencing_lost(self.lease.generation, found):
            raise LeaseLostError(
                f"{key} was written by lock generation {found.generation} "
                f"(ours is {self.lease.generation}): {self.date} was taken over, stopping"
            )
        if self.wrote_entry:
            raise LeaseLostError(
                f"{key} of lock generation {found.generation} follows our own entries on "
                f"{self.date}: the store did not keep entries create-only; stopping"
            )
        log.warning(
            "[Journal] %s was written by an older holder (generation %d); folded, moving on",
            key, found.generation,
        )
        self.state.fold(found)
        self._add_unfolded(number, len(data))

    def _fold_own(self, entry: Entry, draft: Draft) -> None:
        if draft.appended_ids or isinstance(self.state, IdState):
            self._note_appended(draft.appended_ids)
            self.state.last_entry = entry.number
            return
        skipped = self.state.fold(entry)
        if skipped:  # the draft was built from this very state: a bug, not a race
            raise AssertionError(f"own entry {entry.number} of {self.date} skipped {skipped}")

    def _note_appended(self, ids: Sequence[str]) -> None:
        """Conversations appended as text (a merge, never decoded): from here on this writer
        knows the date's ids, not its conversations (`checkpoint_appending` still works)."""
        if isinstance(self.state, DateState):
            self.state = IdState(self.state.ids, self.state.last_entry)
        self.state.known.update(ids)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_due(self) -> bool:
        return checkpoint_due(self.unfolded_bytes, self.unfolded_entries, self.document_bytes)

    def checkpoint(self) -> int:
        """Fold the state into the document (a full load's writer only); the new version."""
        if not isinstance(self.state, DateState) or self.stored is None:
            raise TypeError("checkpoint needs the date's full state (load_document)")
        snapshot = list(self.state.conversations)
        return self.checkpoint_of(snapshot, self.state.last_entry)

    def checkpoint_of(self, conversations: list, last_entry: int) -> int:
        """Checkpoint `conversations`, the state as of `last_entry` (a snapshot: a pass keeps
        appending entries while this runs in a worker thread)."""
        assert self.stored is not None
        document = self.stored.model_copy(update={"conversations": conversations})
        self.lease.ensure_held()
        sealed = document.sealed(lock_generation=self.lease.generation, journal_entry=last_entry)
        data = self._encoder.encode(sealed)
        self._swap_document(data, sealed.version, last_entry, conversations, stored_after=sealed)
        return sealed.version

    def checkpoint_appending(
        self,
        appended_json: Sequence[bytes | memoryview],
        appended_ids: Sequence[str],
        *,
        in_entry: bool,
    ) -> int | None:
        """A merge's checkpoint when nothing else is unfolded: the stored document with the
        new conversations spliced in as text (no model per message). `in_entry`: they are
        already in the last entry (written just before); else they go into the document
        directly, with no entry (it would be folded at once and never read). None, writing
        nothing, when other entries are unfolded."""
        if self.stored is None:  # a merge over the id index: read the checkpoint now
            self.stored, self.token, self.document_bytes = read_checkpoint(self.store, self.date)
            self.checkpointed = self.stored.blob_meta.journal_entry
        if self.checkpointed != self.last_entry - (1 if in_entry else 0):
            return None
        self.lease.ensure_held()
        data, version = self.stored.sealed_json_appending(
            appended_json,
            len(appended_ids),
            lock_generation=self.lease.generation,
            journal_entry=self.last_entry,
        )
        ids = [*(c.id for c in self.stored.conversations), *appended_ids]
        self._swap_document(data, version, self.last_entry, None, ids)
        if not in_entry:
            self._note_appended(appended_ids)
        return version

    def _swap_document(
        self,
        data: bytes,
        version: int,
        last_entry: int,
        conversations: list | None,
        ids: Iterable[str] | None = None,
        stored_after: DateDocument | None = None,
    ) -> None:
        """Compare-and-swap the checkpoint `data`; `stored_after` is it as a model if the
        writer has one (else a later `checkpoint_appending` reads the document again)."""
        key = document_key(self.date)
        try:
            token = self.store.compare_and_swap(key, data, self.token)
        except ConflictError:
            self._check_rival_checkpoint(last_entry)
            raise
        log.info("[Blob] wrote %s at version %d", key, version)
        self.token = token
        self.document_version = version
        self.document_bytes = len(data)
        self.counts.checkpoints += 1
        self.counts.checkpoint_bytes += len(data)
        # Entries written after `last_entry` (a pass goes on while a checkpoint is written)
        # stay unfolded.
        self.checkpointed = last_entry
        with self._sizes_lock:
            while self._unfolded and self._unfolded[0][0] <= last_entry:
                self._unfolded_bytes -= self._unfolded.popleft()[1]
            self._earlier_bytes = self._earlier_entries = 0
        # The checkpoint's own model, not the document loaded at the start: the conversations
        # it replaced are not kept alive for the rest of a pass.
        self.stored = stored_after
        if ids is None and conversations is not None:
            ids = (c.id for c in conversations)
        if ids is not None:
            self.write_index(ids, last_entry)

    def _check_rival_checkpoint(self, last_entry: int) -> None:
        """A lost document swap: say whether a newer holder did it (we lost the date)."""
        found = self.store.read(document_key(self.date))
        if found is None:
            return
        try:
            rival = DateDocument.from_json_bytes(found)
        except ValidationError:
            return
        generation = rival.blob_meta.lock_generation or 0
        if generation > self.lease.generation or rival.blob_meta.journal_entry > last_entry:
            raise LeaseLostError(
                f"{document_key(self.date)} was checkpointed by lock generation {generation} "
                f"through entry {rival.blob_meta.journal_entry}: {self.date} was taken over"
            )

    # -- the id index ----------------------------------------------------------------------

    def write_index(self, ids: Iterable[str], through: int) -> None:
        """Record the date's ids as of entry `through` (derived data: a plain write)."""
        body = {
            "date": self.date,
            "through": through,
            "checkpoint": self.checkpointed,
            "documentVersion": self.document_version,
            "documentBytes": self.document_bytes,
            "unfoldedBytes": self.unfolded_bytes,
            "unfoldedEntries": self.unfolded_entries,
            "ids": list(ids),
        }
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self.lease.ensure_held()
        self.store.write(id_index_key(self.date), data)
        self.counts.index_bytes += len(data)


def save_document(
    store: Store, loaded: LoadedDocument, document: DateDocument, lease: Lease
) -> LoadedDocument:
    """Seal and compare-and-swap `document` over the version in `loaded` (a whole-document
    rewrite, for a document with no unfolded log: migrate)."""
    lease.ensure_held()
    sealed = document.sealed(lock_generation=lease.generation)
    key = document_key(sealed.date)
    token = store.compare_and_swap(key, sealed.to_json_bytes(), loaded.token)
    log.info("[Blob] wrote %s at version %d", key, sealed.version)
    return LoadedDocument(sealed, token)


def apply_and_checkpoint(
    store: Store, loaded: LoadedDocument, lease: Lease, changes: Callable[[DateState], list[Change]]
) -> tuple[list[Change], int]:
    """One hand-run change of a date (requeue): an entry of `changes(state)`, then a
    checkpoint, so the document alone is current afterwards. Returns (changes, version)."""
    writer = DateWriter.over(store, loaded, lease)
    assert loaded.state is not None
    applied: list[Change] = []

    def build() -> Draft:
        applied[:] = changes(writer.state)  # type: ignore[arg-type]
        return Draft(changes=applied)

    if writer.append(build) is None:
        return [], writer.document_version
    return applied, writer.checkpoint()


__all__ = [
    "CorruptDocumentError",
    "DateWriter",
    "Draft",
    "IdView",
    "LoadedDocument",
    "WriteCounts",
    "apply_and_checkpoint",
    "load_document",
    "load_ids",
    "save_document",
]
