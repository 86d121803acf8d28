"""The daily summary `summaries/D.json` (SPEC section 8), computed from one document version."""

from __future__ import annotations

import statistics
from collections import Counter

from pydantic import BaseModel, Field

from convsync_pipeline.core.analysis import UNVERSIONED, version_of
from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import Conversation, DateDocument, StatusSummary

TOP_TOPICS = 10


class TopicCount(BaseModel):
    topic: str
    count: int


class MessageStats(BaseModel):
    mean: float = 0.0
    median: float = 0.0
    max: int = 0


class DailySummary(BaseModel):
    date: str
    documentVersion: int
    generatedAt: str
    summary: StatusSummary
    processedCount: int
    successRate: float | None = Field(description="success / total; null for an empty day")
    sentiment: dict[str, int]
    meanSentimentScore: float | None
    topTopics: list[TopicCount]
    resolution: dict[str, float]
    escalationRate: float | None
    escalations: int
    messagesPerConversation: MessageStats
    tokens: dict[str, int]
    # Which analysis versions the answers summarised come from (SPEC 7); more than one:
    # `mixedVersions`, and the asset check `single_analysis_version` warns.
    analysisVersions: dict[str, int] = Field(default_factory=dict)
    mixedVersions: bool = False
    # Conversations being re-analysed: their previous answer is counted until the new one
    # succeeds (nothing is lost in between).
    awaitingReanalysis: int = 0


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def topics_of(analysis: dict) -> set[str]:
    """An analysis's topics, lower-cased, each once: a topic counts conversations mentioning
    it, however often (or in whichever case) one analysis repeats it."""
    return {str(topic).lower() for topic in (analysis.get("topics") or []) if topic}


def standing_answer(conversation: Conversation) -> dict | None:
    """The answer a conversation stands by: a success's analysis, or the previous answer of
    one being re-analysed (until the new one succeeds); None when it has none."""
    if conversation.processing_status == "success":
        return conversation.analysis
    return conversation.previous_analysis


def answer_versions(document: DateDocument) -> Counter[str]:
    """How many standing answers of each analysis version the date holds."""
    versions = Counter[str]()
    for conversation in document.conversations:
        answer = standing_answer(conversation)
        if isinstance(answer, dict):
            versions[version_of(answer) or UNVERSIONED] += 1
    return versions


def build_daily_summary(document: DateDocument) -> DailySummary:
    """Aggregate what the standing answers say: each `success`'s analysis, and the previous
    answer of each conversation being re-analysed."""
    counts = document.count_statuses()
    analyses = []
    awaiting = 0
    for c in document.conversations:
        answer = standing_answer(c)
        if isinstance(answer, dict):
            analyses.append(answer)
            awaiting += c.processing_status != "success"
    versions = Counter(version_of(a) or UNVERSIONED for a in analyses)
    sentiment = Counter({"positive": 0, "neutral": 0, "negative": 0})
    sentiment.update(str(a.get("sentiment")) for a in analyses if a.get("sentiment"))
    scores = [
        float(a["sentimentScore"])
        for a in analyses
        if isinstance(a.get("sentimentScore"), int | float)
    ]
    topics = Counter(topic for a in analyses for topic in topics_of(a))
    resolutions = Counter(str(a.get("resolution", "unknown")) for a in analyses)
    escalations = sum(1 for a in analyses if a.get("escalationNeeded") is True)
    tokens = Counter[str]()
    for a in analyses:
        usage = a.get("usage") or {}
        for name in ("promptTokens", "completionTokens", "cachedTokens", "totalTokens"):
            value = usage.get(name)
            if isinstance(value, int):
                tokens[name] += value
    sizes = [len(c.messages) for c in document.conversations]
    return DailySummary(
        date=document.date,
        documentVersion=document.version,
        generatedAt=utc_now_iso(),
        summary=counts,
        processedCount=counts.success,
        successRate=_ratio(counts.success, counts.total),
        sentiment=dict(sentiment),
        meanSentimentScore=round(statistics.fmean(scores), 4) if scores else None,
        topTopics=[TopicCount(topic=t, count=n) for t, n in topics.most_common(TOP_TOPICS)],
        resolution={
            name: _ratio(resolutions[name], len(analyses)) or 0.0
            for name in ("resolved", "unresolved", "unknown")
        },
        escalationRate=_ratio(escalations, len(analyses)),
        escalations=escalations,
        messagesPerConversation=MessageStats(
            mean=round(statistics.fmean(sizes), 3) if sizes else 0.0,
            median=float(statistics.median(sizes)) if sizes else 0.0,
            max=max(sizes, default=0),
        ),
        tokens={
            name: tokens[name]
            for name in ("promptTokens", "completionTokens", "cachedTokens", "totalTokens")
        },
        analysisVersions=dict(versions.most_common()),
        mixedVersions=len(versions) > 1,
        awaitingReanalysis=awaiting,
    )
