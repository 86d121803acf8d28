"""The date's log, pure (SPEC 5a): changes, the fold, fencing and the checkpoint threshold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import status
from convsync_pipeline.core.document import Conversation, DateDocument, Message, dump_json
from convsync_pipeline.core.journal import (
    CHECKPOINT_FRACTION,
    ENTRY_COST_BYTES,
    Change,
    CorruptEntryError,
    DateState,
    Entry,
    IdState,
    checkpoint_due,
    fencing_lost,
)
from convsync_pipeline.core.keys import entry_key, entry_number, id_index_key

D = "2026-02-11"
STAMP = "2026-02-11T10:00:00.000Z"


def conversation(cid: str, state: str = "pending", retries: int = 0) -> Conversation:
    return Conversation(
        id=cid,
        startedAt=STAMP,
        endedAt=STAMP,
        messages=[Message(role="user", content=f"hello {cid}", timestamp=STAMP)],
        source="incoming/a.csv",
        processingStatus=state,
        retryCount=retries,
    )


def entry(number: int, *changes: Change, appended=(), generation: int = 1) -> Entry:
    return Entry(D, number, generation, appended=tuple(appended), changes=tuple(changes))


def roundtrip(e: Entry) -> Entry:
    body = e.header()
    body["conversations"] = [c.model_dump(by_alias=True) for c in e.appended]
    return Entry.from_json_bytes(dump_json(body), entry_key(D, e.number))


# ------------------------------------------------------------------------------ keys
def test_entry_keys_are_zero_padded_so_they_list_in_order():
    keys = [entry_key(D, n) for n in (1, 2, 10, 100, 12345)]
    assert keys == sorted(keys)
    assert keys[0] == "journal/2026-02-11/00000000000000000001.json"
    assert [entry_number(k, D) for k in keys] == [1, 2, 10, 100, 12345]
    assert entry_number(id_index_key(D), D) is None
    assert entry_number(entry_key("2026-02-12", 3), D) is None


# ------------------------------------------------------------------------------ changes
def test_a_change_records_the_values_it_set_not_how_to_derive_them():
    before = status.begin_attempt(conversation("c1", retries=2))
    after = status.record_failure(before, "boom", max_attempts=3)
    change = Change.between(before, after)
    assert change == Change("c1", "failed", {"retryCount": 3, "processingError": "boom"})
    # Re-applied later under another CONVSYNC_MAX_ATTEMPTS: the same result.
    assert change.apply(before) == after


def test_success_carries_processed_at_and_the_analysis():
    before = status.begin_attempt(conversation("c1").model_copy(update={"processing_error": "x"}))
    after = status.record_success(before, {"summary": "ok"})
    change = roundtrip(entry(1, Change.between(before, after))).changes[0]
    assert change.to == "success"
    assert change.fields == {
        "processingError": None,
        "processedAt": after.processed_at,
        "analysis": {"summary": "ok"},
    }
    assert change.apply(before) == after


def test_an_entry_survives_its_json():
    e = entry(
        7,
        Change("c1", "processing"),
        Change("c2", "pending", {"retryCount": 0, "processingError": None}),
        appended=[conversation("c3")],
        generation=4,
    )
    back = roundtrip(e)
    assert (back.number, back.generation, back.changes) == (7, 4, e.changes)
    assert back.appended == e.appended


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"date": "2026-02-11", "entry": 0, "lockGeneration": 1}',
        b'{"date": "2026-02-11", "entry": 1}',
        b'{"date": "2026-02-11", "entry": 1, "lockGeneration": 1,'
        b' "changes": [{"id": "c", "to": "done"}]}',
        b'{"date": "2026-02-11", "entry": 1, "lockGeneration": 1,'
        b' "changes": [{"id": "c", "to": "pending", "retryCount": null}]}',
        b'{"date": "2026-02-11", "entry": 1, "lockGeneration": 1,'
        b' "changes": [{"id": "c", "to": "pending", "surprise": 1}]}',
    ],
)
def test_a_bad_entry_is_a_clear_error_naming_it(body):
    with pytest.raises(CorruptEntryError, match=r"journal/2026-02-11/0+1\.json"):
        Entry.from_json_bytes(body, entry_key(D, 1))


# ------------------------------------------------------------------------------ the fold
def test_appends_fold_through_the_merge_rule_first_entry_wins():
    state = DateState([conversation("a")])
    skipped = state.fold(entry(1, appended=[conversation("b"), conversation("a")]))
    skipped += state.fold(entry(2, appended=[conversation("b"), conversation("c")]))
    assert [c.id for c in state.conversations] == ["a", "b", "c"]
    assert [(s.entry, s.id, s.reason) for s in skipped] == [
        (1, "a", "already present"),
        (2, "b", "already present"),
    ]


def test_changes_fold_through_the_status_machine_in_order():
    state = DateState([conversation("a"), conversation("b")])
    state.fold(entry(1, Change("a", "processing"), Change("b", "processing")))
    state.fold(entry(2, Change("a", "success", {"processedAt": STAMP, "analysis": {"x": 1}})))
    state.fold(entry(3, Change("b", "pending", {"retryCount": 1, "processingError": "e"})))
    a, b = state.conversations
    assert (a.processing_status, a.processed_at, a.analysis) == ("success", STAMP, {"x": 1})
    assert (b.processing_status, b.retry_count, b.processing_error) == ("pending", 1, "e")
    assert state.last_entry == 3 and state.skipped == []


def test_an_illegal_transition_is_skipped_deterministically_and_reported():
    """An older holder's entry marking `processing` a conversation that is already
    `success`: the status machine refuses it, the conversation stays as it was, and every
    reader folding the same entries gets the same state and the same report."""
    done = status.record_success(status.begin_attempt(conversation("a")), {"x": 1})
    results = []
    for _ in range(2):
        state = DateState([done, conversation("b")])
        state.fold(entry(1, Change("a", "processing"), Change("b", "processing"), generation=1))
        state.fold(entry(2, Change("ghost", "processing")))
        results.append((state.conversations, [(s.entry, s.id) for s in state.skipped]))
    assert results[0] == results[1]
    conversations, skipped = results[0]
    assert conversations[0] == done
    assert conversations[1].processing_status == "processing"
    assert skipped == [(1, "a"), (2, "ghost")]
    assert "cannot go from success to processing" in DateState([done]).fold(
        entry(1, Change("a", "processing"))
    )[0].reason


def test_entries_fold_only_in_order():
    state = DateState([], last_entry=3)
    with pytest.raises(ValueError, match="cannot follow entry 3"):
        state.fold(entry(5))
    ids = IdState(["a"], 3)
    with pytest.raises(ValueError, match="cannot follow entry 3"):
        ids.fold(entry(3))


def test_the_id_state_folds_what_a_merge_needs():
    ids = IdState(["a"], 0)
    ids.fold(entry(1, Change("a", "processing"), appended=[conversation("b"), conversation("a")]))
    assert set(ids.ids) == {"a", "b"} and ids.last_entry == 1


# ------------------------------------------------------------------------------ fencing
def test_a_newer_generation_at_our_number_means_the_date_is_lost():
    assert fencing_lost(3, entry(1, generation=4))
    assert not fencing_lost(3, entry(1, generation=3))
    assert not fencing_lost(3, entry(1, generation=1))


# ------------------------------------------------------------------------------ checkpoints
def test_a_small_date_is_checkpointed_at_every_write():
    assert checkpoint_due(500, 1, 8_000)  # a few conversations: as before the log existed
    assert not checkpoint_due(500, 1, 1_500_000)
    assert not checkpoint_due(0, 0, 0), "nothing unfolded: nothing to fold"


def test_checkpoints_per_pass_do_not_grow_with_the_date():
    """A pass writes about one ~900-byte entry per conversation into a document of about
    1.5 KB per conversation (growing to 2 KB as analyses land): the number of checkpoints it
    triggers is the same at 1,000 and at 50,000 conversations."""

    def checkpoints(n: int) -> int:
        document, unfolded, count, made = 1500 * n, 0, 0, 0
        for _ in range(n):
            unfolded, count = unfolded + 900, count + 1
            if checkpoint_due(unfolded, count, document):
                document += int(500 * n * (made + 1) / 10)  # analyses landing
                unfolded, count, made = 0, 0, made + 1
        return made

    small, large = checkpoints(1_000), checkpoints(50_000)
    assert 1 <= small <= 10
    assert abs(large - small) <= 1
    per_entry = (900 + ENTRY_COST_BYTES) / (CHECKPOINT_FRACTION * 1500)
    assert small <= per_entry + 1


# ------------------------------------------------------------------------------ the property
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(0, 7), max_size=3)),
        st.tuples(st.just("begin"), st.integers(0, 7)),
        st.tuples(st.just("succeed"), st.integers(0, 7)),
        st.tuples(st.just("fail"), st.integers(0, 7)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("recover"), st.integers(0, 7)),
        st.tuples(st.just("requeue"), st.integers(0, 7)),
    ),
    max_size=40,
)


def step(conversations: dict[str, Conversation], op: tuple, max_attempts: int):
    """One operation as the pipeline performs it: (new conversations, changed ones)."""
    kind, arg = op
    if kind == "append":
        fresh = []
        for n in arg:
            cid = f"c{n}"
            if cid not in conversations and cid not in {c.id for c in fresh}:
                fresh.append(conversation(cid))
        return fresh, []
    cid = f"c{arg}"
    current = conversations.get(cid)
    if current is None:
        return [], []
    machine = {
        "begin": lambda c: status.begin_attempt(c) if status.is_due(c, max_attempts) else None,
        "succeed": lambda c: status.record_success(c, {"n": arg}),
        "fail": lambda c: status.record_failure(c, f"boom {arg}", max_attempts),
        "release": status.release_unattempted,
        "recover": lambda c: status.recover_interrupted(c, max_attempts),
        "requeue": status.requeue,
    }
    try:
        updated = machine[kind](current)
    except status.InvalidTransitionError:
        return [], []
    return ([], []) if updated is None else ([], [updated])


@settings(max_examples=150, deadline=None)
@given(ops=OPS, checkpoints=st.sets(st.integers(0, 40)), max_attempts=st.integers(1, 3))
def test_folding_entries_with_random_checkpoints_equals_one_document(
    ops, checkpoints, max_attempts
):
    """The same transitions applied directly to one document, and journalled as entries that
    are checkpointed at random points (each checkpoint written as JSON and read back, each
    entry too): every reader of the log sees the document the direct path built."""
    direct: dict[str, Conversation] = {}
    document = DateDocument.empty(D).sealed()
    state = DateState.of(document)
    entries: list[Entry] = []
    for position, op in enumerate(ops):
        fresh, changed = step(direct, op, max_attempts)
        changes = [Change.between(direct[c.id], c) for c in changed]
        for c in [*fresh, *changed]:
            direct[c.id] = c
        if fresh or changes:
            e = roundtrip(entry(state.last_entry + 1, *changes, appended=fresh))
            assert state.fold(e) == []
            entries.append(e)
        if position in checkpoints:
            sealed = state.document(document).sealed(journal_entry=state.last_entry)
            document = DateDocument.from_json_bytes(sealed.to_json_bytes())
            state = DateState.of(document)
    # A reader: the last checkpoint plus the entries after it.
    reader = DateState.of(document)
    for e in entries[document.blob_meta.journal_entry :]:
        reader.fold(e)
    assert reader.skipped == []
    assert {c.id: c for c in reader.conversations} == direct
    assert [c.id for c in reader.conversations] == list(direct)
    folded = reader.document(document)
    expected = DateDocument(date=D, conversations=list(direct.values())).count_statuses()
    assert folded.summary == expected
    assert json.loads(folded.to_json_bytes())["processedCount"] == folded.summary.success


# ------------------------------------------------------------------------------ checkpoint bytes
def test_the_checkpoint_encoder_writes_exactly_the_bytes_of_the_document_model():
    """Checkpoints re-encode only changed conversations; the bytes must not differ from
    `DateDocument.to_json_bytes()`, whatever the content (newlines, unicode, meta, extras)."""
    from convsync_pipeline.core.document import DocumentEncoder

    def rich(n: int) -> Conversation:
        text = f'line one\nline "two" \u2028 é ✓ <b> {n}\t\\'
        return Conversation(
            id=f"c-{n}",
            startedAt=STAMP,
            endedAt=STAMP,
            messages=[
                Message(role="user", content=text, timestamp=STAMP),
                Message(
                    role="agent",
                    content="",
                    timestamp=STAMP,
                    meta={"priority": "high", "nested": {"a": [1, 2.5, None, {}], "b": []}},
                ),
            ],
            source="incoming/x.csv",
            processingStatus="pending",
            channel={"kept": True},  # an unknown field is kept (extra="allow")
        )

    encoder = DocumentEncoder()
    empty = DateDocument.empty(D).sealed()
    assert encoder.encode(empty) == empty.to_json_bytes()
    document = DateDocument(date=D, conversations=[rich(n) for n in range(4)]).sealed()
    assert encoder.encode(document) == document.to_json_bytes()
    for step in range(3):  # change some, append one, as passes and merges do
        changed = list(document.conversations)
        changed[step] = status.begin_attempt(changed[step])
        attempted = status.begin_attempt(changed[step + 1])
        changed[step + 1] = status.record_failure(attempted, "boom\nagain", 3)
        changed.append(rich(10 + step))
        document = document.model_copy(update={"conversations": changed}).sealed(step, step)
        assert encoder.encode(document) == document.to_json_bytes()
        assert DateDocument.from_json_bytes(encoder.encode(document)).conversations == changed


def test_an_unknown_encoding_falls_back_to_the_model_encoding(monkeypatch):
    """If the splice point ever changes shape, the encoder writes the plain encoding, never a
    document without its conversations."""
    from convsync_pipeline.core import document as module

    compact = json.JSONEncoder(separators=(",", ":")).encode
    monkeypatch.setattr(module, "dump_json", lambda value: compact(value).encode())
    document = DateDocument(date=D, conversations=[conversation("c-1")]).sealed()
    assert module.DocumentEncoder().encode(document) == document.to_json_bytes()
