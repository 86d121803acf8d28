"""`convsync migrate`: legacy date documents (no `processingStatus`) -> the SPEC section 5 shape.

The legacy system marked a conversation processed by setting `processedAt` (`""` meant not
yet). Each legacy conversation gets `processingStatus` (`success` when `processedAt` is a
non-empty string, else `pending` with `processedAt: null`), `retryCount: 0` and
`processingError: null`; a missing `analysis` becomes null and a legacy one is kept verbatim.
Fields the pipeline requires and the legacy shape may lack are derived, never invented as
data: `startedAt`/`endedAt` from the message timestamps, `source` as `"legacy"`.

Only documents that need it are written, each under its date lock and through
`save_document` (counts recomputed, version + 1, compare-and-swap), so a second run changes
nothing. A document that cannot be read is reported by key and left byte-for-byte untouched.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from convsync_pipeline.core.document import STATUSES, DateDocument, StatusSummary
from convsync_pipeline.operations import (
    DOCUMENT_PREFIX,
    Progress,
    date_from_key,
)
from convsync_pipeline.pipeline.documents import LoadedDocument, save_document
from convsync_pipeline.store.base import (
    ConflictError,
    DateLockedError,
    DateLocks,
    LeaseLostError,
    Store,
)

LEGACY_SOURCE = "legacy"
"""`source` of a legacy conversation: the upload that brought it is not recorded there."""

Outcome = Literal["migrated", "would_migrate", "up_to_date", "skipped", "ignored"]


class UnreadableDocumentError(ValueError):
    """Not valid JSON, or not a date document even after filling in the legacy gaps."""


@dataclass
class MigrationPlan:
    """What migrating one document changes; `document` is not sealed yet (version as stored)."""

    date: str
    document: DateDocument
    needs_write: bool
    conversations: int
    legacy: int  # conversations that had no processingStatus
    to_success: int
    to_pending: int
    completed: int  # conversations with a status that only lacked other fields
    success_without_analysis: int
    processed_count_before: Any  # as stored: may be missing or wrong
    processed_count_after: int
    version_before: int


@dataclass
class DocumentMigration:
    key: str
    date: str | None
    outcome: Outcome
    plan: MigrationPlan | None = None
    version_after: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line for a person: what changed (or would), or why the document was left."""
        plan = self.plan
        if self.outcome in {"skipped", "ignored"} or plan is None:
            verb = "skipped, left untouched" if self.outcome == "skipped" else "ignored"
            return f"{self.key}: {verb}: {self.reason}"
        if self.outcome == "up_to_date":
            return f"{self.date}: up to date (version {plan.version_before})"
        verb = "migrated" if self.outcome == "migrated" else "would migrate"
        before = plan.processed_count_before
        parts = [
            f"{self.date}: {verb} {plan.legacy} legacy conversation"
            f"{'' if plan.legacy == 1 else 's'} -> {plan.to_success} success, "
            f"{plan.to_pending} pending"
        ]
        if plan.completed:
            parts.append(f"{plan.completed} with missing fields completed")
        parts.append(
            f"processedCount {'missing' if before is None else before} -> "
            f"{plan.processed_count_after}"
        )
        after = self.version_after if self.version_after is not None else plan.version_before + 1
        parts.append(f"version {plan.version_before} -> {after}")
        if plan.success_without_analysis:
            parts.append(
                f"note: {plan.success_without_analysis} success without an analysis "
                "(the legacy system marked them processed)"
            )
        return "; ".join(parts)


