"""Re-analysis in the one status machine (SPEC 7): a success goes back to pending only with
its answer kept, gets a fresh budget per version, and falls back to its old answer when the
new version cannot be reached. The journal carries these changes like any other."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import (
    UNVERSIONED,
    analysis_version,
    fingerprint,
    version_of,
)
from convsync_pipeline.core.document import Conversation, DateDocument, Message
from convsync_pipeline.core.journal import Change, DateState, Entry
from convsync_pipeline.core.summary import answer_versions, build_daily_summary

OLD = analysis_version("openai", "gpt-4o-mini", "p1", fingerprint("prompt one", "{}"))
NEW = analysis_version("openai", "gpt-4o-mini", "p1", fingerprint("prompt two", "{}"))
MAX = 3


def answer(version: str | None, sentiment: str = "positive") -> dict:
    found = {"summary": "s", "sentiment": sentiment, "topics": ["billing"], "usage": {}}
    if version is not None:
        found["analysisVersion"] = version
    return found


def success(cid: str = "c1", version: str | None = OLD, sentiment: str = "positive"):
    return Conversation(
        id=cid,
        startedAt="2026-02-11T09:00:00Z",
        endedAt="2026-02-11T09:05:00Z",
        messages=[Message(role="user", content="hi", timestamp="2026-02-11T09:00:00Z")],
        source="test",
        processingStatus="success",
        retryCount=1,
        processedAt="2026-02-11T10:00:00Z",
        analysis=answer(version, sentiment),
    )


def test_version_names_what_produced_the_answer() -> None:
    assert OLD != NEW  # a prompt edit alone changes the version
    assert OLD.startswith("openai:gpt-4o-mini:p1:")
    assert fingerprint("a", "bc") != fingerprint("ab", "c")
    assert version_of(answer(OLD)) == OLD
    assert version_of({"summary": "legacy, kept verbatim"}) is None
    assert version_of(None) is None


def test_a_success_is_marked_keeping_its_answer_with_a_fresh_budget() -> None:
    before = success()
    marked = status.mark_for_reanalysis(before, NEW)
    assert marked.processing_status == "pending"
    assert marked.retry_count == 0
    assert marked.analysis is None
    assert marked.previous_analysis == before.analysis
    assert marked.reanalysis is not None
    assert marked.reanalysis["fromVersion"] == OLD and marked.reanalysis["toVersion"] == NEW
    assert status.is_due(marked, MAX) and status.in_reanalysis(marked)
    assert before.processing_status == "success" and before.previous_analysis is None


def test_success_cannot_go_back_without_keeping_its_answer() -> None:
    with pytest.raises(status.InvalidTransitionError):
        status.transition(success(), "pending")
    with pytest.raises(status.InvalidTransitionError):  # a re-analysis that drops the answer
        status.transition(
            success(), "pending", analysis=None, reanalysis={"state": "due", "toVersion": NEW}
        )
    with pytest.raises(status.InvalidTransitionError):
        status.transition(success(), "processing")


def test_new_answer_replaces_the_old_one_and_clears_the_trail() -> None:
    marked = status.begin_attempt(status.mark_for_reanalysis(success(), NEW))
    done = status.record_success(marked, answer(NEW, "negative"))
    assert done.processing_status == "success"
    assert version_of(done.analysis) == NEW
    assert done.previous_analysis is None and done.reanalysis is None
    # Absent, not null: the conversation's JSON is what it was before any re-analysis.
    dumped = done.model_dump(by_alias=True)
    assert "previousAnalysis" not in dumped and "reanalysis" not in dumped


def test_a_reanalysis_out_of_attempts_keeps_the_old_answer_and_says_so() -> None:
    conversation = status.mark_for_reanalysis(success(), NEW)
    for attempt in range(1, MAX + 1):
        conversation = status.record_failure(
            status.begin_attempt(conversation), f"boom {attempt}", MAX
        )
        if attempt < MAX:
            assert conversation.processing_status == "pending"
            assert conversation.retry_count == attempt
    assert conversation.processing_status == "success"
    assert conversation.analysis == answer(OLD)
    assert conversation.previous_analysis is None
    assert status.reanalysis_failed(conversation)
    assert conversation.reanalysis is not None
    assert conversation.reanalysis["error"] == f"boom {MAX}"
    assert conversation.reanalysis["attempts"] == MAX
    # Exactly once per version: asking again for NEW does not mark it; a newer version does.
    assert not status.wants_reanalysis(conversation, NEW)
    assert status.wants_reanalysis(conversation, "openai:gpt-5:p2:abc")
    # A requeue (manual review) tries NEW again, the old answer still kept.
    again = status.requeue(conversation)
    assert again.processing_status == "pending" and again.previous_analysis == answer(OLD)


def test_interrupted_reanalysis_costs_one_attempt_of_the_new_version() -> None:
    conversation = status.begin_attempt(status.mark_for_reanalysis(success(), NEW))
    recovered = status.recover_interrupted(conversation, MAX)
    assert recovered.processing_status == "pending"
    assert recovered.retry_count == 1
    assert recovered.previous_analysis == answer(OLD)
    assert recovered.processing_error == status.INTERRUPTED_ERROR


def test_who_wants_reanalysis() -> None:
    assert status.wants_reanalysis(success(version=OLD), NEW)
    assert status.wants_reanalysis(success(version=None), NEW)  # stored before versions
    assert not status.wants_reanalysis(success(version=NEW), NEW)
    assert not status.wants_reanalysis(success(version=OLD), NEW, if_version_not=OLD)
    pending = status.mark_for_reanalysis(success(), NEW)
    assert not status.wants_reanalysis(pending, NEW)  # already due: not marked twice


def test_the_journal_carries_reanalysis_changes_through_the_same_machine() -> None:
    conversations = [success("a"), success("b"), success("c", version=NEW)]
    direct = list(conversations)
    changes = []
    for index, conversation in enumerate(direct):
        if status.wants_reanalysis(conversation, NEW):
            direct[index] = status.mark_for_reanalysis(conversation, NEW)
            changes.append(Change.between(conversation, direct[index]))
    entry = Entry(date="2026-02-11", number=1, generation=1, changes=tuple(changes))
    stored = json.dumps({**entry.header(), "conversations": []}).encode()
    state = DateState(list(conversations))
    state.fold(Entry.from_json_bytes(stored, "journal/2026-02-11/1.json"))
    assert not state.skipped
    assert [c.model_dump(by_alias=True) for c in state.conversations] == [
        c.model_dump(by_alias=True) for c in direct
    ]
    # Then a success clears the optional fields through the fold too.
    sending = status.begin_attempt(direct[0])
    done = status.record_success(sending, answer(NEW))
    state.fold(
        Entry(
            date="2026-02-11",
            number=2,
            generation=1,
            changes=(Change.between(direct[0], sending), Change.between(sending, done)),
        )
    )
    assert not state.skipped
    assert state.conversations[0].model_dump(by_alias=True) == done.model_dump(by_alias=True)


def test_summary_counts_standing_answers_and_says_which_versions() -> None:
    document = DateDocument(
        date="2026-02-11",
        conversations=[
            success("a", OLD, "negative"),
            status.mark_for_reanalysis(success("b", OLD, "negative"), NEW),
            success("c", NEW, "positive"),
            success("d", None, "neutral"),
        ],
    )
    summary = build_daily_summary(document)
    assert summary.analysisVersions == {OLD: 2, NEW: 1, UNVERSIONED: 1}
    assert summary.mixedVersions
    assert summary.awaitingReanalysis == 1
    # Nothing lost in between: b's old answer still counts.
    assert summary.sentiment == {"positive": 1, "neutral": 1, "negative": 2}
    assert answer_versions(document) == Counter({OLD: 2, NEW: 1, UNVERSIONED: 1})
    single = DateDocument(date="2026-02-11", conversations=[success("a", NEW)])
    assert not build_daily_summary(single).mixedVersions
