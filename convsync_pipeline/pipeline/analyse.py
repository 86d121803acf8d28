"""One analysis pass over a date, under its lock, with exact attempt accounting (SPEC 7).

The pass runs a sliding window of at most `concurrency` requests. Every write is one entry
of the date's log (SPEC 5a, `pipeline/documents.py`): the results that arrived since the
previous entry, and the conversations about to be sent marked `processing`. A conversation
is sent only after the entry marking it has been created, so a crash loses only the
conversations in flight, and those are counted as one attempt by whoever takes the lock
next. A system failure puts everything in flight back to `pending` untouched and stops the
pass. Each entry costs what changed (a few hundred bytes), whatever the size of the date;
the document itself is rewritten (a checkpoint) only when the unfolded log has grown in
proportion to it (`core.journal.checkpoint_due`), in a worker thread while the window goes
on, and once at the end of the pass, so afterwards `conversations/D.json` alone is current.

Entries are strictly sequential (entry n + 1 is written after entry n) and the time one
takes is time a freed slot stays empty. Where it runs is chosen by how long writes take
(`_Pass.write_async`): a folder-store entry is a small file and two fsyncs (a few ms,
mostly waiting on the disk with the GIL released) and runs on the loop; writes that take
longer (S3 round trips) move to a worker thread, so responses keep being read meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import (
    Analysis,
    Analyzer,
    ConversationAnalysisError,
    SystemAnalysisError,
    TokenUsage,
)
from convsync_pipeline.core.document import Conversation
from convsync_pipeline.core.journal import Change, DateState
from convsync_pipeline.core.priority import urgency
from convsync_pipeline.core.redaction import Redactor
from convsync_pipeline.pipeline.documents import (
    DateWriter,
    Draft,
    LoadedDocument,
    WriteCounts,
    load_document,
)
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLocks, Lease, LeaseLostError, Store

if TYPE_CHECKING:  # the batch path imports the openai SDK: only when it runs
    from convsync_pipeline.analyzers.openai_batch import BatchClient
    from convsync_pipeline.pipeline.batch import BatchOutcome

log = logging.getLogger("convsync")

# A write that takes longer than this (median of the last few on the loop) is mostly waiting
# on a network: later writes of the pass run in a worker thread. A folder-store entry takes
# about 8 ms on the benchmark machine (two fsyncs); S3 writes take tens of milliseconds.
THREAD_SAVE_AFTER_SECONDS = 0.025
_SAVES_MEASURED = 5


@dataclass(frozen=True)
class Reanalyse:
    """Make `success` conversations of another analysis version due again (SPEC 7) in the
    pass's first entry, under the same lock: `target` is the version of the analyser about
    to run; conversations at `if_version_not` are left alone too (`status.wants_reanalysis`)."""

    target: str
    if_version_not: str | None = None


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
    saves: int = 0  # document checkpoints
    entries: int = 0  # log entries written
    bytes_written: int = 0  # entries, checkpoints and the id index
    seconds: float = 0.0
    usage: TokenUsage = field(default_factory=TokenUsage)
    errors: Counter[str] = field(default_factory=Counter)
    version: int = 0
    reanalysis_marked: int = 0  # success conversations made due again for a new version
    reanalysis_failed: int = 0  # re-analyses that spent all attempts (old answer kept)
    mode: str = "live"  # how this pass sent what was due: live, batch (or nothing to send)
    batch: BatchOutcome | None = None  # what the batch part did (folded, submitted)

    @property
    def needs_retry(self) -> bool:
        """Conversations failed this pass but have attempts left: the step should retry."""
        return self.still_due > 0 and self.failed_attempts > 0

    def count_writes(self, counts: WriteCounts) -> None:
        self.saves, self.entries = counts.checkpoints, counts.entries
        self.bytes_written = counts.bytes_written


class _Pass:
    """Mutable state of one pass: the date's state, results not yet written, the counters."""

    def __init__(
        self,
        store: Store,
        loaded: LoadedDocument,
        lease: Lease,
        report: AnalysisReport,
        max_attempts: int,
        redactor: Redactor,
    ):
        self.writer = DateWriter.over(store, loaded, lease)
        self.redactor = redactor
        self.report = report
        self.max_attempts = max_attempts
        self.results: list[Change] = []  # finished requests, for the next entry
        self.write_in_thread = False
        self._loop_write_seconds: deque[float] = deque(maxlen=_SAVES_MEASURED)
        self._checkpointing: asyncio.Task[int] | None = None

    @property
    def state(self) -> DateState:
        state = self.writer.state
        assert isinstance(state, DateState)
        return state

    @property
    def conversations(self) -> list[Conversation]:
        """As of the last entry written (results not yet written are in `results`)."""
        return self.state.conversations

    def result(self, index: int, updated: Conversation) -> None:
        self.results.append(Change.between(self.conversations[index], updated))

    def write(self, results: list[Change], starting: list[int]) -> list[int]:
        """One entry: `results`, `starting` marked processing and, until our first entry is
        written, the recovery of anything found `processing` (an older holder's entry folded
        at our number can mark more). Returns the indices it marked: only those may be sent."""
        marked: list[int] = []

        recovered: list[Change] = []

        def draft() -> Draft:
            changes: list[Change] = []
            marked.clear()
            recovered[:] = [] if self.writer.wrote_entry else self._recoveries()
            changes += recovered
            changes += results
            for index in starting:
                conversation = self.conversations[index]
                if status.is_due(conversation, self.max_attempts):
                    changes.append(Change.between(conversation, status.begin_attempt(conversation)))
                    marked.append(index)
            return Draft(changes=changes)

        if self.writer.append(draft) is not None:
            self._charge_recovered(recovered)
        return marked

    def _charge_recovered(self, recovered: list[Change]) -> None:
        report = self.report
        report.recovered_interrupted += len(recovered)
        report.failed_attempts += len(recovered)
        report.newly_failed += sum(1 for change in recovered if change.to == "failed")
        # A re-analysis out of attempts returns to its old answer rather than `failed`.
        report.reanalysis_failed += sum(1 for change in recovered if change.to == "success")

    def mark_reanalysis(self, request: Reanalyse) -> None:
        """One entry marking every conversation the request wants (nothing if none)."""
        marked: list[Change] = []
        recovered: list[Change] = []

        def draft() -> Draft:
            # As in `write`: an older holder's entry folded at our number may mark more.
            recovered[:] = [] if self.writer.wrote_entry else self._recoveries()
            marked[:] = [
                Change.between(c, status.mark_for_reanalysis(c, request.target))
                for c in self.conversations
                if status.wants_reanalysis(c, request.target, request.if_version_not)
            ]
            return Draft(changes=recovered + marked)

        if self.writer.append(draft) is not None:
            self._charge_recovered(recovered)
            self.report.reanalysis_marked = len(marked)

    def _recoveries(self) -> list[Change]:
        changes = []
        for conversation in self.conversations:
            # One waiting on a batch is not interrupted: the batch pass settles it.
            if conversation.processing_status == "processing" and status.batch_of(
                conversation
            ) is None:
                recovered = status.recover_interrupted(conversation, self.max_attempts)
                changes.append(Change.between(conversation, recovered))
        return changes

    async def write_async(self, starting: list[int], *, recover: bool = False) -> list[int]:
        """`write()` of the results so far, from the event loop: on the loop while writes are
        quick, else in a worker thread (see the module docstring). Completed on return.
        `recover`: write even with nothing else to write (the recovery entry)."""
        results, self.results = self.results, []
        if not results and not starting and not recover:
            return []
        if self.write_in_thread:
            marked = await asyncio.to_thread(self.write, results, starting)
        else:
            started = time.perf_counter()
            marked = self.write(results, starting)
            timings = self._loop_write_seconds
            timings.append(time.perf_counter() - started)
            if (
                len(timings) == timings.maxlen
                and statistics.median(timings) > THREAD_SAVE_AFTER_SECONDS
            ):
                self.write_in_thread = True
        self._maybe_checkpoint()
        return marked

    def _maybe_checkpoint(self) -> None:
        """Start a checkpoint in a worker thread if one is due and none is running; the window
        goes on meanwhile (the checkpoint folds a snapshot: later entries stay unfolded)."""
        running = self._checkpointing
        if running is not None and not running.done():
            return
        if running is not None:
            self._checkpointing = None
            running.result()  # a failed checkpoint stops the pass
        if self.writer.checkpoint_due():
            snapshot = list(self.conversations)
            self._checkpointing = asyncio.ensure_future(
                asyncio.to_thread(self.writer.checkpoint_of, snapshot, self.writer.last_entry)
            )

    async def finish(self) -> None:
        """Write what is left, then checkpoint: afterwards the document alone is current."""
        await self.write_async([])
        if self._checkpointing is not None:
            running, self._checkpointing = self._checkpointing, None
            await running
        if self.writer.unfolded_entries or (self.writer.token is None and self.conversations):
            await asyncio.to_thread(self.writer.checkpoint)


