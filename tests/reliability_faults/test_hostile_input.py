"""Scenario 7 — hostile input: nothing an upload contains, or is named, crashes the pipeline,
loses a record, escapes the store root, or lands in another date.

Hand-written: malformed CSV / JSON / JSONL, latin-1 and UTF-16 (BOM) text, BOMs, a 10 MB
field, NUL bytes, formula-injection cells, absurd timestamps (year 9999, negative epochs,
1e30, 10**400), ids with `/`, `..`, NUL or 5,000 characters, and upload keys with spaces,
unicode, `%2F`, very long names and `..` segments (where the backend allows them), run through
the four real assets on the folder store and on S3 (moto). Property-based (hypothesis):
random records in random formats, encodings and timezones, ingested and merged on a folder
store.

For every upload: records in = accepted + quarantined, read from the upload index
(`state/uploads/*.json`); the quarantine file holds exactly the quarantined records and the
staging area exactly the accepted ones (nothing lost). `staging/D/` and `conversations/D.json`
hold only conversations whose first message is on D. The folder store writes nothing outside
its root (a listing of its parent is unchanged).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import io
import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsync_pipeline.core.keys import (
    document_key,
    is_upload,
    quarantine_key,
    upload_index_key,
)
from convsync_pipeline.core.staging import StagedUpload
from convsync_pipeline.pipeline.ingest import ingest_new_uploads, read_upload_report
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.resources.blob_lock import locks_from_settings
from convsync_pipeline.settings import Settings, load_settings
from convsync_pipeline.store.base import Store, check_key
from convsync_pipeline.store.local import LocalStore
from convsync_pipeline.store.s3 import S3Store
from tests.dagster.helpers import run_date, settings_for
from tests.fixtures.moto import S3_TEST_PREFIX, StoreFactory, make_s3_client
from tests.reliability_faults._support import (
    KNOWN_PREFIXES,
    local_day,
    raw_objects,
    record_numbers,
    tree_listing,
)

PREV, D, NEXT = "2026-03-09", "2026-03-10", "2026-03-11"
HEADER = "conversation_id,timestamp,role,content\n"
HUGE = 10 * 1024 * 1024  # a 10 MB field
EPOCH_D = 1773129600  # 2026-03-10T08:00:00Z

# (timestamp, the date it must land on, or None: quarantined)
TIMESTAMPS: list[tuple[Any, str | None]] = [
    ("9999-12-31T23:59:59Z", None),
    (-1, None),
    ("-1", None),
    (-86_400_000, None),
    ("-62135596800", None),  # year 1
    (1e30, None),
    ("1e30", None),
    (10**400, None),
    ("NaN", None),
    ("Infinity", None),
    ("2101-01-01T00:00:00Z", None),
    ("1969-12-31T23:59:59Z", None),
    (True, None),
    (None, None),
    ([], None),
    ({"$date": "2026-03-10"}, None),
    ("2026-02-30T10:00:00Z", None),
    ("\u0000", None),
    ("2026-03-10T00:00:00+14:00", PREV),  # 2026-03-09T10:00Z
    ("2026-03-10T23:30:00-12:00", NEXT),  # 2026-03-11T11:30Z
    (EPOCH_D, D),  # seconds
    (EPOCH_D * 1000, D),  # milliseconds
    (str(EPOCH_D * 1000), D),
]

HOSTILE_IDS = [
    "a/b",
    "../../etc/passwd",
    "..",
    ".",
    "/absolute",
    "nul\u0000id",
    "x" * 5000,
    "😀 ünïcödé 名前",
    "%2F..%2Fescape",
    "C:\\windows\\system32",
    "=cmd|' /C calc'!A0",
]
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(A1:A9)", "-2+3+cmd|' /C notepad'!A1", '@HYPERLINK("x")']


def _csv(rows: list[tuple[str, ...]], header: str = HEADER) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)  # "\r" too
    writer.writerows(rows)
    return header + out.getvalue()


def hostile_uploads() -> tuple[dict[str, bytes], dict[str, tuple[int, int]]]:
    """Uploads valid as store keys on both backends, and the exact (in, accepted) expected."""
    at = f"{D}T09:00:00Z"
    uploads: dict[str, bytes] = {}
    expected: dict[str, tuple[int, int]] = {}

    uploads["incoming/hostile/malformed.csv"] = (
        HEADER
        + 'm-1,2026-03-10T09:00:00Z,user,"unterminated quote\n'
        + "m-2,2026-03-10T09:01:00Z,user,ok,extra,columns\n"
        + "m-3,2026-03-10T09:02:00Z\n"
        + '"m-4",2026-03-10T09:03:00Z,user,"fine"\n'
    ).encode()
    uploads["incoming/hostile/broken.json"] = (
        b'[{"conversation_id": "j-1", "timestamp": "2026-03-10T09:00:00Z", "content": "x"}, {"con'
    )
    expected["incoming/hostile/broken.json"] = (1, 0)
    uploads["incoming/hostile/not-json-at-all.json"] = b"<html><body>502 Bad Gateway</body></html>"
    expected["incoming/hostile/not-json-at-all.json"] = (1, 0)
    uploads["incoming/hostile/mixed.jsonl"] = b"\n".join(
        [
            json.dumps({"conversation_id": "l-1", "timestamp": at, "content": "ok"}).encode(),
            b"not json at all",
            b"[1, 2, 3]",
            b'"just a string"',
            json.dumps(
                {"conversation_id": "l-2", "timestamp": at, "content": "nul \u0000 in"}
            ).encode(),
            b"\x00\x00\x00",
            b'{"conversation_id": null, "timestamp": "2026-03-10T09:00:00Z"}',
            b"",
            b"\xff\xfe not utf-8 \xc3\x28",
        ]
    )
    expected["incoming/hostile/mixed.jsonl"] = (8, 2)
    uploads["incoming/hostile/latin1.csv"] = _csv(
        [("lat-1", at, "user", "café crème brûlée"), ("lat-2", at, "user", "plain ascii")]
    ).encode("latin-1")
    expected["incoming/hostile/latin1.csv"] = (2, 1)  # the row with latin-1 bytes: quarantined
    uploads["incoming/hostile/utf16.csv"] = _csv(
        [("u16-1", at, "user", "naïve 名前 😀"), ("u16-2", at, "agent", "ok")]
    ).encode("utf-16")
    expected["incoming/hostile/utf16.csv"] = (2, 2)
    uploads["incoming/hostile/utf16be.jsonl"] = codecs.BOM_UTF16_BE + (
        json.dumps({"conversation_id": "u16be", "timestamp": at, "content": "big endian"})
    ).encode("utf-16-be")
    expected["incoming/hostile/utf16be.jsonl"] = (1, 1)
    uploads["incoming/hostile/bom.json"] = (
        codecs.BOM_UTF8
        + json.dumps(
            {
                "conversations": [
                    {
                        "id": "bom-1",
                        "messages": [{"role": "user", "content": "hi", "timestamp": at}],
                    }
                ]
            }
        ).encode()
    )
    expected["incoming/hostile/bom.json"] = (1, 1)
    uploads["incoming/hostile/huge.csv"] = (
        HEADER + f"huge-1,{at},user," + "A" * HUGE + f"\nhuge-2,{at},agent,small\n"
    ).encode()
    expected["incoming/hostile/huge.csv"] = (2, 2)
    uploads["incoming/hostile/nul.csv"] = (
        HEADER.encode()
        + b"n-1,2026-03-10T12:00:00Z,user,a\x00b\nn\x00-2,2026-03-10T12:01:00Z,user,x\n"
    )
    expected["incoming/hostile/nul.csv"] = (2, 2)
    uploads["incoming/hostile/formula.csv"] = _csv(
        [(f"f-{i}", at, "user", cell) for i, cell in enumerate(FORMULAS)]
        + [("=1+1", at, "user", "id is a formula")]
    ).encode()
    expected["incoming/hostile/formula.csv"] = (5, 5)
    records = [
        {"conversation_id": f"ts-{i}", "timestamp": value, "role": "user", "content": "t"}
        for i, (value, _) in enumerate(TIMESTAMPS)
    ]
    records += [  # a midnight straddler: its first message decides, D only
        {"conversation_id": "straddle", "timestamp": "2026-03-11T00:00:01Z", "content": "b"},
        {"conversation_id": "straddle", "timestamp": "2026-03-10T23:59:59Z", "content": "a"},
    ]
    uploads["incoming/hostile/timestamps.json"] = json.dumps(records).encode()
    valid = sum(1 for _, day in TIMESTAMPS if day is not None)
    expected["incoming/hostile/timestamps.json"] = (len(records), valid + 2)
    ids = [*HOSTILE_IDS, "", "   "]
    uploads["incoming/hostile/ids.jsonl"] = "\n".join(
        json.dumps({"conversation_id": cid, "timestamp": at, "content": "id test"}) for cid in ids
    ).encode()
    expected["incoming/hostile/ids.jsonl"] = (len(ids), len(HOSTILE_IDS))
    uploads["incoming/hostile/empty.csv"] = b""
    expected["incoming/hostile/empty.csv"] = (1, 0)
    uploads["incoming/hostile/not-gzip.json.gz"] = b"this is not gzip"
    expected["incoming/hostile/not-gzip.json.gz"] = (1, 0)
    uploads["incoming/hostile/real.csv.gz"] = gzip.compress(
        _csv([("gz-1", at, "user", "gzipped")]).encode()
    )
    expected["incoming/hostile/real.csv.gz"] = (1, 1)
    bomb_line = json.dumps({"conversation_id": "bomb", "timestamp": at, "content": "b"}) + "\n"
    # ~1 GB of valid JSONL in ~4 MB: refused at CONVSYNC_MAX_INFLATE_RATIO (100 by default)
    # times its size, with nothing of it staged.
    uploads["incoming/hostile/bomb.jsonl.gz"] = gzip.compress(
        bomb_line.encode() * 20_000, 9
    ) * 700
    expected["incoming/hostile/bomb.jsonl.gz"] = (1, 0)
    uploads["incoming/hostile/binary.ndjson"] = random.Random(7).randbytes(64 * 1024)
    uploads["incoming/hostile/deep.json"] = b"[" * 100_000 + b"]" * 100_000
    expected["incoming/hostile/deep.json"] = (1, 0)
    for number, name in enumerate(
        [
            "with space.csv",
            "ünïcödé 名前.csv",
            "%2F..%2Fescape.csv",
            "a%2Fb%5C.csv",
            "trailing.dot..csv",
            " lead and trail .csv",
            "..hidden.csv",
        ]
    ):
        key = f"incoming/odd/{name}"
        uploads[key] = _csv([(f"odd-{number}", at, "user", f"from {name}")]).encode()
        expected[key] = (1, 1)
    return uploads, expected


def _put_raw(store: Store, factory: StoreFactory, key: str, data: bytes) -> None:
    """Drop an object as a user or another system would: below the Store API."""
    if isinstance(store, LocalStore):
        path = os.path.join(bytes(store.root), *key.encode().split(b"/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        return
    assert isinstance(store, S3Store) and factory.endpoint_url
    client = make_s3_client(factory.endpoint_url)
    client.put_object(Bucket=store.bucket, Key=f"{S3_TEST_PREFIX}/{key}", Body=data)


def _long_name(kind: str) -> str:
    # Folder: a name of 244 bytes (the filesystem allows 255). S3: a key of ~920 bytes
    # (S3 allows 1,024). Before the fix, the quarantine key derived from either was too long.
    return "n" * (240 if kind == "local" else 900) + ".csv"


def _place_uploads(store: Store, factory: StoreFactory) -> tuple[dict[str, tuple[int, int]], int]:
    """Every hostile upload; returns the expected counts and how many keys must be skipped."""
    uploads, expected = hostile_uploads()
    at = f"{D}T09:00:00Z"
    long_key = f"incoming/odd/{_long_name(factory.kind)}"
    uploads[long_key] = _csv([("long-name", at, "user", "a very long key")]).encode()
    expected[long_key] = (1, 1)
    for key, data in uploads.items():
        _put_raw(store, factory, key, data)
    # Names a key can not be read by: skipped with a warning, never a crash.
    unusable: list[bytes]
    if factory.kind == "local":
        unusable = [b"incoming/odd/back\\slash.csv", b"incoming/odd/bad-\xff\xfe-utf8.csv"]
        for raw in unusable:
            path = os.path.join(bytes(store.root), *raw.split(b"/"))
            with open(path, "wb") as handle:
                handle.write(_csv([("skipped", at, "user", "x")]).encode())
        # and, where the filesystem allows it, a newline inside a name is just a name
        key = "incoming/odd/new\nline.csv"
        _put_raw(store, factory, key, _csv([("newline-name", at, "user", "x")]).encode())
        expected[key] = (1, 1)
    else:
        unusable = [
            b"incoming/odd/../dotdot.csv",
            b"incoming/odd//empty-segment.csv",
            b"incoming/odd/./dot.csv",
        ]
        for raw in unusable:
            _put_raw(store, factory, raw.decode(), _csv([("skipped", at, "user", "x")]).encode())
    return expected, len(unusable)


def _lines(data: bytes | None) -> list[str]:
    """JSON lines are split on "\n" only: U+0085 or U+2028 inside a raw value is data."""
    return (data or b"").decode("utf-8").removesuffix("\n").split("\n") if data else []


def _check_uploads(store: Store, expected: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Records in = accepted + quarantined per upload, and nothing lost on the way."""
    staged_messages: Counter[str] = Counter()
    staged_conversations: dict[str, set[str]] = {}
    for info in store.list("staging/"):
        staged = StagedUpload.decode(store.read(info.key) or b"", info.key)
        date = info.key.split("/")[1]
        assert staged.date == date, info.key
        for conversation in staged.conversations():
            staged_messages[staged.upload] += len(conversation["messages"])
            staged_conversations.setdefault(date, set()).add(conversation["id"])
            # nothing outside its own date: the first message decides, in UTC here
            assert local_day(conversation["startedAt"], ZoneInfo("UTC")) == date, conversation
            stamps = [m["timestamp"] for m in conversation["messages"]]
            assert conversation["startedAt"] == min(stamps) == stamps[0]
            assert conversation["endedAt"] == max(stamps)

    uploads = [info for info in store.list("incoming/") if is_upload(info.key)]
    indexed = {info.key for info in store.list("state/uploads/")}
    assert indexed == {upload_index_key(info.key, info.etag) for info in uploads}
    totals = Counter()
    for info in uploads:
        report = read_upload_report(store, info.key, info.etag)
        assert report is not None, f"{info.key!r} was never ingested"
        assert report.records_in == report.accepted + report.quarantined, report
        assert report.records_in >= 1, report
        if info.key in expected:
            assert (report.records_in, report.accepted) == expected[info.key], info.key
        assert staged_messages[info.key] == report.accepted, f"data lost from {info.key!r}"
        if report.quarantined:
            assert report.quarantine_key and report.quarantine_key.startswith("quarantine/")
            lines = _lines(store.read(report.quarantine_key))
            assert len(lines) == report.quarantined, info.key
            for line in lines:
                item = json.loads(line)
                assert item["upload"] == info.key and item["reason"], item
        else:
            assert report.quarantine_key is None
        totals["uploads"] += 1
        totals["records_in"] += report.records_in
        totals["accepted"] += report.accepted
        totals["quarantined"] += report.quarantined
    missing = set(expected) - {info.key for info in uploads}
    assert not missing, f"uploads not listed: {missing}"
    totals["staged_conversations"] = sum(len(ids) for ids in staged_conversations.values())
    return dict(totals)


