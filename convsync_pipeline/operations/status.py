"""`convsync status`: per-date counts, and a note on everything that does not add up.

The counts come from the conversations themselves; the stored `processedCount`, `summary`
and the summary file's `documentVersion` are compared against them, because a mismatch there
is exactly the kind of drift the seed's fixes 5 and 7 are about.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from convsync_pipeline.core.document import DateDocument, StatusSummary
from convsync_pipeline.core.keys import document_key, summary_key
from convsync_pipeline.core.status import batch_of, reanalysis_failed
from convsync_pipeline.core.summary import answer_versions
from convsync_pipeline.operations import DocumentProblem, Progress, load_many, read_document
from convsync_pipeline.pipeline.documents import CorruptDocumentError, LoadedDocument
from convsync_pipeline.resources.analyzer import settings_analysis_version
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError, Store

NoteKind = Literal["inconsistent", "info"]
ANALYSIS_AND_SUMMARY = "ai_analysis,daily_summary"
_COUNTED = ("total", "pending", "processing", "success", "failed")


@dataclass(frozen=True)
class Note:
    date: str
    kind: NoteKind
    text: str

    def __str__(self) -> str:
        return f"{self.date}: {self.text}"


@dataclass
class DateStatus:
    date: str
    counts: StatusSummary | None = None  # None: the document could not be read
    processed_count: int | None = None
    version: int | None = None
    updated_at: str | None = None
    notes: list[Note] = field(default_factory=list)
    problem: DocumentProblem | None = None  # why `counts` is None
    # Standing answers (a success's, or one being re-analysed) of the current analysis
    # version, and of any version.
    at_current_version: int | None = None
    answers: int | None = None


@dataclass
class StatusReport:
    dates: list[DateStatus] = field(default_factory=list)

    @property
    def totals(self) -> StatusSummary:
        total = Counter[str]()
        for row in self.dates:
            if row.counts is not None:
                total.update({name: getattr(row.counts, name) for name in _COUNTED})
        return StatusSummary(**{name: total[name] for name in _COUNTED})

    @property
    def at_current_total(self) -> int:
        return sum(row.at_current_version or 0 for row in self.dates)

    @property
    def processed_total(self) -> int:
        return sum(row.processed_count or 0 for row in self.dates)

    def notes(self, kind: NoteKind | None = None) -> list[Note]:
        return [n for row in self.dates for n in row.notes if kind is None or n.kind == kind]


def collect_status(
    store: Store,
    settings: Settings,
    dates: Iterable[str],
    *,
    owner: str,
    progress: Progress | None = None,
) -> StatusReport:
    report = StatusReport()
    for date, found in load_many(store, dates, progress):
        if isinstance(found, DocumentProblem):
            row = DateStatus(date, problem=found)
            row.notes.append(Note(date, "inconsistent", str(found)))
        else:
            row = document_status(store, settings, found.document, owner=owner)
            _log_notes(row, found)
        report.dates.append(row)
    return report


def document_status(
    store: Store, settings: Settings, document: DateDocument, *, owner: str
) -> DateStatus:
    """One date's row and notes; `owner` names us if we briefly test the date lock."""
    counts = document.count_statuses()
    current = settings_analysis_version(settings)
    versions = answer_versions(document)
    row = DateStatus(
        date=document.date,
        counts=counts,
        processed_count=document.processed_count,
        version=document.version,
        updated_at=document.blob_meta.updated_at,
        at_current_version=versions.get(current, 0),
        answers=sum(versions.values()),
    )

    def note(kind: NoteKind, text: str) -> None:
        row.notes.append(Note(document.date, kind, text))

    if document.processed_count != counts.success:
        note(
            "inconsistent",
            f"processedCount is {document.processed_count} but {counts.success} "
            "conversation(s) are success",
        )
    stored = document.summary
    differing = [
        f"{name} {getattr(stored, name)} stored vs {getattr(counts, name)} counted"
        for name in _COUNTED
        if getattr(stored, name) != getattr(counts, name)
    ]
    if differing:
        note("inconsistent", "summary differs from the recount: " + ", ".join(differing))
    duplicates = [(i, n) for i, n in Counter(c.id for c in document.conversations).items() if n > 1]
    if duplicates:
        shown = ", ".join(f"{i!r} x{n}" for i, n in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        note("inconsistent", f"duplicate conversation ids: {shown}{more}")
    exhausted = sum(
        1
        for c in document.conversations
        if c.processing_status == "pending" and c.retry_count >= settings.max_attempts
    )
    if exhausted:
        note(
            "inconsistent",
            f"{exhausted} pending conversation(s) have no attempts left "
            f"(retryCount >= CONVSYNC_MAX_ATTEMPTS={settings.max_attempts}) and will never run; "
            "raise CONVSYNC_MAX_ATTEMPTS to give them more",
        )
    in_batches = sum(1 for c in document.conversations if batch_of(c) is not None)
    if in_batches:
        note(
            "info",
            f"{in_batches} conversation(s) waiting on OpenAI batches "
            f"(`convsync batches {document.date}`)",
        )
    if counts.processing > in_batches:
        kind, text = _processing_note(store, settings, document.date, owner)
        note(kind, text)
    batch_text = batch_note(store, document.date)
    if batch_text:
        note("info", batch_text)
    kind_text = _summary_note(store, document, counts)
    if kind_text:
        note(*kind_text)
    if counts.failed:
        note("info", f"{counts.failed} failed: see `convsync failed {document.date}`")
    others = {v: n for v, n in versions.items() if v != current}
    if others:
        shown = ", ".join(f"{n} of {v}" for v, n in sorted(others.items(), key=lambda i: -i[1]))
        note(
            "info",
            f"answers of other analysis versions ({shown}): `convsync reanalyse --from "
            f"{document.date} --to {document.date} --dry-run` says what bringing them to the "
            "current version would cost",
        )
    stopped = sum(1 for c in document.conversations if reanalysis_failed(c))
    if stopped:
        note(
            "info",
            f"{stopped} re-analysis(es) spent all attempts; old answers kept: see "
            f"`convsync failed {document.date}`",
        )
    bare = sum(
        1 for c in document.conversations if c.processing_status == "success" and c.analysis is None
    )
    if bare:
        note("info", f"{bare} success without an analysis (marked processed by the legacy system)")
    return row


def _log_notes(row: DateStatus, loaded: LoadedDocument) -> None:
    """What the date's log adds (SPEC 5a): entries not checkpointed yet, changes not applied."""
    count = loaded.unfolded_entries
    if count:
        row.notes.append(
            Note(
                row.date,
                "info",
                f"{count} log entr{'y' if count == 1 else 'ies'} after "
                f"{document_key(row.date)} (counted here); the next run or "
                "`convsync compact` folds them into the document",
            )
        )
    skipped = loaded.state.skipped if loaded.state is not None else []
    if skipped:
        shown = "; ".join(f"entry {s.entry}, {s.id}: {s.reason}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        row.notes.append(
            Note(row.date, "inconsistent", f"log changes not applied: {shown}{more}")
        )


def _processing_note(
    store: Store, settings: Settings, date: str, owner: str
) -> tuple[NoteKind, str]:
    """`processing` is normal while a run holds the lock; without one, its run died.

    Trying the lock (no wait, released at once) is the one check every backend answers the
    same way; the document is read again under it, so a run that just finished is not blamed.
    """
    try:
        with store.date_lock(date, owner, ttl_seconds=settings.lock_ttl_seconds, wait_seconds=0):
            try:
                stuck = sum(
                    1
                    for c in read_document(store, date).document.conversations
                    if c.processing_status == "processing" and batch_of(c) is None
                )
            except CorruptDocumentError as error:
                return "inconsistent", str(error)
    except DateLockedError as error:
        return "info", f"conversations processing; a run holds the lock: {error.holder}"
    if not stuck:
        return "info", "conversations were processing; the run has finished since"
    return (
        "inconsistent",
        f"{stuck} conversation(s) stuck processing while no run holds the lock "
        "(the next analysis counts it as one failed attempt)",
    )


def batch_note(store: Store, date: str) -> str | None:
    """The date's OpenAI batches in one line: states, tokens, cost at batch prices."""
    from convsync_pipeline.pipeline.ledger import read_ledger

    ledger = read_ledger(store, date)
    if ledger is None or not ledger.batches:
        return None
    from convsync_pipeline.analyzers.openai import BATCH_PRICE_FACTOR
    states: dict[str, int] = {}
    prompt = completion = 0
    cost = 0.0
    priced = False
    for record in ledger.batches:
        states[record.state] = states.get(record.state, 0) + 1
        prompt += record.usage.get("promptTokens", 0)
        completion += record.usage.get("completionTokens", 0)
        if record.estimated_cost_usd is not None:
            cost += record.estimated_cost_usd
            priced = True
    shown = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    money = (
        f"; estimated ${cost:.4f} at batch prices (live: ${cost / BATCH_PRICE_FACTOR:.4f})"
        if priced
        else ""
    )
    return (
        f"OpenAI batches: {shown}; {prompt:,} prompt + {completion:,} completion tokens{money}"
    )


def launch_command(date: str, assets: str) -> str:
    """The exact command that materialises `assets` (a dg selection) for one date."""
    return f"`dg launch --assets '{assets}' --partition {date}`"


def _summary_note(
    store: Store, document: DateDocument, counts: StatusSummary
) -> tuple[NoteKind, str] | None:
    """Whether `summaries/D.json` is missing or stale, and the step that actually fixes it:
    while conversations are still due, that is `ai_analysis` (the summary follows it)."""
    key = summary_key(document.date)
    due = counts.pending + counts.processing
    if due:
        step = (
            f"{due} conversation(s) still pending: materialise ai_analysis, then daily_summary "
            f"({launch_command(document.date, ANALYSIS_AND_SUMMARY)})"
        )
    else:
        step = f"materialise daily_summary ({launch_command(document.date, 'daily_summary')})"
    data = store.read(key)
    if data is None:
        return "info", f"{key} not written yet; {step}"
    try:
        version = json.loads(data).get("documentVersion")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "inconsistent", f"{key} is not valid JSON; {step}"
    if version != document.version:
        return (
            "inconsistent",
            f"{key} was computed from version {version} but {document_key(document.date)} "
            f"is at version {document.version}; {step}",
        )
    return None
