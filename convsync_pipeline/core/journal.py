"""The date's log (SPEC 5a): numbered entries of changes since the document's checkpoint.

Pure domain, driven by `pipeline/documents.py`: the entry model, the fold, the fencing rule
and when to checkpoint. The model is Delta Lake's transaction log: entry `n` is created only
if absent, so exactly one writer ever writes it; the date document is the checkpoint and
records the last entry folded into it (`_blobMeta.journalEntry`).

- A change records a status transition with the values it set (`processedAt`, `analysis`,
  `processingError`, the resulting `retryCount`): the fold re-applies it through the one
  status machine (`core.status.transition`) and never re-derives a value, so a later change
  of `CONVSYNC_MAX_ATTEMPTS` cannot re-interpret history.
- Appended conversations go through the one merge rule: the first entry bringing an id wins.
- The fold is a pure function of (document, entries in order). A change the status machine
  refuses at that point, or naming an id the date does not hold, is skipped and reported
  (`Skipped`), never guessed: the conversation keeps the state it had. A writer validates its
  changes against everything before its number, so well-behaved writers never produce one;
  the rule exists so that every reader, given the same objects, sees the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from convsync_pipeline.core.document import Conversation, DateDocument, Status
from convsync_pipeline.core.status import InvalidTransitionError, transition

# The fields a change may set, JSON name -> model attribute (an optional field: its JSON
# name, see `core.document.OPTIONAL_FIELDS`). Status aside, nothing else of a conversation
# ever changes after it is appended.
CHANGE_FIELDS: dict[str, str] = {
    "retryCount": "retry_count",
    "processingError": "processing_error",
    "processedAt": "processed_at",
    "analysis": "analysis",
    "previousAnalysis": "previousAnalysis",
    "reanalysis": "reanalysis",
    # The batch (our token, `core.batch_ledger`) a conversation is `processing` under; kept
    # as an extra field of the conversation, present only on those ever sent in a batch.
    "batchId": "batchId",
}

# When to checkpoint (see `checkpoint_due`). A reader pays for the unfolded log in bytes and
# in objects: on S3 every entry is one more request, worth about ENTRY_COST_BYTES of a
# document's transfer. A checkpoint is due once that cost reaches CHECKPOINT_FRACTION of the
# document's own size, so a reader never reads more than (1 + fraction) documents' worth and a
# checkpoint (a rewrite of the whole document) is paid for by a proportional amount of log.
CHECKPOINT_FRACTION = 1.0
ENTRY_COST_BYTES = 8192


class CorruptEntryError(ValueError):
    """A stored log entry is not valid JSON of the expected shape; it is left untouched."""


@dataclass(frozen=True)
class Change:
    """One status transition of one conversation, with the values it set (JSON names)."""

    id: str
    to: Status
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Conversation, after: Conversation) -> Change:
        """The change that turns `before` into `after` (both states of one conversation)."""
        changed = {
            name: after.value_of(attribute)
            for name, attribute in CHANGE_FIELDS.items()
            if after.value_of(attribute) != before.value_of(attribute)
        }
        return cls(after.id, after.processing_status, changed)

    def apply(self, conversation: Conversation) -> Conversation:
        """Through the status machine; raises InvalidTransitionError when it is refused."""
        updates = {CHANGE_FIELDS[name]: value for name, value in self.fields.items()}
        return transition(conversation, self.to, **updates)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, **self.fields}


class _ChangeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    to: Status
    retryCount: int | None = None
    processingError: str | None = None
    processedAt: str | None = None
    analysis: dict[str, Any] | None = None
    previousAnalysis: dict[str, Any] | None = None
    reanalysis: dict[str, Any] | None = None
    batchId: str | None = None

    @model_validator(mode="after")
    def _retry_count_is_a_number(self) -> _ChangeModel:
        if "retryCount" in self.model_fields_set and self.retryCount is None:
            raise ValueError("retryCount cannot be null")
        return self

    def change(self) -> Change:
        given = self.model_fields_set
        fields = {name: getattr(self, name) for name in CHANGE_FIELDS if name in given}
        return Change(self.id, self.to, fields)


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    date: str
    entry: int = Field(ge=1)
    lock_generation: int = Field(alias="lockGeneration")
    writer: str = ""
    written_at: str = Field(default="", alias="writtenAt")
    changes: list[_ChangeModel] = Field(default_factory=list)
    conversations: list[Conversation] = Field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """Entry `number` of a date's log: conversations appended, then status changes."""

    date: str
    number: int
    generation: int  # the writer's lock generation: the fencing token
    writer: str = ""
    written_at: str = ""
    appended: tuple[Conversation, ...] = ()
    changes: tuple[Change, ...] = ()

    @classmethod
    def from_json_bytes(cls, data: bytes, key: str) -> Entry:
        try:
            model = _EntryModel.model_validate_json(data)
        except ValidationError as error:
            first = error.errors()[0] if error.errors() else {"msg": "not JSON", "loc": ()}
            where = ".".join(str(part) for part in first["loc"]) or "the top level"
            raise CorruptEntryError(
                f"{key} is not a valid log entry: {first['msg']} at {where}"
            ) from None
        return cls(
            date=model.date,
            number=model.entry,
            generation=model.lock_generation,
            writer=model.writer,
            written_at=model.written_at,
            appended=tuple(model.conversations),
            changes=tuple(change.change() for change in model.changes),
        )

    def header(self) -> dict[str, Any]:
        """The entry's JSON without its appended conversations (callers splice those in)."""
        return {
            "date": self.date,
            "entry": self.number,
            "lockGeneration": self.generation,
            "writer": self.writer,
            "writtenAt": self.written_at,
            "changes": [change.to_json() for change in self.changes],
        }


