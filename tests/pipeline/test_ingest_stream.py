"""Ingest streams an upload from the store (both backends) and never mixes two versions."""

from __future__ import annotations

import gzip
import random
from contextlib import AbstractContextManager
from typing import Any

import pytest

from convsync_pipeline.core.formats import parse_upload
from convsync_pipeline.core.staging import StagedUpload
from convsync_pipeline.pipeline.ingest import ingest_new_uploads, ingest_upload, unindexed_uploads
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import Store, Streamed

TS = "2026-02-11T14:03:00Z"


def _upload(rows: int, *, ragged_at_end: bool = False) -> bytes:
    noise = random.Random(rows)
    lines = ["conversation_id,timestamp,role,content"]
    lines += [
        f'c{i // 5},{TS},user,"row {i}, {noise.getrandbits(96):x}"' for i in range(rows)
    ]
    if ragged_at_end:
        lines.append(f"c-last,{TS}")  # Arrow refuses it: the parser needs the whole bytes
    return ("\n".join(lines) + "\n").encode()


class ReplacedBeforeSecondRead:
    """A real store whose upload gets a new version just before a second, whole read."""

    def __init__(self, store: Store, key: str, new_version: bytes) -> None:
        self._store, self._key, self._new = store, key, new_version
        self.second_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def open_versioned(
        self, key: str, token: str | None = None
    ) -> AbstractContextManager[Streamed | None]:
        if token is not None and key == self._key:
            self.second_reads += 1
            self._store.write(key, self._new)
        return self._store.open_versioned(key, token)


@pytest.mark.parametrize("gzipped", [False, True], ids=["csv", "csv.gz"])
def test_a_large_upload_is_streamed_to_the_same_staging(any_store: Store, gzipped: bool) -> None:
    data = _upload(60_000)  # ~3 MB: many of the parser's blocks
    key = "incoming/2026-02-11/big.csv" + (".gz" if gzipped else "")
    any_store.write(key, gzip.compress(data) if gzipped else data)
    settings = load_settings({})
    [report] = list(ingest_new_uploads(any_store, settings))
    expected = parse_upload(key.removesuffix(".gz"), data)
    assert (report.records_in, report.accepted, report.quarantined) == (60_000, 60_000, 0)
    [info] = any_store.list("staging/2026-02-11/")
    staged = StagedUpload.decode(any_store.read(info.key), info.key)
    assert staged.ids.to_pylist() == list(dict.fromkeys(expected.messages["conversation_id"]))
    assert [len(c["messages"]) for c in staged.conversations()] == [5] * 12_000


def test_an_upload_replaced_between_two_reads_is_left_for_its_new_version(
    any_store: Store,
) -> None:
    key = "incoming/2026-02-11/export.csv"
    any_store.write(key, _upload(2_000, ragged_at_end=True))
    [info] = unindexed_uploads(any_store)
    new_version = _upload(10)
    replacing = ReplacedBeforeSecondRead(any_store, key, new_version)
    assert ingest_upload(replacing, load_settings({}), info) is None  # type: ignore[arg-type]
    assert replacing.second_reads == 1
    assert list(any_store.list("staging/")) == []
    assert list(any_store.list("state/uploads/")) == []
    [report] = list(ingest_new_uploads(any_store, load_settings({})))
    assert report.records_in == 10 and report.quarantined == 0
