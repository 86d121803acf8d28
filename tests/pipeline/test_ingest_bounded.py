"""Ingest of uploads of any size, on both stores: spilled past a small budget to the very staging
a whole-memory ingest writes; decompression bombs and oversized JSON quarantined whole."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from convsync_pipeline.core.formats import parse_upload
from convsync_pipeline.core.staging import StagedUpload, stage_messages
from convsync_pipeline.pipeline.ingest import ingest_upload, unindexed_uploads
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import Store, Streamed

D = "2026-02-11"


def _csv(rows: int) -> bytes:
    noise = random.Random(rows)
    lines = ["conversation_id,timestamp,role,content,channel"]
    for i in range(rows):
        conversation = noise.randrange(rows // 6)  # ids scattered over the whole file
        minute = noise.randrange(4 * 24 * 60)
        stamp = f"2026-02-{11 + minute // 1440:02d}T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"
        if i % 997 == 0:
            stamp = "not a date"
        lines.append(f'c{conversation},{stamp},user,"row {i}, {noise.getrandbits(64):x}",web')
    return ("\n".join(lines) + "\n").encode()


def _jsonl(rows: int) -> bytes:
    noise = random.Random(rows)
    lines = []
    for i in range(rows):
        if i % 500 == 0:
            lines.append("{broken")
            continue
        conversation = noise.randrange(rows // 5)
        lines.append(json.dumps({
            "id": f"c{conversation}", "topic": "billing" if i % 2 else "login",
            "messages": [{"role": "user", "content": f"m{i}", "timestamp":
                          f"{D}T{noise.randrange(24):02d}:{noise.randrange(60):02d}:00Z"}],
        }))
    return ("\n".join(lines) + "\n").encode()


def _staged(store: Store) -> dict[str, tuple[list[str], list[str]]]:
    out = {}
    for info in store.list("staging/"):
        staged = StagedUpload.decode(store.read(info.key) or b"", info.key)
        out[staged.date] = (staged.ids.to_pylist(), staged.texts.to_pylist())
    return out


@pytest.mark.parametrize(
    ("name", "make"),
    [("export.csv", _csv), ("export.csv.gz", _csv), ("export.jsonl", _jsonl),
     ("export.ndjson.gz", _jsonl)],
)
def test_an_upload_larger_than_the_budget_is_spilled_to_the_same_staging(
    any_store: Store, name: str, make: Any
) -> None:
    data = make(60_000)
    key = f"incoming/{D}/{name}"
    stored = gzip.compress(data) if name.endswith(".gz") else data
    any_store.write(key, stored)
    settings = load_settings({"CONVSYNC_INGEST_MEMORY_MB": "16"})  # a 4 MB grouping unit
    [info] = unindexed_uploads(any_store)
    report = ingest_upload(any_store, settings, info)
    assert report is not None and report.spilled_bytes > 0

    whole = parse_upload(key, stored)  # the upload read in one piece, grouped in memory
    expected = {
        s.date: (s.ids.to_pylist(), s.texts.to_pylist())
        for s in stage_messages(whole.messages, key, info.etag, settings.tz)
    }
    assert _staged(any_store) == expected
    assert (report.records_in, report.accepted, report.quarantined) == (
        whole.records_in, whole.accepted, len(whole.quarantined)
    )
    assert report.records_in == report.accepted + report.quarantined
    assert report.conversations_by_date == {d: len(ids) for d, (ids, _) in expected.items()}
    lines = (any_store.read(report.quarantine_key or "") or b"").decode().splitlines()
    assert lines == [record.to_json_line() for record in whole.quarantined]
    assert unindexed_uploads(any_store) == []


class CountingReads:
    """A real store that counts the bytes read from one key's streams."""

    def __init__(self, store: Store, key: str) -> None:
        self._store, self._key = store, key
        self.read_bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextlib.contextmanager
    def open_versioned(self, key: str, token: str | None = None) -> Iterator[Streamed | None]:
        with self._store.open_versioned(key, token) as found:
            if found is None or key != self._key:
                yield found
                return
            outer = self

            class Counted:
                def read(self, size: int = -1) -> bytes:
                    piece = found.stream.read(size)
                    outer.read_bytes += len(piece)
                    return piece

            yield Streamed(Counted(), found.token, found.size)  # type: ignore[arg-type]


