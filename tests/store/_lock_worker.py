"""A separate process holding S3 date locks through the real S3Store, driven line by line.

Used by tests/store/test_s3_lock.py to race real processes, kill and pause holders.
Started as `python -m tests.store._lock_worker ENDPOINT BUCKET PREFIX OWNER TTL`; it prints
`ready`, then answers one line per command read from stdin:

    acquire DATE WAIT      -> "acquired GENERATION T_START T_END" | "locked HOLDER..."
    hold SECONDS           -> "held T_ENTER T_EXIT" (sleeps; monotonic times, system-wide)
    ensure                 -> "held" | "lost MESSAGE"
    cas KEY TOKEN|- DATA   -> "ok TOKEN" | "conflict" | "lost MESSAGE" (ensure_held first)
    rawcas KEY TOKEN|- DATA-> like cas, without ensure_held (a zombie's late save)
    release                -> "released"
    quit                   -> exits
"""

from __future__ import annotations

import contextlib
import sys
import time

import boto3
from botocore.config import Config

from convsync_pipeline.store.base import ConflictError, DateLockedError, LeaseLostError
from convsync_pipeline.store.s3 import S3Lease, S3Store


def main(endpoint: str, bucket: str, prefix: str, owner: str, ttl: float) -> None:
    client = boto3.client(
        "s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 3, "mode": "standard"})
    )
    store = S3Store(client, bucket, prefix)
    stack = contextlib.ExitStack()
    lease: S3Lease | None = None

    def say(*words: object) -> None:
        print(*words, flush=True)

    say("ready")
    for line in sys.stdin:
        command, *args = line.split()
        if command == "acquire":
            started = time.monotonic()
            try:
                lease = stack.enter_context(
                    store.date_lock(args[0], owner, ttl_seconds=ttl, wait_seconds=float(args[1]))
                )
            except DateLockedError as error:
                say("locked", error.holder)
            else:
                say("acquired", lease.generation, started, time.monotonic())
        elif command == "hold":
            entered = time.monotonic()
            time.sleep(float(args[0]))
            say("held", entered, time.monotonic())
        elif command == "ensure":
            assert lease is not None
            try:
                lease.ensure_held()
            except LeaseLostError as error:
                say("lost", error)
            else:
                say("held")
        elif command in {"cas", "rawcas"}:
            key, token, data = args[0], None if args[1] == "-" else args[1], args[2]
            try:
                if command == "cas":
                    assert lease is not None
                    lease.ensure_held()
                say("ok", store.compare_and_swap(key, data.encode(), token))
            except LeaseLostError as error:
                say("lost", error)
            except ConflictError:
                say("conflict")
        elif command == "release":
            stack.close()
            lease = None
            say("released")
        elif command == "quit":
            break
    stack.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
