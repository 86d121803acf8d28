"""`convsync status`: the per-date table, totals, and notes on what does not add up."""

from __future__ import annotations

from pathlib import Path

from convsync_pipeline.store.local import LocalStore
from tests.operations.builders import (
    conversation,
    document,
    legacy_conversation,
    legacy_document,
    put,
    put_summary,
)
from tests.operations.conftest import held_lock

HEADER = [
    "date",
    "total",
    "pending",
    "processing",
    "success",
    "failed",
    "processedCount",
    "version",
]


def table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and (cells[0].startswith("2026-") or cells[0] in {"TOTAL", "date"}):
            rows[cells[0]] = cells
    return rows


def seed_consistent(root: Path) -> None:
    put(
        root,
        "2026-02-11",
        document(
            "2026-02-11",
            [
                conversation("a", "success"),
                conversation("b", "failed", retry=3, error="x"),
                conversation("c", "pending"),
            ],
            version=3,
        ),
    )
    put_summary(root, "2026-02-11", 3)


def test_status_table_with_totals_and_no_inconsistencies(root: Path, cli) -> None:
    seed_consistent(root)
    put(root, "2026-02-12", document("2026-02-12", [conversation("d", "success", "2026-02-12")]))
    put_summary(root, "2026-02-12", 1)

    result = cli("status")

    assert result.code == 0, result.err
    rows = table_rows(result.out)
    assert rows["date"][: len(HEADER)] == HEADER
    assert rows["2026-02-11"][1:8] == ["3", "1", "0", "1", "1", "1", "3"]
    assert rows["2026-02-11"][8] == "2026-02-11T23:00:00.000Z"
    assert rows["2026-02-12"][1:8] == ["1", "0", "0", "1", "0", "1", "1"]
    assert rows["TOTAL"][1:7] == ["4", "1", "0", "2", "1", "2"]
    assert "no inconsistencies found" in result.out
    assert "1 failed: see `convsync failed 2026-02-11`" in result.out


def test_status_notes_every_kind_of_inconsistency(root: Path, cli) -> None:
    body = document(
        "2026-02-11",
        [
            conversation("a", "success"),
            conversation("a", "pending"),
            conversation("p", "processing"),
        ],
        version=9,
        processed_count=3,
        summary={"total": 3, "pending": 1, "processing": 0, "success": 2, "failed": 0},
    )
    put(root, "2026-02-11", body)
    put_summary(root, "2026-02-11", 8)

    result = cli("status", "2026-02-11")

    assert result.code == 0, result.err
    assert table_rows(result.out)["2026-02-11"][1:8] == ["3", "1", "1", "1", "0", "3", "9"]
    section = result.out.split("inconsistencies (5):")[1]
    assert "processedCount is 3 but 1 conversation(s) are success" in section
    assert "summary differs from the recount:" in section
    assert "processing 0 stored vs 1 counted" in section
    assert "success 2 stored vs 1 counted" in section
    assert "duplicate conversation ids: 'a' x2" in section
    assert "1 conversation(s) stuck processing while no run holds the lock" in section
    assert "summaries/2026-02-11.json was computed from version 8" in section
    assert "at version 9" in section


def test_processing_under_a_held_lock_is_a_run_at_work_not_an_inconsistency(
    root: Path, store: LocalStore, cli
) -> None:
    put(root, "2026-02-11", document("2026-02-11", [conversation("p", "processing")]))
    put_summary(root, "2026-02-11", 1)

    with held_lock(store, "2026-02-11", "run-analysing"):
        result = cli("status")

    assert result.code == 0, result.err
    assert "no inconsistencies found" in result.out
    assert "a run holds the lock: run run-analysing" in result.out
    assert "stuck" not in result.out


def test_legacy_and_unreadable_documents_are_shown_not_fatal(root: Path, cli) -> None:
    seed_consistent(root)
    put(root, "2026-02-12", legacy_document("2026-02-12", [legacy_conversation("old")]))
    put(root, "2026-02-13", b"\x00garbage")

    result = cli("status")

    assert result.code == 0, result.err
    rows = table_rows(result.out)
    assert rows["2026-02-12"][-2:] == ["unreadable", "-"]
    assert rows["TOTAL"][1] == "3"
    assert "conversations/2026-02-12.json: a legacy document" in result.out
    assert "convsync migrate" in result.out
    assert "conversations/2026-02-13.json" in result.out


def test_status_of_one_missing_or_legacy_date_is_an_error(root: Path, cli) -> None:
    put(root, "2026-02-12", legacy_document("2026-02-12", [legacy_conversation("old")]))

    missing = cli("status", "2026-02-11")
    legacy = cli("status", "2026-02-12")

    assert missing.code == 1 and "no date document for 2026-02-11" in missing.err
    assert legacy.code == 1 and "run `convsync migrate`" in legacy.err


def test_an_empty_store_says_so(root: Path, cli) -> None:
    result = cli("status")
    assert result.code == 0
    assert "no date documents" in result.out


def notes_of(out: str, date: str) -> str:
    return "\n".join(line for line in out.splitlines() if f"{date}:" in line)


def test_a_missing_summary_names_the_step_that_unblocks_the_date(root: Path, cli) -> None:
    put(root, "2026-02-11", document("2026-02-11", [conversation("a", "pending")]))
    put(root, "2026-02-12", document("2026-02-12", [conversation("b", "success", "2026-02-12")]))

    result = cli("status")

    pending = notes_of(result.out, "2026-02-11")
    assert "1 conversation(s) still pending: materialise ai_analysis, then daily_summary" in pending
    assert "dg launch --assets 'ai_analysis,daily_summary' --partition 2026-02-11" in pending
    done = notes_of(result.out, "2026-02-12")
    assert "materialise daily_summary (`dg launch --assets 'daily_summary'" in done
    assert "ai_analysis" not in done


def test_a_stale_summary_of_a_date_still_analysing_points_at_ai_analysis(
    root: Path, cli
) -> None:
    put(root, "2026-02-11", document("2026-02-11", [conversation("a", "pending")], version=3))
    put_summary(root, "2026-02-11", 2)
    result = cli("status")
    note = notes_of(result.out, "2026-02-11")
    assert "computed from version 2" in note and "materialise ai_analysis" in note


def test_a_document_migrate_cannot_fix_is_not_sent_to_migrate(root: Path, cli) -> None:
    """No circle: status must not say `convsync migrate` for a document migrate skips."""
    broken = legacy_conversation("old", messages="not a list")
    put(root, "2026-02-12", legacy_document("2026-02-12", [broken]))

    status = cli("status")
    migrate = cli("migrate", "--dry-run")

    assert "skipped" in migrate.out + migrate.err, "migrate cannot fix it"
    note = notes_of(status.out, "conversations/2026-02-12.json")
    assert "`convsync migrate` cannot fix it" in note
    assert "run `convsync migrate`" not in status.out
    assert "repair or replace the file by hand" in note
    fixable = cli("status", "2026-02-12")
    assert fixable.code == 1 and "cannot fix" in fixable.err
