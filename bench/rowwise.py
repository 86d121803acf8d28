"""The baseline: the ingest + merge rules written the straightforward way, one row at a time.

`csv` module, `dateutil` per row, a dict per message and per conversation, a dict merge into
each date document and `json.dumps(..., ensure_ascii=False, indent=1)`: what a careful first
version of convsync would look like without Arrow or pandas. `bench/ingest.py` times it beside
the real pipeline and checks that both write the same conversations.

The rules are the pipeline's (SPEC sections 4 and 5) for CSV uploads of the shapes
`bench/ingest.py` generates: header aliases, ids and roles stripped, blank role -> "unknown",
other non-blank columns under `meta`, a timestamp is an epoch (ms from 1e11 on) or anything
dateutil reads (naive = `tz`), accepted years 1970-2100, milliseconds truncated; a conversation
is its messages ordered by (time, row), dated by its earliest message in `tz`; conversations
file in the order they first appear; an id already in the date document is "already present".

Usage: python bench/rowwise.py UPLOAD.csv OUT_DIR [--key incoming/x.csv]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import parser as dateparser

UTC = dt.UTC
_ALIASES = {
    "conversation_id": ("conversation_id", "conversationid", "conversation"),
    "timestamp": ("timestamp", "created_at", "createdat", "time", "datetime", "date"),
    "role": ("role", "sender", "author", "speaker"),
    "content": ("content", "message", "text", "body"),
}
_EPOCH_RE = re.compile(r"[+-]?[0-9]+")
_STATUSES = ("pending", "processing", "success", "failed")


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _columns(header: list[str]) -> tuple[dict[str, int], list[tuple[int, str]]]:
    found: dict[str, int] = {}
    for field, aliases in _ALIASES.items():
        for alias in aliases:
            hits = [i for i, name in enumerate(header) if _fold(name) == _fold(alias)]
            if hits:
                found[field] = hits[0]
                break
    used = set(found.values())
    extras = [(i, name.strip()) for i, name in enumerate(header) if i not in used]
    return found, extras


def parse_ms(raw: str, tz: dt.tzinfo, day_first: bool) -> int:
    """Epoch milliseconds of one timestamp, or ValueError with the reason."""
    text = raw.strip()
    if not text:
        raise ValueError("missing timestamp")
    if _EPOCH_RE.fullmatch(text):
        number = int(text)
        ms = number if abs(number) >= 100_000_000_000 else number * 1000
        moment = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)
    else:
        try:
            moment = dateparser.parse(text, dayfirst=day_first)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"unparseable timestamp {text!r}: {exc}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        moment = moment.astimezone(UTC)
    if not 1970 <= moment.year <= 2100:
        raise ValueError(f"year {moment.year} outside 1970-2100 (timestamp {text!r})")
    return (moment - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)


def iso(ms: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_iso() -> str:
    return iso(int(time.time() * 1000))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def ingest_and_merge(
    upload: Path, key: str, out: Path, *, tz: dt.tzinfo = UTC, day_first: bool = False
) -> dict[str, Any]:
    """Parse one CSV upload row by row and merge it into `out/conversations/D.json`."""
    conversations: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    quarantined: list[str] = []
    records_in = 0
    with upload.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns, extras = _columns(header)
        id_at, ts_at = columns["conversation_id"], columns["timestamp"]
        role_at, content_at = columns.get("role"), columns.get("content")
        for fields in reader:
            if not fields:
                continue
            records_in += 1
            row_no = records_in
            conversation_id = fields[id_at].strip()
            reasons = [] if conversation_id else ["missing conversation_id"]
            try:
                ms = parse_ms(fields[ts_at], tz, day_first)
            except ValueError as exc:
                reasons.append(str(exc))
            if reasons:
                line = {"upload": key, "row": row_no, "reason": "; ".join(reasons),
                        "raw": ",".join(fields)}
                quarantined.append(json.dumps(line, ensure_ascii=False))
                continue
            role = fields[role_at].strip() if role_at is not None else ""
            message = {
                "role": role or "unknown",
                "content": fields[content_at] if content_at is not None else "",
                "timestamp": iso(ms),
                "meta": {name: fields[i] for i, name in extras if fields[i].strip()},
            }
            conversations.setdefault(conversation_id, []).append((ms, row_no, message))

    by_date: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for conversation_id, items in conversations.items():
        items.sort(key=lambda item: (item[0], item[1]))
        first_ms = items[0][0]
        day = (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=first_ms))
        day = day.astimezone(tz).date().isoformat()
        record = {
            "id": conversation_id,
            "startedAt": items[0][2]["timestamp"],
            "endedAt": items[-1][2]["timestamp"],
            "messages": [message for _, _, message in items],
            "source": key,
            "processingStatus": "pending",
            "retryCount": 0,
            "processingError": None,
            "processedAt": None,
            "analysis": None,
        }
        first_seen = min(row for _, row, _ in items)
        by_date.setdefault(day, []).append((first_seen, record))

    added = already = 0
    for day, entries in sorted(by_date.items()):
        entries.sort(key=lambda entry: entry[0])
        path = out / "conversations" / f"{day}.json"
        if path.exists():
            document = json.loads(path.read_bytes())
        else:
            document = {"date": day, "conversations": [], "processedCount": 0,
                        "summary": {}, "_blobMeta": {"version": 0}}
        known = {conversation["id"] for conversation in document["conversations"]}
        new = []
        for _, record in entries:
            if record["id"] in known:
                already += 1
                continue
            known.add(record["id"])
            new.append(record)
        added += len(new)
        if not new and path.exists():
            continue
        document["conversations"].extend(new)
        counts = dict.fromkeys(_STATUSES, 0)
        for conversation in document["conversations"]:
            counts[conversation["processingStatus"]] += 1
        document["processedCount"] = counts["success"]
        document["summary"] = {"total": len(document["conversations"]), **counts}
        document["_blobMeta"] = {
            "version": document["_blobMeta"].get("version", 0) + 1,
            "updatedAt": now_iso(),
            "lockGeneration": None,
        }
        _write(path, json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"))
    if quarantined:
        _write(out / "quarantine" / (Path(key).name + ".jsonl"),
               ("\n".join(quarantined) + "\n").encode("utf-8"))
    return {
        "records_in": records_in,
        "accepted": records_in - len(quarantined),
        "quarantined": len(quarantined),
        "dates": sorted(by_date),
        "added": added,
        "already_present": already,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upload", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--key", default=None, help="the upload key recorded as `source`")
    parser.add_argument("--timezone", default="UTC")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = ingest_and_merge(
        args.upload, args.key or f"incoming/{args.upload.name}", args.out,
        tz=ZoneInfo(args.timezone),
    )
    for name, value in result.items():
        print(f"{name}: {value}")
    print(f"seconds: {time.perf_counter() - started:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
