"""`convsync compact [--prune]` and what `convsync status` says about a date's log."""

from __future__ import annotations

from convsync_pipeline.core import status as machine
from convsync_pipeline.core.journal import Change, DateState
from convsync_pipeline.core.keys import entry_key, journal_prefix
from convsync_pipeline.operations import OperationError
from convsync_pipeline.operations.compact import compact
from convsync_pipeline.pipeline.documents import DateWriter, Draft, load_document
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.s3 import S3Store
from tests.operations.builders import conversation, document, put, read

D = "2026-02-11"


def with_unfolded_entries(root, store, count: int = 2) -> None:
    """A document of three pending conversations and `count` entries after it (a run that
    died before its checkpoint)."""
    put(root, D, document(D, [conversation(f"c{n}", "pending") for n in range(3)]))
    with store.date_lock(D, "test", ttl_seconds=60, wait_seconds=0) as lease:
        writer = DateWriter.over(store, load_document(store, D), lease)
        for n in range(count):

            def draft(n: int = n) -> Draft:
                state = writer.state
                assert isinstance(state, DateState)
                current = state.conversations[n]
                return Draft(changes=[Change.between(current, machine.begin_attempt(current))])

            writer.append(draft)


def entries(root) -> list[str]:
    folder = root / journal_prefix(D)
    return sorted(p.name for p in folder.glob("0*.json")) if folder.exists() else []


def test_status_counts_the_log_and_says_it_is_not_folded_yet(root, store, cli):
    with_unfolded_entries(root, store)
    result = cli("status", D)
    assert result.code == 0, result.err
    assert "2 log entries after conversations/2026-02-11.json" in result.out
    assert "convsync compact" in result.out
    assert read(root, D)["_blobMeta"]["version"] == 1


def test_compact_folds_the_log_into_the_document_once(root, store, cli):
    with_unfolded_entries(root, store)
    result = cli("compact")
    assert result.code == 0, result.err
    assert f"{D}: folded 2 log entries (version 2)" in result.out
    stored = read(root, D)
    assert stored["_blobMeta"]["journalEntry"] == 2
    assert stored["summary"]["processing"] == 2
    assert [c["processingStatus"] for c in stored["conversations"]] == [
        "processing",
        "processing",
        "pending",
    ]
    assert len(entries(root)) == 2, "nothing deleted without --prune"

    again = cli("compact")
    assert again.code == 0 and f"{D}: nothing to do" in again.out
    assert read(root, D) == stored, "not even the version changes"
    assert "log entr" not in cli("status", D).out


def test_prune_removes_only_folded_entries(root, store, cli):
    with_unfolded_entries(root, store, count=3)
    result = cli("compact", "--prune")
    assert result.code == 0, result.err
    assert "folded 3 log entries" in result.out and "removed 3 folded entries" in result.out
    assert entries(root) == []
    assert (root / journal_prefix(D) / "ids.json").exists(), "the id index stays"
    # The next writer continues the numbering after the checkpoint; readers need nothing else.
    with store.date_lock(D, "test", ttl_seconds=60, wait_seconds=0) as lease:
        writer = DateWriter.over(store, load_document(store, D), lease)
        assert writer.last_entry == 3
        state = writer.state
        assert isinstance(state, DateState)
        current = state.conversations[0]
        writer.append(
            lambda: Draft(changes=[Change.between(current, machine.release_unattempted(current))])
        )
    assert entries(root) == [entry_key(D, 4).rsplit("/", 1)[1]]
    assert load_document(store, D).document.conversations[0].processing_status == "pending"


def test_compact_of_a_locked_date_is_skipped_and_exits_1(root, store, cli):
    from tests.operations.conftest import held_lock

    with_unfolded_entries(root, store)
    with held_lock(store, D, "someone-else"):
        result = cli("compact")
    assert result.code == 1
    assert f"{D}: skipped" in result.out and "locked" in result.out
    assert read(root, D)["_blobMeta"]["version"] == 1


def test_prune_is_refused_on_s3():
    store = S3Store.from_url("s3://bucket", "http://127.0.0.1:9")
    settings = load_settings({"CONVSYNC_STORE": "s3://bucket"})
    try:
        compact(store, settings, owner="test", prune=True)
    except OperationError as error:
        assert "lifecycle rule" in str(error)
    else:
        raise AssertionError("pruning S3 must be refused")
