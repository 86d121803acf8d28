"""A date's record of its OpenAI batches (`batches/D.json`), as pure data.

Each batch of a date goes through
`submitting` (token chosen, conversations about to be marked, nothing created at OpenAI yet)
→ `submitted` (the provider's batch id is known) → `collected` (its results are folded into
the date), or `abandoned` (a `submitting` batch the provider never created: its
conversations were never sent). The token is ours, chosen before anything is created: it
marks the conversations (`batchId`) and travels in the batch's metadata, so a run that died
between "created" and "recorded" finds its batch again instead of creating a second one.
The ledger is written only under the date lock (compare-and-swap on top of that).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from convsync_pipeline.core.dates import utc_now_iso

LEDGER_PREFIX = "batches/"
LedgerState = Literal["submitting", "submitted", "collected", "abandoned"]
OPEN_STATES = frozenset({"submitting", "submitted"})


def ledger_key(date: str) -> str:
    return f"{LEDGER_PREFIX}{date}.json"


def new_token(date: str) -> str:
    """Our name for one batch, unique across runs and deployments on one store."""
    return f"cs-{date}-{secrets.token_hex(6)}"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class BatchRecord(_Model):
    token: str
    state: LedgerState = "submitting"
    model: str = ""
    requests: int = 0
    batch_id: str | None = Field(default=None, alias="batchId")
    input_file_id: str | None = Field(default=None, alias="inputFileId")
    created_at: str = Field(default_factory=utc_now_iso, alias="createdAt")
    submitted_by: str = Field(default="", alias="submittedBy")
    provider_status: str | None = Field(default=None, alias="providerStatus")
    request_counts: dict[str, int] = Field(default_factory=dict, alias="requestCounts")
    collected_at: str | None = Field(default=None, alias="collectedAt")
    collected_by: str = Field(default="", alias="collectedBy")
    succeeded: int = 0
    failed_attempts: int = Field(default=0, alias="failedAttempts")
    released: int = 0
    usage: dict[str, int] = Field(default_factory=dict)
    estimated_cost_usd: float | None = Field(default=None, alias="estimatedCostUsd")
    error: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


class BatchLedger(_Model):
    date: str
    batches: list[BatchRecord] = Field(default_factory=list)

    def find(self, token: str) -> BatchRecord | None:
        return next((record for record in self.batches if record.token == token), None)

    def by_batch_id(self, batch_id: str) -> BatchRecord | None:
        return next((record for record in self.batches if record.batch_id == batch_id), None)

    def open_records(self) -> list[BatchRecord]:
        return [record for record in self.batches if record.open]

    def updated(self, token: str, **changes: Any) -> BatchLedger:
        """A copy with the record `token` changed (attribute names)."""
        batches = [
            record.model_copy(update=changes) if record.token == token else record
            for record in self.batches
        ]
        if not any(record.token == token for record in self.batches):
            raise KeyError(f"no batch {token!r} in the ledger of {self.date}")
        return self.model_copy(update={"batches": batches})

    def adding(self, record: BatchRecord) -> BatchLedger:
        if self.find(record.token) is not None:
            raise ValueError(f"batch {record.token!r} is already in the ledger of {self.date}")
        return self.model_copy(update={"batches": [*self.batches, record]})

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=1).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> BatchLedger:
        return cls.model_validate_json(data)
