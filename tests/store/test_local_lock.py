"""The folder store's date lock across real processes: one winner, a clear conflict, and a
SIGKILLed holder that cannot leave the date stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from convsync_pipeline.store.base import DateLockedError
from convsync_pipeline.store.local import LocalStore

HOLDER = textwrap.dedent(
    """
    import sys, time
    from convsync_pipeline.store.local import LocalStore
    store = LocalStore(sys.argv[1])
    with store.date_lock("2026-02-11", sys.argv[2], ttl_seconds=60, wait_seconds=0):
        print("acquired", flush=True)
        time.sleep(float(sys.argv[3]))
    """
)


def start_holder(root: Path, owner: str, hold: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), owner, str(hold)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout.readline().strip() == "acquired"
    return process


@pytest.mark.slow
def test_second_process_gets_a_conflict_naming_date_and_holder(tmp_path, caplog):
    holder = start_holder(tmp_path, "run-holder-1", 30)
    try:
        store = LocalStore(tmp_path)
        lock = store.date_lock("2026-02-11", "run-2", ttl_seconds=60, wait_seconds=0.3)
        with pytest.raises(DateLockedError) as raised, lock:
            pass
        message = str(raised.value)
        assert "2026-02-11" in message
        assert "run-holder-1" in message
        assert f"pid {holder.pid}" in message
        assert "[Lock] Failed to acquire lock for 2026-02-11" in caplog.text
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_sigkilled_holder_does_not_block_the_next_taker(tmp_path):
    holder = start_holder(tmp_path, "run-doomed", 300)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    store = LocalStore(tmp_path)
    started = time.monotonic()
    with store.date_lock("2026-02-11", "run-next", ttl_seconds=60, wait_seconds=2) as lease:
        assert lease.generation == 2
        lease.ensure_held()
    assert time.monotonic() - started < 2


@pytest.mark.slow
def test_two_processes_racing_one_wins(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from convsync_pipeline.store.base import DateLockedError
        from convsync_pipeline.store.local import LocalStore
        store = LocalStore(sys.argv[1])
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        try:
            with store.date_lock("2026-02-11", "racer", ttl_seconds=60, wait_seconds=0):
                print("won", flush=True)
                time.sleep(1.0)
        except DateLockedError:
            print("lost", flush=True)
        """
    )
    start_at = str(time.time() + 1.0)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), start_at],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    outcomes = sorted(r.communicate(timeout=30)[0].strip() for r in racers)
    assert outcomes == ["lost", "won"]