def choose_mode(settings: Settings, analyzer: str, due: int, date: str) -> str:
    """`live` or `batch` for this pass (CONVSYNC_OPENAI_MODE; `auto`: batch above the
    threshold, never for the current day, whose answers are wanted now)."""
    if analyzer != "openai" or settings.openai_mode == "live":
        return "live"
    if settings.openai_mode == "batch":
        return "batch"
    today = dt.datetime.now(settings.tz).date().isoformat()
    return "batch" if due > settings.batch_threshold and date != today else "live"


def analyse_date(
    store: Store,
    locks: DateLocks,
    settings: Settings,
    make_analyzer: Callable[[], Analyzer],
    date: str,
    owner: str,
    make_batch_client: Callable[[], BatchClient] | None = None,
    reanalyse: Reanalyse | None = None,
) -> AnalysisReport:
    """Hold the date lock for the whole pass; return what happened.

    With `make_batch_client` (the openai analyser), the pass first folds the date's finished
    batches, then sends what is due live or as a new batch (`choose_mode`). `reanalyse`: first
    make the conversations it asks for due again (in the same pass, under the same lock),
    whichever way they are then sent."""
    started = time.monotonic()
    with locks.date_lock(date, owner) as lease:
        report = AnalysisReport(date=date)
        run = _Pass(
            store,
            load_document(store, date),
            lease,
            report,
            settings.max_attempts,
            settings.redactor,
        )
        try:
            if any(
                c.processing_status == "processing" and status.batch_of(c) is None
                for c in run.conversations
            ):
                run.write([], [])  # the recovery entry: charged before anything else
            if reanalyse is not None:
                run.mark_reanalysis(reanalyse)
            if make_batch_client is None:
                asyncio.run(_analyse(run, settings, make_analyzer))
            else:
                _with_batches(run, store, lease, settings, make_analyzer, make_batch_client)
        finally:
            report.seconds = round(time.monotonic() - started, 3)
            report.version = run.writer.document_version
            report.count_writes(run.writer.counts)
        return report


