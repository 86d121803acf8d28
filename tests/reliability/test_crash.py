"""Scenario 4 - crashes: SIGKILL a real `dagster asset materialize` run in the middle of the
analysis, and in the middle of a document save; the next run recovers.

What must hold after every kill and at the end (folder store and S3):
- the date document is valid JSON with consistent counts (processedCount == successes,
  summary == recount, ids unique), nothing is lost: every uploaded conversation is present;
- a success is never undone or rewritten (its processedAt and analysis never change);
- a conversation found `processing` is counted as one failed attempt (`retryCount` + 1,
  processingError = interrupted) by the next run, which then analyses it again;
- no conversation is sent to the model more than CONVSYNC_MAX_ATTEMPTS (3) times, and every
  request is accounted for by an attempt (sent <= retryCount + 1 if success);
- at the end nothing is left `processing`;
- on S3 the next run waits for the dead holder's lease (CONVSYNC_LOCK_TTL_SECONDS=3) and
  takes it over; on the folder store the kernel freed the flock with the process.

Kills inside a save use test-only crash points (tests/reliability/crashhook: a
`sitecustomize` on the CLI's PYTHONPATH; no product code knows about them); the last kills
land at random moments of a run doing a save per finished request.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from convsync_pipeline.core.status import INTERRUPTED_ERROR
from tests.reliability.harness import (
    HOOK_DIR,
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
    unaccounted_sends,
    upload,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DATE = "2026-04-02"
MAX_ATTEMPTS = 3
TTL = "3"
TAKEOVER = "[Lock] Took over expired lock"


class Runner:
    """Sequential CLI runs on one store, each in a fresh DAGSTER_HOME, all logged."""

    def __init__(self, store_factory, store, server, homes, tmp_path: Path, **env):
        self.store_env = store_factory.env(store)
        self.kind = store_factory.kind
        self.server = server
        self.homes = homes
        self.tmp_path = tmp_path
        self.env = {"CONVSYNC_LOCK_TTL_SECONDS": TTL, "CONVSYNC_LOCK_WAIT_SECONDS": "30", **env}
        self.runs = []

    def start(self, select: str, **extra: str):
        number = len(self.runs)
        home = self.homes.new(f"run{number}")
        env = cli_env(self.store_env, home, self.server, **{**self.env, **extra})
        run = start_materialize(f"run{number}", select, DATE, env, self.tmp_path / "logs")
        self.runs.append(run)
        return run


def _takeover_waits(runs) -> list[float]:
    """Each takeover of a dead holder's lease waited about the TTL (log times: 1 s steps)."""
    waits = [wait for run in runs for wait in run.takeover_waits()]
    assert all(wait >= float(TTL) - 1 for wait in waits), waits
    return waits


def _sent_since(server, before: dict[str, int]) -> dict[str, int]:
    now = server.sent_counts()
    return {cid: now[cid] - before.get(cid, 0) for cid in now if now[cid] > before.get(cid, 0)}


def _assert_successes_kept(store, kept: dict) -> dict:
    """Every success seen so far is still a success with the same analysis; returns the new set."""
    document = read_document(store, DATE)
    current = successes(document)
    changed = {cid for cid, value in kept.items() if current.get(cid) != value}
    assert not changed, f"successes undone or rewritten: {sorted(changed)}"
    return current


