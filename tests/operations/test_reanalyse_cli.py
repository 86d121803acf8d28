"""`convsync reanalyse`, `status` and `failed` as a user runs them (local analyser, folder
store): the estimate first, nothing written by a dry run, once per version."""

from __future__ import annotations

from pathlib import Path

from convsync_pipeline.analyzers.local import ANALYSIS_VERSION
from tests.operations.builders import conversation, document, put, read, snapshot
from tests.operations.conftest import held_lock

D1, D2 = "2026-02-11", "2026-02-12"


def stored(root: Path) -> dict[str, bytes]:
    """The store's objects, without the folder store's own caches (`.convsync/digests`: a
    read may remember a content digest there)."""
    return {k: v for k, v in snapshot(root).items() if not k.startswith(".convsync/digests")}


def seed(root: Path) -> None:
    put(root, D1, document(D1, [conversation("a", "success"), conversation("b", "success")]))
    second = [conversation("c", "success", D2), conversation("d", "pending", D2)]
    put(root, D2, document(D2, second))


def test_dry_run_estimates_and_writes_nothing(root: Path, cli) -> None:
    seed(root)
    before = stored(root)
    result = cli("reanalyse", "--from", D1, "--to", D2, "--dry-run")
    assert result.code == 0, result.err
    assert f"current analysis version: {ANALYSIS_VERSION}" in result.out
    assert "3 conversation(s) on 2 date(s) of 2" in result.out
    assert "$0.0000 live, $0.0000 with the Batch API" in result.out  # the local analyser
    assert "dry run: nothing marked, nothing sent" in result.out
    assert stored(root) == before


def test_reanalyse_brings_the_range_to_the_current_version_once(root: Path, cli) -> None:
    seed(root)
    status = cli("status")
    assert "answers of other analysis versions (2 of unversioned)" in status.out

    result = cli("reanalyse", "--from", D1, "--to", D1)
    assert result.code == 0, result.err
    assert f"{D1}: 2 marked, 2 analysed" in result.out
    conversations = read(root, D1)["conversations"]
    assert {c["analysis"]["analysisVersion"] for c in conversations} == {ANALYSIS_VERSION}
    assert all("previousAnalysis" not in c and "reanalysis" not in c for c in conversations)
    assert read(root, D2)["conversations"][0]["analysis"].get("analysisVersion") is None

    after = stored(root)
    again = cli("reanalyse", "--from", D1, "--to", D1)
    assert again.code == 0, again.err
    assert "0 conversation(s)" in again.out
    assert stored(root) == after, "a finished re-analysis writes nothing"
    rows = {line.split()[0]: line.split() for line in cli("status").out.splitlines() if line}
    assert rows[D1][-1] == "2" and rows[D2][-1] == "0"  # at-current-version


def test_a_failed_reanalysis_is_listed_with_its_old_answer_kept(root: Path, cli) -> None:
    failed = conversation("a", "success")
    failed["reanalysis"] = {
        "state": "failed",
        "fromVersion": None,
        "toVersion": ANALYSIS_VERSION,
        "attempts": 3,
        "error": "the model refused to analyse it",
    }
    failed["retryCount"] = 3
    put(root, D1, document(D1, [failed]))
    listing = cli("failed")
    assert listing.code == 0, listing.err
    assert "re-analysis (old answer kept): the model refused" in listing.out
    # Exactly once per version: asking again does not resend it; a requeue does.
    assert "0 conversation(s)" in cli("reanalyse", "--from", D1, "--to", D1).out
    assert cli("requeue", D1).code == 0
    (conversation_after,) = read(root, D1)["conversations"]
    assert conversation_after["processingStatus"] == "pending"
    assert conversation_after["previousAnalysis"]["summary"] == "A customer conversation."


def test_a_locked_date_is_skipped_and_the_others_go_on(root: Path, store, cli) -> None:
    seed(root)
    before = read(root, D1)
    with held_lock(store, D1, "another-run"):
        result = cli("reanalyse", "--from", D1, "--to", D2)
    assert result.code == 1
    assert "skipped, run it again later" in result.err and D1 in result.err
    assert f"{D2}: 1 marked, 2 analysed" in result.out  # its pending one too
    assert read(root, D1)["conversations"] == before["conversations"]
