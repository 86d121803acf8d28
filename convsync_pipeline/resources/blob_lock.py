"""`blob_lock`: the date lock that keeps each date to one writer (SPEC section 6).

It depends on the blob store resource (the lock object lives beside the date's document:
`locks/D.lock`) and hands out the lock of a date as a lease whose `generation` only grows,
the fencing token every save records. Dagster's per-partition run limit keeps runs from the
queue apart; this lock is what also keeps apart `materialize()`, the CLI and range runs.
"""

from contextlib import AbstractContextManager

from dagster import ConfigurableResource
from pydantic import Field

from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Lease, Store, StoreLocks


class BlobLockResource(ConfigurableResource):
    """One writer per date: a lease on `locks/D.lock` in the blob store, with fencing."""

    blob_store: BlobStoreResource
    ttl_seconds: float = Field(
        default=60.0,
        ge=1.0,
        le=86_400.0,
        description="CONVSYNC_LOCK_TTL_SECONDS: lease length of an S3 date lock, renewed "
        "every third of it (a folder lock ends when its process does).",
    )
    wait_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=3_600.0,
        description="CONVSYNC_LOCK_WAIT_SECONDS: how long a writer waits for a held date "
        "lock before failing with the holder's name.",
    )

    def date_lock(self, date: str, owner: str) -> AbstractContextManager[Lease]:
        """Hold `date`'s lock for the block (`lease.generation` is the fencing token), or
        raise DateLockedError naming the holder once `wait_seconds` have passed."""
        locks = StoreLocks(self.blob_store.open(), self.ttl_seconds, self.wait_seconds)
        return locks.date_lock(date, owner)


def locks_from_settings(store: Store, settings: Settings) -> StoreLocks:
    """The same lock policy outside Dagster (the `convsync` command, benchmarks)."""
    return StoreLocks(store, settings.lock_ttl_seconds, settings.lock_wait_seconds)
