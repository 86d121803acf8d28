"""Scenario 5 - ingest while analysing: new uploads for a date arrive while `ai_analysis` of
that date runs, and a second run (raw_conversations + normalized_conversations) merges them.

Run A analyses D's 20 conversations against a model whose answers are held; while it holds
the date lock, a new upload brings 10 new conversations and 5 already present ones with other
text (a re-export; in mode `lock-wait` it even replaces the first export under the same key,
without the other 15); run B ingests it and must wait for the lock before merging - either
inside the lock wait (CONVSYNC_LOCK_WAIT_SECONDS=120, mode `lock-wait`) or through the step's
RetryPolicy after failing with the lock conflict (default 5 s wait, mode `retry-policy`; folder
store only, the path is the same on both stores). The model is let go only once B is seen
waiting. Run C then analyses what B merged.

Checked on the folder store and on S3: A and B both succeed; B's merge is one log entry
right after A's last (SPEC 5a: the document stays as A's final checkpoint left it, below the
checkpoint threshold, until C's run folds it); no conversation lost, the 10 new ones
present, the 5 re-exported ones keep their first upload's messages, A's 20 analyses untouched
by B and C; every conversation sent to the model exactly once; the summary is computed from
the final document version.
"""

from __future__ import annotations

import json
import time

import pytest

