"""The fast paths of ingest and merge write exactly the bytes of the plain, slow ones.

`dump_json` against `json.dumps(indent=1, ensure_ascii=False)`, the column-wise staging bodies
against `dump_json` of `group_by_date`, and the model-free merge + seal against the pydantic
path (`merge_conversations` -> `sealed` -> `to_json_bytes` with the standard library).
"""

from __future__ import annotations

import json
from unittest import mock
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import document as document_module
from convsync_pipeline.core.conversations import (
    StagedBatch,
    _staged_bodies_slowly,
    group_by_date,
    merge_conversations,
    merge_staged,
    render_pending,
    staged_bodies,
)
from convsync_pipeline.core.document import DateDocument, dump_json

BASE_NS = 1_770_768_000 * 10**9  # 2026-02-11T00:00:00Z
TEXT = st.text(
    alphabet=st.sampled_from([*'ab "\\\n\r\t\x00\x01\x1f\x7fé日\u2028/', "\U0001f600"]),
    max_size=6,
)
JSON_SCALAR = st.one_of(
    TEXT, st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-7, 1e16, 2.5e-5, -0.0]),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
META = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(["channel", "agent", "x\"y"]), TEXT, max_size=3),
    st.dictionaries(TEXT, JSON_VALUE, max_size=3),
)


def _stdlib(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUE)
def test_dump_json_is_the_standard_library(value):
    assert dump_json(value) == _stdlib(value)
    assert dump_json({"date": "d", "conversations": [value, {"meta": value}]}) == _stdlib(
        {"date": "d", "conversations": [value, {"meta": value}]}
    )


def test_dump_json_errors_are_the_standard_library_errors():
    for value in ({"a": object()}, [{1, 2}], {"k": b"bytes"}):
        with pytest.raises(TypeError) as ours:
            dump_json(value)
        with pytest.raises(TypeError) as theirs:
            _stdlib(value)
        assert str(ours.value) == str(theirs.value)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dump_json(loop)


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c\"3", "日", "c 5"]),
        st.integers(-600, 3000),  # minutes from 2026-02-11T00:00Z: several dates
        TEXT,
        TEXT,
        META,
        st.integers(1, 40),
    ),
    min_size=1,
    max_size=25,
)


def _frame(rows) -> pd.DataFrame:
    stamps = [pd.Timestamp(BASE_NS + minute * 60 * 10**9, tz="UTC") for _, minute, *_ in rows]
    return pd.DataFrame(
        {
            "conversation_id": pd.Series([r[0] for r in rows], dtype="str"),
            "timestamp": pd.Series(
                [s.strftime("%Y-%m-%dT%H:%M:%S.000Z") for s in stamps], dtype="str"
            ),
            "ts_ns": [s.value for s in stamps],
            "role": pd.Series([r[2] or "unknown" for r in rows], dtype="str"),
            "content": pd.Series([r[3] for r in rows], dtype="str"),
            "meta": pd.Series([r[4] for r in rows], dtype=object),
            "record_no": [r[5] for r in rows],  # repeats on purpose: ties keep id order
        }
    )


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]))
def test_staged_bodies_are_dump_json_of_group_by_date(rows, zone):
    frame = _frame(rows)
    tz = ZoneInfo(zone)
    source = 'incoming/a "b".csv'
    fast = sorted(staged_bodies(frame, source, "etag-1", tz))
    assert fast == sorted(_staged_bodies_slowly(frame, source, "etag-1", tz))
    grouped = group_by_date(frame, source, tz)
    expected = sorted(
        (day, len(conversations), _stdlib(
            {"upload": source, "etag": "etag-1", "date": day, "conversations": conversations}
        ))
        for day, conversations in grouped.items()
    )
    assert fast == expected


@settings(max_examples=150, deadline=None)
@given(rows=ROWS, earlier=ROWS)
def test_model_free_merge_writes_the_pydantic_bytes(rows, earlier):
    with mock.patch.object(document_module, "utc_now_iso", lambda: "2026-02-11T00:00:00.000Z"):
        _check_merge(rows, earlier)


def _check_merge(rows, earlier):
    tz = ZoneInfo("UTC")
    first = [
        StagedBatch("incoming/a.csv", c)
        for c in group_by_date(_frame(earlier), "incoming/a.csv", tz).values()
    ]
    existing = merge_conversations(DateDocument.empty("2026-02-11"), first).document
    existing = existing.sealed(3)
    batches = [
        StagedBatch("incoming/b.csv", c)
        for c in group_by_date(_frame(rows), "incoming/b.csv", tz).values()
    ]
    slow = merge_conversations(existing, batches)
    fast = merge_staged(existing, batches)
    assert (fast.added, fast.already_present) == (slow.added, slow.already_present)
    decoded = [StagedBatch(b.upload, json.loads(dump_json(b.conversations))) for b in batches]
    from_json = merge_staged(existing, decoded, from_json=True).records
    assert dump_json(from_json) == dump_json(fast.records)  # (NaN != NaN: compare the text)
    expected = _stdlib(slow.document.sealed(7).model_dump(by_alias=True, exclude_none=False))
    plain, version = existing.sealed_json_appending(fast.records, 7)
    rendered, _ = existing.sealed_json_appending(
        fast.records, 7, appended_json=render_pending(fast.records)
    )
    assert plain == expected
    assert rendered == expected
    assert version == existing.version + 1


def test_records_not_in_the_staged_shape_go_through_the_model():
    record = {
        "id": "c1", "startedAt": "s", "endedAt": "e",
        "messages": [{"role": "user", "content": "hi", "timestamp": "t"}],  # no meta
        "source": "incoming/a.csv", "processingStatus": "success", "retryCount": 2,
        "processingError": "x", "processedAt": "p", "analysis": {"a": 1}, "extra": 1,
    }
    fast = merge_staged(DateDocument.empty("d"), [StagedBatch("incoming/a.csv", [record])])
    slow = merge_conversations(DateDocument.empty("d"), [StagedBatch("incoming/a.csv", [record])])
    assert fast.records == [
        c.model_dump(by_alias=True, exclude_none=False) for c in slow.document.conversations
    ]
    with pytest.raises(ValueError):
        merge_staged(DateDocument.empty("d"), [StagedBatch("u", [{**record, "id": 5}])])


def test_a_conversation_without_messages_is_rendered_the_general_way():
    record = {
        "id": "c1", "startedAt": "s", "endedAt": "e", "messages": [],
        "source": "incoming/a.csv", "processingStatus": "pending", "retryCount": 0,
        "processingError": None, "processedAt": None, "analysis": None,
    }
    outcome = merge_staged(DateDocument.empty("d"), [StagedBatch("incoming/a.csv", [record])])
    assert render_pending(outcome.records) is None
    with mock.patch.object(document_module, "utc_now_iso", lambda: "t"):
        data, _ = DateDocument.empty("d").sealed_json_appending(
            outcome.records, 1, appended_json=render_pending(outcome.records)
        )
        slow = merge_conversations(DateDocument.empty("d"), [StagedBatch("x", [record])])
        assert data == _stdlib(slow.document.sealed(1).model_dump(by_alias=True))