def _bomb(members: int) -> tuple[bytes, int]:
    """Valid JSONL that inflates ~250 times: gzip members repeated (a classic bomb's shape)."""
    line = json.dumps({"conversation_id": "bomb", "timestamp": f"{D}T10:00:00Z",
                       "content": "x"}).encode() + b"\n"
    member = gzip.compress(line * 20_000, 9)
    return member * members, len(line) * 20_000 * members


def test_a_decompression_bomb_is_quarantined_after_reading_no_more_than_its_limit(
    any_store: Store,
) -> None:
    body, inflated = _bomb(700)  # ~4 MB stored, ~1 GB inflated
    key = f"incoming/{D}/bomb.jsonl.gz"
    any_store.write(key, body)
    any_store.write(f"incoming/{D}/fine.csv", b"conversation_id,timestamp\nok,2026-02-11T09:00Z\n")
    settings = load_settings({"CONVSYNC_MAX_INFLATE_RATIO": "5"})
    counting = CountingReads(any_store, key)
    reports = {info.key: ingest_upload(counting, settings, info)  # type: ignore[arg-type]
               for info in unindexed_uploads(any_store)}
    bomb = reports[key]
    assert bomb is not None
    assert (bomb.records_in, bomb.accepted, bomb.quarantined) == (1, 0, 1)
    assert bomb.conversations_by_date == {}  # nothing of it staged, however much parsed
    [line] = (any_store.read(bomb.quarantine_key or "") or b"").decode().splitlines()
    record = json.loads(line)
    assert record["upload"] == key and record["file"] is None
    assert "decompression bomb" in record["reason"]
    assert "CONVSYNC_MAX_INFLATE_RATIO=5" in record["reason"]
    # The limit is 5 x ~4 MB inflated: a fraction of the stored bytes is read, not the bomb.
    assert 5 * len(body) < inflated
    assert counting.read_bytes < len(body) // 2 + 65_536 * 2
    uploads_staged = {
        StagedUpload.decode(any_store.read(i.key) or b"", i.key).upload
        for i in any_store.list("staging/")
    }
    assert uploads_staged == {f"incoming/{D}/fine.csv"}
    assert reports[f"incoming/{D}/fine.csv"].accepted == 1  # the next upload goes on
    assert unindexed_uploads(any_store) == []  # indexed: never read again


def test_a_json_document_too_large_for_the_budget_is_quarantined_whole(
    any_store: Store,
) -> None:
    records = [{"conversation_id": f"c{i}", "timestamp": f"{D}T10:00:00Z", "content": "y" * 40}
               for i in range(40_000)]
    key = f"incoming/{D}/huge.json"
    any_store.write(key, json.dumps(records).encode())  # ~3.6 MB; the budget parses 1.6 MB
    long_line = json.dumps({"conversation_id": "long", "timestamp": f"{D}T10:00:00Z",
                            "content": "z" * 2_000_000})
    any_store.write(f"incoming/{D}/lines.jsonl", (
        json.dumps({"conversation_id": "short", "timestamp": f"{D}T10:00:00Z"}) + "\n"
        + long_line + "\n"
        + json.dumps({"conversation_id": "after", "timestamp": f"{D}T11:00:00Z"}) + "\n"
    ).encode())
    settings = load_settings({"CONVSYNC_INGEST_MEMORY_MB": "16"})
    reports = {info.key: ingest_upload(any_store, settings, info)
               for info in unindexed_uploads(any_store)}
    huge = reports[key]
    assert huge is not None and (huge.records_in, huge.quarantined) == (1, 1)
    [line] = (any_store.read(huge.quarantine_key or "") or b"").decode().splitlines()
    reason = json.loads(line)["reason"]
    assert "larger than 1 MB" in reason and "JSONL" in reason and "Split" in reason
    assert len(json.loads(line)["raw"]) == 65_536
    lines = reports[f"incoming/{D}/lines.jsonl"]
    assert lines is not None and (lines.records_in, lines.accepted, lines.quarantined) == (3, 2, 1)
    [bad] = (any_store.read(lines.quarantine_key or "") or b"").decode().splitlines()
    assert json.loads(bad)["line"] == 2 and "line longer than" in json.loads(bad)["reason"]
    assert _staged(any_store)[D][0] == ["short", "after"]