from convsync_pipeline.core.keys import (
    document_key,
    entry_key,
    id_index_key,
    journal_prefix,
)
from tests.reliability.harness import (
    LOCK_FAILED,
    Outcome,
    cleanup,
    cli_env,
    conversation_ids,
    conversations_csv,
    prepare_dates,
    read_document,
    read_summary,
    start_materialize,
    successes,
    upload,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DATE = "2026-05-05"
MODES = {
    "lock-wait": {"CONVSYNC_LOCK_WAIT_SECONDS": "120"},
    "retry-policy": {},  # default 5 s wait, then normalized_conversations' RetryPolicy
}


@pytest.mark.parametrize(
    ("store_factory", "mode"),
    # The retry path is the same code on both stores (DateLockedError -> RetryPolicy): it
    # runs on the folder store only, to spare a minute of Dagster start-ups.
    [("local", "lock-wait"), ("s3", "lock-wait"), ("local", "retry-policy")],
    indirect=["store_factory"],
)
def test_upload_arrives_during_analysis(
    store_factory, mode, homes, model_server, tmp_path, record_outcome
):
    started = time.monotonic()
    server, gate = model_server
    store = store_factory()
    store_env = store_factory.env(store)
    first_ids = conversation_ids("early", 20)
    new_ids = conversation_ids("late", 10)
    reexported = first_ids[:5]
    upload(store, f"incoming/{DATE}/morning.csv", conversations_csv(DATE, first_ids))
    prepare_dates(store, store_env, [DATE])
    original = {c.id: c.messages for c in read_document(store, DATE).conversations}
    logs = tmp_path / "logs"

    def env(name: str, **extra: str) -> dict[str, str]:
        return cli_env(store_env, homes.new(name), server, **extra)

    runs = []
    try:
        gate.hold()
        run_a = start_materialize("A-analysis", "ai_analysis", DATE, env("A"), logs)
        runs.append(run_a)
        wait_until(lambda: server.total_requests >= 8, 180, "A's first requests", [run_a])

        # lock-wait: the export is re-uploaded under the same key (a new upload version)
        # without 15 of its earlier conversations; retry-policy: a second export file
        second_key = f"incoming/{DATE}/" + ("morning.csv" if mode == "lock-wait" else "late.csv")
        upload(
            store,
            second_key,
            conversations_csv(DATE, [*reexported, *new_ids], variant=" (re-export)"),
        )
        run_b = start_materialize(
            "B-ingest",
            "raw_conversations,normalized_conversations",
            DATE,
            env("B", **MODES[mode]),
            logs,
        )
        runs.append(run_b)
        if mode == "lock-wait":
            wait_until(
                lambda: "normalized_conversations - STEP_START" in run_b.output(),
                180,
                "B to reach the merge",
                [run_b],
            )
            time.sleep(1.5)  # B is now inside its lock wait
        else:
            wait_until(
                lambda: "STEP_UP_FOR_RETRY" in run_b.output(),
                180,
                "B's merge to fail on the lock and be retried",
                [run_b],
            )
        assert run_a.poll() is None and run_b.poll() is None
        assert read_document(store, DATE).count_statuses().total == 20  # nothing merged yet
        gate.open()
        assert run_a.wait() == 0, run_a.tail()
        assert run_b.wait() == 0, run_b.tail()
    finally:
        gate.open()
        cleanup(runs)

    key = document_key(DATE)
    a_writes, b_writes = run_a.blob_writes(key), run_b.blob_writes(key)
    assert run_a.analysed() == 20
    assert b_writes == [], (a_writes, b_writes)
    stored = json.loads(store.read(key) or b"{}")
    assert stored["_blobMeta"]["version"] == a_writes[-1], "A's final checkpoint is current"
    a_last = stored["_blobMeta"]["journalEntry"]
    after_a = [
        json.loads(store.read(info.key) or b"{}")
        for info in store.list(journal_prefix(DATE), start_after=entry_key(DATE, a_last))
        if info.key != id_index_key(DATE)
    ]
    assert [e["entry"] for e in after_a] == [a_last + 1], "B's merge: one entry, right after A"
    assert [c["id"] for c in after_a[0]["conversations"]] == new_ids
    assert after_a[0]["lockGeneration"] > stored["_blobMeta"]["lockGeneration"]
    if mode == "retry-policy":
        assert LOCK_FAILED in run_b.output()

    after_b = read_document(store, DATE)
    assert [c.id for c in after_b.conversations] == [*first_ids, *new_ids]
    statuses = {c.id: c.processing_status for c in after_b.conversations}
    assert all(statuses[cid] == "success" for cid in first_ids)
    assert all(statuses[cid] == "pending" for cid in new_ids)
    for conversation in after_b.conversations:
        if conversation.id in original:  # the first upload's messages win, never the re-export
            assert conversation.messages == original[conversation.id], conversation.id
    analysed_by_a = successes(after_b)

    run_c = start_materialize("C-analysis", "ai_analysis,daily_summary", DATE, env("C"), logs)
    runs.append(run_c)
    try:
        assert run_c.wait() == 0, run_c.tail()
    finally:
        cleanup([run_c])
    assert run_c.analysed() == len(new_ids)

    final = read_document(store, DATE)
    sent = server.sent_counts()
    assert sent == dict.fromkeys([*first_ids, *new_ids], 1), sent
    assert final.count_statuses().success == 30
    after_c = successes(final)
    changed = [cid for cid, value in analysed_by_a.items() if after_c.get(cid) != value]
    assert not changed, changed
    summary = read_summary(store, DATE)
    assert summary is not None and summary["documentVersion"] == final.version
    merged = json.loads(store.read(f"state/merged/{DATE}.json") or b"{}")
    assert len(merged.get("staged", [])) == 2

    present = {c.id for c in final.conversations}
    lost = sum(1 for cid in [*first_ids, *new_ids] if cid not in present)
    lost += sum(1 for cid in first_ids if cid not in after_c)  # an analysis of A's undone
    record_outcome(
        Outcome(
            f"ingest-while-analysing ({mode})",
            store_factory.kind,
            runs=len(runs),
            conversations=30,
            faults=1,
            duplicates=sum(count - 1 for count in sent.values()),
            lost=lost,
            seconds=time.monotonic() - started,
            details={
                "reexported_ids_kept": len(reexported),
                "b_waited_seconds": round(run_b_wait(run_b), 1),
                "document_version": final.version,
            },
        )
    )


def run_b_wait(run) -> float:
    """Seconds between B's merge step starting and its write (its wait for A's lock)."""
    import datetime as dt
    import re

    stamps = []
    for marker in ("normalized_conversations - STEP_START", "[Journal] wrote"):
        for line in run.output().splitlines():
            if marker in line:
                match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
                if match:
                    stamps.append(dt.datetime.fromisoformat(match.group(1)))
                break
    return (stamps[1] - stamps[0]).total_seconds() if len(stamps) == 2 else -1.0