def test_kill_during_analysis(store_factory, homes, model_server, tmp_path, record_outcome):
    """Kill while model requests are in flight, five runs on one date of 24 conversations:

    run0 killed with window W1 in flight; run1 re-sends W1 (seen as retryCount 1,
    interrupted, while held), lets W1 finish, killed with W2 in flight; run2 and run3 killed
    with W2 in flight again; run4 finds W2 interrupted a third time: failed, never sent a
    fourth time; the rest is analysed once.
    """
    started = time.monotonic()
    server, gate = model_server
    store = store_factory()
    ids = conversation_ids("k", 24)
    upload(store, f"incoming/{DATE}/export.csv", conversations_csv(DATE, ids))
    prepare_dates(store, store_factory.env(store), [DATE])
    runner = Runner(store_factory, store, server, homes, tmp_path)
    window = 8  # CONVSYNC_CONCURRENCY default
    interrupted: dict[str, int] = {}
    kept: dict = {}
    try:
        for number in range(4):
            gate.hold()
            before = server.sent_counts()
            run = runner.start("ai_analysis")
            wait_until(
                lambda b=before: sum(_sent_since(server, b).values()) >= window,
                180,
                f"run{number}'s first window",
                [run],
            )
            in_flight = _sent_since(server, before)
            document = read_document(store, DATE)
            by_id = document.by_id()
            for cid in in_flight:
                # saved `processing` before it was sent, with every earlier interruption counted
                assert by_id[cid].processing_status == "processing", cid
                assert by_id[cid].retry_count == interrupted.get(cid, 0), cid
                if interrupted.get(cid):
                    assert by_id[cid].processing_error == INTERRUPTED_ERROR, cid
            if number == 1:
                # let the re-sent window finish, then kill with the next window in flight
                gate.open(in_flight)
                wait_until(
                    lambda b=before: sum(_sent_since(server, b).values()) >= 2 * window,
                    120,
                    "run1's second window",
                    [run],
                )
                finished = set(in_flight)
                in_flight = {
                    c: n for c, n in _sent_since(server, before).items() if c not in finished
                }
            run.kill()
            for cid in in_flight:
                interrupted[cid] = interrupted.get(cid, 0) + 1
            kept = _assert_successes_kept(store, kept)
        gate.open()
        final = runner.start("ai_analysis")
        assert final.wait() == 0, final.tail()
    finally:
        gate.open()
        cleanup(runner.runs)

    document = read_document(store, DATE)
    _assert_successes_kept(store, kept)
    sent = server.sent_counts()
    assert [c.id for c in document.conversations] == ids
    assert document.count_statuses().processing == 0
    assert max(sent.values()) <= MAX_ATTEMPTS, sent
    assert not unaccounted_sends(document, sent)
    for conversation in document.conversations:
        times = interrupted.get(conversation.id, 0)
        if times >= MAX_ATTEMPTS:
            assert conversation.processing_status == "failed"
            assert conversation.retry_count == MAX_ATTEMPTS
            assert conversation.processing_error == INTERRUPTED_ERROR
            assert sent[conversation.id] == MAX_ATTEMPTS  # never a fourth time
        else:
            assert conversation.processing_status == "success", conversation.id
            assert conversation.retry_count == times
            assert sent[conversation.id] == times + 1
    assert sorted(interrupted.values()) == [1] * window + [3] * window
    if store_factory.kind == "s3":
        for run in runner.runs[1:]:
            assert TAKEOVER in run.output(), run.tail()
    waits = _takeover_waits(runner.runs)

    record_outcome(
        Outcome(
            "crash-analysis",
            store_factory.kind,
            runs=len(runner.runs),
            conversations=len(ids),
            faults=4,
            duplicates=sum(unaccounted_sends(document, sent).values()),
            lost=len(set(ids) - {c.id for c in document.conversations}),
            seconds=time.monotonic() - started,
            details={
                "interrupted_attempts": sum(interrupted.values()),
                "requests": sum(sent.values()),
                "success": document.count_statuses().success,
                "failed_after_3_interruptions": document.count_statuses().failed,
                "lease_takeovers": len(waits),
                "takeover_wait_s": f"{min(waits):.0f}-{max(waits):.0f}" if waits else "-",
            },
        )
    )


# (select, crash point per backend, a new upload first?). A crash point is `<n>:<mode>` for
# the n-th save of the date document in the run (a checkpoint) or `<n>:<mode>:journal/` for
# the n-th entry of the date's log it creates. In order: the merge creating the date (its
# document alone: an entry would be folded at once) dies before and after the write; the
# analysis dies creating an entry and right after one applied; a second upload as large as
# the date, with the killed passes' entries unfolded, is one entry whose checkpoint is due at
# once: the merge dies inside that checkpoint, between its entry and the document; the next
# pass's first checkpoint (in a worker thread, while the window goes on) dies after it
# applied; a later entry; then random kills.
HOOKED_STEPS = [
    ("raw_conversations,normalized_conversations", {"local": "1:torn", "s3": "1:before"}, False),
    ("raw_conversations,normalized_conversations", {"local": "1:replaced", "s3": "1:after"}, False),
    ("*", {"local": "2:torn:journal/", "s3": "2:before:journal/"}, False),
    ("*", {"local": "5:replaced:journal/", "s3": "5:after:journal/"}, False),
    ("*", {"local": "1:torn", "s3": "1:before"}, True),
    ("*", {"local": "1:replaced", "s3": "1:after"}, False),
    ("*", {"local": "7:before:journal/", "s3": "7:after:journal/"}, False),
]
RANDOM_KILLS = 2