def _check_document(store: Store, date: str) -> dict[str, Any]:
    document = json.loads(store.read(document_key(date)) or b"{}")
    assert document["date"] == date
    ids = [c["id"] for c in document["conversations"]]
    assert len(ids) == len(set(ids))
    staged = {
        c["id"]
        for info in store.list(f"staging/{date}/")
        for c in StagedUpload.decode(store.read(info.key) or b"", info.key).conversations()
    }
    assert set(ids) == staged, "every accepted conversation of the date is in its document"
    for conversation in document["conversations"]:
        assert local_day(conversation["startedAt"], ZoneInfo("UTC")) == date
        for message in conversation["messages"]:
            assert message["timestamp"] >= conversation["startedAt"]
    assert document["summary"]["total"] == len(ids)
    assert document["summary"]["processing"] == 0
    return document


@pytest.mark.slow
def test_hostile_uploads_end_to_end(
    store_factory: StoreFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convsync")
    store = store_factory()
    parent = tmp_path  # the folder store lives in tmp_path/store-N; everything else must stay
    expected, unusable = _place_uploads(store, store_factory)
    skip = store.root if isinstance(store, LocalStore) else None
    before = tree_listing(parent, skip=skip)
    settings = settings_for({**store_factory.env(store), "CONVSYNC_ANALYZER": "local"})

    started = time.monotonic()
    for date in (D, PREV, NEXT):
        result = run_date(settings, date)
        assert result.success, f"run of {date} failed"
    seconds = time.monotonic() - started

    totals = _check_uploads(store, expected)
    documents = {date: _check_document(store, date) for date in (PREV, D, NEXT)}
    d_ids = {c["id"] for c in documents[D]["conversations"]}
    assert {cid.strip() for cid in HOSTILE_IDS} <= d_ids  # ids are data, never paths
    assert "straddle" in d_ids
    assert "straddle" not in {c["id"] for c in documents[NEXT]["conversations"]}
    by_id = {c["id"]: c for c in documents[D]["conversations"]}
    assert len(by_id["huge-1"]["messages"][0]["content"]) == HUGE
    assert by_id["n-1"]["messages"][0]["content"] == "a\x00b"
    for number, cell in enumerate(FORMULAS):  # kept verbatim: data, never evaluated
        assert by_id[f"f-{number}"]["messages"][0]["content"] == cell
    for day, count in Counter(day for _, day in TIMESTAMPS if day).items():
        ids = {c["id"] for c in documents[day]["conversations"]}
        assert len({i for i in ids if i.startswith("ts-")}) == count, day
    assert all(c["processingStatus"] == "success" for c in documents[D]["conversations"])

    skipped = [r for r in caplog.records if "not a valid store key" in r.getMessage()]
    assert len({r.getMessage() for r in skipped}) == unusable, [r.getMessage() for r in skipped]

    objects = raw_objects(store, store_factory.endpoint_url)
    outside = [key for key in objects if not key.startswith(KNOWN_PREFIXES)]
    assert not outside, f"objects outside the store layout: {outside[:5]}"
    if isinstance(store, LocalStore):
        for folder, dirs, files in os.walk(store.root):
            for name in [*dirs, *files]:
                assert not os.path.islink(os.path.join(folder, name)), name
        assert tree_listing(parent, skip=store.root) == before, "written outside the store root"

    record_numbers(
        "hostile_input",
        store_factory.kind,
        runs=3,
        skipped_unreadable_keys=unusable,
        conversations_in_documents=sum(len(d["conversations"]) for d in documents.values()),
        written_outside_root=0,
        data_lost=0,
        seconds=round(seconds, 1),
        **totals,
    )


# --------------------------------------------------------------------------- property-based
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_HOSTILE_TEXT = st.one_of(
    _TEXT,
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "..",
            "../..",
            "/",
            "a/b",
            "%2F",
            "=cmd|' /C calc'!A0",
            "\ufeff",
            "\r\n",
            '"',
            "é",
            "名前",
            "😀",
            "x" * 3000,
        ]
    ),
)
_TIMESTAMP = st.one_of(
    st.datetimes(
        min_value=dt.datetime(1969, 12, 30),
        max_value=dt.datetime(2101, 1, 2),
        timezones=st.sampled_from(
            [ZoneInfo("UTC"), ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago"), None]
        ),
    ).map(lambda moment: moment.isoformat()),
    st.integers(min_value=-(10**13), max_value=10**14),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "9999-12-31",
            "-1",
            "1e30",
            "0",
            "NaN",
            "",
            "2026-02-30",
            "02/11/2026 2:03 PM",
            "Feb 11, 2026 14:03",
            "2026-02-11 14",
            "\x00",
            "yesterday",
        ]
    ),
    _TEXT,
)
_RECORD = st.tuples(_HOSTILE_TEXT, _TIMESTAMP, _HOSTILE_TEXT, _HOSTILE_TEXT)


