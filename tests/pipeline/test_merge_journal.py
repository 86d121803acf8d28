"""Merging uploads into a date through its log (SPEC 5a): one entry per merge holding only the
new conversations, read through the id index, checkpointed in proportion. Both backends."""

from __future__ import annotations

import json

from convsync_pipeline.core.keys import document_key, entry_key, id_index_key, journal_prefix
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.pipeline.ingest import ingest_new_uploads
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.resources.blob_lock import locks_from_settings
from convsync_pipeline.settings import load_settings

D = "2026-02-11"


def csv(ids, text: str = "hello") -> bytes:
    rows = ["conversation_id,timestamp,role,content"]
    for n, cid in enumerate(ids):
        rows.append(f'{cid},{D}T{8 + n // 60:02d}:{n % 60:02d}:00Z,user,"{text} {cid}"')
        rows.append(f'{cid},{D}T{8 + n // 60:02d}:{n % 60:02d}:30Z,agent,"reply to {cid}"')
    return ("\n".join(rows) + "\n").encode()


def merge(store_factory, store, name: str, ids, text: str = "hello"):
    settings = load_settings({"CONVSYNC_START_DATE": "2026-01-01", **store_factory.env(store)})
    store.write(f"incoming/{D}/{name}.csv", csv(ids, text))
    list(ingest_new_uploads(store, settings))
    return merge_date(store, locks_from_settings(store, settings), D, f"merge-{name}")


def log_entries(store) -> list[dict]:
    return [
        json.loads(store.read(info.key))
        for info in store.list(journal_prefix(D))
        if not info.key.endswith("/ids.json")
    ]


def test_a_merge_into_a_large_date_writes_one_entry_of_the_new_conversations(
    store_factory,
):
    store = store_factory()
    big = [f"big-{n:03d}" for n in range(200)]
    first = merge(store_factory, store, "a", big, text="x" * 400)
    assert (first.added, first.wrote, first.version, first.total) == (200, True, 1, 200)
    assert log_entries(store) == [], "a new date: the document alone (its entry: folded at once)"
    document_before = store.read(document_key(D))

    second = merge(store_factory, store, "b", ["big-007", "new-1", "new-2"], text="later")
    assert (second.added, second.already_present, second.total) == (2, 1, 202)
    assert second.wrote and second.version == 1, "below the threshold: no checkpoint"
    assert store.read(document_key(D)) == document_before
    (entry,) = log_entries(store)
    assert entry["entry"] == 1 and entry["changes"] == []
    assert [c["id"] for c in entry["conversations"]] == ["new-1", "new-2"]
    assert all(c["processingStatus"] == "pending" for c in entry["conversations"])
    index = json.loads(store.read(id_index_key(D)))
    assert index["through"] == 1 and len(index["ids"]) == 202

    state = load_document(store, D)
    assert [c.id for c in state.document.conversations] == [*big, "new-1", "new-2"]
    assert state.document.conversations[7].messages[0].content.startswith("x")  # first wins
    assert state.document.summary.total == 202 and state.unfolded_entries == 1


def test_first_upload_wins_against_an_unfolded_entry_and_nothing_new_writes_nothing(
    store_factory,
):
    store = store_factory()
    merge(store_factory, store, "a", [f"big-{n:03d}" for n in range(200)], text="x" * 400)
    merge(store_factory, store, "b", ["new-1"], text="first")
    before = {info.key: info.etag for info in store.list("")}

    again = merge(store_factory, store, "c", ["new-1", "big-001"], text="second")
    assert (again.added, again.already_present, again.wrote) == (0, 2, False)
    after = {info.key: info.etag for info in store.list("")}
    changed = {key for key in after if before.get(key) != after[key]}
    assert not any(k.startswith(("conversations/", "journal/")) for k in changed), changed
    state = load_document(store, D).document
    assert state.by_id()["new-1"].messages[0].content == "first new-1"


def test_without_the_index_a_merge_reads_document_and_log(store_factory):
    store = store_factory()
    merge(store_factory, store, "a", [f"big-{n:03d}" for n in range(200)], text="x" * 400)
    merge(store_factory, store, "b", ["new-1"])
    if hasattr(store, "delete"):
        store.delete(id_index_key(D))
    else:
        store.write(id_index_key(D), b"{}")  # unusable: the same fallback
    third = merge(store_factory, store, "c", ["new-1", "new-2"])
    assert (third.added, third.already_present, third.total) == (1, 1, 202)
    assert [e["entry"] for e in log_entries(store)] == [1, 2]
    assert [c.id for c in load_document(store, D).document.conversations][-2:] == [
        "new-1",
        "new-2",
    ]


def test_merges_checkpoint_in_proportion_to_the_date(store_factory):
    """Small uploads wait in the log; once the log costs a reader as much as the document
    it is folded; an upload as large as the date with nothing unfolded goes straight into the
    document."""
    store = store_factory()
    merge(store_factory, store, "a", [f"a-{n:02d}" for n in range(50)], text="y" * 300)
    small = [merge(store_factory, store, f"s{n}", [f"s-{n}"]) for n in range(3)]
    assert [m.version for m in small] == [1, 1, 1]
    assert load_document(store, D).unfolded_entries == 3
    big = merge(store_factory, store, "b", [f"b-{n:02d}" for n in range(60)], text="y" * 300)
    assert (big.added, big.version, big.total) == (60, 2, 113)
    stored = json.loads(store.read(document_key(D)))
    assert stored["_blobMeta"]["journalEntry"] == 4 and stored["summary"]["total"] == 113
    assert store.read(entry_key(D, 4)) is not None, "folded entries stay (never deleted)"
    assert load_document(store, D).unfolded_entries == 0
    bigger = merge(store_factory, store, "c", [f"c-{n:03d}" for n in range(150)], text="y" * 300)
    assert (bigger.added, bigger.version, bigger.total) == (150, 3, 263)
    assert store.read(entry_key(D, 5)) is None, "nothing unfolded, due at once: no entry"
    assert [c.id for c in load_document(store, D).document.conversations][-1] == "c-149"
    assert json.loads(store.read(id_index_key(D)))["through"] == 4


def test_a_day_without_uploads_gets_an_empty_document_once(store_factory):
    store = store_factory()
    settings = load_settings({"CONVSYNC_START_DATE": "2026-01-01", **store_factory.env(store)})
    locks = locks_from_settings(store, settings)
    first = merge_date(store, locks, D, "empty")
    assert first.wrote and first.version == 1 and first.total == 0
    data = store.read(document_key(D))
    second = merge_date(store, locks, D, "empty-again")
    assert not second.wrote and store.read(document_key(D)) == data
