"""`convsync reanalyse`: bring a range of dates up to the current analysis version (SPEC 7).

A prompt, schema or model change makes a new analysis version. Re-analysis is asked for,
never automatic (unless CONVSYNC_REANALYSE_ON_VERSION_CHANGE): `plan_reanalysis` says what it
would send and cost without a lock or a write; `reanalyse_dates` runs each date's analysis
pass with a `Reanalyse` request, the same pass `ai_analysis` runs with `reanalyse: true`,
so marking and sending share the date lock, the log and the one status machine. Exactly once
per version: a conversation already at the version, already due, or whose re-analysis to
it has failed for good is not marked again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import Analyzer, TokenUsage
from convsync_pipeline.core.document import Conversation
from convsync_pipeline.operations import DocumentProblem, Progress, load_many
from convsync_pipeline.pipeline.analyse import AnalysisReport, Reanalyse, analyse_date
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import DateLockedError, DateLocks, Store

if TYPE_CHECKING:  # the openai SDK stays out of local runs
    from convsync_pipeline.analyzers.openai_batch import BatchClient


@dataclass
class DatePlan:
    date: str
    to_mark: int = 0  # success conversations of another version
    already_due: int = 0  # marked earlier, not re-analysed yet (sent by the next pass)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def conversations(self) -> int:
        return self.to_mark + self.already_due


@dataclass
class ReanalysisPlan:
    target: str
    analyzer: str
    model: str
    dates: list[DatePlan] = field(default_factory=list)
    problems: list[DocumentProblem] = field(default_factory=list)

    @property
    def conversations(self) -> int:
        return sum(d.conversations for d in self.dates)

    @property
    def usage(self) -> TokenUsage:
        prompt = sum(d.prompt_tokens for d in self.dates)
        completion = sum(d.completion_tokens for d in self.dates)
        return TokenUsage(
            promptTokens=prompt, completionTokens=completion, totalTokens=prompt + completion
        )

    def cost_usd(self, *, batch: bool = False) -> float | None:
        """Estimated cost (None: the model has no known price); the local analyser is free."""
        if self.analyzer != "openai":
            return 0.0
        from convsync_pipeline.analyzers.openai import estimate_cost_usd

        return estimate_cost_usd(self.model, self.usage, batch=batch)


def _token_estimator(settings: Settings) -> Callable[[Conversation], tuple[int, int]]:
    """(prompt, completion) tokens one request for the conversation is expected to use."""
    if settings.analyzer == "openai":
        from convsync_pipeline.analyzers.openai import (
            EXPECTED_COMPLETION_TOKENS,
            build_messages,
            estimate_tokens,
        )

        def openai_tokens(conversation: Conversation) -> tuple[int, int]:
            total = estimate_tokens(build_messages(conversation, redact=settings.redact))
            return total - EXPECTED_COMPLETION_TOKENS, EXPECTED_COMPLETION_TOKENS

        return openai_tokens

    def local_tokens(conversation: Conversation) -> tuple[int, int]:  # as the local analyser
        return sum(len(m.content.split()) for m in conversation.messages), 0

    return local_tokens


def plan_reanalysis(
    store: Store,
    settings: Settings,
    dates: Iterable[str],
    target: str,
    *,
    if_version_not: str | None = None,
    progress: Progress | None = None,
) -> ReanalysisPlan:
    """What a re-analysis of `dates` to `target` would send: no lock taken, nothing written."""
    plan = ReanalysisPlan(
        target=target,
        analyzer=settings.analyzer,
        model=settings.openai_model if settings.analyzer == "openai" else "local",
    )
    tokens = _token_estimator(settings)
    for date, found in load_many(store, dates, progress):
        if isinstance(found, DocumentProblem):
            plan.problems.append(found)
            continue
        row = DatePlan(date)
        for conversation in found.document.conversations:
            if status.wants_reanalysis(conversation, target, if_version_not):
                row.to_mark += 1
            elif status.in_reanalysis(conversation) and status.is_due(
                conversation, settings.max_attempts
            ):
                row.already_due += 1
            else:
                continue
            prompt, completion = tokens(conversation)
            row.prompt_tokens += prompt
            row.completion_tokens += completion
        plan.dates.append(row)
    return plan


def reanalyse_dates(
    store: Store,
    locks: DateLocks,
    settings: Settings,
    make_analyzer: Callable[[], Analyzer],
    dates: Iterable[str],
    target: str,
    *,
    owner: str,
    if_version_not: str | None = None,
    on_date: Callable[[AnalysisReport], None] | None = None,
    make_batch_client: Callable[[], BatchClient] | None = None,
    on_locked: Callable[[DateLockedError], None] | None = None,
) -> list[AnalysisReport]:
    """Each date: a pass that marks and analyses, then (like the asset's retry policy) up to
    CONVSYNC_MAX_ATTEMPTS passes in all while conversations failed and have attempts left.
    With `make_batch_client` (openai), CONVSYNC_OPENAI_MODE decides, as in `ai_analysis`,
    whether they are sent live or submitted as a batch (whose answers later runs fold in).
    With `on_locked`, a date another run holds is reported to it and skipped.
    Raises DateLockedError, StoreError or AnalysisSystemError as `analyse_date` does."""
    request = Reanalyse(target=target, if_version_not=if_version_not)
    reports = []
    for date in dates:
        try:
            report = analyse_date(
                store, locks, settings, make_analyzer, date, owner,
                make_batch_client=make_batch_client, reanalyse=request,
            )
        except DateLockedError as error:
            if on_locked is None:
                raise
            on_locked(error)  # another run holds it: the other dates go on
            continue
        passes = 1
        marked = report.reanalysis_marked
        while report.needs_retry and passes < settings.max_attempts:
            time.sleep(settings.retry_delay_seconds)
            retry = analyse_date(
                store, locks, settings, make_analyzer, date, owner,
                make_batch_client=make_batch_client, reanalyse=request,
            )
            retry.reanalysis_marked += marked
            _add_counts(retry, report)
            report, passes = retry, passes + 1
        reports.append(report)
        if on_date is not None:
            on_date(report)
    return reports


def _add_counts(into: AnalysisReport, earlier: AnalysisReport) -> None:
    """A date's later pass reports what all its passes did."""
    into.selected = max(into.selected, earlier.selected)
    into.succeeded += earlier.succeeded
    into.failed_attempts += earlier.failed_attempts
    into.reanalysis_failed += earlier.reanalysis_failed
    into.recovered_interrupted += earlier.recovered_interrupted
    into.seconds += earlier.seconds
    into.usage = TokenUsage(
        promptTokens=into.usage.promptTokens + earlier.usage.promptTokens,
        completionTokens=into.usage.completionTokens + earlier.usage.completionTokens,
        cachedTokens=into.usage.cachedTokens + earlier.usage.cachedTokens,
        totalTokens=into.usage.totalTokens + earlier.usage.totalTokens,
    )
