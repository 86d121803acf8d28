"""The folder store's version token is a content digest, remembered so a file is hashed once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from convsync_pipeline.store.local import Digests, LocalStore

KEY = "incoming/2026-02-11/export.csv"


def cached_files(root: Path) -> list[Path]:
    return sorted((root / ".convsync" / "digests").rglob("*.json"))


def test_a_settled_file_is_hashed_once_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Digests, "SETTLED_NS", 0)
    LocalStore(tmp_path).write(KEY, b"id,text\n1,hello\n")
    (path,) = tmp_path.joinpath("incoming").rglob("*.csv")
    # A copy made by another tool (cp, rsync): not written by the store, so not known yet.
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)

    (info,) = LocalStore(tmp_path).list("incoming/")
    real = info.etag
    (cached,) = cached_files(tmp_path)
    assert json.loads(cached.read_text())["digest"] == real

    # A new process trusts the cache while the file's signature holds: it does not re-hash.
    body = json.loads(cached.read_text())
    cached.write_text(json.dumps({**body, "digest": "f" * 32}))
    (info,) = LocalStore(tmp_path).list("incoming/")
    assert info.etag == "f" * 32

    # Any change to the file changes its signature, and the digest is computed afresh.
    path.write_bytes(b"id,text\n1,hullo\n")
    (info,) = LocalStore(tmp_path).list("incoming/")
    assert info.etag not in {"f" * 32, real}


def test_a_file_changed_just_now_is_not_cached_for_other_processes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    path = tmp_path / "incoming" / "a.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    (info,) = store.list("incoming/")
    assert info.etag
    assert cached_files(tmp_path) == [], "a write in the same clock tick could hide behind it"


def test_rewriting_identical_bytes_in_place_keeps_the_token(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write(KEY, b"same bytes")
    token = store.read_versioned(KEY).token
    path = tmp_path / KEY
    path.write_bytes(b"same bytes")  # in place: same inode, new mtime
    os.utime(path, ns=(1, 1))
    assert LocalStore(tmp_path).read_versioned(KEY).token == token
    assert store.compare_and_swap(KEY, b"next", token)
