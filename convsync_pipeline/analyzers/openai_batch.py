"""The OpenAI Batch API calls convsync makes, and nothing else (SPEC 7, batch mode).

Upload an input file (`purpose="batch"`, with an expiry so files do not pile up), create a
batch with metadata naming the date and our submission token, find a batch by that token
(`batches.list` has no metadata filter: page through it), retrieve, read a file, cancel.

`batches.create` is not idempotent, and the SDK retries a POST that timed out: a retry could
create a second batch. So create is sent with `max_retries=0`, and when its answer is lost the
caller looks the batch up by token instead of sending it again. Failures of the set-up (key,
quota, unreachable server, unknown model) raise `SystemAnalysisError` with one message
saying what to fix; they cost no conversation an attempt. Messages never carry the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from convsync_pipeline.analyzers.openai import (
    DEFAULT_BASE_URL,
    OpenAIAnalyzer,
    _usage,
    _validation_message,
    openai_analysis_version,
    scrub_secrets,
)
from convsync_pipeline.core.analysis import Analysis, ConversationAnalysisError, SystemAnalysisError
from convsync_pipeline.core.batch import BATCH_ENDPOINT, COMPLETION_WINDOW

TOKEN_KEY = "convsync_token"
DATE_KEY = "convsync_date"
FILE_EXPIRY_SECONDS = 30 * 24 * 3600  # input files: long after the 24 h window has closed
OUTPUT_EXPIRY_SECONDS = 30 * 24 * 3600
LIST_PAGE = 100  # the API's largest page
# How far back `find` pages through the account's batches: ours are recent, and an account
# with thousands of batches must not make every recovery read all of them.
FIND_MAX_PAGES = 50

# Whole-batch failure codes (batch.errors.data[].code) and what to do about them.
_SYSTEM_CAUSES = {
    "token_limit_exceeded": (
        "the enqueued-token limit of model {model} was reached (token_limit_exceeded)",
        "wait for your other batches of this model to finish, or raise the limit of your "
        "OpenAI tier, then rerun the date; or set CONVSYNC_OPENAI_MODE=live for it",
    ),
    "insufficient_quota": (
        "the account has no quota left (insufficient_quota)",
        "add credit or raise the budget of the account behind OPENAI_API_KEY, then rerun",
    ),
    "model_not_found": (
        "model {model} is unknown to the server (model_not_found)",
        "set CONVSYNC_OPENAI_MODEL to a model this API key can use",
    ),
    "invalid_api_key": (
        "the API key was rejected (invalid_api_key)",
        "set a valid OPENAI_API_KEY",
    ),
}


def analysis_from_body(body: dict[str, Any], model: str) -> Analysis:
    """The validated analysis of one batch answer (a chat.completion body), through the very
    checks of a live answer; ConversationAnalysisError saying why there is none."""
    try:
        completion = ChatCompletion.model_validate(body)
    except ValidationError:
        raise ConversationAnalysisError("the batch answer is not a valid chat completion") from None
    verdict = OpenAIAnalyzer._verdict(completion)
    try:
        return Analysis(
            **verdict.model_dump(),
            analyzer=OpenAIAnalyzer.name,
            model=completion.model or model,
            analysisVersion=openai_analysis_version(model),
            usage=_usage(completion.usage),
        )
    except ValidationError as error:
        raise ConversationAnalysisError(_validation_message(error)) from error


@dataclass(frozen=True)
class BatchInfo:
    """What convsync needs of a provider batch."""

    id: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    request_counts: dict[str, int]
    metadata: dict[str, str]
    errors: list[dict[str, Any]]
    model: str | None = None

    @classmethod
    def of(cls, batch: Any) -> BatchInfo:
        counts = batch.request_counts
        errors = [
            {"code": error.code, "message": error.message, "line": error.line}
            for error in ((batch.errors.data or []) if batch.errors else [])
        ]
        return cls(
            id=batch.id,
            status=batch.status,
            output_file_id=batch.output_file_id or None,  # "" happens: no file
            error_file_id=batch.error_file_id or None,
            request_counts={
                "total": counts.total if counts else 0,
                "completed": counts.completed if counts else 0,
                "failed": counts.failed if counts else 0,
            },
            metadata=dict(batch.metadata or {}),
            errors=errors,
            model=getattr(batch, "model", None),
        )

    def system_failure(self, model: str) -> str | None:
        """The one message for a batch that failed as a whole for a reason of the set-up."""
        if self.status != "failed":
            return None
        codes = [str(error.get("code") or "") for error in self.errors]
        for code in codes:
            if code in _SYSTEM_CAUSES:
                cause, fix = _SYSTEM_CAUSES[code]
                return (
                    f"OpenAI batch {self.id} failed as a whole: {cause.format(model=model)}; "
                    f"no conversation was charged an attempt: {fix}"
                )
        first = self.errors[0] if self.errors else {}
        detail = scrub_secrets(str(first.get("message") or "no details"))[:300]
        code = first.get("code") or "failed"
        return (
            f"OpenAI batch {self.id} failed as a whole ({code}: {detail}); no conversation "
            "was charged an attempt: fix the cause, then rerun the date"
        )


class BatchClient:
    """Synchronous Batch API calls against OpenAI or a compatible server."""

    def __init__(
        self, *, base_url: str | None = None, timeout_seconds: float = 60.0, max_retries: int = 2
    ) -> None:
        self.base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self._client: openai.OpenAI | None = None

    def _key(self) -> str:
        return os.environ.get("OPENAI_API_KEY", "").strip()

    def _server(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).split("@")[
            -1
        ]

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            if not self._key():
                raise SystemAnalysisError(
                    "the openai batch mode needs an API key: set OPENAI_API_KEY "
                    "(or set CONVSYNC_OPENAI_MODE=live with CONVSYNC_ANALYZER=local)"
                )
            self._client = openai.OpenAI(
                base_url=self.base_url, timeout=self.timeout_seconds, max_retries=self.max_retries
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def system_error(self, error: openai.OpenAIError, doing: str) -> SystemAnalysisError:
        """One message saying what to fix; never the key, never the server's raw 401 text."""
        server = self._server()
        if isinstance(error, openai.AuthenticationError):
            text = (
                f"the server at {server} rejected the API key (401) while {doing}: "
                "set a valid OPENAI_API_KEY"
            )
        elif isinstance(error, openai.PermissionDeniedError):
            text = (
                f"the server at {server} refused access (403) while {doing}: "
                "check the key in OPENAI_API_KEY"
            )
        elif isinstance(error, openai.RateLimitError):
            text = (
                f"the server at {server} rate limited or refused (429) while {doing}: "
                "add quota or wait, then rerun"
            )
        elif isinstance(error, openai.APIConnectionError):
            text = (
                f"cannot reach the OpenAI API at {server} while {doing}: "
                "check OPENAI_BASE_URL and the network"
            )
        elif isinstance(error, openai.APIStatusError):
            body = error.body if isinstance(error.body, dict) else {}
            message = scrub_secrets(str(body.get("message") or ""), self._key())[:300]
            text = (
                f"the server at {server} answered {error.status_code} while {doing}"
                f"{': ' + message if message else ''}: check the model and OPENAI_BASE_URL"
            )
        else:
            detail = scrub_secrets(str(error), self._key())[:300]
            text = f"the batch API failed while {doing}: {detail}"
        return SystemAnalysisError(text)

    # ------------------------------------------------------------------ calls
    def upload(self, content: bytes, filename: str) -> str:
        try:
            uploaded = self.client.files.create(
                file=(filename, content, "application/jsonl"),
                purpose="batch",
                expires_after={"anchor": "created_at", "seconds": FILE_EXPIRY_SECONDS},
            )
        except openai.OpenAIError as error:
            raise self.system_error(error, "uploading a batch input file") from None
        return uploaded.id

    def create(self, input_file_id: str, date: str, token: str) -> BatchInfo:
        """Create the batch; never retried here (a retry could create a second batch).
        Raises `openai.OpenAIError` as is: the caller decides whether to look it up."""
        batch = self.client.with_options(max_retries=0).batches.create(
            input_file_id=input_file_id,
            endpoint=BATCH_ENDPOINT,  # type: ignore[arg-type]
            completion_window=COMPLETION_WINDOW,  # type: ignore[arg-type]
            metadata={TOKEN_KEY: token, DATE_KEY: date, "source": "convsync"},
            output_expires_after={"anchor": "created_at", "seconds": OUTPUT_EXPIRY_SECONDS},
        )
        return BatchInfo.of(batch)

    def find(self, token: str) -> BatchInfo | None:
        """The batch carrying our token in its metadata, if the provider has one."""
        try:
            page = self.client.batches.list(limit=LIST_PAGE)
            for _ in range(FIND_MAX_PAGES):
                for batch in page.data:
                    if (batch.metadata or {}).get(TOKEN_KEY) == token:
                        return BatchInfo.of(batch)
                if not page.has_next_page():
                    return None
                page = page.get_next_page()
        except openai.OpenAIError as error:
            raise self.system_error(error, "listing batches") from None
        return None

    def retrieve(self, batch_id: str) -> BatchInfo:
        try:
            return BatchInfo.of(self.client.batches.retrieve(batch_id))
        except openai.OpenAIError as error:
            raise self.system_error(error, f"reading batch {batch_id}") from None

    def content(self, file_id: str | None) -> bytes:
        if not file_id:
            return b""
        try:
            return self.client.files.content(file_id).read()
        except openai.OpenAIError as error:
            raise self.system_error(error, f"downloading batch file {file_id}") from None

    def cancel(self, batch_id: str) -> BatchInfo:
        try:
            return BatchInfo.of(self.client.batches.cancel(batch_id))
        except openai.OpenAIError as error:
            raise self.system_error(error, f"cancelling batch {batch_id}") from None