def _with_batches(
    run: _Pass,
    store: Store,
    lease: Lease,
    settings: Settings,
    make_analyzer: Callable[[], Analyzer],
    make_batch_client: Callable[[], BatchClient],
) -> None:
    from convsync_pipeline.pipeline.batch import BatchPass, BatchSystemError

    client = make_batch_client()
    batches = BatchPass(
        store, run.writer, lease, client,
        model=settings.openai_model, max_attempts=settings.max_attempts,
        redactor=settings.redactor,
    )
    report = run.report
    report.batch = batches.outcome
    try:
        try:
            if batches.has_work():
                batches.collect()
            due = sum(1 for c in run.conversations if status.is_due(c, settings.max_attempts))
            report.mode = choose_mode(settings, "openai", due, run.writer.date)
            if report.mode == "live":
                asyncio.run(_analyse(run, settings, make_analyzer))
                return
            queue = _select(run, settings)
            report.analyzer, report.model = "openai", settings.openai_model
            if queue:
                batches.submit(queue)
        except LeaseLostError:
            raise
        except (BatchSystemError, SystemAnalysisError) as error:
            _finish_sync(run)
            raise AnalysisSystemError(str(error)) from None
        except BaseException:
            _finish_sync(run)
            raise
        _finish_sync(run)
    finally:
        client.close()
        outcome = batches.outcome
        report.succeeded += outcome.succeeded
        if report.mode == "batch":
            report.still_due = (
                sum(1 for c in run.conversations if status.is_due(c, settings.max_attempts))
                - report.deferred
            )
        report.failed_attempts += outcome.failed_attempts
        report.newly_failed += outcome.newly_failed
        for message, count in outcome.errors.items():
            report.errors[message] += count


