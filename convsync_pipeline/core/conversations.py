"""Messages -> conversations dated by their first message, and the one merge (seed fix 3).

Every entry point (sensor, schedule, backfill, CLI) goes through `merge_conversations`, so
there is exactly one definition of "already present".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.document import Conversation, DateDocument

ConversationRecord = dict[str, Any]  # a conversation in the document's JSON shape


def group_by_date(
    messages: pd.DataFrame, source: str, tz: ZoneInfo
) -> dict[str, list[ConversationRecord]]:
    """Group one upload's messages into conversations and file each under its first day.

    Messages are ordered by time (ties keep upload order); a conversation whose messages
    straddle midnight belongs to the day of its earliest message only. Conversations keep the
    order in which they first appear in the upload.
    """
    if messages.empty:
        return {}
    ordered = messages.sort_values(["conversation_id", "ts_ns", "record_no"], kind="stable")
    ids = ordered["conversation_id"].to_numpy()
    cut = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(ids)]))

    timestamps = ordered["timestamp"].tolist()
    all_messages = [
        {"role": role, "content": content, "timestamp": stamp, "meta": meta}
        for role, content, stamp, meta in zip(
            ordered["role"].tolist(),
            ordered["content"].tolist(),
            timestamps,
            ordered["meta"].tolist(),
            strict=True,
        )
    ]
    first_ns = ordered["ts_ns"].to_numpy()[starts]
    days = local_dates(pd.Series(first_ns), tz).tolist()
    first_seen = np.minimum.reduceat(ordered["record_no"].to_numpy(), starts)

    by_date: dict[str, list[tuple[int, ConversationRecord]]] = {}
    for index, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        record: ConversationRecord = {
            "id": ids[start],
            "startedAt": timestamps[start],
            "endedAt": timestamps[end - 1],
            "messages": all_messages[start:end],
            "source": source,
            "processingStatus": "pending",
            "retryCount": 0,
            "processingError": None,
            "processedAt": None,
            "analysis": None,
        }
        by_date.setdefault(days[index], []).append((int(first_seen[index]), record))
    return {
        day: [record for _, record in sorted(entries, key=lambda entry: entry[0])]
        for day, entries in by_date.items()
    }


@dataclass(frozen=True)
class StagedBatch:
    """The conversations one upload contributes to one date."""

    upload: str
    conversations: list[ConversationRecord]


@dataclass
class MergeOutcome:
    document: DateDocument
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def merge_conversations(document: DateDocument, batches: Iterable[StagedBatch]) -> MergeOutcome:
    """Append conversations whose id is new to the document, as `pending`; touch nothing else.

    Batches are taken in upload-key order, so among uploads merged together the first key
    that brings an id decides its messages. An id already present is never duplicated,
    overwritten or reset, even when a later record for it is earlier in time.
    """
    known = {conversation.id for conversation in document.conversations}
    outcome = MergeOutcome(document=document)
    appended: list[Conversation] = []
    for batch in sorted(batches, key=lambda staged: staged.upload):
        for record in batch.conversations:
            conversation_id = record["id"]
            if conversation_id in known:
                outcome.already_present.append(conversation_id)
                continue
            known.add(conversation_id)
            fresh = Conversation.model_validate(record).model_copy(
                update={
                    "processing_status": "pending",
                    "retry_count": 0,
                    "processing_error": None,
                    "processed_at": None,
                    "analysis": None,
                }
            )
            appended.append(fresh)
            outcome.added.append(conversation_id)
    if appended:
        outcome.document = document.model_copy(
            update={"conversations": [*document.conversations, *appended]}
        )
    return outcome
