"""The store interface: one protocol, a folder backend and an S3 backend, same keys.

Backends move bytes and hold leases; they know nothing of conversations. Keys are always
relative to the store root, `/`-separated, and read by exact key (seed fix 6).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class StoreError(Exception):
    """The store itself failed (unreachable, permission denied, bad bucket): a system error."""


class ConflictError(StoreError):
    """A compare-and-swap lost the race: someone else wrote `key` since it was read."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        message = f"conflict writing {key}: it changed since it was read"
        super().__init__(f"{message} ({detail})" if detail else message)


class DateLockedError(StoreError):
    """The date lock is held by someone else: the pipeline's "409 Conflict"."""

    def __init__(self, date: str, holder: str) -> None:
        self.date = date
        self.holder = holder
        super().__init__(f"date {date} is locked by {holder}; try again when that run ends")


class LeaseLostError(StoreError):
    """Our lease on a date lock expired or was taken over: stop before writing anything."""


class InvalidKeyError(StoreError):
    """A key that would escape the store root or is not a plain relative path."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime  # aware, UTC
    etag: str  # changes whenever the bytes change; stable otherwise

    @property
    def listed_version(self) -> str:
        """A mark of this version that the listing itself gives, at no cost: it changes
        whenever the bytes may have (a write, a replace) and may also change when they did
        not (a touch). S3's ETag is that already; a folder store's `etag` is a digest of the
        content, which takes reading the file (`LocalObjectInfo`)."""
        return self.etag


@dataclass(frozen=True)
class Versioned:
    data: bytes
    token: str  # opaque compare-and-swap token (S3 ETag; a content hash on the folder store)


@dataclass(frozen=True)
class Streamed:
    """An object's bytes as a stream (read it inside `Store.open_versioned`'s block)."""

    stream: BinaryIO
    token: str
    size: int | None = None  # bytes stored, when the backend says (a gzip's inflate limit)


class Lease(Protocol):
    """A held date lock. `generation` only grows: it is the fencing token."""

    date: str
    owner: str
    generation: int

    def ensure_held(self) -> None:
        """Raise LeaseLostError if the lease may have run out; call before every write."""
        ...


class Store(Protocol):
    url: str  # a display form of the root, never carrying credentials

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no object at exactly `key`."""
        ...

    def read_versioned(self, key: str) -> Versioned | None: ...

    def open_versioned(
        self, key: str, token: str | None = None
    ) -> AbstractContextManager[Streamed | None]:
        """The object as a stream, for reading a large one without holding it whole.

        None when there is no object at exactly `key`, or when `token` is given and the
        object is no longer that version (so a second read can never mix two versions).
        """
        ...

    def write(self, key: str, data: bytes) -> None:
        """Unconditional write, for derived objects (summaries, staging, quarantine)."""
        ...

    def write_file(self, key: str, path: str) -> None:
        """`write` of a local file's bytes, streamed: a large derived object (staging,
        quarantine) is never held in memory whole."""
        ...

    def compare_and_swap(self, key: str, data: bytes, expected: str | None) -> str:
        """Write `data` only if the current token is `expected` (None: only if absent).

        Returns the new token; raises ConflictError when the object changed.
        """
        ...

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects under `prefix`, in key order, starting after `start_after`."""
        ...

    def date_lock(
        self, date: str, owner: str, *, ttl_seconds: float, wait_seconds: float
    ) -> AbstractContextManager[Lease]:
        """Hold `locks/<date>.lock` for the block, or raise DateLockedError after waiting."""
        ...


class DateLocks(Protocol):
    """Hands out date locks under one lease policy (TTL, wait): the blob lock resource in
    Dagster, `StoreLocks` elsewhere. Every writer of a date takes its lock through one."""

    def date_lock(self, date: str, owner: str) -> AbstractContextManager[Lease]:
        """Hold `locks/<date>.lock` for the block, or raise DateLockedError after waiting."""
        ...


@dataclass(frozen=True)
class StoreLocks:
    """The date locks of `store` with a fixed TTL and wait: `DateLocks` from plain values."""

    store: Store
    ttl_seconds: float
    wait_seconds: float

    def date_lock(self, date: str, owner: str) -> AbstractContextManager[Lease]:
        return self.store.date_lock(
            date, owner, ttl_seconds=self.ttl_seconds, wait_seconds=self.wait_seconds
        )


def check_key(key: str) -> str:
    """Refuse keys that could escape the root or alias another key."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"invalid store key {key!r}")
    parts = key.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidKeyError(f"invalid store key {key!r}")
    return key
