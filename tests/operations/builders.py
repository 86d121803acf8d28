"""Date documents written as raw JSON, in the legacy shape (seed) and in the SPEC section 5 one.

Legacy: the system before the seed's fixes. No processingStatus / retryCount /
processingError, no `source`, no `_blobMeta`; `processedAt` is "" (not processed) or a
timestamp, and the legacy `processedCount` counted every conversation with `processedAt` set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MISSING: Any = object()


def messages(date: str, first_words: str, replies: int = 1) -> list[dict[str, Any]]:
    out = [{"role": "user", "content": first_words, "timestamp": f"{date}T09:00:00.000Z"}]
    for i in range(replies):
        out.append(
            {
                "role": "assistant",
                "content": f"reply {i}",
                "timestamp": f"{date}T09:0{i + 1}:00.000Z",
            }
        )
    return out


def legacy_conversation(
    cid: str,
    date: str = "2026-02-11",
    *,
    processed_at: Any = "",
    analysis: Any = MISSING,
    words: str = "Hello, my parcel has not arrived yet.",
    **extra: Any,
) -> dict[str, Any]:
    conversation: dict[str, Any] = {
        "id": cid,
        "startedAt": f"{date}T09:00:00.000Z",
        "endedAt": f"{date}T09:01:00.000Z",
        "messages": messages(date, words),
    }
    if processed_at is not MISSING:
        conversation["processedAt"] = processed_at
    if analysis is not MISSING:
        conversation["analysis"] = analysis
    conversation.update(extra)
    return conversation


def legacy_analysis(sentiment: str = "negative", *topics: str) -> dict[str, Any]:
    """What the legacy analyser stored: not the new schema (no analyzer/model/usage)."""
    return {
        "summary": "Customer asks about a late parcel.",
        "sentiment": sentiment,
        "topics": list(topics) or ["shipping"],
        "customerSatisfaction": 2,
        "escalationNeeded": False,
    }


def legacy_document(date: str, conversations: list[dict[str, Any]]) -> dict[str, Any]:
    processed = sum(1 for c in conversations if c.get("processedAt"))
    return {"date": date, "conversations": conversations, "processedCount": processed}


def analysis(
    sentiment: str = "neutral",
    topics: tuple[str, ...] = ("billing",),
    escalation: bool = False,
    score: float = 0.0,
) -> dict[str, Any]:
    return {
        "summary": "A customer conversation.",
        "sentiment": sentiment,
        "sentimentScore": score,
        "topics": list(topics),
        "intent": "question",
        "resolution": "resolved",
        "escalationNeeded": escalation,
        "analyzer": "local",
        "model": "local-test",
        "promptVersion": "test",
        "usage": {"promptTokens": 10, "completionTokens": 5, "cachedTokens": 0, "totalTokens": 15},
    }


def conversation(
    cid: str,
    status: str,
    date: str = "2026-02-11",
    *,
    retry: int = 0,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    words: str = "Hello, I was charged twice this month.",
) -> dict[str, Any]:
    success = status == "success"
    return {
        "id": cid,
        "startedAt": f"{date}T09:00:00.000Z",
        "endedAt": f"{date}T09:01:00.000Z",
        "messages": messages(date, words),
        "source": f"incoming/{date}/export.csv",
        "processingStatus": status,
        "retryCount": retry,
        "processingError": error,
        "processedAt": f"{date}T10:00:00.000Z" if success else None,
        "analysis": (result or analysis()) if success else None,
    }


def document(
    date: str,
    conversations: list[dict[str, Any]],
    *,
    version: int = 1,
    processed_count: int | None = None,
    summary: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A new-shape document; counts are right unless given."""
    counts = {s: 0 for s in ("pending", "processing", "success", "failed")}
    for c in conversations:
        counts[c["processingStatus"]] += 1
    return {
        "date": date,
        "conversations": conversations,
        "processedCount": counts["success"] if processed_count is None else processed_count,
        "summary": summary or {"total": len(conversations), **counts},
        "_blobMeta": {"version": version, "updatedAt": f"{date}T23:00:00.000Z"},
    }


def put(root: Path, date: str, body: dict[str, Any] | bytes) -> Path:
    path = root / "conversations" / f"{date}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body, indent=2).encode())
    return path


def put_summary(root: Path, date: str, document_version: int) -> None:
    path = root / "summaries" / f"{date}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": date, "documentVersion": document_version}))


def read(root: Path, date: str) -> dict[str, Any]:
    return json.loads((root / "conversations" / f"{date}.json").read_bytes())


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the store, byte for byte (locks and CAS guards included)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
