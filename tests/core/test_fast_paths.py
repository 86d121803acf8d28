"""The fast paths of ingest and merge write exactly the bytes of the plain, slow ones.

`dump_json` against `json.dumps(indent=1, ensure_ascii=False)`, the column-wise staging
against `group_by_date` rendered record by record, and the model-free merge + seal against the
pydantic path (models appended -> `sealed` -> `json.dumps` of the standard library).
"""

from __future__ import annotations

import csv
import io
import json
from unittest import mock
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import document as document_module
from convsync_pipeline.core import rendering
from convsync_pipeline.core.conversations import group_by_date, merge_staged
from convsync_pipeline.core.document import Conversation, DateDocument, dump_json, joined_texts
from convsync_pipeline.core.formats import parse_upload
from convsync_pipeline.core.records import meta_dicts
from convsync_pipeline.core.staging import (
    CHUNK_MESSAGES,
    StagedUpload,
    StagingFormatError,
    _stage_slowly,
    stage_messages,
)

BASE_NS = 1_770_768_000 * 10**9  # 2026-02-11T00:00:00Z
TEXT = st.text(
    alphabet=st.sampled_from([*'ab "\\\n\r\t\x00\x01\x1f\x7fé日\u2028/', "\U0001f600"]),
    max_size=6,
)
JSON_SCALAR = st.one_of(
    TEXT,
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-7, 1e16, 2.5e-5, -0.0]),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
META = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(["channel", "agent", 'x"y']), TEXT, max_size=3),
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
        st.sampled_from(["c1", "c2", 'c"3', "日", "c 5"]),
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


def _staged(staged) -> dict[str, tuple[list[str], list[str]]]:
    return {s.date: (s.ids.to_pylist(), s.texts.to_pylist()) for s in staged}


@settings(max_examples=200, deadline=None)
@given(
    rows=ROWS,
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    chunk=st.sampled_from([1, 2, 3, 7, CHUNK_MESSAGES]),
)
def test_staging_is_group_by_date_as_the_standard_library_writes_it(rows, zone, chunk):
    frame = _frame(rows)
    tz = ZoneInfo(zone)
    source = 'incoming/a "b".csv'
    fast = list(stage_messages(frame, source, "etag-1", tz, chunk_messages=chunk))
    assert _staged(fast) == _staged(_stage_slowly(frame, source, "etag-1", tz))
    grouped = group_by_date(frame, source, tz)
    assert sorted(s.date for s in fast) == sorted(grouped)
    for staged in fast:
        conversations = grouped[staged.date]
        assert staged.ids.to_pylist() == [c["id"] for c in conversations]
        spliced = b"".join(
            (b'{\n "conversations": [\n  ', *joined_texts([staged.texts]), b"\n ]\n}")
        )
        assert spliced == _stdlib({"conversations": conversations})
        decoded = StagedUpload.decode(staged.encode(), "staging/k.arrow")
        assert (decoded.upload, decoded.etag, decoded.date) == (source, "etag-1", staged.date)
        assert _staged([decoded]) == _staged([staged])
        assert decoded.conversations() == json.loads(_stdlib(conversations))


def test_a_staging_object_of_another_format_is_named_and_refused():
    staged = StagedUpload.from_records("incoming/a.csv", "e", "2026-02-11", [])
    with pytest.raises(StagingFormatError, match=r"staging/2026-02-11/x\.arrow"):
        StagedUpload.decode(b"not arrow at all", "staging/2026-02-11/x.arrow")
    with pytest.raises(StagingFormatError, match=r"staging/x\.json"):
        StagedUpload.decode(b'{"upload": "u"}', "staging/x.json")
    assert len(StagedUpload.decode(staged.encode(), "k")) == 0


def test_a_staging_body_of_the_json_format_before_is_still_merged():
    conversations = group_by_date(
        _frame([("c1", 5, "user", "hi", {}, 1)]), "incoming/a.csv", ZoneInfo("UTC")
    )["2026-02-11"]
    legacy = dump_json(
        {
            "upload": "incoming/a.csv",
            "etag": "e",
            "date": "2026-02-11",
            "conversations": conversations,
        }
    )
    staged = StagedUpload.decode(legacy, "staging/2026-02-11/x.json")
    assert staged.upload == "incoming/a.csv" and staged.conversations() == conversations


