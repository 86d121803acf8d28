"""Grouping past the memory budget (spilled to disk) stages exactly what grouping in memory does."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import spill
from convsync_pipeline.core.rendering import render_messages
from convsync_pipeline.core.spill import Grouping, bucket_of
from convsync_pipeline.core.staging import stage_messages

BASE_NS = 1_770_768_000 * 10**9  # 2026-02-11T00:00:00Z
SOURCE = 'incoming/a "b".csv'


def _frame(rows: list[tuple[str, int, str, dict]]) -> pd.DataFrame:
    """Messages as a parser gives them: record numbers unique and rising."""
    stamps = [pd.Timestamp(BASE_NS + minute * 60 * 10**9, tz="UTC") for _, minute, _, _ in rows]
    return pd.DataFrame(
        {
            "conversation_id": pd.Series([r[0] for r in rows], dtype="str"),
            "timestamp": pd.Series(
                [s.strftime("%Y-%m-%dT%H:%M:%S.000Z") for s in stamps], dtype="str"
            ),
            "ts_ns": np.array([s.value for s in stamps], dtype=np.int64),
            "role": pd.Series(["user"] * len(rows), dtype="str"),
            "content": pd.Series([r[2] for r in rows], dtype="str"),
            "meta": pd.Series([r[3] for r in rows], dtype=object),
            "record_no": np.arange(1, len(rows) + 1, dtype=np.int64),
        }
    )


def _grouped(frame: pd.DataFrame, cuts: list[int], budget: int, tmp: Path, tz: ZoneInfo):
    """The frame handed over in parts (cut at `cuts`) and grouped within `budget` bytes."""
    bounds = sorted({0, len(frame), *(c % (len(frame) + 1) for c in cuts)})
    with Grouping(SOURCE, tz, budget_bytes=budget, directory=str(tmp), chunk_messages=3) as g:
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                g.add(render_messages(frame.iloc[lo:hi].reset_index(drop=True)))
        result = {
            date: [(ids.to_pylist(), texts.to_pylist()) for ids, texts in chunks]
            for date, chunks in g.dates()
        }
        spilled = g.spilled
    flat = {
        date: ([i for ids, _ in chunks for i in ids], [t for _, texts in chunks for t in texts])
        for date, chunks in result.items()
    }
    return flat, spilled


def _in_memory(frame: pd.DataFrame, tz: ZoneInfo):
    return {
        s.date: (s.ids.to_pylist(), s.texts.to_pylist())
        for s in stage_messages(frame, SOURCE, "e", tz)
    }


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", 'c"3', "日", "c 5", "c6", "c7"]),
        st.integers(-600, 3000),
        st.text(alphabet=st.sampled_from([*'ab "\\\n\x01é日']), max_size=5),
        st.one_of(st.just({}), st.dictionaries(st.sampled_from(["channel", "k"]), st.text(
            max_size=3), max_size=2)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(
    rows=ROWS,
    cuts=st.lists(st.integers(0, 40), max_size=4),
    budget=st.sampled_from([64, 2_000, 20_000, 1 << 30]),
    zone=st.sampled_from(["UTC", "America/New_York"]),
)
def test_spilled_grouping_stages_what_grouping_in_memory_does(
    tmp_path_factory, rows, cuts, budget, zone
):
    tmp = tmp_path_factory.mktemp("spill")
    tz = ZoneInfo(zone)
    frame = _frame(rows)
    grouped, _ = _grouped(frame, cuts, budget, tmp, tz)
    assert grouped == _in_memory(frame, tz)
    assert os.listdir(tmp) == []  # every spill file removed


def test_a_large_upload_spills_splits_again_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spill, "FANOUT", 4)  # few buckets: some must be split again
    rng = np.random.default_rng(3)
    rows = [
        (f"c{int(c)}", int(m), f"message {i}", {"channel": "web"} if i % 3 else {})
        for i, (c, m) in enumerate(zip(rng.integers(0, 3000, 30_000),
                                       rng.integers(-600, 3000, 30_000), strict=True))
    ]
    frame = _frame(rows)
    tz = ZoneInfo("UTC")
    with Grouping(SOURCE, tz, budget_bytes=400_000, directory=str(tmp_path)) as grouping:
        for lo in range(0, len(frame), 4096):
            grouping.add(render_messages(frame.iloc[lo : lo + 4096].reset_index(drop=True)))
        assert grouping.spilled
        got = {
            date: tuple(
                [value for c in column for value in c.to_pylist()]
                for column in zip(*chunks, strict=True)
            )
            for date, chunks in grouping.dates()
        }
        stats = grouping.stats
    assert got == {date: tuple(pair) for date, pair in _in_memory(frame, tz).items()}
    assert stats.units > 4 and stats.buckets > 4 and stats.spilled_bytes > 0
    assert os.listdir(tmp_path) == []


def test_a_reset_forgets_what_was_spilled(tmp_path: Path) -> None:
    frame = _frame([(f"c{i % 50}", i, "x" * 50, {}) for i in range(2000)])
    with Grouping(SOURCE, ZoneInfo("UTC"), budget_bytes=10_000, directory=str(tmp_path)) as g:
        g.add(render_messages(frame))
        assert g.spilled
        g.reset()
        assert not g.spilled and os.listdir(tmp_path) == []
        g.add(render_messages(frame.iloc[:10].reset_index(drop=True)))
        got = [[i for ids, _ in chunks for i in ids.to_pylist()] for _, chunks in g.dates()]
        assert got == [[f"c{i}" for i in range(10)]]


def test_bucket_of_is_stable_and_salted() -> None:
    ids = pa.array(["a", "b", "", "日本", "a", "conversation-123456"])
    first = bucket_of(ids, 32, 0)
    assert first.tolist() == bucket_of(ids.slice(0), 32, 0).tolist()
    assert first[0] == first[4]  # one id, one bucket
    assert ((first >= 0) & (first < 32)).all()
    many = pa.array([f"c{i}" for i in range(10_000)])
    counts = np.bincount(bucket_of(many, 32, 0), minlength=32)
    assert counts.min() > 200  # spread: no bucket starves, none takes everything
    assert (bucket_of(many, 32, 0) != bucket_of(many, 32, 1)).mean() > 0.9
    assert bucket_of(many.slice(5000), 32, 0).tolist() == bucket_of(many, 32, 0)[5000:].tolist()