def test_kill_in_the_middle_of_saves(store_factory, homes, model_server, tmp_path, record_outcome):
    started = time.monotonic()
    server, gate = model_server
    server.latency = 0.1
    gate.open()
    kind = store_factory.kind
    store = store_factory()
    ids = conversation_ids("s", 60)
    later = conversation_ids("t", 60)
    # ~2.5 KB per message: a document of a few hundred KB, so a save takes a while
    upload(store, f"incoming/{DATE}/export.csv", conversations_csv(DATE, ids, words=400))
    crash_log = tmp_path / "crashes.log"
    runner = Runner(
        store_factory,
        store,
        server,
        homes,
        tmp_path,
        CONVSYNC_CONCURRENCY="4",
        CONVSYNC_TEST_CRASH_LOG=str(crash_log),
    )
    kept: dict = {}
    kills = 0
    try:
        for number, (select, points, new_upload) in enumerate(HOOKED_STEPS):
            if new_upload:
                data = conversations_csv(DATE, later, words=400)
                upload(store, f"incoming/{DATE}/later.csv", data)
                ids = ids + later
            run = runner.start(select, CONVSYNC_TEST_CRASH=points[kind], PYTHONPATH=str(HOOK_DIR))
            rc = run.wait()
            marks = crash_log.read_text().splitlines() if crash_log.exists() else []
            assert rc == -9 and len(marks) == number + 1, f"{marks}\n{run.tail()}"
            assert marks[-1].startswith(points[kind].split(":")[1]), marks[-1]
            kills += 1
            if number == 0:
                assert store.read(f"conversations/{DATE}.json") is None  # died before creating
                continue
            document = read_document(store, DATE)
            assert [c.id for c in document.conversations] == ids  # merged once, never twice
            kept = _assert_successes_kept(store, kept)
        rng = random.Random(20260402)
        for _ in range(RANDOM_KILLS):
            before = server.total_requests
            run = runner.start("*")
            wait_until(lambda b=before: server.total_requests > b, 180, "a request", [run])
            time.sleep(rng.uniform(0.1, 1.5))
            run.kill()
            kills += 1
            kept = _assert_successes_kept(store, kept)
        final = runner.start("*")
        assert final.wait() == 0, final.tail()
    finally:
        cleanup(runner.runs)

    document = read_document(store, DATE)
    _assert_successes_kept(store, kept)
    sent = server.sent_counts()
    counts = document.count_statuses()
    assert [c.id for c in document.conversations] == ids
    assert counts.success == len(ids) and counts.processing == 0
    assert max(sent.values()) <= MAX_ATTEMPTS, sent
    extra = unaccounted_sends(document, sent)
    assert not extra, extra
    for conversation in document.conversations:
        if conversation.retry_count:
            assert conversation.processing_status == "success"
            assert conversation.processing_error is None  # cleared by the success
    summary = read_summary(store, DATE)
    assert summary is not None and summary["documentVersion"] == document.version
    retried = sum(1 for c in document.conversations if c.retry_count)
    if kind == "s3":
        # every run after a kill at a crash point (always inside the lock) waited out the
        # dead holder's lease; a random kill may land between two steps, outside the lock
        after_points = runner.runs[1 : len(HOOKED_STEPS) + 1]
        assert all(TAKEOVER in run.output() for run in after_points), "no takeover"
    waits = _takeover_waits(runner.runs)
    leftovers = 0
    if kind == "local":
        leftovers = sum(1 for path in Path(store.url).rglob("*") if ".convsync-tmp-" in path.name)

    record_outcome(
        Outcome(
            "crash-saves",
            kind,
            runs=len(runner.runs),
            conversations=len(ids),
            faults=kills,
            duplicates=sum(extra.values()),
            lost=len(set(ids) - {c.id for c in document.conversations}),
            seconds=time.monotonic() - started,
            details={
                "kill_points": "+".join(points[kind] for _, points, _ in HOOKED_STEPS)
                + f"+{RANDOM_KILLS}xrandom",
                "requests": sum(sent.values()),
                "retried_after_interruption": retried,
                "document_version": document.version,
                "lease_takeovers": len(waits),
                "takeover_wait_s": f"{min(waits):.0f}-{max(waits):.0f}" if waits else "-",
                "orphan_temp_files": leftovers,
            },
        )
    )
