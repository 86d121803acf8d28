"""The batch pass of a date (SPEC 7, batch mode): fold finished batches, submit what is due.

Runs under the date lock, inside `pipeline.analyse.analyse_date`, writing through the date's
log like the live pass. The order of writes is what makes a crash anywhere safe:

1. the ledger (`batches/D.json`) gets a `submitting` record with our token;
2. a log entry marks the batch's conversations `processing` with `batchId` = the token;
3. the input file is uploaded, the batch created with the token in its metadata;
4. the ledger records the provider's batch id.

A run that died after 1 or 2 finds, on restart, a `submitting` record: it looks the token up
at the provider (`BatchClient.find`) and either records the batch it finds, or (none was
created) releases the conversations without an attempt: they were never sent. A conversation
`processing` under a batch is never charged as interrupted while the batch is alive; once the
batch is over, each of its lines is one attempt (an answer through the live validation, an
error line, a schema violation, or no answer at all), except when the whole batch failed for
a system reason: then nothing is charged and the run fails with one message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from convsync_pipeline.analyzers.openai import (
    build_messages,
    build_response_format,
    estimate_cost_usd,
)
from convsync_pipeline.analyzers.openai_batch import BatchClient, BatchInfo, analysis_from_body
from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import ConversationAnalysisError, TokenUsage
from convsync_pipeline.core.batch import (
    ENDED_STATES,
    MAX_BYTES_PER_FILE,
    MAX_REQUESTS_PER_FILE,
    custom_id,
    parse_results,
    request_line,
    split_files,
)
from convsync_pipeline.core.batch_ledger import BatchRecord, new_token
from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import Conversation
from convsync_pipeline.core.journal import Change
from convsync_pipeline.core.redaction import Redactor
from convsync_pipeline.pipeline.documents import DateWriter, Draft
from convsync_pipeline.pipeline.ledger import LedgerFile, parse_ledger, read_ledger
from convsync_pipeline.store.base import Lease, Store

log = logging.getLogger("convsync")


class BatchSystemError(Exception):
    """A batch failed as a whole, or the Batch API cannot be used: no attempt was spent."""


@dataclass
class BatchOutcome:
    """What the batch part of a pass did, for the report and the run's metadata."""

    submitted: list[dict[str, Any]] = field(default_factory=list)
    collected: list[dict[str, Any]] = field(default_factory=list)
    open: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    newly_failed: int = 0
    released: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ the pass