def _serialise(records: list[tuple[Any, ...]], fmt: str, encoding: str) -> bytes:
    if fmt == "csv":
        rows = [(cid, str(ts), role, content) for cid, ts, role, content in records]
        text = _csv(rows)
    elif fmt == "json":
        text = json.dumps(
            [
                {"conversation_id": c, "timestamp": t, "role": r, "content": m}
                for c, t, r, m in records
            ],
            ensure_ascii=False,
        )
    else:
        text = "\n".join(
            json.dumps(
                {"conversation_id": c, "timestamp": t, "role": r, "content": m}, ensure_ascii=False
            )
            for c, t, r, m in records
        )
    return text.encode(encoding, "replace") if encoding != "utf-8-sig" else text.encode(encoding)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(_RECORD, max_size=12),
    fmt=st.sampled_from(["csv", "json", "jsonl"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]),
    gz=st.booleans(),
    garbage=st.one_of(st.none(), st.binary(max_size=300)),
    tz=st.sampled_from(["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu"]),
    name=st.sampled_from(["export", "with space", "ünï 名", "%2F..%2Fx", "..x", "n" * 200]),
)
def test_any_upload_is_accounted_for_and_stays_in_its_date(
    records: list[tuple[Any, ...]],
    fmt: str,
    encoding: str,
    gz: bool,
    garbage: bytes | None,
    tz: str,
    name: str,
) -> None:
    data = _serialise(records, fmt, encoding) if garbage is None else garbage
    if gz:
        data = gzip.compress(data)
    key = f"incoming/prop/{name}.{fmt}{'.gz' if gz else ''}"
    settings_ = load_settings({"CONVSYNC_TIMEZONE": tz})
    with tempfile.TemporaryDirectory() as sandbox:
        parent = Path(sandbox)
        root = parent / "store"
        store = LocalStore(root)
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        before = tree_listing(parent, skip=root)
        [report] = list(ingest_new_uploads(store, settings_))
        assert report.records_in == report.accepted + report.quarantined
        if garbage is None and encoding in {"utf-8", "utf-8-sig", "utf-16"} and records:
            assert report.records_in == len(records), (report, data[:300])
        _check_property_store(store, settings_, report.accepted, report.quarantined)
        assert tree_listing(parent, skip=root) == before


