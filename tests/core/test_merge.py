"""The one merge: property tests (idempotent, ids unique, existing never changed)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core.conversations import StagedBatch, group_by_date, merge_conversations
from convsync_pipeline.core.dates import to_iso
from convsync_pipeline.core.document import DateDocument

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


def to_batches(raw) -> list[StagedBatch]:
    result = []
    for upload, items in raw:
        seen = set()
        conversations = []
        for cid, minute, text in items:
            if cid not in seen:  # within one upload an id is one conversation
                seen.add(cid)
                conversations.append(record(cid, minute, text))
        result.append(StagedBatch(upload=upload, conversations=conversations))
    return result


@settings(max_examples=150, deadline=None)
@given(first=batches, second=batches)
def test_merge_properties(first, second):
    empty = DateDocument.empty("2026-02-11")
    once = merge_conversations(empty, to_batches(first)).document
    doc_ids = [c.id for c in once.conversations]
    assert len(doc_ids) == len(set(doc_ids)), "ids unique"

    again = merge_conversations(once, to_batches(first))
    assert not again.changed and again.document == once, "idempotent"

    later = merge_conversations(once, to_batches(second))
    before = once.by_id()
    after = later.document.by_id()
    for cid, conversation in before.items():
        assert after[cid] == conversation, "an existing conversation is never changed"
    assert len(later.document.conversations) == len(after), "ids unique after a later merge"
    incoming = sum(len(b.conversations) for b in to_batches(second))
    assert len(later.added) + len(later.already_present) == incoming


def test_first_upload_by_key_order_wins_and_later_records_count_as_present():
    earlier_in_time = record("c1", 1, "from b")
    later_in_time = record("c1", 50, "from a")
    outcome = merge_conversations(
        DateDocument.empty("2026-02-11"),
        [
            StagedBatch("incoming/b.csv", [earlier_in_time]),
            StagedBatch("incoming/a.csv", [later_in_time]),
        ],
    )
    (only,) = outcome.document.conversations
    assert only.messages[0].content == "from a"
    assert outcome.already_present == ["c1"]


def test_existing_success_is_not_reset_by_a_reupload():
    doc = merge_conversations(
        DateDocument.empty("2026-02-11"), [StagedBatch("incoming/a.csv", [record("c1", 1)])]
    ).document
    done = doc.conversations[0].model_copy(
        update={"processing_status": "success", "analysis": {"summary": "x"}, "processed_at": "t"}
    )
    doc = doc.model_copy(update={"conversations": [done]})
    outcome = merge_conversations(doc, [StagedBatch("incoming/z.csv", [record("c1", 0, "new")])])
    assert not outcome.changed
    assert outcome.document.conversations[0].processing_status == "success"


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
