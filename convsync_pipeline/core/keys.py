"""The store layout (SPEC section 3): every key the pipeline reads or writes is built here."""

from __future__ import annotations

import hashlib
import re

INCOMING = "incoming/"
UPLOAD_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson")

_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._=-]")
# A quarantine key mirrors its upload's path, cut to fit: each segment well under the 255-byte
# file-name limit of filesystems (the folder store adds a temp prefix while writing), the
# whole path well under S3's 1,024-byte key limit. The upload-id suffix keeps it unique.
_SEGMENT_MAX = 100
_PATH_MAX = 400


def document_key(date: str) -> str:
    return f"conversations/{date}.json"


def journal_prefix(date: str) -> str:
    """The date's log (SPEC 5a): entries `journal/D/<n>.json` and the date's id index."""
    return f"journal/{date}/"


_ENTRY_DIGITS = 20  # zero-padded, so entries list in order (S3 lists keys by byte order)
_ENTRY_NAME = re.compile(r"^(\d{20})\.json$")


def entry_key(date: str, number: int) -> str:
    return f"{journal_prefix(date)}{number:0{_ENTRY_DIGITS}d}.json"


def entry_number(key: str, date: str) -> int | None:
    """The number of a log entry key of `date`; None for any other key (the id index)."""
    prefix = journal_prefix(date)
    if not key.startswith(prefix):
        return None
    match = _ENTRY_NAME.match(key[len(prefix) :])
    return None if match is None else int(match.group(1))


def id_index_key(date: str) -> str:
    """The date's ids as of some entry: what a merge reads instead of the whole document."""
    return f"{journal_prefix(date)}ids.json"


def summary_key(date: str) -> str:
    return f"summaries/{date}.json"


def lock_key(date: str) -> str:
    return f"locks/{date}.lock"


def upload_id(upload_key: str, etag: str) -> str:
    """A short stable name for one version of one upload (the same key re-uploaded differs)."""
    return hashlib.sha256(f"{upload_key}\n{etag}".encode()).hexdigest()[:24]


def upload_index_key(upload_key: str, etag: str) -> str:
    """Marker that one upload version was parsed, staged and quarantined (exactly once)."""
    return f"state/uploads/{upload_id(upload_key, etag)}.json"


def staging_prefix(date: str) -> str:
    return f"staging/{date}/"


def staging_key(date: str, upload_key: str, etag: str) -> str:
    """One upload version's conversations of one date (`core.staging`; `.json` before 0.2)."""
    return f"{staging_prefix(date)}{upload_id(upload_key, etag)}.arrow"


def quarantine_key(upload_key: str, etag: str) -> str:
    """Readable yet safe: odd characters and `..` in an upload key cannot escape the prefix."""
    relative = upload_key[len(INCOMING) :] if upload_key.startswith(INCOMING) else upload_key
    segments = [
        (_SAFE_SEGMENT.sub("_", part) or "_")[:_SEGMENT_MAX] for part in relative.split("/")
    ]
    while len(segments) > 1 and sum(len(part) + 1 for part in segments) > _PATH_MAX:
        segments.pop(0)  # keep the file name and its nearest folders; records name the upload
    segments = ["_" if part in {".", ".."} else part for part in segments]
    return f"quarantine/{'/'.join(segments)}.{upload_id(upload_key, etag)[:8]}.jsonl"


def is_upload(key: str) -> bool:
    """Whether an object under `incoming/` is an upload (by suffix, optionally `.gz`)."""
    if not key.startswith(INCOMING) or key.endswith("/"):
        return False
    name = key.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(UPLOAD_SUFFIXES)