@dataclass
class MigrationReport:
    dry_run: bool
    documents: list[DocumentMigration] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for d in self.documents if d.outcome == outcome)

    @property
    def skipped(self) -> list[DocumentMigration]:
        return [d for d in self.documents if d.outcome == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.skipped

    def describe(self) -> str:
        """The closing line: totals, and for a dry run that nothing was written."""
        if self.dry_run:
            head = f"dry run: {self.count('would_migrate')} document(s) would be migrated"
        else:
            head = f"migrated {self.count('migrated')} document(s)"
        tail = f", {self.count('up_to_date')} up to date, {self.count('skipped')} skipped"
        if self.count("ignored"):
            tail += f", {self.count('ignored')} ignored"
        if self.dry_run:
            tail += "; nothing was written"
        return head + tail


def plan_migration(date: str, data: bytes) -> MigrationPlan:
    """Work out the migrated document from the stored bytes; raises UnreadableDocumentError."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise UnreadableDocumentError(f"not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise UnreadableDocumentError("not a JSON object")
    if raw.get("date", date) != date:
        raise UnreadableDocumentError(f"holds the document of {raw.get('date')!r}, not {date}")
    conversations = raw.get("conversations", [])
    if not isinstance(conversations, list):
        raise UnreadableDocumentError("`conversations` is not a list")

    migrated: list[dict[str, Any]] = []
    assigned: list[str | None] = []
    for index, conversation in enumerate(conversations):
        new, status = _migrate_conversation(conversation, index)
        migrated.append(new)
        assigned.append(status)

    candidate = {k: v for k, v in raw.items() if k not in {"processedCount", "summary"}}
    candidate["date"] = date
    candidate["conversations"] = migrated
    try:
        document = DateDocument.model_validate(candidate)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnreadableDocumentError(f"wrong shape: {first['msg']} at {where}") from None

    counts = document.count_statuses()
    changed = [new != old for new, old in zip(migrated, conversations, strict=True)]
    needs_write = (
        any(changed)
        or "date" not in raw
        or not _same_count(raw.get("processedCount"), counts.success)
        or not _same_summary(raw.get("summary"), counts)
    )
    return MigrationPlan(
        date=date,
        document=document,
        needs_write=needs_write,
        conversations=len(migrated),
        legacy=sum(1 for status in assigned if status is not None),
        to_success=assigned.count("success"),
        to_pending=assigned.count("pending"),
        completed=sum(1 for c, s in zip(changed, assigned, strict=True) if c and s is None),
        success_without_analysis=sum(
            1
            for c, s in zip(document.conversations, assigned, strict=True)
            if s == "success" and c.analysis is None
        ),
        processed_count_before=raw.get("processedCount"),
        processed_count_after=counts.success,
        version_before=document.version,
    )


def migrate(
    store: Store,
    locks: DateLocks,
    *,
    owner: str,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Migrate each `conversations/*.json` needing it; a dry run takes no lock, writes nothing."""
    keys = [info.key for info in store.list(DOCUMENT_PREFIX)]
    report = MigrationReport(dry_run=dry_run)
    for done, key in enumerate(keys, start=1):
        date = date_from_key(key)
        if date is None:
            result = DocumentMigration(
                key, None, "ignored", reason="not named conversations/YYYY-MM-DD.json"
            )
        else:
            # An unlocked look first: a document that is already migrated (or unreadable)
            # never becomes legacy again, so only one that needs writing takes its lock.
            result = _assess(store, key, date, write=None)
            if result.outcome == "would_migrate" and not dry_run:
                result = _migrate_locked(store, locks, key, date, owner)
        report.documents.append(result)
        if progress is not None:
            progress(done, len(keys), date or key)
    return report


def _migrate_locked(
    store: Store, locks: DateLocks, key: str, date: str, owner: str
) -> DocumentMigration:
    try:
        with locks.date_lock(date, owner) as lease:

            def write(plan: MigrationPlan, token: str) -> int:
                loaded = LoadedDocument(plan.document, token)
                return save_document(store, loaded, plan.document, lease).document.version

            return _assess(store, key, date, write=write)
    except DateLockedError as error:
        return DocumentMigration(key, date, "skipped", reason=str(error))
    except (ConflictError, LeaseLostError) as error:
        return DocumentMigration(
            key, date, "skipped", reason=f"{error}; nothing written, run migrate again"
        )


Writer = Callable[[MigrationPlan, str], int]
"""Saves a plan over the token read and returns the new version."""


def _assess(store: Store, key: str, date: str, write: Writer | None) -> DocumentMigration:
    """Read by exact key and plan; save through `write` unless it is None (a dry run)."""
    found = store.read_versioned(key)
    if found is None:
        return DocumentMigration(key, date, "ignored", reason="deleted while migrating")
    try:
        plan = plan_migration(date, found.data)
    except UnreadableDocumentError as error:
        return DocumentMigration(key, date, "skipped", reason=str(error))
    if not plan.needs_write:
        return DocumentMigration(key, date, "up_to_date", plan=plan)
    if write is None:
        return DocumentMigration(key, date, "would_migrate", plan=plan)
    version = write(plan, found.token)
    return DocumentMigration(key, date, "migrated", plan=plan, version_after=version)


def _migrate_conversation(raw: Any, index: int) -> tuple[dict[str, Any], str | None]:
    """The migrated conversation, and the status given to it if it was a legacy one."""
    if not isinstance(raw, dict):
        raise UnreadableDocumentError(f"conversation #{index} is not a JSON object")
    conversation = dict(raw)  # unknown legacy fields ride along untouched
    ident = conversation.get("id")
    if isinstance(ident, int) and not isinstance(ident, bool):
        conversation["id"] = ident = str(ident)  # new uploads read ids as text
    label = f"conversation {ident!r}" if ident is not None else f"conversation #{index}"

    assigned: str | None = None
    if conversation.get("processingStatus") is None:
        processed_at = conversation.get("processedAt")
        if processed_at in (None, False) or (
            isinstance(processed_at, str) and not processed_at.strip()
        ):
            assigned = "pending"
            conversation["processedAt"] = None
        elif isinstance(processed_at, str):
            assigned = "success"
        else:
            raise UnreadableDocumentError(
                f"{label}: processedAt is {processed_at!r}, neither a timestamp nor empty"
            )
        conversation["processingStatus"] = assigned
        conversation["retryCount"] = 0
        conversation["processingError"] = None
    elif conversation["processingStatus"] not in STATUSES:
        raise UnreadableDocumentError(
            f"{label}: unknown processingStatus {conversation['processingStatus']!r}"
        )
    else:
        conversation.setdefault("retryCount", 0)
        conversation.setdefault("processingError", None)
        conversation.setdefault("processedAt", None)
    conversation.setdefault("analysis", None)
    conversation.setdefault("source", LEGACY_SOURCE)
    if "startedAt" not in conversation or "endedAt" not in conversation:
        span = _message_span(conversation.get("messages"))
        if span is None:
            raise UnreadableDocumentError(
                f"{label}: no startedAt/endedAt and no message timestamps to derive them from"
            )
        conversation.setdefault("startedAt", span[0])
        conversation.setdefault("endedAt", span[1])
    return conversation, assigned


def _message_span(messages: Any) -> tuple[str, str] | None:
    """Earliest and latest message timestamp, as stored (ISO order when they all parse)."""
    if not isinstance(messages, list):
        return None
    stamps = [m["timestamp"] for m in messages if isinstance(m, dict) and m.get("timestamp")]
    stamps = [s for s in stamps if isinstance(s, str)]
    if not stamps:
        return None
    try:
        ordered = sorted(stamps, key=_instant)
    except ValueError:
        return stamps[0], stamps[-1]
    return ordered[0], ordered[-1]


def _instant(stamp: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _same_count(stored: Any, success: int) -> bool:
    return isinstance(stored, int) and not isinstance(stored, bool) and stored == success


def _same_summary(stored: Any, counts: StatusSummary) -> bool:
    if not isinstance(stored, dict):
        return False
    expected = counts.model_dump()
    return all(_same_count(stored.get(name), value) for name, value in expected.items())
