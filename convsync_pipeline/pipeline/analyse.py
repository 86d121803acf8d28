"""One analysis pass over a date, under its lock, with exact attempt accounting (SPEC 7).

The pass runs a sliding window of at most `concurrency` requests. Before a conversation is
sent it is saved as `processing`; each result is folded in by the status machine and saved
with the next window refill, so a crash loses only the conversations in flight, and those are
counted as one attempt by whoever takes the lock next. A system failure puts everything in
flight back to `pending` untouched and stops the pass.

Saves are strictly sequential (each a compare-and-swap on the version the previous one wrote)
and a conversation is sent only after the save that marked it has completed, so the time a
save takes is time a freed slot stays empty. Where the save runs is chosen by how long saves
take (`_Pass.save_async`): a folder-store save is a few milliseconds of encoding and a dozen
system calls, and run in a worker thread it took twice as long, because after each system
call that thread waits for the GIL while the event loop parses responses. Such saves run on
the loop. Saves that are mostly waiting on a network (S3 round trips, GIL released) move to a
worker thread, so responses keep being read meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import PrivateAttr

from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import (
    Analysis,
    Analyzer,
    ConversationAnalysisError,
    SystemAnalysisError,
    TokenUsage,
)
from convsync_pipeline.core.document import Conversation, DateDocument, dump_json
from convsync_pipeline.core.priority import urgency
from convsync_pipeline.pipeline.documents import LoadedDocument, load_document, save_document
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLocks, Lease, Store

log = logging.getLogger("convsync")

# A save that takes longer than this (median of the last few on the loop) is mostly waiting
# on a network: later saves of the pass run in a worker thread. A folder-store save of a
# 1,000-conversation date takes about 5 ms on the benchmark machine (median; the slowest
# tenth under 17 ms at a load of 3.8); S3 saves take tens to hundreds of milliseconds.
THREAD_SAVE_AFTER_SECONDS = 0.025
_SAVES_MEASURED = 5


class AnalysisSystemError(Exception):
    """The analyser cannot work at all; nothing was charged an attempt. Message says what to fix."""


@dataclass
class AnalysisReport:
    date: str
    analyzer: str = ""
    model: str = ""
    recovered_interrupted: int = 0
    selected: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    newly_failed: int = 0
    still_due: int = 0
    deferred: int = 0  # due, but beyond batch_size: left for the next run
    saves: int = 0
    seconds: float = 0.0
    usage: TokenUsage = field(default_factory=TokenUsage)
    errors: Counter[str] = field(default_factory=Counter)
    version: int = 0

    @property
    def needs_retry(self) -> bool:
        """Conversations failed this pass but have attempts left: the step should retry."""
        return self.still_due > 0 and self.failed_attempts > 0


_EMPTY_CONVERSATIONS = b'"conversations": []'


class _IncrementalDocument(DateDocument):
    """A date document that, when saved, re-encodes only the conversations that changed.

    A pass saves the whole document at every window refill; re-encoding every conversation
    each time made the saves, not the analyser, the bottleneck of a large date (about 100 ms
    per save at 1,000 conversations, while each slot of the window waited for it). The bytes
    are exactly `DateDocument.to_json_bytes()`: each conversation is encoded by `dump_json`
    on its own and re-indented to its depth (JSON strings escape newlines, so every newline
    in a fragment is layout), and a conversation object is reused only if it is the very
    object encoded before (conversations are replaced, never mutated, by the status machine).
    It is still saved only by `save_document`: seal, lease check and compare-and-swap.
    """

    # (conversation, its encoding) by position, as last saved; shared by model_copy's copies.
    # A pass replaces conversations in place and never reorders them, so a position whose
    # object is the very one encoded before is reused without a dictionary lookup.
    _encoded: list[tuple[Conversation, bytes]] = PrivateAttr(default_factory=list)

    @classmethod
    def of(cls, document: DateDocument) -> _IncrementalDocument:
        fields = {name: getattr(document, name) for name in DateDocument.model_fields}
        return cls.model_construct(
            _fields_set=document.model_fields_set, **fields, **(document.model_extra or {})
        )

    def to_json_bytes(self) -> bytes:
        shell = dump_json(
            self.model_copy(update={"conversations": []}).model_dump(
                by_alias=True, exclude_none=False
            )
        )
        conversations = self.conversations
        if not conversations:
            return shell
        head, found, tail = shell.partition(_EMPTY_CONVERSATIONS)
        if not found or _EMPTY_CONVERSATIONS in tail:  # an encoding this splice does not know
            return super().to_json_bytes()
        previous = self._encoded
        same_positions = len(previous) == len(conversations)
        current: list[tuple[Conversation, bytes]] = []
        for index, conversation in enumerate(conversations):
            hit = previous[index] if same_positions else None
            if hit is None or hit[0] is not conversation:
                encoded = dump_json(conversation.model_dump(by_alias=True, exclude_none=False))
                hit = (conversation, encoded.replace(b"\n", b"\n  "))  # depth 2 in the document
            current.append(hit)
        previous[:] = current
        # One join, one copy of the whole document: the list's opening and closing (with the
        # rest of the shell) ride on the first and last fragment.
        pieces = [hit[1] for hit in current]
        pieces[0] = head + b'"conversations": [\n  ' + pieces[0]
        pieces[-1] = pieces[-1] + b"\n ]" + tail
        return b",\n  ".join(pieces)


class _Pass:
    """Mutable state of one pass: the conversations, the stored version and the counters."""

    def __init__(self, store: Store, loaded: LoadedDocument, lease: Lease, report: AnalysisReport):
        self.store = store
        self.loaded = LoadedDocument(_IncrementalDocument.of(loaded.document), loaded.token)
        self.lease = lease
        self.report = report
        self.conversations: list[Conversation] = list(loaded.document.conversations)
        self.dirty = False
        self.save_in_thread = False
        self._loop_save_seconds: deque[float] = deque(maxlen=_SAVES_MEASURED)

    def update(self, index: int, conversation: Conversation) -> None:
        self.conversations[index] = conversation
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        document = self.loaded.document.model_copy(update={"conversations": self.conversations})
        self.loaded = save_document(self.store, self.loaded, document, self.lease)
        self.conversations = list(self.loaded.document.conversations)
        self.report.saves += 1
        self.dirty = False

    async def save_async(self) -> None:
        """`save()` from the event loop: on the loop while saves are quick, else in a worker
        thread (see the module docstring). Either way it has completed when this returns."""
        if not self.dirty:
            return
        if self.save_in_thread:
            await asyncio.to_thread(self.save)
            return
        started = time.perf_counter()
        self.save()
        timings = self._loop_save_seconds
        timings.append(time.perf_counter() - started)
        if (
            len(timings) == timings.maxlen
            and statistics.median(timings) > THREAD_SAVE_AFTER_SECONDS
        ):
            self.save_in_thread = True


def analyse_date(
    store: Store,
    locks: DateLocks,
    settings: Settings,
    make_analyzer: Callable[[], Analyzer],
    date: str,
    owner: str,
) -> AnalysisReport:
    """Hold the date lock for the whole pass; return what happened."""
    started = time.monotonic()
    with locks.date_lock(date, owner) as lease:
        report = AnalysisReport(date=date)
        run = _Pass(store, load_document(store, date), lease, report)
        try:
            asyncio.run(_analyse(run, settings, make_analyzer))
        finally:
            report.seconds = round(time.monotonic() - started, 3)
            report.version = run.loaded.document.version
        return report


def _recover_interrupted(run: _Pass, max_attempts: int) -> None:
    for index, conversation in enumerate(run.conversations):
        if conversation.processing_status == "processing":
            run.update(index, status.recover_interrupted(conversation, max_attempts))
            run.report.recovered_interrupted += 1
            run.report.failed_attempts += 1
            if run.conversations[index].processing_status == "failed":
                run.report.newly_failed += 1


def _select(run: _Pass, settings: Settings) -> list[int]:
    due = [i for i, c in enumerate(run.conversations) if status.is_due(c, settings.max_attempts)]
    due.sort(key=lambda i: -urgency(run.conversations[i]))  # stable: document order otherwise
    if settings.batch_size is not None and len(due) > settings.batch_size:
        run.report.deferred = len(due) - settings.batch_size
        due = due[: settings.batch_size]
    run.report.selected = len(due)
    return due


async def _analyse(run: _Pass, settings: Settings, make_analyzer: Callable[[], Analyzer]) -> None:
    _recover_interrupted(run, settings.max_attempts)
    run.save()
    queue = _select(run, settings)
    if not queue:
        return
    analyzer = make_analyzer()
    run.report.analyzer, run.report.model = analyzer.name, analyzer.model
    try:
        try:
            await analyzer.preflight()
        except SystemAnalysisError as error:
            raise AnalysisSystemError(str(error)) from None
        await _window(run, settings, analyzer, queue)
    finally:
        await analyzer.aclose()
        run.report.still_due = (
            sum(1 for c in run.conversations if status.is_due(c, settings.max_attempts))
            - run.report.deferred
        )


async def _window(run: _Pass, settings: Settings, analyzer: Analyzer, queue: list[int]) -> None:
    concurrency = settings.analysis_concurrency
    refill_at = max(1, math.ceil(concurrency / 8))  # fewer saves, nearly full window
    waiting = list(reversed(queue))
    in_flight: dict[asyncio.Task[Analysis], int] = {}
    system_error: SystemAnalysisError | None = None
    while True:
        free = concurrency - len(in_flight)
        starting: list[int] = []
        if system_error is None and waiting and (not in_flight or free >= refill_at):
            while waiting and len(starting) < free:
                starting.append(waiting.pop())
            for index in starting:
                run.update(index, status.begin_attempt(run.conversations[index]))
        if starting or (run.dirty and not in_flight):
            await run.save_async()  # completed before anything it marked is sent
        for index in starting:
            task = asyncio.create_task(analyzer.analyze(run.conversations[index]))
            in_flight[task] = index
        if not in_flight:
            break
        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            index = in_flight.pop(task)
            outcome = _fold(run, index, task, settings.max_attempts)
            if isinstance(outcome, SystemAnalysisError) and system_error is None:
                system_error = outcome  # start nothing more; let what was sent finish honestly
    if system_error is not None:
        raise AnalysisSystemError(str(system_error))


def _fold(
    run: _Pass, index: int, task: asyncio.Task[Analysis], max_attempts: int
) -> SystemAnalysisError | None:
    """Apply one finished request to its conversation through the status machine."""
    conversation = run.conversations[index]
    report = run.report
    if task.cancelled():
        run.update(index, status.release_unattempted(conversation))
        return None
    error = task.exception()
    if error is None:
        analysis = task.result()
        run.update(index, status.record_success(conversation, analysis.model_dump()))
        report.succeeded += 1
        usage = analysis.usage
        report.usage = TokenUsage(
            promptTokens=report.usage.promptTokens + usage.promptTokens,
            completionTokens=report.usage.completionTokens + usage.completionTokens,
            cachedTokens=report.usage.cachedTokens + usage.cachedTokens,
            totalTokens=report.usage.totalTokens + usage.totalTokens,
        )
        return None
    if isinstance(error, SystemAnalysisError):
        run.update(index, status.release_unattempted(conversation))
        return error
    if isinstance(error, ConversationAnalysisError):
        message = str(error)
    else:  # a bug or an unexpected library error: still one failed attempt, with its cause kept
        message = f"unexpected {type(error).__name__}: {error}"
        log.warning("analysis of %s failed unexpectedly: %s", conversation.id, message)
    updated = status.record_failure(conversation, message, max_attempts)
    run.update(index, updated)
    report.failed_attempts += 1
    report.errors[message[:120]] += 1
    if updated.processing_status == "failed":
        report.newly_failed += 1
    return None
