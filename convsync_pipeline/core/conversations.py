"""Messages -> conversations dated by their first message, and the one merge (seed fix 3).

Every entry point (sensor, schedule, backfill, CLI) merges through `merge_staged`, so there
is exactly one definition of "already present" (`_first_uploads_win`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa

from convsync_pipeline.core.dates import local_dates
from convsync_pipeline.core.document import DateDocument, joined_texts
from convsync_pipeline.core.records import meta_dicts

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
            meta_dicts(ordered["meta"]),
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


class StagedBatch(Protocol):
    """One upload's conversations of a date, as their text (`core.staging.StagedUpload`)."""

    upload: str
    ids: pa.Array
    texts: pa.Array | pa.ChunkedArray


@dataclass
class StagedMerge:
    """What merging staged uploads into a document adds: the new ids and their text."""

    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    # The new conversations as list items, in pieces, for `sealed_json_appending`.
    appended_json: list[memoryview | bytes] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def _first_uploads_win(
    known: set[str], batches: Sequence[tuple[str, Sequence[str]]]
) -> tuple[list[tuple[int, int]], list[str]]:
    """The rule of the one merge over (upload, conversation ids) batches.

    Returns (batch, row) of each conversation to append, in order, and the ids already
    present. Batches are taken in upload-key order, so among uploads merged together the
    first key that brings an id decides its messages. An id already present is never
    duplicated, overwritten or reset, even when a later record for it is earlier in time.
    `known` is updated with the new ids.
    """
    new: list[tuple[int, int]] = []
    present: list[str] = []
    for batch in sorted(range(len(batches)), key=lambda index: batches[index][0]):
        for row, conversation_id in enumerate(batches[batch][1]):
            if conversation_id in known:
                present.append(conversation_id)
                continue
            known.add(conversation_id)
            new.append((batch, row))
    return new, present


def merge_staged(
    present: DateDocument | Iterable[str], staged: Sequence[StagedBatch]
) -> StagedMerge:
    """Append the conversations whose id is new to the date (a document, or the ids it holds),
    as `pending`; touch nothing else. The new conversations come back as the text to splice
    into a `conversations` list (a log entry, or `DateDocument.sealed_json_appending`), taken
    from the staged objects without decoding a message.
    """
    if isinstance(present, DateDocument):
        present = (conversation.id for conversation in present.conversations)
    known = set(present)
    ids = [batch.ids.to_pylist() for batch in staged]
    picks, present = _first_uploads_win(
        known, [(batch.upload, batch_ids) for batch, batch_ids in zip(staged, ids, strict=True)]
    )
    chosen: list[Any] = []  # runs of consecutive rows of one batch, in merge order
    run_start = 0
    for index in range(1, len(picks) + 1):
        if index < len(picks):
            (batch, row), (previous_batch, previous_row) = picks[index], picks[index - 1]
            if batch == previous_batch and row == previous_row + 1:
                continue
        batch, row = picks[run_start]
        chosen.append(staged[batch].texts.slice(row, index - run_start))
        run_start = index
    return StagedMerge(
        added=[ids[batch][row] for batch, row in picks],
        already_present=present,
        uploads=sorted({batch.upload for batch in staged}),
        appended_json=joined_texts(chosen),
    )