@settings(max_examples=150, deadline=None)
@given(rows=ROWS, earlier=ROWS)
def test_model_free_merge_writes_the_pydantic_bytes(rows, earlier):
    with mock.patch.object(document_module, "utc_now_iso", lambda: "2026-02-11T00:00:00.000Z"):
        _check_merge(rows, earlier)


def _check_merge(rows, earlier):
    tz = ZoneInfo("UTC")
    before = {s.date: s for s in stage_messages(_frame(earlier), "incoming/a.csv", "e", tz)}
    later = {s.date: s for s in stage_messages(_frame(rows), "incoming/b.csv", "e", tz)}
    for day, staged in later.items():
        existing = DateDocument.empty(day)
        if day in before:  # the earlier upload's conversations, as models, already saved
            models = [Conversation.model_validate(c) for c in before[day].conversations()]
            existing = existing.model_copy(update={"conversations": models}).sealed(3)
        outcome = merge_staged(existing, [staged])
        known = {c.id for c in existing.conversations}
        new = [c for c in staged.conversations() if c["id"] not in known]
        assert outcome.added == [c["id"] for c in new]
        assert outcome.already_present == [
            c["id"] for c in staged.conversations() if c["id"] in known
        ]
        models = [*existing.conversations, *(Conversation.model_validate(c) for c in new)]
        expected = _stdlib(
            existing.model_copy(update={"conversations": models})
            .sealed(7)
            .model_dump(by_alias=True, exclude_none=False)
        )
        data, version = existing.sealed_json_appending(outcome.appended_json, len(new), 7)
        assert data == expected
        assert version == existing.version + 1


def test_merging_several_uploads_splices_runs_of_rows_in_merge_order():
    def record(cid: str, upload: str) -> dict:
        return {
            "id": cid,
            "startedAt": "s",
            "endedAt": "e",
            "messages": [{"role": "user", "content": upload, "timestamp": "t", "meta": {}}],
            "source": upload,
            "processingStatus": "pending",
        }

    b = StagedUpload.from_records(
        "incoming/b.csv", "e", "d", [record(c, "incoming/b.csv") for c in ("c1", "c2", "c3", "c4")]
    )
    a = StagedUpload.from_records(
        "incoming/a.csv", "e", "d", [record(c, "incoming/a.csv") for c in ("c2", "c5")]
    )
    existing = DateDocument.empty("d").model_copy(
        update={"conversations": [Conversation.model_validate(record("c3", "old"))]}
    )
    outcome = merge_staged(existing, [b, a])
    assert outcome.added == ["c2", "c5", "c1", "c4"]
    assert outcome.already_present == ["c2", "c3"]
    assert outcome.uploads == ["incoming/a.csv", "incoming/b.csv"]
    appended = json.loads(b"[" + b"".join(outcome.appended_json) + b"]")
    assert [(c["id"], c["source"]) for c in appended] == [
        ("c2", "incoming/a.csv"),
        ("c5", "incoming/a.csv"),
        ("c1", "incoming/b.csv"),
        ("c4", "incoming/b.csv"),
    ]


CELL = st.text(alphabet=st.sampled_from([*'ab "\\\n\t\x01é日, ']), max_size=4)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.integers(0, 3000), CELL, CELL),
        min_size=1,
        max_size=15,
    )
)
@pytest.mark.parametrize("combinations", [4096, 0], ids=["by-combination", "by-column"])
def test_a_csvs_extra_columns_are_staged_column_wise_as_their_dicts(rows, combinations):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["conversation_id", "timestamp", "content", "channel", 'x"y'])
    for cid, minute, channel, other in rows:
        stamp = pd.Timestamp(BASE_NS + minute * 60 * 10**9, tz="UTC").isoformat()
        writer.writerow([cid, stamp, "hi", channel, other])
    parsed = parse_upload("incoming/a.csv", out.getvalue().encode())
    assert isinstance(parsed.messages["meta"].dtype, pd.ArrowDtype)  # the column-wise way
    expected = [
        {k: v for k, v in (("channel", channel), ('x"y', other)) if v.strip()}
        for _, _, channel, other in rows
    ]
    assert meta_dicts(parsed.messages["meta"]) == expected
    tz = ZoneInfo("UTC")
    with mock.patch.object(rendering, "_META_CACHE_LIMIT", combinations):
        fast = list(stage_messages(parsed.messages, "incoming/a.csv", "e", tz))
    assert _staged(fast) == _staged(_stage_slowly(parsed.messages, "incoming/a.csv", "e", tz))
