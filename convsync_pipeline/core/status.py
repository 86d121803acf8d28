"""The one status machine (SPEC section 7, seed fix 2) and its attempt accounting.

Every change of `processingStatus` goes through `transition`, which refuses moves the table
does not allow, so no caller can mark a failure as processed or reset a success by accident.
"""

from __future__ import annotations

from typing import Any

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import Conversation, Status

INTERRUPTED_ERROR = "interrupted: the run analysing it stopped before saving a result"
BATCH_FIELD = "batchId"  # extra field: the batch token a `processing` conversation waits on

_ALLOWED: dict[Status, set[Status]] = {
    "pending": {"processing"},
    "processing": {"success", "pending", "failed"},
    "success": set(),
    "failed": {"pending"},
}


class InvalidTransitionError(ValueError):
    """A status change the state machine does not allow."""


def transition(conversation: Conversation, to: Status, **changes: Any) -> Conversation:
    current = conversation.processing_status
    if to not in _ALLOWED[current]:
        raise InvalidTransitionError(
            f"conversation {conversation.id!r} cannot go from {current} to {to}"
        )
    return conversation.model_copy(update={"processing_status": to, **changes})


def is_due(conversation: Conversation, max_attempts: int) -> bool:
    """Whether the next run should send this conversation to the analyser."""
    return conversation.processing_status == "pending" and conversation.retry_count < max_attempts


def begin_attempt(conversation: Conversation) -> Conversation:
    """Written (and saved) before the analyser is called, so a crash is visible later."""
    if getattr(conversation, BATCH_FIELD, None) is not None:
        return transition(conversation, "processing", **{BATCH_FIELD: None})
    return transition(conversation, "processing")


def record_success(conversation: Conversation, analysis: dict[str, Any]) -> Conversation:
    return transition(
        conversation,
        "success",
        analysis=analysis,
        processed_at=utc_now_iso(),
        processing_error=None,
    )


def record_failure(conversation: Conversation, error: str, max_attempts: int) -> Conversation:
    """One attempt spent: back to pending while attempts remain, else failed for good."""
    attempts = conversation.retry_count + 1
    return transition(
        conversation,
        "failed" if attempts >= max_attempts else "pending",
        retry_count=attempts,
        processing_error=error,
    )


def release_unattempted(conversation: Conversation) -> Conversation:
    """A system failure (bad key, no quota): put it back exactly as it was, no attempt spent."""
    return transition(conversation, "pending")


def recover_interrupted(conversation: Conversation, max_attempts: int) -> Conversation:
    """Found `processing` by a lock holder: its run died mid-analysis; that was one attempt."""
    return record_failure(conversation, INTERRUPTED_ERROR, max_attempts)


def batch_of(conversation: Conversation) -> str | None:
    """The batch token this conversation is `processing` under, if it waits on a batch."""
    if conversation.processing_status != "processing":
        return None
    token = getattr(conversation, BATCH_FIELD, None)
    return token if isinstance(token, str) and token else None


def begin_batch_attempt(conversation: Conversation, token: str) -> Conversation:
    """Marked (and saved) before the batch holding it is created: a live batch's conversations
    are never charged as interrupted, nor sent live, nor put in a second batch."""
    return transition(conversation, "processing", **{BATCH_FIELD: token})


def leave_batch(conversation: Conversation) -> Conversation:
    """`conversation` (already moved out of `processing`) no longer waits on its batch."""
    if getattr(conversation, BATCH_FIELD, None) is None:
        return conversation
    return conversation.model_copy(update={BATCH_FIELD: None})


def requeue(conversation: Conversation) -> Conversation:
    """Manual review done: a failed conversation gets a fresh set of attempts."""
    return transition(conversation, "pending", retry_count=0, processing_error=None)
