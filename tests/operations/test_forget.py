"""`convsync forget`: a customer's conversations erased everywhere convsync keeps them.

Built through the real pipeline (ingest, merge, analysis, summary) on both stores, with
checkpoints held back so the date's log holds the conversations too (appended by the merge,
their analysis in later entries); then erased by id and by text, checked object by object.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from convsync_pipeline.analyzers.local import LocalAnalyzer
from convsync_pipeline.core import journal
from convsync_pipeline.core.staging import StagedUpload
from convsync_pipeline.operations import OperationError
from convsync_pipeline.operations.forget import Selector, forget
from convsync_pipeline.pipeline.analyse import analyse_date
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.pipeline.ingest import ingest_new_uploads
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.pipeline.summarise import write_daily_summary
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import Store, StoreLocks
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload

D = "2026-02-11"
SECRET_WORDS = "jane.doe@example.com"


def _export(*ids: str, bad: str | None = None) -> bytes:
    rows = [(i, f"{D}T09:0{n % 10}:00Z", "user", f"Hello from {i}") for n, i in enumerate(ids)]
    rows.insert(1, ("gone", f"{D}T08:00:00Z", "user", f"write me at {SECRET_WORDS}"))
    if bad:
        rows.append((bad, "not a time", "user", f"also {SECRET_WORDS}"))
    return csv_upload(*rows)


def _settings(store: Store):
    return load_settings({"CONVSYNC_STORE": "./unused", "CONVSYNC_START_DATE": "2026-01-01"})


def _pipeline(store: Store, locks: StoreLocks, settings) -> None:
    list(ingest_new_uploads(store, settings))
    merge_date(store, locks, D, "test-merge")
    analyse_date(store, locks, settings, LocalAnalyzer, D, "test-analyse")
    write_daily_summary(store, locks, D, "test-summary")


def _leftovers(store: Store, erased_id: str) -> list[str]:
    """Objects outside incoming/ still holding the conversation or its words."""
    found = []
    for info in store.list(""):
        if info.key.startswith(("incoming/", "state/forgotten/")):
            continue
        data = store.read(info.key) or b""
        if info.key.startswith("staging/"):
            staged = StagedUpload.decode(data, info.key)
            text = json.dumps(staged.conversations())
        else:
            text = data.decode("utf-8", "replace")
        if SECRET_WORDS in text or f'"{erased_id}"' in text:
            found.append(info.key)
    return found


@pytest.fixture
def built(any_store: Store, monkeypatch: pytest.MonkeyPatch):
    return _build(any_store, monkeypatch)


def _build(store: Store, monkeypatch: pytest.MonkeyPatch):
    # Never checkpoint mid-way: merges and passes leave their entries for forget to fold.
    monkeypatch.setattr(journal, "CHECKPOINT_FRACTION", 1e9)
    locks = StoreLocks(store, ttl_seconds=30, wait_seconds=10)
    settings = _settings(store)
    store.write(f"incoming/{D}/first.csv", _export("a", "b", bad="gone"))
    _pipeline(store, locks, settings)
    store.write(f"incoming/{D}/second.csv", csv_upload(("c", f"{D}T10:00:00Z", "user", "hi")))
    list(ingest_new_uploads(store, settings))
    merge_date(store, locks, D, "test-merge")  # an entry appending c, left unfolded
    assert _leftovers(store, "gone"), "the test plants the conversation everywhere"
    return store, locks, settings


@pytest.mark.parametrize("how", ["id", "match"])
def test_forget_erases_everywhere_and_only_once(built, how: str) -> None:
    store, locks, settings = built
    selector = Selector(ids=frozenset({"gone"})) if how == "id" else Selector(match="JANE.DOE@")
    journal_keys = [i.key for i in store.list(f"journal/{D}/") if "ids" not in i.key]
    assert any(b'"gone"' in (store.read(k) or b"") for k in journal_keys)

    dry = forget(store, locks, selector, owner="test", dry_run=True)
    assert dry.ids == {"gone"} and _leftovers(store, "gone"), "a dry run writes nothing"

    report = forget(store, locks, selector, owner="test")
    assert report.ids == {"gone"}
    where = {r.key for r in report.removed}
    assert f"conversations/{D}.json" in where and f"summaries/{D}.json" in where
    assert any(k.startswith(f"journal/{D}/0") for k in where)
    assert any(k.startswith(f"staging/{D}/") for k in where)
    assert any(k.startswith("quarantine/") for k in where)
    assert report.incoming == [f"incoming/{D}/first.csv"]
    assert "gone" in report.describe() and "incoming/" in report.describe()
    assert _leftovers(store, "gone") == []
    assert SECRET_WORDS.encode() in store.read(f"incoming/{D}/first.csv"), "never touched"

    document = load_document(store, D).document
    assert sorted(c.id for c in document.conversations) == ["a", "b", "c"]
    assert document.summary.total == 3
    summary = json.loads(store.read(f"summaries/{D}.json"))
    assert summary["summary"]["total"] == 3
    index = json.loads(store.read(f"journal/{D}/ids.json"))
    assert sorted(index["ids"]) == ["a", "b", "c"]

    # Idempotent: nothing found, nothing written.
    version = document.version
    again = forget(store, locks, selector, owner="test")
    assert again.removed == [] and load_document(store, D).document.version == version

    # The same export uploaded again: the tombstone keeps it out, the rest still merges.
    store.write(f"incoming/{D}/first-again.csv", _export("a", "b", "d"))
    _pipeline(store, locks, settings)
    ids = sorted(c.id for c in load_document(store, D).document.conversations)
    assert ids == ["a", "b", "c", "d"]
    assert _leftovers(store, "gone") == [], "not even staged again"


def test_forget_needs_something_to_look_for() -> None:
    with pytest.raises(OperationError, match="--id ID… or --match TEXT"):
        Selector(match="  ")


class _SlowAnalyzer(LocalAnalyzer):
    async def analyze(self, conversation):
        await asyncio.sleep(0.01)
        return await super().analyze(conversation)


def test_forget_is_safe_against_a_run_of_the_same_date(built) -> None:
    store, locks, settings = built
    settings = settings.model_copy(update={"analysis_concurrency": 2})
    store.write(
        f"incoming/{D}/third.csv",
        csv_upload(*[(f"x{n:03d}", f"{D}T11:00:00Z", "user", "hello") for n in range(150)]),
    )
    list(ingest_new_uploads(store, settings))
    merge_date(store, locks, D, "test-merge")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            analyse_date(store, locks, settings, _SlowAnalyzer, D, "concurrent-run")
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)  # the pass holds the lock and is sending: forget waits for it
    report = forget(store, locks, Selector(ids=frozenset({"gone"})), owner="test")
    thread.join()
    assert errors == []
    assert report.ids == {"gone"}
    document = load_document(store, D).document
    assert "gone" not in {c.id for c in document.conversations}
    assert document.summary.total == 153 and document.summary.success == 153
    assert _leftovers(store, "gone") == []


def test_forget_from_the_command_line(tmp_path, monkeypatch, capsys) -> None:
    from convsync_pipeline.cli import main

    store, _, _ = _build(LocalStore(tmp_path / "store"), monkeypatch)
    monkeypatch.setenv("CONVSYNC_STORE", str(store.root))
    assert main(["forget", "--match", SECRET_WORDS, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 conversation(s)" in out and f"conversations/{D}.json" in out
    assert SECRET_WORDS not in out
    assert _leftovers(store, "gone")
    assert main(["forget", "--id", "gone"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("removed 1 conversation(s)") and f"incoming/{D}/first.csv" in out
    assert _leftovers(store, "gone") == []
    assert main(["forget", "--id", "gone"]) == 0
    assert capsys.readouterr().out.startswith("nothing to forget")


def test_a_quarantine_record_goes_when_it_names_the_id_as_a_value() -> None:
    selector = Selector(ids=frozenset({"a"}))
    assert selector.quarantined('"a","not a time","user","hi"', {"a"})
    assert selector.quarantined('{"conversation_id": "a", "timestamp": "x"}', {"a"})
    assert selector.quarantined("a,not a time,user,hi", {"a"})
    assert not selector.quarantined('"c","not a time","user","a b c"', {"a"})
    assert Selector(match="Jane").quarantined('"c","x","user","hi JANE"', set())
