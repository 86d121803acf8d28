"""`analyzer`: who analyses conversations, how fast, and what they may see.

`local` is the offline default; `openai` is OpenAI or any OpenAI-compatible server. The API
key is deliberately not a field: the SDK reads OPENAI_API_KEY from the environment, so it
never enters run config, the event log or the UI. `make()` is the one place an analyser is
built; further ways of running the same attempts (OpenAI's Batch API) add their fields here.
"""

import os
from typing import TYPE_CHECKING, Literal

from dagster import ConfigurableResource
from pydantic import Field

from convsync_pipeline.core.analysis import Analyzer
from convsync_pipeline.settings import (
    DEFAULT_BATCH_THRESHOLD,
    DEFAULT_OPENAI_MODEL,
    Settings,
)

if TYPE_CHECKING:
    from convsync_pipeline.analyzers.openai_batch import BatchClient


class AnalyzerNotReadyError(Exception):
    """The analyser cannot start (no API key for `openai`): the message says what to set."""


class AnalyzerResource(ConfigurableResource):
    """The conversation analyser and its per-run knobs (all overridable for one run)."""

    kind: Literal["local", "openai"] = Field(
        default="local",
        description="CONVSYNC_ANALYZER: `local` (offline, deterministic) or `openai`.",
    )
    model: str = Field(
        default=DEFAULT_OPENAI_MODEL, description="CONVSYNC_OPENAI_MODEL: the model name."
    )
    base_url: str | None = Field(
        default=None,
        description="OPENAI_BASE_URL: an OpenAI-compatible server; unset means OpenAI.",
    )
    concurrency: int = Field(
        default=8, ge=1, le=1_000, description="CONVSYNC_CONCURRENCY: analyses in flight at once."
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="CONVSYNC_BATCH_SIZE: most conversations analysed per date in one run "
        "(urgent ones first); unset means all that are due.",
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="CONVSYNC_REQUESTS_PER_MINUTE: client-side request pacing (openai).",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="CONVSYNC_TOKENS_PER_MINUTE: client-side token pacing (openai).",
    )
    request_timeout_seconds: float = Field(
        default=60.0,
        ge=1.0,
        le=3_600.0,
        description="CONVSYNC_REQUEST_TIMEOUT_SECONDS: per-request timeout (openai).",
    )
    mode: Literal["live", "batch", "auto"] = Field(
        default="live",
        description="CONVSYNC_OPENAI_MODE (openai): `live` requests, `batch` (OpenAI's Batch "
        "API: half price, answers within 24 hours), or `auto` (batch above batch_threshold "
        "due conversations, never for the current day).",
    )
    batch_threshold: int = Field(
        default=DEFAULT_BATCH_THRESHOLD,
        ge=0,
        le=100_000_000,
        description="CONVSYNC_BATCH_THRESHOLD: with mode `auto`, a date with more due "
        "conversations than this goes through the Batch API.",
    )
    redact: bool = Field(
        default=True,
        description="CONVSYNC_REDACT: mask e-mails, IBANs, phone and card numbers before any "
        "text leaves the machine.",
    )
    redact_patterns: list[str] = Field(
        default_factory=list,
        description="CONVSYNC_REDACT_PATTERNS: the user's extra regular expressions, masked as "
        "[REDACTED].",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "AnalyzerResource":
        return cls(
            kind=settings.analyzer,  # type: ignore[arg-type]  # validated by load_settings
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            concurrency=settings.analysis_concurrency,
            batch_size=settings.batch_size,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            request_timeout_seconds=settings.request_timeout_seconds,
            redact=settings.redact,
            mode=settings.openai_mode,  # type: ignore[arg-type]  # validated by load_settings
            batch_threshold=settings.batch_threshold,
            redact_patterns=list(settings.redact_patterns),
        )

    def check_ready(self) -> None:
        """Fail before any work when the analyser cannot start (say, `openai` chosen for one
        run from the launchpad on a deployment without OPENAI_API_KEY)."""
        if self.kind == "openai" and not (os.environ.get("OPENAI_API_KEY") or "").strip():
            raise AnalyzerNotReadyError(
                "the analyzer is 'openai' but OPENAI_API_KEY is not set in the environment of "
                "the code server and runs"
            )

    def pass_settings(self, settings: Settings) -> Settings:
        """`settings` (read when the definitions loaded) with this run's bounds of a pass."""
        return settings.model_copy(
            update={
                "analysis_concurrency": self.concurrency,
                "batch_size": self.batch_size,
                "openai_mode": self.mode,
                "batch_threshold": self.batch_threshold,
                "openai_model": self.model,
                "redact": self.redact,
            }
        )

    def analysis_version(self) -> str:
        """The version of the answers this analyser gives (without building it)."""
        return current_analysis_version(self.kind, self.model)
    def batch_client(self) -> "BatchClient":
        """The Batch API client (openai): folds finished batches, submits new ones."""
        from convsync_pipeline.analyzers.openai_batch import BatchClient

        return BatchClient(base_url=self.base_url, timeout_seconds=self.request_timeout_seconds)

    def batch_client_factory(self):
        """`batch_client` for the openai analyser (every pass then folds finished batches),
        None for `local`, which never has batches."""
        return self.batch_client if self.kind == "openai" else None

    def make(self) -> Analyzer:
        if self.kind == "openai":
            from convsync_pipeline.analyzers.openai import OpenAIAnalyzer

            return OpenAIAnalyzer(
                self.model,
                base_url=self.base_url,
                timeout_seconds=self.request_timeout_seconds,
                requests_per_minute=self.requests_per_minute,
                tokens_per_minute=self.tokens_per_minute,
                redact=self.redact,
                redact_patterns=tuple(self.redact_patterns),
            )
        from convsync_pipeline.analyzers.local import LocalAnalyzer

        return LocalAnalyzer()


def current_analysis_version(kind: str, model: str) -> str:
    """The analysis version (`core.analysis.analysis_version`) of analyser `kind` on `model`."""
    if kind == "openai":
        from convsync_pipeline.analyzers.openai import openai_analysis_version

        return openai_analysis_version(model)
    from convsync_pipeline.analyzers.local import ANALYSIS_VERSION

    return ANALYSIS_VERSION


def settings_analysis_version(settings: Settings) -> str:
    """The current analysis version of the configured analyser (CLI, status)."""
    return current_analysis_version(settings.analyzer, settings.openai_model)


def make_analyzer(settings: Settings) -> Analyzer:
    """The analyser the settings name, outside Dagster (benchmarks, tests of the pass)."""
    return AnalyzerResource.from_settings(settings).make()
