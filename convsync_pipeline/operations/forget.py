"""`convsync forget --id ID… | --match TEXT [--dry-run]`: erase a customer's conversations.

Everywhere convsync keeps them, per date and under the date lock (like every writer):

1. the tombstone `state/forgotten/D.json` first (digests of the ids), so a merge running
   right after — or a re-upload of the same export, ever — cannot bring them back;
2. the date document: the log is folded and the conversations left out, in one checkpoint
   (compare-and-swap, version + 1, counts recomputed), which rewrites the id index
   `journal/D/ids.json` too;
3. the date's log `journal/D/<n>.json`: every entry is folded by then, so no reader needs it
   again, and the entries holding the conversations (appended, or a status change carrying
   an analysis or error) are rewritten without them. This is the one place convsync rewrites
   history: an append-only log that kept erased words would defeat the erasure. Entries are
   rewritten, not deleted, so the log stays gap-free for the fencing rule and an audit still
   sees that entry n existed (it says how many items were erased from it);
4. staging objects `staging/D/*.arrow` (rewritten without them), and `summaries/D.json`
   recomputed when it exists.

Then quarantine records (`quarantine/*.jsonl`) naming an id, or holding the text, are removed
from their files. The upload index `state/uploads/*.json` holds counts only: it is left as
it is (those numbers describe the upload as it arrived). Uploads under `incoming/` are the
user's own files: the ones that brought the conversations are listed, never touched.

Idempotent: a second run finds nothing and writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from convsync_pipeline.core.document import Conversation, dump_json
from convsync_pipeline.core.journal import Entry
from convsync_pipeline.core.keys import (
    INCOMING,
    entry_number,
    journal_prefix,
    staging_prefix,
    summary_key,
)
from convsync_pipeline.core.staging import StagedUpload
from convsync_pipeline.core.summary import build_daily_summary
from convsync_pipeline.core.tombstone import Tombstone, tombstone_key
from convsync_pipeline.operations import OperationError, Progress, read_document
from convsync_pipeline.pipeline.documents import DateWriter
from convsync_pipeline.store.base import DateLocks, Lease, Store

_DATE_DIR = re.compile(r"^(?:conversations|staging|journal)/(\d{4}-\d{2}-\d{2})(?:\.json|/)")


@dataclass(frozen=True)
class Selector:
    """Which conversations to erase: named ids, or any whose id or words contain `match`
    (case-insensitive)."""

    ids: frozenset[str] = frozenset()
    match: str | None = None

    def __post_init__(self) -> None:
        if not self.ids and not (self.match and self.match.strip()):
            raise OperationError("say what to forget: --id ID… or --match TEXT")

    def _matches(self, text: str) -> bool:
        return self.match is not None and self.match.casefold() in text.casefold()

    def conversation(self, conversation: Conversation) -> bool:
        return (
            conversation.id in self.ids
            or self._matches(conversation.id)
            or any(self._matches(m.content) for m in conversation.messages)
        )

    def staged(self, conversation_id: str, text: str) -> bool:
        """A staged conversation (its JSON text): by id, or by its words once decoded."""
        if conversation_id in self.ids or self._matches(conversation_id):
            return True
        if self.match is None:
            return False
        body = json.loads(text)
        return any(self._matches(str(m.get("content", ""))) for m in body.get("messages", []))

    def quarantined(self, raw: str, found: Iterable[str]) -> bool:
        """A rejected record (its raw text): holding the match, or naming one of the ids as
        a value: quoted (JSON, quoted CSV) or as a whole delimited field (plain CSV) — not
        merely as a word, so a short id never takes unrelated records with it."""
        if self._matches(raw):
            return True
        return any(_names_id(raw, i) for i in found)


def _names_id(raw: str, conversation_id: str) -> bool:
    value = re.escape(conversation_id)
    quoted = rf"[\"']{value}[\"']"
    field = rf"(?:^|[,;\t|]){value}(?:$|[,;\t|\r\n])"
    return re.search(quoted, raw) is not None or re.search(field, raw) is not None


@dataclass
class Removal:
    """What was (or, in a dry run, would be) removed from one object."""

    key: str
    what: str  # "conversations", "log entry", "staged conversations", "quarantine records"…
    ids: list[str] = field(default_factory=list)
    count: int = 0

    def describe(self) -> str:
        listed = f": {', '.join(self.ids[:20])}" + (" …" if len(self.ids) > 20 else "")
        return f"{self.key}: {self.count} {self.what}" + (listed if self.ids else "")


@dataclass
class ForgetReport:
    dry_run: bool = False
    removed: list[Removal] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    incoming: list[str] = field(default_factory=list)

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        if not self.removed:
            return "nothing to forget: no conversation matched (already forgotten, or never stored)"
        lines = [f"{verb} {len(self.ids)} conversation(s):"]
        lines += [f"  {r.describe()}" for r in self.removed]
        if self.incoming:
            lines.append(
                "uploads under incoming/ that brought them (your own files: convsync never "
                "changes them; delete them yourself if the erasure must cover them):"
            )
            lines += [f"  {key}" for key in self.incoming]
        return "\n".join(lines)


def forget_dates(store: Store) -> list[str]:
    """Every date with a document, a log or staged uploads."""
    dates: set[str] = set()
    for prefix in ("conversations/", "journal/", "staging/"):
        for info in store.list(prefix):
            if match := _DATE_DIR.match(info.key):
                dates.add(match.group(1))
    return sorted(dates)


def forget(
    store: Store,
    locks: DateLocks,
    selector: Selector,
    *,
    owner: str,
    dry_run: bool = False,
    dates: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ForgetReport:
    """Erase the selected conversations from `dates` (default: all) and the quarantine.

    Raises DateLockedError when a date stays locked past the lock wait: nothing of that date
    was changed; run it again (every step is idempotent).
    """
    report = ForgetReport(dry_run=dry_run)
    chosen = forget_dates(store) if dates is None else list(dates)
    uploads: set[str] = set()
    for done, date in enumerate(chosen, start=1):
        if dry_run:
            _forget_date(store, None, date, selector, report, uploads)
        else:
            with locks.date_lock(date, owner) as lease:
                _forget_date(store, lease, date, selector, report, uploads)
        if progress is not None:
            progress(done, len(chosen), date)
    _forget_quarantined(store, selector, report, uploads, dry_run)
    present = {info.key for info in store.list(INCOMING)}
    report.incoming = sorted(uploads & present)
    return report


def _forget_date(
    store: Store,
    lease: Lease | None,
    date: str,
    selector: Selector,
    report: ForgetReport,
    uploads: set[str],
) -> None:
    loaded = read_document(store, date)
    assert loaded.state is not None
    erased = {c.id for c in loaded.state.conversations if selector.conversation(c)}
    staged_hits: list[tuple[str, StagedUpload, list[bool]]] = []
    for info in list(store.list(staging_prefix(date))):
        data = store.read(info.key)
        if data is None:
            continue
        staged = StagedUpload.decode(data, info.key)
        keep = [
            not (i in erased or selector.staged(i, t))
            for i, t in zip(staged.ids.to_pylist(), staged.texts.to_pylist(), strict=True)
        ]
        if not all(keep):
            staged_hits.append((info.key, staged, keep))
            erased.update(i for i, k in zip(staged.ids.to_pylist(), keep, strict=True) if not k)
            uploads.add(staged.upload)
    if not erased:
        return
    report.ids.update(erased)
    tombstone = Tombstone.from_json(date, store.read(tombstone_key(date)))
    if lease is not None:
        lease.ensure_held()
        store.write(tombstone_key(date), tombstone.with_ids(erased).to_json())

    in_document = [c.id for c in loaded.state.conversations if c.id in erased]
    if in_document:
        report.removed.append(
            Removal(f"conversations/{date}.json", "conversations", in_document, len(in_document))
        )
        if lease is not None:
            writer = DateWriter.over(store, loaded, lease)
            kept = [c for c in loaded.state.conversations if c.id not in erased]
            writer.checkpoint_of(kept, loaded.state.last_entry)  # also rewrites ids.json
            if store.read(summary_key(date)) is not None:
                assert writer.stored is not None
                summary = build_daily_summary(writer.stored)
                store.write(summary_key(date), dump_json(summary.model_dump()))
                report.removed.append(Removal(summary_key(date), "summary recomputed"))
    _forget_logged(store, lease, date, erased, report)
    for key, staged, keep in staged_hits:
        gone = [i for i, k in zip(staged.ids.to_pylist(), keep, strict=True) if not k]
        report.removed.append(Removal(key, "staged conversations", gone, len(gone)))
        if lease is not None:
            lease.ensure_held()
            store.write(key, staged.keeping(keep).encode())


def _forget_logged(
    store: Store, lease: Lease | None, date: str, erased: set[str], report: ForgetReport
) -> None:
    """Rewrite the (folded) log entries holding the erased conversations without them."""
    for info in list(store.list(journal_prefix(date))):
        if entry_number(info.key, date) is None:
            continue  # the id index: rewritten by the checkpoint
        data = store.read(info.key)
        if data is None:
            continue
        Entry.from_json_bytes(data, info.key)  # a corrupt entry is reported, never rewritten
        body = json.loads(data)
        conversations = body.get("conversations") or []
        changes = body.get("changes") or []
        kept_conversations = [c for c in conversations if c.get("id") not in erased]
        kept_changes = [c for c in changes if c.get("id") not in erased]
        gone = len(conversations) - len(kept_conversations) + len(changes) - len(kept_changes)
        if not gone:
            continue
        ids = sorted({c.get("id") for c in (*conversations, *changes)} & erased)
        report.removed.append(Removal(info.key, "log items (appended or changes)", ids, gone))
        if lease is not None:
            body["conversations"] = kept_conversations
            body["changes"] = kept_changes
            body["forgotten"] = int(body.get("forgotten") or 0) + gone
            lease.ensure_held()
            store.write(info.key, dump_json(body))


def _forget_quarantined(
    store: Store, selector: Selector, report: ForgetReport, uploads: set[str], dry_run: bool
) -> None:
    """Remove quarantine records holding the text or naming an erased id."""
    for info in list(store.list("quarantine/")):
        data = store.read(info.key)
        if data is None:
            continue
        kept: list[bytes] = []
        gone = 0
        for line in data.splitlines(keepends=True):
            try:
                record = json.loads(line)
                raw = str(record.get("raw", ""))
            except ValueError:
                record, raw = {}, line.decode("utf-8", "replace")
            if selector.quarantined(raw, report.ids | selector.ids):
                gone += 1
                if isinstance(record.get("upload"), str):
                    uploads.add(record["upload"])
            else:
                kept.append(line)
        if gone:
            report.removed.append(Removal(info.key, "quarantine records", count=gone))
            if not dry_run:
                store.write(info.key, b"".join(kept))


__all__ = ["ForgetReport", "Removal", "Selector", "forget", "forget_dates"]