def fencing_lost(own_generation: int, found: Entry) -> bool:
    """Whether finding `found` at our next number means we lost the date.

    An entry of a newer generation: someone took the lock over, stop at once. An entry of an
    older (or our own) generation is folded like any other and we try the next number.
    """
    return found.generation > own_generation


@dataclass(frozen=True)
class Skipped:
    """A change or appended conversation the fold did not apply, and why."""

    entry: int
    id: str
    reason: str


class DateState:
    """A date's conversations as of `last_entry`: a document with entries folded into it.

    Mutated in place by `fold`; `conversations` may be shared with a document model.
    """

    def __init__(self, conversations: list[Conversation], last_entry: int = 0) -> None:
        self.conversations = conversations
        self.positions: dict[str, int] = {c.id: i for i, c in enumerate(conversations)}
        self.last_entry = last_entry
        self.skipped: list[Skipped] = []

    @classmethod
    def of(cls, document: DateDocument) -> DateState:
        return cls(list(document.conversations), document.blob_meta.journal_entry)

    @property
    def ids(self) -> Iterable[str]:
        return self.positions.keys()

    def fold(self, entry: Entry) -> list[Skipped]:
        """Apply entry `last_entry + 1`: appends (first id wins), then changes in order."""
        if entry.number != self.last_entry + 1:
            raise ValueError(
                f"entry {entry.number} cannot follow entry {self.last_entry}: entries fold in order"
            )
        skipped: list[Skipped] = []
        for conversation in entry.appended:
            if conversation.id in self.positions:
                skipped.append(Skipped(entry.number, conversation.id, "already present"))
            elif conversation.processing_status != "pending":
                skipped.append(
                    Skipped(entry.number, conversation.id, "appended as "
                            f"{conversation.processing_status}, not pending")
                )
            else:
                self.positions[conversation.id] = len(self.conversations)
                self.conversations.append(conversation)
        for change in entry.changes:
            position = self.positions.get(change.id)
            if position is None:
                skipped.append(Skipped(entry.number, change.id, "no such conversation"))
                continue
            try:
                self.conversations[position] = change.apply(self.conversations[position])
            except InvalidTransitionError as error:
                skipped.append(Skipped(entry.number, change.id, str(error)))
        self.last_entry = entry.number
        self.skipped.extend(skipped)
        return skipped

    def document(self, shell: DateDocument) -> DateDocument:
        """`shell` (the stored document) holding these conversations, counts recomputed; its
        version stays the stored one (the state is not a saved version)."""
        document = shell.model_copy(update={"conversations": self.conversations})
        counts = document.count_statuses()
        return document.model_copy(update={"summary": counts, "processed_count": counts.success})


class IdState:
    """The ids of a date as of `last_entry`: all a merge needs to know (`fold` as above)."""

    def __init__(self, ids: Iterable[str], last_entry: int) -> None:
        self.known = set(ids)
        self.last_entry = last_entry

    @property
    def ids(self) -> Iterable[str]:
        return self.known

    def fold(self, entry: Entry) -> list[Skipped]:
        if entry.number != self.last_entry + 1:
            raise ValueError(
                f"entry {entry.number} cannot follow entry {self.last_entry}: entries fold in order"
            )
        skipped = []
        for conversation in entry.appended:
            if conversation.id in self.known:
                skipped.append(Skipped(entry.number, conversation.id, "already present"))
            elif conversation.processing_status == "pending":
                self.known.add(conversation.id)
        self.last_entry = entry.number
        return skipped


def checkpoint_due(unfolded_bytes: int, unfolded_entries: int, document_bytes: int) -> bool:
    """Whether the unfolded log costs a reader as much as the document does (see above).

    Proportional to the document, so the number of checkpoints a pass or a run of merges
    makes does not grow with the size of the date, and neither do the bytes written per
    conversation. A small date is checkpointed at every write, as before the log existed.
    """
    if unfolded_entries <= 0:
        return False
    cost = unfolded_bytes + unfolded_entries * ENTRY_COST_BYTES
    return cost >= CHECKPOINT_FRACTION * document_bytes


def changes_between(
    before: Sequence[Conversation], after: Sequence[Conversation]
) -> list[Change]:
    """The changes turning each conversation of `before` into the same one of `after`."""
    return [
        Change.between(old, new)
        for old, new in zip(before, after, strict=True)
        if old is not new and old != new
    ]


FoldTarget = DateState | IdState
