"""Dead letters: conversations `failed` for good, listed for review and requeued by hand.

A failed conversation spent all its attempts (SPEC section 7); nothing retries it on its own.
So did a failed re-analysis, listed here too: its conversation stays `success` with its old
answer (`reanalysisTo` names the version that could not be reached); requeue tries again.
`requeue_failed` gives it a fresh set through `status.requeue`, the one state machine, under
the date lock and in one log entry (then a checkpoint), so a running analysis can never race
the reset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convsync_pipeline.core import status
from convsync_pipeline.core.document import Conversation, DateDocument
from convsync_pipeline.core.journal import Change, DateState
from convsync_pipeline.core.keys import document_key
from convsync_pipeline.core.redaction import Redactor
from convsync_pipeline.operations import (
    DocumentProblem,
    OperationError,
    Progress,
    load_many,
    read_document,
)
from convsync_pipeline.pipeline.documents import apply_and_checkpoint
from convsync_pipeline.store.base import DateLocks, Store

FIRST_WORDS_CHARS = 80
CUSTOMER_ROLES = frozenset({"user", "customer", "client", "human", "visitor", "contact"})
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class FailedConversation:
    date: str
    id: str
    attempts: int
    last_error: str | None
    first_words: str
    source: str
    reanalysis_to: str | None = None  # a failed re-analysis to this version (old answer kept)

    @property
    def error_shown(self) -> str:
        """The last error as tables show it, a failed re-analysis said to be one."""
        prefix = "re-analysis (old answer kept): " if self.reanalysis_to else ""
        return prefix + (self.last_error or "")

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "id": self.id,
            "attempts": self.attempts,
            "lastError": self.last_error,
            "firstCustomerWords": self.first_words,
            "source": self.source,
            "reanalysisTo": self.reanalysis_to,
        }


@dataclass
class FailedListing:
    entries: list[FailedConversation] = field(default_factory=list)
    problems: list[DocumentProblem] = field(default_factory=list)
    dates_checked: int = 0

    def by_date(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.date] = counts.get(entry.date, 0) + 1
        return counts


@dataclass
class RequeueOutcome:
    date: str
    requeued: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    not_failed: dict[str, str] = field(default_factory=dict)  # id -> its status
    version: int | None = None  # after the save; None when nothing was written

    @property
    def ok(self) -> bool:
        """False when an id the user named could not be requeued."""
        return not self.unknown and not self.not_failed


def first_customer_words(
    conversation: Conversation,
    limit: int = FIRST_WORDS_CHARS,
    redactor: Redactor | None = None,
) -> str:
    """What the customer opened with, on one line, cut at a word near `limit` characters;
    redacted before the cut, so a card number is never half-shown."""
    messages = conversation.messages
    chosen = next((m for m in messages if m.role.strip().lower() in CUSTOMER_ROLES), None)
    if chosen is None:
        chosen = next((m for m in messages if m.role.strip().lower() != "system"), None)
    text = _SPACE.sub(" ", chosen.content).strip() if chosen else ""
    text = redactor(text) if redactor else text
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


def failed_in(
    document: DateDocument, redactor: Redactor | None = None
) -> list[FailedConversation]:
    """The failed conversations, and re-analyses that failed (their old answer kept), their
    words and error through `redactor` (default: the display redactor of CONVSYNC_REDACT /
    CONVSYNC_REDACT_PATTERNS)."""
    from convsync_pipeline.settings import display_redactor

    redactor = redactor or display_redactor()
    found = []
    for c in document.conversations:
        if c.processing_status == "failed":
            error, to = c.processing_error, None
        elif status.reanalysis_failed(c):
            state = c.reanalysis or {}
            error, to = state.get("error"), str(state.get("toVersion"))
        else:
            continue
        found.append(
            FailedConversation(
                date=document.date,
                id=c.id,
                attempts=c.retry_count,
                last_error=redactor(error) if error else None,
                first_words=first_customer_words(c, redactor=redactor),
                source=c.source,
                reanalysis_to=to,
            )
        )
    return found


def list_failed(
    store: Store,
    dates: Iterable[str],
    progress: Progress | None = None,
    redactor: Redactor | None = None,
) -> FailedListing:
    """Failed conversations of `dates`; documents that cannot be read are listed as problems."""
    listing = FailedListing()
    for _, found in load_many(store, dates, progress):
        listing.dates_checked += 1
        if isinstance(found, DocumentProblem):
            listing.problems.append(found)
        else:
            listing.entries.extend(failed_in(found.document, redactor))
    return listing


def requeue_failed(
    store: Store,
    locks: DateLocks,
    date: str,
    *,
    owner: str,
    ids: Sequence[str] | None = None,
) -> RequeueOutcome:
    """Failed -> pending with no attempts spent, for all of `date` or only `ids`; one save.
    A failed re-analysis is marked for re-analysis again (its answer kept meanwhile).

    An id that is unknown or not failed is reported and left as it is. Raises
    DateLockedError when another process holds the date.
    """
    wanted = list(dict.fromkeys(ids)) if ids else None
    outcome = RequeueOutcome(date=date)
    with locks.date_lock(date, owner) as lease:
        loaded = read_document(store, date)
        if loaded.token is None:
            raise OperationError(f"no date document for {date} ({document_key(date)})")
        document = loaded.document
        reanalysis_failed = {
            c.id for c in document.conversations if status.reanalysis_failed(c)
        }
        if wanted is not None:
            statuses = {c.id: c.processing_status for c in document.conversations}
            outcome.unknown = [i for i in wanted if i not in statuses]
            outcome.not_failed = {
                i: statuses[i]
                for i in wanted
                if i in statuses and statuses[i] != "failed" and i not in reanalysis_failed
            }
        selected = None if wanted is None else set(wanted)

        def requeued(state: DateState) -> list[Change]:
            return [
                Change.between(conversation, status.requeue(conversation))
                for conversation in state.conversations
                if (
                    conversation.processing_status == "failed"
                    or status.reanalysis_failed(conversation)
                )
                and (selected is None or conversation.id in selected)
            ]

        # One log entry, then a checkpoint: afterwards the document alone is current.
        changes, version = apply_and_checkpoint(store, loaded, lease, requeued)
        outcome.requeued = [change.id for change in changes]
        if changes:
            outcome.version = version
    return outcome
