"""The date document `conversations/YYYY-MM-DD.json` (SPEC section 5) as pydantic models.

`DateDocument.sealed()` is the only way a document is prepared for saving: it recomputes
`processedCount` and `summary` from the conversations and bumps `_blobMeta.version`, so the
counts can never drift from the data (seed fix 5).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from convsync_pipeline.core.dates import utc_now_iso

Status = Literal["pending", "processing", "success", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "processing", "success", "failed")


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class Message(_Model):
    role: str
    content: str
    timestamp: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Conversation(_Model):
    id: str
    started_at: str = Field(alias="startedAt")
    ended_at: str = Field(alias="endedAt")
    messages: list[Message]
    source: str
    # Required: a legacy document (no status) must be migrated, never guessed as pending.
    processing_status: Status = Field(alias="processingStatus")
    retry_count: int = Field(default=0, alias="retryCount")
    processing_error: str | None = Field(default=None, alias="processingError")
    processed_at: str | None = Field(default=None, alias="processedAt")
    # Kept as a plain dict: a legacy analysis is kept verbatim (SPEC section 9); new ones are
    # validated by `core.analysis.Analysis` before they get here.
    analysis: dict[str, Any] | None = None


class StatusSummary(_Model):
    total: int = 0
    pending: int = 0
    processing: int = 0
    success: int = 0
    failed: int = 0


class BlobMeta(_Model):
    version: int = 0
    updated_at: str | None = Field(default=None, alias="updatedAt")
    lock_generation: int | None = Field(default=None, alias="lockGeneration")


class DateDocument(_Model):
    date: str
    conversations: list[Conversation] = Field(default_factory=list)
    processed_count: int = Field(default=0, alias="processedCount")
    summary: StatusSummary = Field(default_factory=StatusSummary)
    blob_meta: BlobMeta = Field(default_factory=BlobMeta, alias="_blobMeta")

    @property
    def version(self) -> int:
        return self.blob_meta.version

    def by_id(self) -> dict[str, Conversation]:
        return {conversation.id: conversation for conversation in self.conversations}

    def count_statuses(self) -> StatusSummary:
        counts = dict.fromkeys(STATUSES, 0)
        for conversation in self.conversations:
            counts[conversation.processing_status] += 1
        return StatusSummary(total=len(self.conversations), **counts)

    def sealed(self, lock_generation: int | None = None) -> DateDocument:
        """A copy ready to save: counts recomputed, version + 1, update time and fence set."""
        summary = self.count_statuses()
        return self.model_copy(
            update={
                "summary": summary,
                "processed_count": summary.success,
                "blob_meta": BlobMeta(
                    version=self.blob_meta.version + 1,
                    updated_at=utc_now_iso(),
                    lock_generation=lock_generation,
                ),
            }
        )

    def to_json_bytes(self) -> bytes:
        return dump_json(self.model_dump(by_alias=True, exclude_none=False))

    @classmethod
    def empty(cls, date: str) -> DateDocument:
        return cls(date=date)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DateDocument:
        return cls.model_validate_json(data)


def dump_json(value: Any) -> bytes:
    """The one JSON encoding of every document the pipeline writes (UTF-8, stable key order)."""
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")
