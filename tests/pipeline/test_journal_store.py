"""The date's log on a real store (SPEC 5a): reading = document + entries, appending with
fencing, checkpoints, the id index, and a store without a log. Both backends (S3 on a real
moto_server) unless the test says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import status
from convsync_pipeline.core.document import Conversation, DateDocument, dump_json
from convsync_pipeline.core.journal import Change, DateState
from convsync_pipeline.core.keys import document_key, entry_key, id_index_key
from convsync_pipeline.pipeline.documents import (
    CorruptDocumentError,
    DateWriter,
    Draft,
    load_document,
    load_ids,
)
from convsync_pipeline.store.base import ConflictError, LeaseLostError, Store
from convsync_pipeline.store.local import LocalStore
from tests.core.test_journal import OPS, conversation, step

D = "2026-02-11"
STAMP = "2026-02-11T10:00:00.000Z"


class Lease:
    """A lease as a lock gives it, with a chosen generation (to play older/newer holders)."""

    def __init__(self, generation: int, date: str = D, owner: str = "test") -> None:
        self.date, self.owner, self.generation = date, owner, generation
        self.lost = False

    def ensure_held(self) -> None:
        if self.lost:
            raise LeaseLostError("lost")


def seed(store: Store, *ids: str, date: str = D) -> None:
    """A checkpointed document holding `ids`, as a merge of a new date writes it."""
    document = DateDocument(date=date, conversations=[conversation(i) for i in ids]).sealed(1)
    store.compare_and_swap(document_key(date), document.to_json_bytes(), None)


def writer(store: Store, generation: int = 2, date: str = D) -> DateWriter:
    return DateWriter.over(store, load_document(store, date), Lease(generation, date))


def begin(w: DateWriter, *ids: str) -> int | None:
    def draft() -> Draft:
        state = w.state
        assert isinstance(state, DateState)
        changes = []
        for cid in ids:
            current = state.conversations[state.positions[cid]]
            if status.is_due(current, 3):
                changes.append(Change.between(current, status.begin_attempt(current)))
        return Draft(changes=changes)

    return w.append(draft)


def statuses(store: Store, date: str = D) -> dict[str, str]:
    return {c.id: c.processing_status for c in load_document(store, date).document.conversations}


# ------------------------------------------------------------------------------ reading
def test_a_store_without_a_log_reads_exactly_as_before(any_store):
    seed(any_store, "a", "b")
    stored = any_store.read(document_key(D))
    loaded = load_document(any_store, D)
    assert loaded.unfolded_entries == 0 and loaded.checkpoint == 0
    assert loaded.document.to_json_bytes() == stored
    assert list(any_store.list("journal/")) == []


def test_every_reader_sees_the_document_plus_the_entries_after_it(any_store):
    seed(any_store, "a", "b", "c")
    w = writer(any_store)
    assert begin(w, "a", "b") == 1
    assert begin(w, "c") == 2
    stored = json.loads(any_store.read(document_key(D)))
    assert stored["_blobMeta"]["version"] == 1, "entries do not rewrite the document"
    loaded = load_document(any_store, D)
    assert loaded.unfolded_entries == 2
    assert {c.id: c.processing_status for c in loaded.document.conversations} == {
        "a": "processing",
        "b": "processing",
        "c": "processing",
    }
    assert loaded.document.summary.processing == 3, "counts recomputed for readers"
    assert loaded.document.version == 1, "a state read is not a saved version"

    version = w.checkpoint()
    assert version == 2
    stored = json.loads(any_store.read(document_key(D)))
    assert stored["_blobMeta"]["journalEntry"] == 2
    assert stored["summary"]["processing"] == 3
    assert load_document(any_store, D).unfolded_entries == 0
    assert statuses(any_store) == {"a": "processing", "b": "processing", "c": "processing"}


def test_a_missing_unfolded_entry_is_an_error_never_a_silent_loss(any_store):
    seed(any_store, "a", "b")
    w = writer(any_store)
    begin(w, "a")
    begin(w, "b")
    if isinstance(any_store, LocalStore):
        (Path(any_store.root) / entry_key(D, 1)).unlink()
    else:
        key = any_store._full(entry_key(D, 1))
        any_store._client.delete_object(Bucket=any_store.bucket, Key=key)
    with pytest.raises(CorruptDocumentError, match=r"0+1\.json is missing"):
        load_document(any_store, D)


def test_a_corrupt_entry_is_named(any_store):
    seed(any_store, "a")
    any_store.write(entry_key(D, 1), b'{"date": "2026-02-11", "entry": 1}')
    with pytest.raises(CorruptDocumentError, match=r"0+1\.json is not a valid log"):
        load_document(any_store, D)


# ------------------------------------------------------------------------------ fencing
def test_a_newer_generation_at_our_number_stops_us(any_store):
    seed(any_store, "a", "b")
    old = writer(any_store, generation=2)
    new = writer(any_store, generation=3)
    assert begin(new, "a") == 1
    with pytest.raises(LeaseLostError, match=r"generation 3 .*ours is 2"):
        begin(old, "b")
    assert any_store.read(entry_key(D, 2)) is None, "the loser wrote nothing"
    assert statuses(any_store) == {"a": "processing", "b": "pending"}


def test_an_older_generation_at_our_number_is_folded_and_our_change_recomputed(any_store):
    """A paused former holder wrote entry 1 (it marked `a` processing and sent it) before our
    first entry: we fold it, and our draft, rebuilt, no longer marks `a` - never sent twice."""
    seed(any_store, "a", "b")
    new = writer(any_store, generation=3)
    old = writer(any_store, generation=2)
    assert begin(old, "a") == 1
    assert begin(new, "a", "b") == 2
    entry = json.loads(any_store.read(entry_key(D, 2)))
    assert [c["id"] for c in entry["changes"]] == ["b"]
    assert entry["lockGeneration"] == 3
    # ... and the older holder, at its next number, finds ours and stops.
    with pytest.raises(LeaseLostError):
        begin(old, "b")


def test_an_older_entry_after_our_own_is_refused(any_store):
    seed(any_store, "a", "b", "c")
    w = writer(any_store, generation=3)
    begin(w, "a")
    rogue = writer(any_store, generation=1)
    begin(rogue, "b")  # entry 2: possible only if the store broke create-only
    with pytest.raises(LeaseLostError, match="follows our own entries"):
        begin(w, "c")


def test_a_checkpoint_over_a_newer_holders_checkpoint_stops(any_store):
    seed(any_store, "a", "b")
    old = writer(any_store, generation=2)
    begin(old, "a")
    new = writer(any_store, generation=3)
    begin(new, "b")
    new.checkpoint()
    with pytest.raises(LeaseLostError, match="taken over"):
        old.checkpoint()
    assert statuses(any_store) == {"a": "processing", "b": "processing"}


def test_two_checkpoints_of_one_state_conflict_rather_than_overwrite(any_store):
    seed(any_store, "a")
    first = writer(any_store, generation=2)
    begin(first, "a")
    twin = writer(any_store, generation=2)
    first.checkpoint()
    with pytest.raises(ConflictError):
        twin.checkpoint()


# ------------------------------------------------------------------------------ the id index
def test_a_checkpoint_records_the_ids_a_merge_reads(any_store):
    seed(any_store, "a", "b")
    w = writer(any_store)
    begin(w, "a")
    w.checkpoint()
    begin(w, "b")
    view = load_ids(any_store, D)
    assert view is not None
    assert set(view.state.ids) == {"a", "b"}
    assert view.state.last_entry == 2 and view.checkpoint == 1
    assert view.unfolded_entries == 1


@pytest.mark.parametrize("index", [None, b"not json", b'{"date": "2026-02-11"}'])
def test_without_a_usable_index_the_merge_reads_the_document(any_store, index):
    seed(any_store, "a")
    if index is not None:
        any_store.write(id_index_key(D), index)
    assert load_ids(any_store, D) is None


# ------------------------------------------------------------------------------ the property
def as_merge_text(conversations: list[Conversation]) -> list[bytes]:
    """New conversations as a merge splices them: list items at the document's depth."""
    items = [
        dump_json(c.model_dump(by_alias=True, exclude_none=False)).replace(b"\n", b"\n  ")
        for c in conversations
    ]
    return [b",\n  ".join(items)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ops=OPS,
    actions=st.lists(st.sampled_from(["checkpoint", "reopen", "none"]), min_size=40, max_size=40),
)
def test_random_entries_checkpoints_and_new_holders_read_as_one_document(
    tmp_path_factory, ops, actions
):
    """The same transitions applied to one document directly, and through the log on a real
    folder store: merges appending text entries, passes appending status changes,
    checkpoints and new lock holders (newer generations, reading document + log afresh) at
    random points. `load_document` gives what the direct path built, and so does the
    document alone after a final checkpoint."""
    store = LocalStore(tmp_path_factory.mktemp("journal-property"))
    direct: dict[str, Conversation] = {}
    generation = 1

    def holder() -> DateWriter:
        return DateWriter.over(store, load_document(store, D), Lease(generation, D))

    w = holder()
    for op, action in zip(ops, actions, strict=False):
        fresh, changed = step(direct, op, max_attempts=2)
        changes = [Change.between(direct[c.id], c) for c in changed]
        for c in [*fresh, *changed]:
            direct[c.id] = c
        if fresh:
            w.append(
                lambda fresh=fresh: Draft(
                    appended_json=as_merge_text(fresh), appended_ids=[c.id for c in fresh]
                )
            )
            w = holder()  # a merge's writer knows ids, not conversations: the next reads
        if changes:
            w.append(lambda changes=changes: Draft(changes=changes))
        if action == "checkpoint" and w.unfolded_entries:
            w.checkpoint()
        elif action == "reopen":
            generation += 1
            w = holder()
    loaded = load_document(store, D)
    assert loaded.state is not None and loaded.state.skipped == []
    assert {c.id: c for c in loaded.document.conversations} == direct
    assert [c.id for c in loaded.document.conversations] == list(direct)
    assert loaded.document.count_statuses() == loaded.document.summary
    if direct:
        holder().checkpoint()
        alone = DateDocument.from_json_bytes(store.read(document_key(D)))
        assert {c.id: c for c in alone.conversations} == direct
        assert alone.processed_count == alone.count_statuses().success
