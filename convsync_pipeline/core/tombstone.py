"""Tombstones: the conversations of a date that were erased on request (`convsync forget`).

A re-upload of the same export would otherwise bring an erased conversation back: the one
merge skips every id a tombstone names. A tombstone holds a digest of each id, not the id,
so the record of an erasure does not itself keep an identifier of the customer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


def tombstone_key(date: str) -> str:
    return f"state/forgotten/{date}.json"


def id_digest(conversation_id: str) -> str:
    return hashlib.sha256(conversation_id.encode()).hexdigest()


@dataclass
class Tombstone:
    date: str
    digests: set[str] = field(default_factory=set)

    def __contains__(self, conversation_id: object) -> bool:
        return isinstance(conversation_id, str) and id_digest(conversation_id) in self.digests

    def __bool__(self) -> bool:
        return bool(self.digests)

    def with_ids(self, ids: Iterable[str]) -> Tombstone:
        return Tombstone(self.date, self.digests | {id_digest(i) for i in ids})

    def to_json(self) -> bytes:
        body = {"date": self.date, "idDigests": sorted(self.digests), "digest": "sha256"}
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, date: str, data: bytes | None) -> Tombstone:
        """An absent tombstone is an empty one; a broken one raises ValueError (a merge must
        never quietly bring erased conversations back)."""
        if data is None:
            return cls(date)
        body = json.loads(data)
        digests = body.get("idDigests")
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise ValueError(f"{tombstone_key(date)} is not a tombstone: no idDigests list")
        return cls(date, set(digests))


__all__ = ["Tombstone", "id_digest", "tombstone_key"]