def _finish_sync(run: _Pass) -> None:
    asyncio.run(run.finish())


def _select(run: _Pass, settings: Settings) -> list[int]:
    due = [i for i, c in enumerate(run.conversations) if status.is_due(c, settings.max_attempts)]
    due.sort(key=lambda i: -urgency(run.conversations[i]))  # stable: document order otherwise
    if settings.batch_size is not None and len(due) > settings.batch_size:
        run.report.deferred = len(due) - settings.batch_size
        due = due[: settings.batch_size]
    run.report.selected = len(due)
    return due


async def _analyse(run: _Pass, settings: Settings, make_analyzer: Callable[[], Analyzer]) -> None:
    if any(
        c.processing_status == "processing" and status.batch_of(c) is None
        for c in run.conversations
    ):
        # The recovery entry: charged before anything is selected.
        await run.write_async([], recover=True)
    queue = _select(run, settings)
    try:
        if queue:
            await _analyse_queue(run, settings, make_analyzer, queue)
    except LeaseLostError:
        raise  # the date is someone else's now: nothing more may be written
    except BaseException:
        await run.finish()  # what finished, and what a system failure released, is kept
        raise
    else:
        await run.finish()
    finally:
        run.report.still_due = (
            sum(1 for c in run.conversations if status.is_due(c, settings.max_attempts))
            - run.report.deferred
        )


async def _analyse_queue(
    run: _Pass, settings: Settings, make_analyzer: Callable[[], Analyzer], queue: list[int]
) -> None:
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


async def _window(run: _Pass, settings: Settings, analyzer: Analyzer, queue: list[int]) -> None:
    concurrency = settings.analysis_concurrency
    refill_at = max(1, math.ceil(concurrency / 8))  # fewer entries, nearly full window
    waiting = list(reversed(queue))
    in_flight: dict[asyncio.Task[Analysis], int] = {}
    system_error: SystemAnalysisError | None = None
    while True:
        free = concurrency - len(in_flight)
        starting: list[int] = []
        if system_error is None and waiting and (not in_flight or free >= refill_at):
            while waiting and len(starting) < free:
                starting.append(waiting.pop())
        if starting or (run.results and not in_flight):
            starting = await run.write_async(starting)  # created before anything it marks is sent
        for index in starting:
            task = asyncio.create_task(analyzer.analyze(run.conversations[index]))
            in_flight[task] = index
        if not in_flight:
            if waiting and system_error is None:
                continue  # everything picked was no longer due: pick again
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
    """Turn one finished request into its change through the status machine (written with
    the next entry)."""
    conversation = run.conversations[index]
    report = run.report
    if task.cancelled():
        run.result(index, status.release_unattempted(conversation))
        return None
    error = task.exception()
    if error is None:
        analysis = task.result()
        run.result(index, status.record_success(conversation, analysis.model_dump()))
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
        run.result(index, status.release_unattempted(conversation))
        return error
    if isinstance(error, ConversationAnalysisError):
        message = str(error)
    else:  # a bug or an unexpected library error: still one failed attempt, with its cause kept
        message = f"unexpected {type(error).__name__}: {error}"
    # processingError is shown in the UI, the report and the CLI: a model's refusal or broken
    # output may echo the customer's words, so it is stored redacted.
    message = run.redactor(message)
    if not isinstance(error, ConversationAnalysisError):
        log.warning("analysis of %s failed unexpectedly: %s", conversation.id, message)
    updated = status.record_failure(conversation, message, max_attempts)
    run.result(index, updated)
    report.failed_attempts += 1
    report.errors[message[:120]] += 1
    if updated.processing_status == "failed":
        report.newly_failed += 1
    elif status.reanalysis_failed(updated):
        report.reanalysis_failed += 1
    return None