def _check_property_store(
    store: LocalStore, settings_: Settings, accepted: int, quarantined: int
) -> None:
    staged = 0
    dates = set()
    for info in store.list("staging/"):
        date = info.key.split("/")[1]
        dates.add(date)
        batch = StagedUpload.decode(store.read(info.key) or b"", info.key)
        for conversation in batch.conversations():
            assert local_day(conversation["startedAt"], settings_.tz) == date
            assert 1970 <= int(conversation["startedAt"][:4]) <= 2100
            staged += len(conversation["messages"])
    assert staged == accepted
    lines = [line for info in store.list("quarantine/") for line in _lines(store.read(info.key))]
    assert len(lines) == quarantined
    for date in sorted(dates):
        merge_date(store, locks_from_settings(store, settings_), date, "prop-test")
        document = json.loads(store.read(document_key(date)) or b"{}")
        ids = [c["id"] for c in document["conversations"]]
        assert len(ids) == len(set(ids))
        for conversation in document["conversations"]:
            assert local_day(conversation["startedAt"], settings_.tz) == date


@settings(max_examples=300, deadline=None)
@given(
    segments=st.lists(
        st.one_of(_TEXT, st.sampled_from(["..", ".", "", "%2F", "n" * 300, "名" * 200])),
        min_size=1,
        max_size=12,
    ),
    suffix=st.sampled_from([".csv", ".json.gz", ".jsonl", ".ndjson"]),
)
def test_quarantine_keys_are_valid_and_short_enough_for_both_backends(
    segments: list[str], suffix: str
) -> None:
    """Regression: a 230-character upload name (or a ~1,000-byte S3 key) used to give a
    quarantine key the filesystem or S3 refuses, failing every run of every date."""
    upload = "incoming/" + "/".join(segments) + suffix
    key = quarantine_key(upload, "etag")
    assert check_key(key) == key and key.startswith("quarantine/")
    assert len(key.encode()) <= 11 + 400 + 15  # far below S3's 1,024 bytes with a prefix
    # each name, with the folder store's temp prefix while writing, fits in 255 bytes
    assert all(len(part.encode()) + 23 <= 255 for part in key.split("/"))
