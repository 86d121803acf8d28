"""`convsync migrate` on legacy documents: counts, idempotence, dry runs, corrupt documents."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from convsync_pipeline.operations.migrate import (
    LEGACY_SOURCE,
    UnreadableDocumentError,
    plan_migration,
)
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.store.local import LocalStore
from tests.operations.builders import (
    MISSING,
    conversation,
    document,
    legacy_analysis,
    legacy_conversation,
    legacy_document,
    put,
    read,
    snapshot,
)
from tests.operations.conftest import held_lock

PROCESSED = "2026-02-11T12:00:00.000Z"


def seed_legacy(root: Path) -> None:
    """Three legacy dates and one already in the new shape."""
    put(
        root,
        "2026-02-11",
        legacy_document(
            "2026-02-11",
            [
                legacy_conversation(
                    "a1",
                    processed_at=PROCESSED,
                    analysis=legacy_analysis("negative", "Shipping"),
                    customerTier="gold",
                ),
                legacy_conversation("a2", processed_at=PROCESSED),  # processed, no analysis
                legacy_conversation("a3", processed_at=""),
            ],
        ),
    )
    twelfth = legacy_document(
        "2026-02-12",
        [
            legacy_conversation("b1", "2026-02-12", processed_at=MISSING),
            legacy_conversation("b2", "2026-02-12", processed_at="  "),
            legacy_conversation(
                "b3", "2026-02-12", processed_at=PROCESSED, analysis=legacy_analysis("positive")
            ),
        ],
    )
    twelfth["_blobMeta"] = {"version": 7, "updatedAt": "2026-02-12T20:00:00.000Z"}
    twelfth["legacyNote"] = "kept"
    put(root, "2026-02-12", twelfth)
    put(
        root,
        "2026-02-13",
        document(
            "2026-02-13",
            [
                conversation("n1", "success", "2026-02-13"),
                conversation("n2", "failed", "2026-02-13"),
            ],
            version=4,
        ),
    )


def test_dry_run_reports_per_date_and_leaves_the_store_byte_identical(root: Path, cli) -> None:
    seed_legacy(root)
    before = snapshot(root)

    result = cli("migrate", "--dry-run")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert (
        "2026-02-11: would migrate 3 legacy conversations -> 2 success, 1 pending; "
        "processedCount 2 -> 2; version 0 -> 1; "
        "note: 1 success without an analysis (the legacy system marked them processed)"
    ) in lines
    assert (
        "2026-02-12: would migrate 3 legacy conversations -> 1 success, 2 pending; "
        "processedCount 2 -> 1; version 7 -> 8"
    ) in lines
    assert "2026-02-13: up to date (version 4)" in lines
    assert lines[-1].startswith("dry run: 2 document(s) would be migrated, 1 up to date")
    assert "nothing was written" in lines[-1]
    assert snapshot(root) == before
    assert not (root / "locks").exists(), "a dry run takes no lock"


def test_migrate_converts_legacy_documents_and_a_second_run_changes_nothing(
    root: Path, store: LocalStore, cli, caplog: pytest.LogCaptureFixture
) -> None:
    seed_legacy(root)
    untouched = (root / "conversations" / "2026-02-13.json").read_bytes()
    caplog.set_level(logging.INFO, logger="convsync")

    first = cli("migrate")

    assert first.code == 0, first.err
    assert "migrated 2 document(s), 1 up to date, 0 skipped" in first.out
    assert "[Blob] wrote conversations/2026-02-11.json at version 1" in caplog.text
    assert "[Blob] wrote conversations/2026-02-12.json at version 8" in caplog.text

    eleventh = load_document(store, "2026-02-11").document  # loads: the new shape
    by_id = eleventh.by_id()
    assert [c.processing_status for c in eleventh.conversations] == [
        "success",
        "success",
        "pending",
    ]
    assert all(c.retry_count == 0 and c.processing_error is None for c in eleventh.conversations)
    assert by_id["a1"].processed_at == PROCESSED
    assert by_id["a3"].processed_at is None
    assert by_id["a1"].analysis == legacy_analysis("negative", "Shipping"), "kept verbatim"
    assert by_id["a2"].analysis is None
    assert eleventh.processed_count == 2
    assert eleventh.summary.model_dump() == {
        "total": 3,
        "pending": 1,
        "processing": 0,
        "success": 2,
        "failed": 0,
    }
    assert eleventh.version == 1, "a document without _blobMeta is version 0"
    raw = read(root, "2026-02-11")["conversations"]
    assert raw[0]["customerTier"] == "gold", "unknown legacy fields are preserved"
    assert raw[1]["analysis"] is None and "analysis" in raw[1]
    assert {c["source"] for c in raw} == {LEGACY_SOURCE}

    twelfth = load_document(store, "2026-02-12").document
    assert [c.processing_status for c in twelfth.conversations] == [
        "pending",
        "pending",
        "success",
    ]
    assert [c.processed_at for c in twelfth.conversations] == [None, None, PROCESSED]
    assert twelfth.processed_count == 1
    assert twelfth.version == 8
    assert read(root, "2026-02-12")["legacyNote"] == "kept"
    assert (root / "conversations" / "2026-02-13.json").read_bytes() == untouched

    after_first = snapshot(root)
    caplog.clear()
    second = cli("migrate")

    assert second.code == 0, second.err
    assert "2026-02-11: up to date (version 1)" in second.out
    assert "2026-02-12: up to date (version 8)" in second.out
    assert "migrated 0 document(s), 3 up to date, 0 skipped" in second.out
    assert "[Blob] wrote" not in caplog.text
    conversations_after = {k: v for k, v in snapshot(root).items() if k.startswith("conv")}
    assert conversations_after == {k: v for k, v in after_first.items() if k.startswith("conv")}


def test_unreadable_documents_are_named_left_untouched_and_the_rest_migrated(
    root: Path, store: LocalStore, cli
) -> None:
    put(root, "2026-02-10", b'{"date": "2026-02-10", "conversations": [')
    put(root, "2026-02-11", {"date": "2026-02-11", "conversations": "not a list"})
    put(
        root,
        "2026-02-12",
        legacy_document("2026-02-12", [legacy_conversation("x", processed_at=1234)]),
    )
    put(root, "2026-02-13", legacy_document("2026-02-13", [legacy_conversation("ok")]))
    (root / "conversations" / "notes.json").write_text("{}")
    corrupt = {
        d: (root / "conversations" / f"2026-02-{d}.json").read_bytes() for d in ("10", "11", "12")
    }

    dry = cli("migrate", "--dry-run")
    assert dry.code == 1
    result = cli("migrate")

    assert result.code == 1
    for day in ("10", "11", "12"):
        key = f"conversations/2026-02-{day}.json"
        assert f"{key}: skipped, left untouched: " in result.out
        assert key in result.err
        assert (root / "conversations" / f"2026-02-{day}.json").read_bytes() == corrupt[day]
    assert "not valid JSON" in result.out
    assert "`conversations` is not a list" in result.out
    assert "processedAt is 1234" in result.out
    assert "conversations/notes.json: ignored" in result.out
    migrated = load_document(store, "2026-02-13").document
    assert migrated.conversations[0].processing_status == "pending"
    assert migrated.version == 1
    assert "migrated 1 document(s), 0 up to date, 3 skipped, 1 ignored" in result.out


def test_a_date_locked_by_a_run_is_skipped_with_its_holder_and_the_others_migrate(
    root: Path, store: LocalStore, cli
) -> None:
    put(root, "2026-02-11", legacy_document("2026-02-11", [legacy_conversation("a")]))
    put(root, "2026-02-12", legacy_document("2026-02-12", [legacy_conversation("b")]))
    locked = (root / "conversations" / "2026-02-11.json").read_bytes()

    with held_lock(store, "2026-02-11", "run-busy-42"):
        result = cli("migrate")

    assert result.code == 1
    lines = result.out.splitlines()
    line = next(text for text in lines if text.startswith("conversations/2026-02-11"))
    assert "2026-02-11" in line and "run-busy-42" in line
    assert (root / "conversations" / "2026-02-11.json").read_bytes() == locked
    assert load_document(store, "2026-02-12").document.version == 1
    assert cli("migrate").code == 0, "once the run is over the date migrates"
    assert load_document(store, "2026-02-11").document.version == 1
    with held_lock(store, "2026-02-11", "run-busy-43"):
        again = cli("migrate")
    assert again.code == 0, "an up-to-date date needs no lock"
    assert "2026-02-11: up to date (version 1)" in again.out


@pytest.mark.parametrize(
    ("processed_at", "status"),
    [
        ("", "pending"),
        ("   ", "pending"),
        (None, "pending"),
        (MISSING, "pending"),
        (PROCESSED, "success"),
        ("2026-02-11 12:00", "success"),
    ],
)
def test_processed_at_decides_the_status(processed_at: object, status: str) -> None:
    body = legacy_document("2026-02-11", [legacy_conversation("c", processed_at=processed_at)])

    plan = plan_migration("2026-02-11", json.dumps(body).encode())

    migrated = plan.document.conversations[0]
    assert migrated.processing_status == status
    assert (migrated.processed_at is None) == (status == "pending")
    assert plan.needs_write
    assert plan.processed_count_after == (status == "success")


def test_mixed_documents_only_complete_what_is_missing() -> None:
    done = conversation("new", "failed", retry=3, error="schema")
    body = document("2026-02-11", [done])
    body["conversations"].append(legacy_conversation("old", processed_at=""))
    body["processedCount"] = 0

    plan = plan_migration("2026-02-11", json.dumps(body).encode())

    assert (plan.legacy, plan.to_pending, plan.to_success) == (1, 1, 0)
    new = plan.document.by_id()["new"]
    assert (new.processing_status, new.retry_count, new.processing_error) == ("failed", 3, "schema")


def test_conversations_without_the_new_required_fields_get_them_derived() -> None:
    bare = {
        "id": 42,
        "processedAt": "",
        "messages": [
            {"role": "agent", "content": "hi", "timestamp": "2026-02-11T10:05:00.000Z"},
            {"role": "user", "content": "help", "timestamp": "2026-02-11T10:01:00.000Z"},
        ],
    }
    plan = plan_migration("2026-02-11", json.dumps({"conversations": [bare]}).encode())

    migrated = plan.document.conversations[0]
    assert migrated.id == "42"
    assert (migrated.started_at, migrated.ended_at) == (
        "2026-02-11T10:01:00.000Z",
        "2026-02-11T10:05:00.000Z",
    )
    assert migrated.source == LEGACY_SOURCE


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"date": "2026-02-12", "conversations": []}', "holds the document of '2026-02-12'"),
        (b'{"conversations": [1]}', "conversation #0 is not a JSON object"),
        (
            b'{"conversations": [{"id": "a", "processingStatus": "done"}]}',
            "unknown processingStatus",
        ),
        (b'{"conversations": [{"id": "a", "processedAt": ""}]}', "no startedAt/endedAt"),
    ],
)
def test_unreadable_shapes_are_explained(body: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocumentError, match=reason.replace("(", r"\(")):
        plan_migration("2026-02-11", body)
