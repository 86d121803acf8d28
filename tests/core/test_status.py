"""The status machine: every allowed move, every refused move, exact attempt accounting."""

from __future__ import annotations

import pytest

from convsync_pipeline.core import status
from convsync_pipeline.core.document import Conversation, Message


def conversation(state: str = "pending", retries: int = 0) -> Conversation:
    return Conversation(
        id="c1",
        startedAt="2026-02-11T14:03:00.000Z",
        endedAt="2026-02-11T14:05:00.000Z",
        messages=[Message(role="user", content="hi", timestamp="2026-02-11T14:03:00.000Z")],
        source="incoming/a.csv",
        processingStatus=state,
        retryCount=retries,
    )


def test_success_sets_analysis_and_processed_at_and_clears_error():
    started = status.begin_attempt(
        conversation(retries=1).model_copy(update={"processing_error": "x"})
    )
    done = status.record_success(started, {"summary": "ok"})
    assert done.processing_status == "success"
    assert done.analysis == {"summary": "ok"}
    assert done.processed_at and done.processed_at.endswith("Z")
    assert done.processing_error is None
    assert done.retry_count == 1


@pytest.mark.parametrize(("retries", "expected"), [(0, "pending"), (1, "pending"), (2, "failed")])
def test_failure_counts_one_attempt_and_fails_at_the_limit(retries, expected):
    failed = status.record_failure(status.begin_attempt(conversation(retries=retries)), "boom", 3)
    assert failed.retry_count == retries + 1
    assert failed.processing_status == expected
    assert failed.processing_error == "boom"
    assert failed.processed_at is None


def test_system_failure_spends_no_attempt():
    released = status.release_unattempted(status.begin_attempt(conversation(retries=2)))
    assert (released.processing_status, released.retry_count) == ("pending", 2)


def test_interrupted_counts_as_one_attempt_with_a_reason():
    recovered = status.recover_interrupted(conversation("processing", retries=1), 3)
    assert recovered.processing_status == "pending"
    assert recovered.retry_count == 2
    assert "interrupted" in recovered.processing_error


def test_requeue_gives_a_failed_conversation_fresh_attempts():
    again = status.requeue(
        conversation("failed", retries=3).model_copy(update={"processing_error": "x"})
    )
    assert (again.processing_status, again.retry_count, again.processing_error) == (
        "pending",
        0,
        None,
    )


@pytest.mark.parametrize(
    ("state", "move"),
    [
        ("success", status.begin_attempt),
        ("failed", status.begin_attempt),
        ("processing", status.begin_attempt),
        ("pending", lambda c: status.record_success(c, {})),
        ("pending", lambda c: status.record_failure(c, "x", 3)),
        ("success", status.requeue),
    ],
)
def test_refused_moves(state, move):
    with pytest.raises(status.InvalidTransitionError):
        move(conversation(state))


def test_is_due_only_for_pending_with_attempts_left():
    assert status.is_due(conversation("pending", 2), 3)
    assert not status.is_due(conversation("pending", 3), 3)
    assert not status.is_due(conversation("failed", 0), 3)
    assert not status.is_due(conversation("success", 0), 3)
