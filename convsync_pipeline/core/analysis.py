"""What an analysis is (SPEC section 7) and what an analyser must do.

`ModelVerdict` is what a model is asked to produce: plain typed fields only, because
OpenAI's strict structured-output mode rejects dicts and defaults. `Analysis` is what is
stored: the verdict plus who produced it and what it cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from convsync_pipeline.core.document import Conversation

PROMPT_VERSION = "2026-11-29.1"
UNVERSIONED = "unversioned"  # how an analysis stored before versions existed is shown

Sentiment = Literal["positive", "neutral", "negative"]
Resolution = Literal["resolved", "unresolved", "unknown"]


class ModelVerdict(BaseModel):
    """The judgement about one conversation, as the model returns it."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="One or two sentences on what the customer wanted and got.")
    sentiment: Sentiment = Field(description="The customer's overall sentiment.")
    sentimentScore: float = Field(
        ge=-1.0, le=1.0, description="-1 very negative .. 1 very positive"
    )
    topics: list[str] = Field(description="One to five short lower-case topic labels.")
    intent: str = Field(description="The customer's main intent as a short snake_case label.")
    resolution: Resolution = Field(description="Whether the customer's issue was resolved.")
    escalationNeeded: bool = Field(description="True if a human or manager must step in.")


class TokenUsage(BaseModel):
    promptTokens: int = 0
    completionTokens: int = 0
    cachedTokens: int = 0
    totalTokens: int = 0


class Analysis(ModelVerdict):
    """A validated verdict with its provenance; this is what `analysis` holds in a document."""

    analyzer: str
    model: str
    promptVersion: str = PROMPT_VERSION
    # What produced it (`analysis_version`): an answer of another version can be re-analysed.
    analysisVersion: str
    usage: TokenUsage = Field(default_factory=TokenUsage)


def fingerprint(*texts: str) -> str:
    """A short, stable hash of what shapes an answer (prompt text, response schema, rules):
    any edit changes the version even when nobody remembered to bump `PROMPT_VERSION`."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def analysis_version(analyzer: str, model: str, prompt_version: str, digest: str) -> str:
    """The analysis version: analyser, model, prompt (or rules) version and `fingerprint`.

    Compared for equality only; readable so that `convsync status` and the summary can show
    it as it is."""
    return f"{analyzer}:{model}:{prompt_version}:{digest}"


def version_of(analysis: Mapping[str, Any] | None) -> str | None:
    """The version a stored analysis names; None for one stored before versions existed
    (or a legacy analysis kept verbatim), which is never the current version."""
    if not isinstance(analysis, Mapping):
        return None
    version = analysis.get("analysisVersion")
    return version if isinstance(version, str) and version else None


class ConversationAnalysisError(Exception):
    """This conversation could not be analysed; costs it one attempt (SPEC section 7)."""


class SystemAnalysisError(Exception):
    """The analyser as a whole cannot work (bad key, no quota, unknown model, unreachable).

    Costs no attempt; the run stops with this message, which must say what to fix and must
    never contain a secret.
    """


class Analyzer(Protocol):
    """Something that analyses one conversation at a time, concurrently safe."""

    name: str
    model: str
    version: str  # `analysis_version` of what this analyser produces

    async def preflight(self) -> None:
        """Raise SystemAnalysisError now if the analyser cannot work at all (bad key, no model).

        Called once per run before any conversation is marked `processing`, so a broken set-up
        fails fast and costs no attempt.
        """
        ...

    async def analyze(self, conversation: Conversation) -> Analysis:
        """Return a validated Analysis or raise one of the two errors above."""
        ...

    async def aclose(self) -> None:
        """Release network clients."""
        ...