class BatchPass:
    """Collect and submit for one date, through `writer` (the pass's date writer)."""

    def __init__(
        self,
        store: Store,
        writer: DateWriter,
        lease: Lease,
        client: BatchClient,
        *,
        model: str,
        max_attempts: int,
        redactor: Redactor | None = None,
        max_requests: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.store, self.writer, self.lease, self.client = store, writer, lease, client
        self.date = writer.date
        self.model = model
        self.max_attempts = max_attempts
        self.redactor = redactor or Redactor()
        self.max_requests = max_requests or MAX_REQUESTS_PER_FILE
        self.max_bytes = max_bytes or MAX_BYTES_PER_FILE
        self.ledger = LedgerFile(store, self.date, lease)
        self.outcome = BatchOutcome()

    @property
    def conversations(self) -> list[Conversation]:
        return self.writer.state.conversations  # type: ignore[union-attr]

    def waiting(self) -> dict[str, list[int]]:
        """Conversation indices `processing` under each batch token."""
        tokens: dict[str, list[int]] = {}
        for index, conversation in enumerate(self.conversations):
            token = status.batch_of(conversation)
            if token is not None:
                tokens.setdefault(token, []).append(index)
        return tokens

    def has_work(self) -> bool:
        return bool(self.ledger.ledger.open_records()) or bool(self.waiting())

    def _write(self, build: Callable[[], list[Change]]) -> None:
        self.writer.append(lambda: Draft(changes=build()))

    # -------------------------------------------------------------------- collect
    def collect(self) -> None:
        """Fold every batch that is over; find batches a dead run created but never recorded.
        Raises BatchSystemError (after folding everything else) if one failed as a whole."""
        waiting = self.waiting()
        tokens = [r.token for r in self.ledger.ledger.open_records()]
        tokens += [t for t in waiting if t not in tokens]
        system_errors: list[str] = []
        for token in tokens:
            record = self.ledger.ledger.find(token)
            if record is None or record.state == "abandoned":
                self._release(token, "never created")  # marked, but no batch was ever made
                continue
            if record.state == "collected":
                self._settle(token, None, {})  # folded before, but a line was left waiting
                continue
            info: BatchInfo | None
            if record.state == "submitting":
                info = self.client.find(token)
                if info is None:
                    self.ledger.update(token, state="abandoned", error="never created")
                    self._release(token, "never created")
                    continue
                self.ledger.update(
                    token,
                    state="submitted",
                    batch_id=info.id,
                    provider_status=info.status,
                    request_counts=info.request_counts,
                )
            else:
                assert record.batch_id is not None
                info = self.client.retrieve(record.batch_id)
            if info.status not in ENDED_STATES:
                self.ledger.update(
                    token, provider_status=info.status, request_counts=info.request_counts
                )
                self.outcome.open.append(self._row(self.ledger.ledger.find(token)))
                continue
            error = self._fold(token, info)
            if error is not None:
                system_errors.append(error)
        if system_errors:
            raise BatchSystemError("; ".join(system_errors))

    def _mark_collected(self, token: str, info: BatchInfo, **fields: Any) -> None:
        """Record in the ledger that the batch `token` ended and was folded in."""
        self.ledger.update(
            token,
            state="collected",
            provider_status=info.status,
            request_counts=info.request_counts,
            collected_at=utc_now_iso(),
            collected_by=self.lease.owner,
            **fields,
        )
        self.outcome.collected.append(self._row(self.ledger.ledger.find(token)))

    def _fold(self, token: str, info: BatchInfo) -> str | None:
        """Fold one ended batch: the system message if it failed as a whole, else None."""
        record = self.ledger.ledger.find(token)
        model = record.model if record is not None and record.model else self.model
        failure = info.system_failure(model)
        if failure is not None:
            released = self._release(token, failure)
            self._mark_collected(token, info, released=released, error=failure)
            return failure
        results = parse_results(
            self.client.content(info.output_file_id), self.client.content(info.error_file_id)
        )
        succeeded, failed, usage = self._settle(token, info, results, model)
        self._mark_collected(
            token,
            info,
            succeeded=succeeded,
            failed_attempts=failed,
            usage=usage.model_dump(),
            estimated_cost_usd=estimate_cost_usd(model, usage, batch=True),
        )
        return None

    def _settle(
        self, token: str, info: BatchInfo | None, results: dict[str, Any], model: str = ""
    ) -> tuple[int, int, TokenUsage]:
        """One entry: every conversation still waiting on `token` gets its answer or is
        charged one attempt; returns (succeeded, failed attempts, tokens used)."""
        outcome = self.outcome
        counted = {"succeeded": 0, "failed": 0}
        totals = [TokenUsage()]
        ended = f"{info.status}" if info is not None else "over"
        batch_name = info.id if info is not None else token

        messages: list[str] = []

        def build() -> list[Change]:
            counted["succeeded"] = counted["failed"] = 0
            totals[0] = TokenUsage()
            messages.clear()
            changes = []
            for conversation in self.conversations:
                if status.batch_of(conversation) != token:
                    continue
                cid = custom_id(self.date, conversation.id, conversation.retry_count + 1)
                result = results.get(cid)
                message: str
                if result is not None and result.body is not None:
                    try:
                        analysis = analysis_from_body(result.body, model or self.model)
                    except ConversationAnalysisError as error:
                        message = str(error)
                    else:
                        updated = status.record_success(conversation, analysis.model_dump())
                        changes.append(Change.between(conversation, status.leave_batch(updated)))
                        counted["succeeded"] += 1
                        totals[0] = add_usage(totals[0], analysis.usage)
                        continue
                elif result is not None and result.expired:
                    message = f"unfinished when OpenAI batch {batch_name} expired"
                elif result is not None:
                    message = result.error or "the batch returned an error for this request"
                else:
                    message = f"OpenAI batch {batch_name} ended ({ended}) without an answer for it"
                # An error line may echo the request's words: stored redacted, as live.
                message = self.redactor(message)
                updated = status.record_failure(conversation, message, self.max_attempts)
                changes.append(Change.between(conversation, status.leave_batch(updated)))
                counted["failed"] += 1
                messages.append(message)
            return changes

        before = {c.id for c in self.conversations if c.processing_status == "failed"}
        self._write(build)
        outcome.succeeded += counted["succeeded"]
        outcome.failed_attempts += counted["failed"]
        outcome.newly_failed += sum(
            1 for c in self.conversations if c.processing_status == "failed" and c.id not in before
        )
        outcome.usage = add_usage(outcome.usage, totals[0])
        for message in messages:
            outcome.errors[message[:120]] = outcome.errors.get(message[:120], 0) + 1
        return counted["succeeded"], counted["failed"], totals[0]

    def _release(self, token: str, why: str) -> int:
        """Back to `pending` with no attempt spent: the batch never ran them."""
        count = [0]

        def build() -> list[Change]:
            changes = []
            for conversation in self.conversations:
                if status.batch_of(conversation) == token:
                    updated = status.leave_batch(status.release_unattempted(conversation))
                    changes.append(Change.between(conversation, updated))
            count[0] = len(changes)
            return changes

        self._write(build)
        self.outcome.released += count[0]
        if count[0]:
            log.info(
                "%s: %d conversations of batch %s released (%s)", self.date, count[0], token, why
            )
        return count[0]

    # -------------------------------------------------------------------- submit
    def submit(self, due: list[int]) -> None:
        """Send `due` (indices) in as many batches as the limits need, one model per file."""
        response_format = build_response_format()
        by_id = {self.conversations[i].id: i for i in due}
        lines = (
            (
                self.model,
                request_line(
                    self.date,
                    conversation.id,
                    conversation.retry_count + 1,
                    self.model,
                    build_messages(conversation, redactor=self.redactor),
                    response_format,
                ),
            )
            for conversation in (self.conversations[i] for i in due)
        )
        for input_file in split_files(lines, self.max_requests, self.max_bytes):
            self._submit_file(
                [by_id[line.conversation_id] for line in input_file.lines],
                input_file.content(),
                input_file.model,
            )

    def _submit_file(self, indices: list[int], content: bytes, model: str) -> None:
        token = new_token(self.date)
        record = BatchRecord(
            token=token, model=model, requests=len(indices), submitted_by=self.lease.owner
        )
        self.ledger.save(self.ledger.ledger.adding(record))  # 1. the token exists first
        wanted = {self.conversations[i].id for i in indices}

        def build() -> list[Change]:
            changes = []
            for conversation in self.conversations:
                if conversation.id in wanted and status.is_due(conversation, self.max_attempts):
                    marked = status.begin_batch_attempt(conversation, token)
                    changes.append(Change.between(conversation, marked))
            return changes

        self._write(build)  # 2. marked before anything is created at the provider
        file_id: str | None = None
        try:
            file_id = self.client.upload(content, f"{token}.jsonl")  # 3.
            info = self.client.create(file_id, self.date, token)
        except (openai.APIConnectionError, openai.InternalServerError) as error:
            # The answer was lost, not necessarily the batch: look for it, never send again.
            found = self.client.find(token) if file_id is not None else None
            if found is None:
                # Left `submitting`: the next run looks again before anything is released.
                raise self.client.system_error(error, "creating a batch") from None
            info = found
        except Exception as error:
            # Refused, or failed before create: nothing was created, nothing was sent.
            if isinstance(error, openai.OpenAIError):
                error = self.client.system_error(error, "creating a batch")
            self.ledger.update(token, state="abandoned", error=str(error)[:300])
            self._release(token, "not submitted")
            raise error from None
        self.ledger.update(  # 4. recorded the moment it exists
            token,
            state="submitted",
            batch_id=info.id,
            input_file_id=file_id,
            provider_status=info.status,
            request_counts=info.request_counts,
        )
        self.outcome.requests += len(indices)
        self.outcome.submitted.append(self._row(self.ledger.ledger.find(token)))
        log.info(
            "%s: submitted %d conversations as OpenAI batch %s", self.date, len(indices), info.id
        )

    @staticmethod
    def _row(record: BatchRecord | None) -> dict[str, Any]:
        assert record is not None
        return {
            "batch": record.batch_id or record.token,
            "state": record.provider_status or record.state,
            "requests": record.requests,
            "completed": record.request_counts.get("completed", 0),
            "failed": record.request_counts.get("failed", 0),
            "succeeded": record.succeeded,
            "failedAttempts": record.failed_attempts,
            "estimatedCostUsd": record.estimated_cost_usd,
        }


def add_usage(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage(
        promptTokens=a.promptTokens + b.promptTokens,
        completionTokens=a.completionTokens + b.completionTokens,
        cachedTokens=a.cachedTokens + b.cachedTokens,
        totalTokens=a.totalTokens + b.totalTokens,
    )


__all__ = [
    "BatchOutcome",
    "BatchPass",
    "BatchSystemError",
    "LedgerFile",
    "parse_ledger",
    "read_ledger",
]
