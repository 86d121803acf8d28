"""Reading and saving date documents: the only code that writes `conversations/D.json`.

A save is always: check the lease, seal (counts recomputed, version + 1, fence recorded),
compare-and-swap against the token read. Losing the race raises ConflictError, never a
silent overwrite (seed fixes 5 and 7).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from convsync_pipeline.core.document import DateDocument
from convsync_pipeline.core.keys import document_key
from convsync_pipeline.store.base import Lease, Store, StoreError

log = logging.getLogger("convsync")


class CorruptDocumentError(StoreError):
    """A stored date document is not valid JSON of the expected shape; it is left untouched."""


@dataclass
class LoadedDocument:
    document: DateDocument
    token: str | None  # None: no document stored yet


def load_document(store: Store, date: str) -> LoadedDocument:
    key = document_key(date)
    found = store.read_versioned(key)
    if found is None:
        return LoadedDocument(DateDocument.empty(date), None)
    try:
        document = DateDocument.from_json_bytes(found.data)
    except ValidationError as error:
        if any(e["loc"] and e["loc"][-1] == "processingStatus" for e in error.errors()):
            raise CorruptDocumentError(
                f"{key} is a legacy document without processingStatus: run `convsync migrate`"
            ) from None
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise CorruptDocumentError(
            f"{key} is not a valid date document: {first['msg']} at {where}"
        ) from None
    if document.date != date:
        raise CorruptDocumentError(f"{key} holds the document of {document.date}, not {date}")
    return LoadedDocument(document, found.token)


def save_document(
    store: Store, loaded: LoadedDocument, document: DateDocument, lease: Lease
) -> LoadedDocument:
    """Seal and compare-and-swap `document` over the version in `loaded`."""
    lease.ensure_held()
    sealed = document.sealed(lock_generation=lease.generation)
    key = document_key(sealed.date)
    token = store.compare_and_swap(key, sealed.to_json_bytes(), loaded.token)
    log.info("[Blob] wrote %s at version %d", key, sealed.version)
    return LoadedDocument(sealed, token)


def save_appended(
    store: Store,
    loaded: LoadedDocument,
    appended_json: Sequence[bytes | memoryview],
    appended: int,
    lease: Lease,
) -> int:
    """`save_document` of `loaded.document` plus `appended` new pending conversations, given
    as their text (`core.conversations.merge_staged`), without a model per message.

    The same lease check, seal, compare-and-swap and log line. Returns the version written.
    """
    lease.ensure_held()
    data, version = loaded.document.sealed_json_appending(
        appended_json, appended, lock_generation=lease.generation
    )
    key = document_key(loaded.document.date)
    store.compare_and_swap(key, data, loaded.token)
    log.info("[Blob] wrote %s at version %d", key, version)
    return version
