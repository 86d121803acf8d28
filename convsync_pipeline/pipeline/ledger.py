"""A date's batch ledger in the store (`batches/D.json`, `core.batch_ledger`): read, parsed
with a clear error, and compare-and-swapped by the date's lock holder. Kept apart from the
batch pass so that readers (`convsync status`, `convsync batches`, the sensor) never import
the openai SDK.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from convsync_pipeline.core.batch_ledger import BatchLedger, ledger_key
from convsync_pipeline.pipeline.documents import CorruptDocumentError
from convsync_pipeline.store.base import ConflictError, Lease, Store, StoreError


class LedgerFile:
    """`batches/D.json`, read once and then compare-and-swapped by the lock holder."""

    def __init__(self, store: Store, date: str, lease: Lease | None = None) -> None:
        self.store, self.date, self.lease = store, date, lease
        self.key = ledger_key(date)
        found = store.read_versioned(self.key)
        self.token: str | None = found.token if found is not None else None
        self.ledger = (
            parse_ledger(self.key, found.data) if found is not None else BatchLedger(date=date)
        )

    def save(self, ledger: BatchLedger) -> None:
        if self.lease is not None:
            self.lease.ensure_held()
        try:
            self.token = self.store.compare_and_swap(self.key, ledger.to_json_bytes(), self.token)
        except ConflictError:
            raise StoreError(
                f"{self.key} was changed by another writer while this run held the lock of "
                f"{self.date}: stopping"
            ) from None
        self.ledger = ledger

    def update(self, token: str, **changes: Any) -> None:
        self.save(self.ledger.updated(token, **changes))


def parse_ledger(key: str, data: bytes) -> BatchLedger:
    """The ledger stored at `key`; a clear error naming it when it is not one (left as is)."""
    try:
        return BatchLedger.from_json_bytes(data)
    except ValidationError as error:
        first = error.errors()[0] if error.errors() else {"msg": "not JSON", "loc": ()}
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise CorruptDocumentError(
            f"{key} is not a valid batch ledger: {first['msg']} at {where}"
        ) from None


def read_ledger(store: Store, date: str) -> BatchLedger | None:
    key = ledger_key(date)
    data = store.read(key)
    return parse_ledger(key, data) if data is not None else None
