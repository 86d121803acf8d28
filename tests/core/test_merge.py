"""The one merge: property tests (idempotent, ids unique, existing never changed)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core.conversations import StagedMerge, group_by_date, merge_staged
from convsync_pipeline.core.dates import to_iso
from convsync_pipeline.core.document import DateDocument
from convsync_pipeline.core.staging import StagedUpload

BASE_NS = 1_770_768_000 * 10**9  # 2026-02-11T00:00:00Z


def record(cid: str, minute: int, content: str = "hi") -> dict:
    stamp = to_iso(pd.Timestamp(BASE_NS + minute * 60 * 10**9, tz="UTC").to_pydatetime())
    return {
        "id": cid,
        "startedAt": stamp,
        "endedAt": stamp,
        "messages": [{"role": "user", "content": content, "timestamp": stamp, "meta": {}}],
        "source": "incoming/x.csv",
        "processingStatus": "pending",
        "retryCount": 0,
        "processingError": None,
        "processedAt": None,
        "analysis": None,
    }


ids = st.sampled_from([f"c{n}" for n in range(8)])
batches = st.lists(
    st.tuples(
        st.sampled_from(["incoming/a.csv", "incoming/b.csv", "incoming/c.json"]),
        st.lists(st.tuples(ids, st.integers(0, 1000), st.text(max_size=5)), max_size=6),
    ),
    max_size=4,
)


def staged(upload: str, conversations: list[dict]) -> StagedUpload:
    return StagedUpload.from_records(upload, "etag", "2026-02-11", conversations)


def merge(document: DateDocument, batches: list[StagedUpload]) -> tuple[DateDocument, StagedMerge]:
    """The merge and the save's seal, read back: the document a merge would store."""
    outcome = merge_staged(document, batches)
    if not outcome.changed:
        return document, outcome
    data, _ = document.sealed_json_appending(outcome.appended_json, len(outcome.added))
    return DateDocument.from_json_bytes(data), outcome


def to_batches(raw) -> list[StagedUpload]:
    result = []
    for upload, items in raw:
        seen = set()
        conversations = []
        for cid, minute, text in items:
            if cid not in seen:  # within one upload an id is one conversation
                seen.add(cid)
                conversations.append(record(cid, minute, text))
        result.append(staged(upload, conversations))
    return result


@settings(max_examples=150, deadline=None)
@given(first=batches, second=batches)
def test_merge_properties(first, second):
    empty = DateDocument.empty("2026-02-11")
    once, _ = merge(empty, to_batches(first))
    doc_ids = [c.id for c in once.conversations]
    assert len(doc_ids) == len(set(doc_ids)), "ids unique"

    again_document, again = merge(once, to_batches(first))
    assert not again.changed and again_document == once, "idempotent"

    later_document, later = merge(once, to_batches(second))
    before = once.by_id()
    after = later_document.by_id()
    for cid, conversation in before.items():
        assert after[cid] == conversation, "an existing conversation is never changed"
    assert len(later_document.conversations) == len(after), "ids unique after a later merge"
    incoming = sum(len(b) for b in to_batches(second))
    assert len(later.added) + len(later.already_present) == incoming
    for conversation in later_document.conversations:
        if conversation.id in later.added:
            assert conversation.processing_status == "pending"


def test_first_upload_by_key_order_wins_and_later_records_count_as_present():
    earlier_in_time = record("c1", 1, "from b")
    later_in_time = record("c1", 50, "from a")
    document, outcome = merge(
        DateDocument.empty("2026-02-11"),
        [staged("incoming/b.csv", [earlier_in_time]), staged("incoming/a.csv", [later_in_time])],
    )
    (only,) = document.conversations
    assert only.messages[0].content == "from a"
    assert outcome.already_present == ["c1"]


def test_existing_success_is_not_reset_by_a_reupload():
    doc, _ = merge(DateDocument.empty("2026-02-11"), [staged("incoming/a.csv", [record("c1", 1)])])
    done = doc.conversations[0].model_copy(
        update={"processing_status": "success", "analysis": {"summary": "x"}, "processed_at": "t"}
    )
    doc = doc.model_copy(update={"conversations": [done]})
    after, outcome = merge(doc, [staged("incoming/z.csv", [record("c1", 0, "new")])])
    assert not outcome.changed and outcome.appended_json == []
    assert after.conversations[0].processing_status == "success"


def test_staged_records_are_reset_to_pending_and_invalid_ones_refused():
    done = {**record("c1", 1), "processingStatus": "success", "retryCount": 2, "analysis": {}}
    document, _ = merge(DateDocument.empty("2026-02-11"), [staged("incoming/a.csv", [done])])
    (only,) = document.conversations
    assert (only.processing_status, only.retry_count, only.analysis) == ("pending", 0, None)
    with pytest.raises(ValueError):
        staged("incoming/a.csv", [{**record("c1", 1), "id": 5}])


def messages_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "conversation_id": [r[0] for r in rows],
            "timestamp": [to_iso(pd.Timestamp(r[1], tz="UTC").to_pydatetime()) for r in rows],
            "ts_ns": [pd.Timestamp(r[1], tz="UTC").value for r in rows],
            "role": ["user"] * len(rows),
            "content": [r[2] for r in rows],
            "meta": [{} for _ in rows],
            "record_no": list(range(1, len(rows) + 1)),
        }
    )


def test_conversation_straddling_midnight_belongs_to_its_first_day_only():
    frame = messages_frame(
        [
            ("late", "2026-02-12T00:05:00Z", "second"),
            ("late", "2026-02-11T23:58:00Z", "first"),
            ("other", "2026-02-12T09:00:00Z", "x"),
        ]
    )
    grouped = group_by_date(frame, "incoming/a.csv", ZoneInfo("UTC"))
    assert [c["id"] for c in grouped["2026-02-11"]] == ["late"]
    late = grouped["2026-02-11"][0]
    assert [m["content"] for m in late["messages"]] == ["first", "second"]
    assert late["startedAt"] == "2026-02-11T23:58:00.000Z"
    assert late["endedAt"] == "2026-02-12T00:05:00.000Z"
    assert [c["id"] for c in grouped["2026-02-12"]] == ["other"]


def test_dating_uses_the_configured_timezone():
    frame = messages_frame([("c", "2026-02-12T03:00:00Z", "x")])
    grouped = group_by_date(frame, "incoming/a.csv", ZoneInfo("America/New_York"))
    assert list(grouped) == ["2026-02-11"]
