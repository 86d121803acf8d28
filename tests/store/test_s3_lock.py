"""The S3 lease lock (SPEC section 6): its object, renewal, takeover and fencing.

The multi-process tests drive real processes (tests/store/_lock_worker.py, the real S3Store
over boto3) against a real moto_server: racing for a free lock, a holder SIGKILLed, and a
holder SIGSTOPped past its TTL whose late save must be rejected.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync_pipeline.store.base import ConflictError, DateLockedError, LeaseLostError
from convsync_pipeline.store.s3 import S3Store
from tests.fixtures.moto import S3Bucket, create_bucket, make_s3_client

REPO_ROOT = Path(__file__).resolve().parents[2]
PREFIX = "root"
DATE = "2026-02-11"
LOCK_KEY = f"locks/{DATE}.lock"


def _store(bucket: S3Bucket) -> S3Store:
    return S3Store(make_s3_client(bucket.endpoint_url), bucket.name, PREFIX)


def _body(store: S3Store, key: str = LOCK_KEY) -> dict[str, object]:
    raw = store.read(key)
    assert raw is not None
    body = json.loads(raw)
    assert isinstance(body, dict)
    return body


def _put_held_body(store: S3Store, owner: str, generation: int, ttl: float) -> str:
    body = {
        "state": "held",
        "owner": owner,
        "holder": "elsewhere pid 1",
        "generation": generation,
        "heartbeat": 0,
        "ttlSeconds": ttl,
        "leaseEnd": "2026-02-11T00:00:00.000Z",
        "nonce": os.urandom(8).hex(),
    }
    found = store.read_versioned(LOCK_KEY)
    return store.compare_and_swap(
        LOCK_KEY, json.dumps(body).encode(), None if found is None else found.token
    )


# -- in one process ------------------------------------------------------------------------


def test_lock_object_body_generation_and_nonce(s3_bucket: S3Bucket) -> None:
    store = _store(s3_bucket)
    with store.date_lock(DATE, "run-a", ttl_seconds=30, wait_seconds=0) as lease:
        held = _body(store)
        assert lease.generation == 1
    free = _body(store)
    assert held["state"] == "held" and free["state"] == "free"
    for body in (held, free):
        assert set(body) >= {
            "state",
            "owner",
            "holder",
            "generation",
            "heartbeat",
            "ttlSeconds",
            "leaseEnd",
            "nonce",
        }
        assert body["owner"] == "run-a" and body["generation"] == 1
        assert f"pid {os.getpid()}" in str(body["holder"])
    assert held["nonce"] != free["nonce"]
    assert held["ttlSeconds"] == 30
    with store.date_lock(DATE, "run-b", ttl_seconds=30, wait_seconds=0) as lease:
        assert lease.generation == 2
        assert _body(store)["owner"] == "run-b"
    released = _body(store)
    assert (released["state"], released["generation"]) == ("free", 2)


def test_renewal_keeps_the_lease_and_refuses_others(s3_bucket: S3Bucket) -> None:
    store = _store(s3_bucket)
    with store.date_lock(DATE, "run-a", ttl_seconds=0.9, wait_seconds=0) as lease:
        first = lease.token
        with (
            pytest.raises(DateLockedError),
            store.date_lock(DATE, "run-b", ttl_seconds=0.9, wait_seconds=1.5),
        ):
            pass  # a live holder is never taken over, however long the taker watches
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            lease.ensure_held()  # never lapses while renewals succeed
            time.sleep(0.05)
        assert lease.token != first
        assert int(str(_body(store)["heartbeat"])) >= 4
        assert lease.generation == 1


def test_taken_over_lease_is_lost_and_release_leaves_the_taker_alone(
    s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(s3_bucket)
    with (
        caplog.at_level(logging.WARNING, logger="convsync"),
        store.date_lock(DATE, "run-a", ttl_seconds=1.5, wait_seconds=0) as lease,
    ):
        _put_held_body(store, "run-taker", lease.generation + 1, 30)  # a takeover by CAS
        deadline = time.monotonic() + 3
        with pytest.raises(LeaseLostError, match=DATE):
            while time.monotonic() < deadline:
                lease.ensure_held()
                time.sleep(0.05)
    taker = _body(store)
    assert (taker["owner"], taker["state"], taker["generation"]) == ("run-taker", "held", 2)
    assert "took the lock over" in caplog.text


def test_stale_lock_is_taken_over_only_after_watching_its_ttl(
    s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(s3_bucket)
    _put_held_body(store, "run-dead", 4, ttl=1.0)
    started = time.monotonic()
    with (  # fresh: a short wait fails fast
        pytest.raises(DateLockedError) as raised,
        store.date_lock(DATE, "run-new", ttl_seconds=30, wait_seconds=0.2),
    ):
        pass
    assert time.monotonic() - started < 0.9
    assert "run-dead" in raised.value.holder and "lease ends" in raised.value.holder
    time.sleep(2.1)  # now stale by the server's own clock (1-second resolution)
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="convsync"),
        store.date_lock(DATE, "run-new", ttl_seconds=30, wait_seconds=0.2) as lease,
    ):
        waited = time.monotonic() - started
        assert lease.generation == 5
    assert 1.0 <= waited < 2.5  # watched unchanged for its whole TTL, then took it over
    assert "Took over expired lock for 2026-02-11 from run run-dead" in caplog.text


def test_unreadable_lock_object_counts_as_held(s3_bucket: S3Bucket) -> None:
    store = _store(s3_bucket)
    store.write(LOCK_KEY, b"not json")
    with (
        pytest.raises(DateLockedError),
        store.date_lock(DATE, "run-a", ttl_seconds=30, wait_seconds=0.1),
    ):
        pass


def test_bad_lock_arguments(s3_bucket: S3Bucket) -> None:
    store = _store(s3_bucket)
    with pytest.raises(ValueError), store.date_lock(DATE, "a", ttl_seconds=0, wait_seconds=1):
        pass


# -- real processes ------------------------------------------------------------------------


class Worker:
    """One `_lock_worker` process; its output lines arrive on a queue."""

    def __init__(self, bucket: S3Bucket, owner: str, ttl: float) -> None:
        self.owner = owner
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store._lock_worker", bucket.endpoint_url,
             bucket.name, PREFIX, owner, str(ttl)],
            cwd=REPO_ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("<exited>")

    def send(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{line}\n" for line in lines))
        self.process.stdin.flush()

    def reply(self, timeout: float = 20) -> list[str]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.owner} did not answer within {timeout}s")
        if line == "<exited>":
            assert self.process.stderr is not None
            pytest.fail(f"{self.owner} exited: {self.process.stderr.read()[-3000:]}")
        return line.split(" ", 1 if line.startswith(("locked", "lost")) else -1)

    def stop(self) -> None:
        if self.process.poll() is None:
            stdin = self.process.stdin
            if stdin is not None and not stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()  # EOF ends the command loop, which releases cleanly
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(bucket: S3Bucket, owners: list[str], ttl: float) -> list[Worker]:
    workers = [Worker(bucket, owner, ttl) for owner in owners]
    for worker in workers:
        assert worker.reply(timeout=60) == ["ready"]
    return workers


@pytest.fixture(scope="module")
def racers(moto_endpoint: str) -> Iterator[list[Worker]]:
    """Eight worker processes on one bucket, started once for the race tests (TTL 2 s)."""
    bucket = S3Bucket(moto_endpoint, create_bucket(moto_endpoint))
    workers = _start(bucket, [f"run-{n}" for n in range(8)], ttl=2.0)
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.slow
def test_eight_processes_race_for_a_free_lock(racers: list[Worker]) -> None:
    """Each round all eight try at once (no waiting): exactly one wins, generation +1."""
    rounds = 10
    for round_number in range(1, rounds + 1):
        for worker in racers:
            worker.send("acquire race-day 0")
        replies = [(worker, worker.reply()) for worker in racers]
        winners = [(worker, reply) for worker, reply in replies if reply[0] == "acquired"]
        losers = [reply for _, reply in replies if reply[0] == "locked"]
        assert len(winners) == 1, replies
        assert len(losers) == len(racers) - 1, replies
        winner, reply = winners[0]
        assert int(reply[1]) == round_number  # round 1 races the create, later ones a free lock
        assert all(winner.owner in holder for _, holder in losers)
        winner.send("release")
        assert winner.reply() == ["released"]


@pytest.mark.slow
def test_eight_waiting_processes_take_turns(racers: list[Worker]) -> None:
    """All eight wait for one lock: each gets it once, and no two hold it at the same time."""
    for worker in racers:
        worker.send("acquire turns-day 30", "hold 0.1", "release")
    spans = []
    for worker in racers:
        acquired, held, released = worker.reply(60), worker.reply(60), worker.reply(60)
        assert acquired[0] == "acquired" and held[0] == "held" and released == ["released"]
        spans.append((float(acquired[3]), float(held[2]), int(acquired[1])))
    spans.sort()
    assert [generation for _, _, generation in spans] == list(range(1, len(racers) + 1))
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start  # CLOCK_MONOTONIC is system-wide, so spans compare across processes


@pytest.mark.slow
def test_killed_holder_is_taken_over_only_after_its_ttl(s3_bucket: S3Bucket) -> None:
    ttl = 2.0
    (holder,) = _start(s3_bucket, ["run-killed"], ttl)
    try:
        holder.send(f"acquire {DATE} 0")
        assert holder.reply()[:2] == ["acquired", "1"]
        holder.process.send_signal(signal.SIGKILL)
        holder.process.wait()
        killed_at = time.monotonic()
        store = _store(s3_bucket)
        with (
            pytest.raises(DateLockedError) as raised,
            store.date_lock(DATE, "run-next", ttl_seconds=ttl, wait_seconds=0.3),
        ):
            pass
        assert "run-killed" in raised.value.holder
        with store.date_lock(DATE, "run-next", ttl_seconds=ttl, wait_seconds=10) as lease:
            waited = time.monotonic() - killed_at
            assert lease.generation == 2
            lease.ensure_held()
        assert ttl <= waited < ttl + 3
    finally:
        holder.stop()


@pytest.mark.slow
def test_paused_holder_is_fenced_after_a_takeover(s3_bucket: S3Bucket) -> None:
    """SIGSTOP past the TTL: the taker saves; the resumed zombie can neither hold nor save."""
    ttl = 2.0
    doc = f"conversations/{DATE}.json"
    (zombie,) = _start(s3_bucket, ["run-zombie"], ttl)
    try:
        zombie.send(f"acquire {DATE} 0", f"cas {doc} - v1-by-zombie")
        assert zombie.reply()[:2] == ["acquired", "1"]
        status, old_token = zombie.reply()
        assert status == "ok"
        zombie.process.send_signal(signal.SIGSTOP)
        store = _store(s3_bucket)
        stopped_at = time.monotonic()
        with store.date_lock(DATE, "run-taker", ttl_seconds=ttl, wait_seconds=10) as lease:
            assert time.monotonic() - stopped_at >= ttl
            assert lease.generation == 2
            found = store.read_versioned(doc)
            assert found is not None and found.token == old_token
            lease.ensure_held()
            new_token = store.compare_and_swap(doc, b"v2-by-taker", found.token)

            zombie.process.send_signal(signal.SIGCONT)
            zombie.send("ensure", f"rawcas {doc} {old_token} late-zombie-save",
                        f"cas {doc} {old_token} late-zombie-save")  # fmt: skip
            assert zombie.reply()[0] == "lost"
            assert zombie.reply() == ["conflict"]  # S3 itself rejects the stale ETag
            assert zombie.reply()[0] == "lost"  # and ensure_held stops a careful writer first
            zombie.send("release")
            assert zombie.reply() == ["released"]

            lock = _body(store)
            assert (lock["owner"], lock["state"], lock["generation"]) == ("run-taker", "held", 2)
            lease.ensure_held()
            current = store.read_versioned(doc)
            assert current is not None
            assert (current.data, current.token) == (b"v2-by-taker", new_token)
        assert _body(store)["state"] == "free"
        with pytest.raises(ConflictError):
            store.compare_and_swap(doc, b"again", old_token)
    finally:
        if zombie.process.poll() is None:
            zombie.process.send_signal(signal.SIGCONT)
        zombie.stop()
