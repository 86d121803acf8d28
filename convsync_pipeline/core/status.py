"""The one status machine (SPEC section 7, seed fix 2) and its attempt accounting.

Every change of `processingStatus` goes through `transition`, which refuses moves the table
does not allow, so no caller can mark a failure as processed or reset a success by accident.

A re-analysis (a new prompt, schema or model: a new analysis version) is the one way back
from `success`: the conversation becomes `pending` with its answer kept as `previousAnalysis`
and a fresh attempt budget for the new version. It then goes through the same attempts as
any pending conversation; when they are all spent it returns to `success` with its old answer
and the failure recorded in `reanalysis` (never `failed`: it still has a valid answer).
"""

from __future__ import annotations

from typing import Any

from convsync_pipeline.core.analysis import version_of
from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import (
    BATCH_ID,
    DROPPED_WHEN_CLEARED,
    PREVIOUS_ANALYSIS,
    REANALYSIS,
    Conversation,
    Status,
)

INTERRUPTED_ERROR = "interrupted: the run analysing it stopped before saving a result"
REANALYSIS_DUE = "due"
REANALYSIS_FAILED = "failed"
BATCH_FIELD = BATCH_ID  # extra field: the batch token a `processing` conversation waits on

_ALLOWED: dict[Status, set[Status]] = {
    "pending": {"processing"},
    "processing": {"success", "pending", "failed"},
    "success": {"pending"},  # a re-analysis only: see _check_reanalysis
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
    if current == "success" and to == "pending":
        _check_reanalysis(conversation, changes)
    updated = conversation.model_copy(update={"processing_status": to, **changes})
    extra = updated.__pydantic_extra__
    if extra:
        for name in DROPPED_WHEN_CLEARED:
            if name in extra and extra[name] is None:
                del extra[name]  # a copy's own dict (model_copy copies the extras)
    return updated


def _check_reanalysis(conversation: Conversation, changes: dict[str, Any]) -> None:
    """success -> pending only as a re-analysis that keeps the answer it replaces."""
    state = changes.get(REANALYSIS)
    kept = changes.get(PREVIOUS_ANALYSIS, conversation.previous_analysis)
    if (
        not isinstance(state, dict)
        or state.get("state") != REANALYSIS_DUE
        or kept != conversation.analysis
        or changes.get("analysis", conversation.analysis) is not None
    ):
        raise InvalidTransitionError(
            f"conversation {conversation.id!r} is success: only a re-analysis that keeps its "
            "answer as previousAnalysis makes it pending again"
        )


def is_due(conversation: Conversation, max_attempts: int) -> bool:
    """Whether the next run should send this conversation to the analyser."""
    return conversation.processing_status == "pending" and conversation.retry_count < max_attempts


def in_reanalysis(conversation: Conversation) -> bool:
    """Pending or processing for a re-analysis: it has an answer standing (previousAnalysis)."""
    state = conversation.reanalysis
    return (
        conversation.processing_status in ("pending", "processing")
        and isinstance(state, dict)
        and state.get("state") == REANALYSIS_DUE
    )


def reanalysis_failed(conversation: Conversation) -> bool:
    """A success whose last re-analysis spent all its attempts (shown by `convsync failed`)."""
    state = conversation.reanalysis
    return (
        conversation.processing_status == "success"
        and isinstance(state, dict)
        and state.get("state") == REANALYSIS_FAILED
    )


def wants_reanalysis(
    conversation: Conversation, target: str, if_version_not: str | None = None
) -> bool:
    """Whether a re-analysis to version `target` should make this conversation due again.

    Only a `success` whose answer is of another version (neither `target` nor
    `if_version_not`), and whose re-analysis to `target` has not already failed for good:
    exactly once per version, however often the re-analysis is asked for.
    """
    if conversation.processing_status != "success":
        return False
    version = version_of(conversation.analysis)
    if version == target or (if_version_not is not None and version == if_version_not):
        return False
    state = conversation.reanalysis
    return not (
        isinstance(state, dict)
        and state.get("state") == REANALYSIS_FAILED
        and state.get("toVersion") == target
    )


def mark_for_reanalysis(conversation: Conversation, target: str) -> Conversation:
    """success -> pending, the answer kept as previousAnalysis, a fresh attempt budget."""
    return transition(
        conversation,
        "pending",
        analysis=None,
        retry_count=0,
        processing_error=None,
        **{
            PREVIOUS_ANALYSIS: conversation.analysis,
            REANALYSIS: {
                "state": REANALYSIS_DUE,
                "fromVersion": version_of(conversation.analysis),
                "toVersion": target,
                "requestedAt": utc_now_iso(),
            },
        },
    )


def begin_attempt(conversation: Conversation) -> Conversation:
    """Written (and saved) before the analyser is called, so a crash is visible later."""
    if conversation.value_of(BATCH_FIELD) is not None:
        return transition(conversation, "processing", **{BATCH_FIELD: None})
    return transition(conversation, "processing")


def record_success(conversation: Conversation, analysis: dict[str, Any]) -> Conversation:
    """The new answer replaces any previous one (a re-analysis is done)."""
    return transition(
        conversation,
        "success",
        analysis=analysis,
        processed_at=utc_now_iso(),
        processing_error=None,
        **{PREVIOUS_ANALYSIS: None, REANALYSIS: None},
    )


def record_failure(conversation: Conversation, error: str, max_attempts: int) -> Conversation:
    """One attempt spent: back to pending while attempts remain, else failed for good (a
    re-analysis: success again with its previous answer, the failure kept in `reanalysis`)."""
    attempts = conversation.retry_count + 1
    if attempts >= max_attempts and in_reanalysis(conversation):
        state = dict(conversation.reanalysis or {})
        state.update(
            state=REANALYSIS_FAILED, failedAt=utc_now_iso(), attempts=attempts, error=error
        )
        return transition(
            conversation,
            "success",
            analysis=conversation.previous_analysis,
            retry_count=attempts,
            processing_error=None,
            **{PREVIOUS_ANALYSIS: None, REANALYSIS: state},
        )
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
    token = conversation.value_of(BATCH_FIELD)
    return token if isinstance(token, str) and token else None


def begin_batch_attempt(conversation: Conversation, token: str) -> Conversation:
    """Marked (and saved) before the batch holding it is created: a live batch's conversations
    are never charged as interrupted, nor sent live, nor put in a second batch."""
    return transition(conversation, "processing", **{BATCH_FIELD: token})


def leave_batch(conversation: Conversation) -> Conversation:
    """`conversation` (already moved out of `processing`) no longer waits on its batch."""
    if conversation.value_of(BATCH_FIELD) is None:
        return conversation
    return conversation.model_copy(update={BATCH_FIELD: None})


def requeue(conversation: Conversation) -> Conversation:
    """Manual review done: a failed conversation (or a failed re-analysis) gets a fresh set
    of attempts."""
    if reanalysis_failed(conversation):
        return mark_for_reanalysis(conversation, str((conversation.reanalysis or {})["toVersion"]))
    return transition(conversation, "pending", retry_count=0, processing_error=None)
