"""Uploads to records: every format and shape, and every record accounted for (SPEC section 4)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import random
from unittest import mock
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import dates
from convsync_pipeline.core.formats import csv as csv_format
from convsync_pipeline.core.formats import jsonl as jsonl_format
from convsync_pipeline.core.formats import (
    parse_upload,
    parse_upload_stream,
    read_upload,
    source_of,
)
from convsync_pipeline.core.formats.streams import bytes_opener
from convsync_pipeline.core.records import (
    MESSAGE_COLUMNS,
    CollectedParts,
    ParsedUpload,
    QuarantinedRecord,
    meta_dicts,
    upload_format,
)

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
NY = ZoneInfo("America/New_York")
TS = "2026-02-11T14:03:00Z"
ISO = "2026-02-11T14:03:00.000Z"
TS_BYTES = TS.encode()


def check(parsed: ParsedUpload) -> ParsedUpload:
    """The invariants every result keeps, whatever went in."""
    frame = parsed.messages
    assert tuple(frame.columns) == MESSAGE_COLUMNS
    assert parsed.records_in == len(frame) + len(parsed.quarantined)
    assert frame["ts_ns"].dtype == np.int64
    assert frame["record_no"].dtype == np.int64
    for name in ("conversation_id", "timestamp", "role", "content"):
        assert pd.api.types.is_string_dtype(frame[name].dtype), name
        assert not frame[name].isna().any(), name
    assert all(isinstance(m, dict) for m in meta_dicts(frame["meta"]))
    assert frame["record_no"].is_monotonic_increasing and frame["record_no"].is_unique
    assert (frame["conversation_id"].str.strip() == frame["conversation_id"]).all()
    assert (frame["conversation_id"] != "").all()
    # The stored string and the epoch are the same instant.
    assert (pd.to_datetime(frame["timestamp"]).dt.as_unit("ns").astype("int64")
            == frame["ts_ns"]).all()
    for q in parsed.quarantined:
        assert q.upload == parsed.upload
        assert q.reason
        line = q.to_json_line()
        assert "\n" not in line
        line.encode("utf-8")  # always writable
        body = json.loads(line)
        assert body[q.position_kind] == q.position and body["raw"] == q.raw
    return parsed


def parse(key: str, data: bytes | str, **kwargs: object) -> ParsedUpload:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return check(parse_upload(key, raw, **kwargs))  # type: ignore[arg-type]


def rows_of(parsed: ParsedUpload) -> list[tuple[str, str, str, str]]:
    frame = parsed.messages
    return list(zip(frame["conversation_id"], frame["timestamp"], frame["role"],
                    frame["content"], strict=True))


def where(parsed: ParsedUpload) -> list[tuple[str, int | None, str]]:
    return [(q.position_kind, q.position, q.reason) for q in parsed.quarantined]


# --------------------------------------------------------------------------- format by name

@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("incoming/a.csv", (".csv", False)),
        ("incoming/A.CSV.GZ", (".csv", True)),
        ("x.json", (".json", False)),
        ("x.jsonl.gz", (".jsonl", True)),
        ("x.NDJSON", (".ndjson", False)),
        ("x.txt", None),
        ("x.csv.zip", None),
        ("x.gz", None),
    ],
)
def test_upload_format(key: str, expected: tuple[str, bool] | None) -> None:
    assert upload_format(key) == expected


def test_not_an_upload_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not an upload"):
        parse_upload("x.txt", b"")


# --------------------------------------------------------------------------- CSV

def test_csv_basic_with_meta_and_record_numbers() -> None:
    parsed = parse("u.csv", "conversation_id,timestamp,role,content,channel,score\n"
                            f"c1,{TS},user,hello,web,\n"
                            "c1,2026-02-11 14:04,assistant,hi there,,0.5\n")
    assert rows_of(parsed) == [
        ("c1", ISO, "user", "hello"),
        ("c1", "2026-02-11T14:04:00.000Z", "assistant", "hi there"),
    ]
    assert meta_dicts(parsed.messages["meta"]) == [{"channel": "web"}, {"score": "0.5"}]
    assert parsed.messages["record_no"].tolist() == [1, 2]
    assert parsed.messages["ts_ns"].tolist()[0] == 1770818580 * 10**9
    assert parsed.records_in == 2 and parsed.quarantined == []


def test_csv_aliases_case_and_bom() -> None:
    data = ("\ufeffConversationId,CREATED_AT,Sender,Text\n"
            f"c1,{TS},user,a\n").encode()
    assert rows_of(parse("u.csv", data)) == [("c1", ISO, "user", "a")]
    for header in (
        "conversation,createdAt,author,message",
        "Conversation ID,Time,Speaker,Body",
        "conversation_id,datetime,role,content",
        "conversation_id,date,role,content",
    ):
        assert rows_of(parse("u.csv", f"{header}\nc1,{TS},user,a\n")) == [
            ("c1", ISO, "user", "a")
        ], header


def test_csv_canonical_name_beats_alias_and_the_loser_goes_to_meta() -> None:
    parsed = parse("u.csv", f"text,content,date,timestamp,conversation_id\n"
                            f"from text,from content,2020-01-01,{TS},c1\n")
    assert rows_of(parsed) == [("c1", ISO, "unknown", "from content")]
    assert meta_dicts(parsed.messages["meta"])[0] == {"text": "from text", "date": "2020-01-01"}


def test_csv_duplicate_and_blank_header_names_stay_apart() -> None:
    parsed = parse("u.csv", f"conversation_id,timestamp,x,x,\nc1,{TS},1,2,3\n")
    assert meta_dicts(parsed.messages["meta"])[0] == {"x": "1", "x.1": "2", "column_5": "3"}


def test_csv_missing_role_and_content() -> None:
    parsed = parse("u.csv", f"conversation_id,timestamp,role\nc1,{TS},\nc2,{TS},  bot \n")
    assert rows_of(parsed) == [("c1", ISO, "unknown", ""), ("c2", ISO, "bot", "")]


def test_csv_multiline_quoted_fields_crlf_and_formula_cells() -> None:
    data = ('conversation_id,timestamp,role,content\r\n'
            f'c1,{TS},user,"line one\r\nline ""two"", with comma"\r\n'
            f'c2,{TS},user,=cmd()|\' /C calc\'!A0\r\n'
            f'c3,{TS},user,"+1 @SUM(1,1)"\r\n')
    parsed = parse("u.csv", data)
    assert parsed.messages["content"].tolist() == [
        'line one\r\nline "two", with comma', "=cmd()|' /C calc'!A0", "+1 @SUM(1,1)"
    ]
    assert parsed.messages["record_no"].tolist() == [1, 2, 3]


def test_csv_ids_are_stripped_text_as_given() -> None:
    parsed = parse("u.csv", f"conversation_id,timestamp\n  12 ,{TS}\n12.0,{TS}\n007,{TS}\n")
    assert parsed.messages["conversation_id"].tolist() == ["12", "12.0", "007"]


def test_csv_bad_rows_are_quarantined_with_numbers_and_reasons() -> None:
    data = ("conversation_id,timestamp,role,content\n"
            f"c1,{TS},user,ok\n"                       # row 1
            f" ,{TS},user,no id\n"                     # row 2
            "c3,yesterday,user,bad ts\n"               # row 3
            "\n"                                       # blank: not a row
            "c4,1850-01-01,user,too old\n"             # row 4
            "c5,,user,no ts\n"                         # row 5
            ",nope,user,both\n"                        # row 6
            f"c7,{TS},user,ok again\n")  # fmt: skip   # row 7
    parsed = parse("u.csv", data)
    assert parsed.messages["record_no"].tolist() == [1, 7]
    assert where(parsed) == [
        ("row", 2, "missing conversation_id"),
        ("row", 3, "unparseable timestamp 'yesterday': no date in it"),
        ("row", 4, "year 1850 outside 1970-2100 (timestamp '1850-01-01')"),
        ("row", 5, "missing timestamp"),
        ("row", 6, "missing conversation_id; unparseable timestamp 'nope': no date in it"),
    ]
    assert [q.raw for q in parsed.quarantined][:2] == [" ,2026-02-11T14:03:00Z,user,no id",
                                                       "c3,yesterday,user,bad ts"]
    assert parsed.records_in == 7


def test_csv_ragged_rows_fall_back_row_by_row_and_keep_numbers() -> None:
    data = ("conversation_id,timestamp,role,content\n"
            f"c1,{TS},user,ok\n"
            f'c2,{TS},user,"multi\nline",extra\n'
            f"c3,{TS}\n"
            f"c4,{TS},user,fine\n"
            "c5,nope,user,bad ts\n")
    parsed = parse("u.csv", data)
    assert parsed.messages["conversation_id"].tolist() == ["c1", "c4"]
    assert parsed.messages["record_no"].tolist() == [1, 4]
    assert where(parsed) == [
        ("row", 2, "row has 5 fields, the header has 4"),
        ("row", 3, "row has 2 fields, the header has 4"),
        ("row", 5, "unparseable timestamp 'nope': no date in it"),
    ]
    assert parsed.quarantined[0].raw == f'c2,{TS},user,"multi\nline",extra'
    assert parsed.quarantined[2].raw == "c5,nope,user,bad ts"


def test_csv_invalid_utf8_quarantines_only_that_row() -> None:
    data = (b"conversation_id,timestamp,role,content\n"
            + f"c1,{TS},user,caf\u00e9\n".encode()
            + f"c2,{TS},user,caf".encode() + b"\xe9 latin-1\n"
            + f"c3,{TS},user,ok\n".encode())
    parsed = parse("u.csv", data)
    assert parsed.messages["content"].tolist() == ["caf\u00e9", "ok"]
    assert where(parsed) == [("row", 2, "not valid UTF-8")]
    assert parsed.quarantined[0].raw == f"c2,{TS},user,caf\ufffd latin-1"


def test_csv_nul_bytes_and_control_characters_are_data() -> None:
    parsed = parse("u.csv", f"conversation_id,timestamp,content\nc\x001,{TS},a\x00b\x1bc\n")
    assert parsed.messages["conversation_id"].tolist() == ["c\x001"]
    assert parsed.messages["content"].tolist() == ["a\x00b\x1bc"]


def test_csv_huge_field() -> None:
    big = "x" * (9 * 1024 * 1024)
    parsed = parse("u.csv", f"conversation_id,timestamp,content\nc1,{TS},\"{big}\"\nc2,{TS},y\n")
    assert parsed.messages["content"].str.len().tolist() == [len(big), 1]


def test_csv_huge_field_in_a_ragged_file() -> None:
    big = "y" * (300 * 1024)
    parsed = parse("u.csv", f"conversation_id,timestamp,content\nc1,{TS},{big}\nc2,{TS}\n")
    assert parsed.messages["content"].str.len().tolist() == [len(big)]
    assert where(parsed) == [("row", 2, "row has 2 fields, the header has 3")]


def test_csv_naive_timestamps_use_tz_and_day_first() -> None:
    data = "conversation_id,timestamp\nc1,11/02/2026 09:03\nc2,2026-02-11 09:03\n"
    parsed = parse("u.csv", data, tz=NY, day_first=True)
    assert parsed.messages["timestamp"].tolist() == [
        "2026-02-11T14:03:00.000Z", "2026-02-11T14:03:00.000Z"
    ]


def test_csv_utf16_with_bom() -> None:
    text = f"conversation_id,timestamp,content\nc1,{TS},h\u00e9llo\n"
    parsed = parse("u.csv", text.encode("utf-16"))
    assert rows_of(parsed) == [("c1", ISO, "unknown", "h\u00e9llo")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\n\n  \n", "empty file"),
        (f"c1,{TS},user,hello\nc2,{TS},user,hi\n".encode(), "no conversation_id and no timestamp"),
        (b"conversation_id,role\nc1,user\n", "no timestamp column"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xd8", "not a usable CSV"),
        (bytes(range(256)) * 40, "not a usable CSV"),
    ],
)
def test_csv_whole_file_failures(data: bytes, reason: str) -> None:
    parsed = parse("u.csv", data)
    assert parsed.records_in == 1 and len(parsed.messages) == 0
    (only,) = parsed.quarantined
    assert only.position_kind == "file" and only.position is None
    assert reason in only.reason
    assert json.loads(only.to_json_line())["file"] is None


def test_csv_header_only_has_no_records() -> None:
    parsed = parse("u.csv", "conversation_id,timestamp,role,content\n")
    assert parsed.records_in == 0 and parsed.quarantined == []


def test_whole_file_raw_is_capped() -> None:
    parsed = parse("u.json", b"[" + b"x" * 200_000)
    (only,) = parsed.quarantined
    assert len(only.raw) == 65536 and "first 65536 bytes" in only.reason


# CSV: hypothesis over mixes of good and bad rows ------------------------------------------

ROW_KINDS = ["good", "good", "good", "no_id", "bad_ts", "old", "ragged", "bad_utf8", "blank",
             "multiline"]
cell_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"),
    max_size=12,
)


@st.composite
def csv_upload(draw: st.DrawFn) -> tuple[bytes, list[int], dict[int, str]]:
    kinds = draw(st.lists(st.sampled_from(ROW_KINDS), max_size=25))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["conversation_id", "timestamp", "role", "content", "extra"])
    chunks = [out.getvalue().encode()]
    good: list[int] = []
    bad: dict[int, str] = {}
    row = 0
    for kind in kinds:
        out.seek(0)
        out.truncate()
        if kind == "blank":
            chunks.append(b"\n")
            continue
        row += 1
        content = draw(cell_text)
        fields = [f"c{row}", TS, "user", content, draw(cell_text)]
        if kind == "no_id":
            fields[0] = draw(st.sampled_from(["", "  ", "\t"]))
            bad[row] = "missing conversation_id"
        elif kind == "bad_ts":
            fields[1] = draw(st.sampled_from(["nope", "14:03", "2026-02-30", "Feb 11"]))
            bad[row] = "unparseable timestamp"
        elif kind == "old":
            fields[1] = "1850-06-01 10:00"
            bad[row] = "year 1850"
        elif kind == "ragged":
            fields = fields[: draw(st.integers(min_value=1, max_value=4))] if draw(
                st.booleans()) else [*fields, "surplus"]
            bad[row] = "fields, the header has 5"
        elif kind == "bad_utf8":
            bad[row] = "not valid UTF-8"
        else:
            if kind == "multiline":
                fields[3] = f"first\n{content}\nlast"
            good.append(row)
        writer.writerow(fields)
        line = out.getvalue().encode()
        if kind == "bad_utf8":  # the role field, written before any random text
            line = line.replace(b"user", b"us\xff\xfer", 1)
        chunks.append(line)
    return b"".join(chunks), good, bad


@SETTINGS
@given(csv_upload(), st.booleans())
def test_csv_every_row_is_accounted_for(
    case: tuple[bytes, list[int], dict[int, str]], gzipped: bool
) -> None:
    data, good, bad = case
    key = "u.csv.gz" if gzipped else "u.csv"
    parsed = parse(key, gzip.compress(data) if gzipped else data)
    assert parsed.records_in == len(good) + len(bad)
    assert parsed.messages["record_no"].tolist() == good
    assert [q.position for q in parsed.quarantined] == sorted(bad)
    for q in parsed.quarantined:
        assert q.position_kind == "row"
        assert bad[q.position] in q.reason, (q.reason, bad[q.position])  # type: ignore[index]
    assert parsed.messages["conversation_id"].tolist() == [f"c{r}" for r in good]


@SETTINGS
@given(st.lists(st.tuples(cell_text, cell_text, cell_text), max_size=15))
def test_csv_fast_and_row_by_row_paths_agree(cells: list[tuple[str, str, str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["Conversation", "date", "speaker", "text", "note"])
    for i, (content, note, role) in enumerate(cells):
        stamp = ["2026-02-11 14:03", TS, "1770818580", "02/11/2026 2:03 PM", "junk"][i % 5]
        writer.writerow([f"c{i}" if i % 7 else " ", stamp, role, content, note])
    data = out.getvalue().encode()
    fast = parse("u.csv", data)
    slow = check(row_by_row("u.csv", data))
    pd.testing.assert_frame_equal(fast.messages, slow.messages)
    assert [(q.position, q.reason) for q in fast.quarantined] == [
        (q.position, q.reason) for q in slow.quarantined
    ]


def row_by_row(key: str, data: bytes) -> ParsedUpload:
    """The CSV read by the careful path only, as if Arrow had refused it."""
    parts = CollectedParts()
    with source_of(key, bytes_opener(data), size=len(data)).open() as stream:
        csv_format._row_by_row(key, stream, parts, dates.UTC, False)
    return ParsedUpload.combined(key, parts.parts)


# CSV streamed from the store: exactly the whole-bytes result, a block at a time -----------


class Reads(io.RawIOBase):
    """A stream that remembers how it was read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.largest = 0
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        piece = self._data.read(len(buffer))
        buffer[: len(piece)] = piece
        self.largest = max(self.largest, len(piece))
        self.total += len(piece)
        return len(piece)


class Opens:
    """An opener of `Reads` streams of the bytes, remembering them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.streams: list[Reads] = []

    @contextlib.contextmanager
    def __call__(self):  # type: ignore[no-untyped-def]
        self.streams.append(Reads(self.data))
        yield self.streams[-1]


def streamed(key: str, data: bytes, block_size: int, **kwargs: object) -> tuple[ParsedUpload, bool]:
    """The upload parsed from a stream, and whether the parser read it a second time."""
    opens = Opens(data)
    parsed = parse_upload_stream(
        key, opens, size=len(data), block_size=block_size, **kwargs  # type: ignore[arg-type]
    )
    return check(parsed), len(opens.streams) > 1


def assert_same(one: ParsedUpload, other: ParsedUpload) -> None:
    pd.testing.assert_frame_equal(one.messages, other.messages)
    assert one.quarantined == other.quarantined
    assert one.records_in == other.records_in


@SETTINGS
@given(csv_upload(), st.booleans(), st.sampled_from([64, 200, 4096, 1 << 22]))
def test_a_streamed_csv_is_parsed_as_the_whole_bytes_are(
    case: tuple[bytes, list[int], dict[int, str]], gzipped: bool, block_size: int
) -> None:
    data, _, _ = case
    key = "u.csv.gz" if gzipped else "u.csv"
    body = gzip.compress(data) if gzipped else data
    parsed, _ = streamed(key, body, block_size)
    assert_same(parsed, parse(key, body))


def _messages_csv(rows: int, *, extra: bytes = b"") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["conversation_id", "timestamp", "role", "content", "channel"])
    stamps = [TS, "2026-02-11 09:03", "1770818580123", "02/11/2026 2:03 PM", "nope"]
    noise = random.Random(rows)  # text gzip cannot shrink to nothing
    for i in range(rows):
        content = f'line {i}, "quoted"\nand é {noise.getrandbits(128):x}' if i % 3 else ""
        writer.writerow([f"c{i // 10}", stamps[i % 5], "user", content, "web" if i % 2 else ""])
    return out.getvalue().encode() + extra


@pytest.mark.parametrize("gzipped", [False, True], ids=["csv", "csv.gz"])
def test_a_large_csv_is_read_a_block_at_a_time_never_whole(gzipped: bool) -> None:
    data = _messages_csv(40_000)  # ~2 MB
    key = "u.csv.gz" if gzipped else "u.csv"
    body = gzip.compress(data) if gzipped else data
    parsed, asked_whole = streamed(key, body, 1 << 16)
    assert not asked_whole
    assert_same(parsed, parse(key, body))
    assert len(parsed.messages) == 32_000 and len(parsed.quarantined) == 8_000
    opens = Opens(body)
    parse_upload_stream(key, opens, size=len(body), block_size=1 << 16)
    [stream] = opens.streams
    assert stream.total == len(body)
    assert stream.largest <= 1 << 17 < len(body) // 4  # in pieces: never the file at once


@pytest.mark.parametrize(
    ("name", "data", "asks_again"),
    [
        ("empty", b"", False),
        ("blank lines", b"\n\n  \n", False),
        ("header only", b"conversation_id,timestamp,role,content\n", False),
        ("no timestamp column", b"conversation_id,role\nc1,user\n", False),
        ("utf-8 bom", "\ufeffconversation_id,timestamp\nc1,2026-02-11T14:03:00Z\n".encode(), False),
        ("utf-16 bom", f"conversation_id,timestamp\nc1,{TS}\n".encode("utf-16"), False),
        ("utf-32 bom", f"conversation_id,timestamp\nc1,{TS}\n".encode("utf-32"), False),
        ("ragged row after many blocks", _messages_csv(5_000, extra=b"c9,%b\n" % TS_BYTES), True),
        ("invalid utf-8 after many blocks",
         _messages_csv(5_000, extra=b"c9,%b,us\xffr,x,y\n" % TS_BYTES), True),
        ("field longer than a block", b"conversation_id,timestamp,content\nc1,"
         + TS.encode() + b',"' + b"x" * 300_000 + b'"\n', True),
        ("wider than 256 columns", ",".join(["conversation_id", "timestamp"]
         + [f"x{i}" for i in range(300)]).encode() + b"\n" + b",".join(
             [b"c1", TS.encode()] + [b"v"] * 300) + b"\n", True),
    ],
)
def test_what_arrow_cannot_take_is_read_again_row_by_row(
    name: str, data: bytes, asks_again: bool
) -> None:
    parsed, asked = streamed("u.csv", data, 1 << 16)
    assert_same(parsed, row_by_row("u.csv", data) if asks_again else parse("u.csv", data))
    assert asked == asks_again, name


def test_a_broken_gzip_stream_is_one_quarantined_record() -> None:
    body = gzip.compress(_messages_csv(20_000))
    truncated = body[: len(body) // 2]
    parsed, _ = streamed("u.csv.gz", truncated, 1 << 16)
    assert_same(parsed, parse("u.csv.gz", truncated))
    assert "not a valid gzip file" in parsed.quarantined[0].reason


def test_json_and_jsonl_uploads_are_read_from_the_stream_once() -> None:
    jsonl = f'{{"conversation_id": "c1", "timestamp": "{TS}"}}\n'.encode()
    for key, data in (("u.jsonl", jsonl), ("u.json", b"[" + jsonl.strip() + b"]")):
        parsed, asked = streamed(key, data, 1 << 16)
        assert not asked
        assert_same(parsed, parse(key, data))


# --------------------------------------------------------------------------- JSON

def test_json_list_of_message_records() -> None:
    doc = [
        {"conversation_id": 12, "timestamp": 1770818580123, "role": "user",
         "content": {"parts": ["a", 1]}, "lang": "en", "empty": "", "none": None},
        {"ConversationId": "c2", "createdAt": TS, "author": "bot", "body": "hi", "n": 0},
        {"conversation_id": " c3 ", "time": TS},
    ]
    parsed = parse("u.json", json.dumps(doc))
    assert rows_of(parsed) == [
        ("12", "2026-02-11T14:03:00.123Z", "user", '{"parts": ["a", 1]}'),
        ("c2", ISO, "bot", "hi"),
        ("c3", ISO, "unknown", ""),
    ]
    assert meta_dicts(parsed.messages["meta"]) == [{"lang": "en"}, {"n": 0}, {}]
    assert parsed.messages["record_no"].tolist() == [1, 2, 3]


def test_json_list_of_conversation_objects_shares_conversation_fields() -> None:
    doc = [
        {"id": "c1", "channel": "web", "title": "T", "messages": [
            {"role": "user", "content": "q", "timestamp": TS, "title": "own"},
            {"role": "assistant", "content": "a", "timestamp": "2026-02-11T14:04:00Z"},
        ]},
        {"conversation_id": 7, "messages": [{"role": "user", "text": "x", "date": TS}]},
    ]
    parsed = parse("u.json", json.dumps(doc))
    assert rows_of(parsed) == [
        ("c1", ISO, "user", "q"),
        ("c1", "2026-02-11T14:04:00.000Z", "assistant", "a"),
        ("7", ISO, "user", "x"),
    ]
    assert meta_dicts(parsed.messages["meta"]) == [
        {"channel": "web", "title": "own"}, {"channel": "web", "title": "T"}, {}
    ]
    assert parsed.messages["record_no"].tolist() == [1, 2, 3]


def test_json_conversations_object_and_bad_conversations() -> None:
    doc = {"conversations": [
        {"id": "c1", "messages": [
            {"role": "user", "content": "ok", "timestamp": TS},
            {"role": "user", "content": "no ts"},
            "not an object",
            {"role": "user", "content": "old", "timestamp": "1969-07-20T20:17:00Z"},
        ]},
        {"messages": [{"role": "user", "timestamp": TS}]},
        {"id": "c3", "messages": "nope"},
        {"id": "c4", "messages": []},
        {"id": "  ", "messages": [{"timestamp": TS}, {"timestamp": TS}]},
        ["not", "an", "object"],
        {"id": "c7", "messages": [{"timestamp": TS, "content": "last"}]},
    ]}
    parsed = parse("u.json", json.dumps(doc))
    assert rows_of(parsed) == [("c1", ISO, "user", "ok"), ("c7", ISO, "unknown", "last")]
    got = [(q.position, q.message, q.reason) for q in parsed.quarantined]
    assert got == [
        (1, 2, "missing timestamp"),
        (1, 3, "message is a string, not a JSON object"),
        (1, 4, "year 1969 outside 1970-2100 (timestamp '1969-07-20T20:17:00Z')"),
        (2, None, 'conversation object: missing conversation_id (no "id" field)'),
        (3, None, "conversation 'messages' is a string, not a list of messages"),
        (4, None, "conversation has no messages"),
        (5, None, "conversation object: missing conversation_id"),
        (6, None, "record is an array, not a JSON object"),
    ]
    assert parsed.records_in == 10  # 4 + 1 + 1 + 1 + 1 + 1 + 1
    assert parsed.quarantined[0].raw == '{"role": "user", "content": "no ts"}'
    line = json.loads(parsed.quarantined[0].to_json_line())
    assert line == {"upload": "u.json", "record": 1, "message": 2,
                    "reason": "missing timestamp", "raw": '{"role": "user", "content": "no ts"}'}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b'{"foo": []}', "unknown top-level shape"),
        (b'{"conversations": {"a": 1}}', "unknown top-level shape"),
        (b'"just a string"', "unknown top-level shape: a string"),
        (b"42", "unknown top-level shape"),
        (b"\x00\x01\x02garbage\xff", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[1" + b"0" * 5000 + b"]", "not valid JSON"),  # int longer than Python reads
    ],
)
def test_json_whole_file_failures(data: bytes, reason: str) -> None:
    parsed = parse("u.json", data)
    assert parsed.records_in == 1
    (only,) = parsed.quarantined
    assert only.position_kind == "file" and reason in only.reason


def message_bytes(cid: str, content: bytes) -> bytes:
    """A JSON message record with `content` spliced in as raw bytes (maybe not UTF-8)."""
    return (b'{"conversation_id": "' + cid.encode() + b'", "timestamp": "' + TS.encode()
            + b'", "content": "' + content + b'"}')


def test_json_invalid_utf8_and_lone_surrogates_quarantine_only_their_records() -> None:
    data = (b"[" + message_bytes("c1", b"ok") + b"," + message_bytes("c2", b"x\xff") + b","
            + message_bytes("c3", b"\\ud800") + b","
            + message_bytes("c4", b"\\ud83d\\ude00") + b"]")
    parsed = parse("u.json", data)
    assert parsed.messages["content"].tolist() == ["ok", "\U0001f600"]
    assert where(parsed) == [("record", 2, "not valid UTF-8"), ("record", 3, "not valid UTF-8")]
    assert "\ufffd" in parsed.quarantined[0].raw


def test_json_deeply_nested_value_is_kept_not_crashed() -> None:
    nested = "[" * 500 + "]" * 500
    data = f'[{{"conversation_id": "c1", "timestamp": "{TS}", "content": {nested}, "m": {nested}}}]'
    parsed = parse("u.json", data)
    assert len(parsed.messages) == 1


def test_json_odd_ids_and_values() -> None:
    doc = [
        {"conversation_id": True, "timestamp": TS},
        {"conversation_id": {"a": 1}, "timestamp": TS},
        {"conversation_id": 1.5, "timestamp": TS, "role": 3, "content": None},
        {"conversation_id": "c", "timestamp": True},
        {"conversation_id": "c", "timestamp": [TS]},
    ]
    parsed = parse("u.json", json.dumps(doc))
    assert rows_of(parsed) == [("1.5", ISO, "3", "")]
    assert [r for _, _, r in where(parsed)] == [
        "conversation_id is a boolean, not a string or number",
        "conversation_id is an object, not a string or number",
        "unparseable timestamp True: a boolean is not a timestamp",
        f"unparseable timestamp \"['{TS}']\": unsupported value type list",
    ]


# --------------------------------------------------------------------------- JSONL

def test_jsonl_lines_blank_lines_and_bad_lines() -> None:
    lines = [
        json.dumps({"conversation_id": "c1", "timestamp": TS, "role": "user", "content": "a"}),
        "",
        "   ",
        "{not json",
        json.dumps({"id": "c2", "topic": "t", "messages": [
            {"role": "user", "content": "b", "timestamp": TS},
            {"role": "user", "content": "c", "timestamp": "bad"},
        ]}),
        json.dumps([1, 2]),
        json.dumps({"conversation_id": "", "timestamp": TS}),
    ]
    data = ("\n".join(lines) + "\n").encode()
    for key in ("u.jsonl", "u.ndjson", "u.JSONL.gz"):
        parsed = parse(key, gzip.compress(data) if key.endswith("gz") else data)
        assert rows_of(parsed) == [("c1", ISO, "user", "a"), ("c2", ISO, "user", "b")]
        assert meta_dicts(parsed.messages["meta"]) == [{}, {"topic": "t"}]
        assert parsed.messages["record_no"].tolist() == [1, 3]
        assert [(q.position, q.message, q.reason.split(":")[0]) for q in parsed.quarantined] == [
            (4, None, "line is not valid JSON"),
            (5, 2, "unparseable timestamp 'bad'"),
            (6, None, "line is an array, not a JSON object"),
            (7, None, "missing conversation_id"),
        ]
        assert parsed.quarantined[0].raw == "{not json"
        assert parsed.quarantined[3].raw == lines[6]
        assert parsed.records_in == 6


def test_jsonl_invalid_utf8_line_crlf_bom_and_nul() -> None:
    data = (b"\xef\xbb\xbf" + message_bytes("c1", b"a\\u0000b") + b"\r\n"
            + message_bytes("c2", b"\xc3") + b"\r\n"
            + message_bytes("c3", b"x") + b"\x00\r\n"
            + message_bytes("c4", b"\\udfff"))
    parsed = parse("u.jsonl", data)
    assert parsed.messages["content"].tolist() == ["a\x00b"]
    assert [(q.position, q.reason.split(":")[0]) for q in parsed.quarantined] == [
        (2, "not valid UTF-8"), (3, "line is not valid JSON"), (4, "not valid UTF-8"),
    ]
    assert parsed.quarantined[0].raw.endswith('"content": "\ufffd"}')


@st.composite
def jsonl_upload(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """Lines of every kind; returns the bytes, records expected accepted and quarantined."""
    lines: list[bytes] = []
    accepted = quarantined = 0
    for i, kind in enumerate(draw(st.lists(st.sampled_from(
        ["message", "bad_message", "conversation", "blank", "junk", "bad_utf8", "empty_conv"]
    ), max_size=20))):
        if kind == "message":
            lines.append(json.dumps({"conversation_id": f"c{i}", "timestamp": TS}).encode())
            accepted += 1
        elif kind == "bad_message":
            lines.append(json.dumps({"conversation_id": f"c{i}", "timestamp": "no"}).encode())
            quarantined += 1
        elif kind == "conversation":
            good = draw(st.integers(min_value=0, max_value=3))
            bad = draw(st.integers(min_value=0 if good else 1, max_value=2))
            messages = [{"timestamp": TS}] * good + [{"timestamp": None}] * bad
            draw(st.randoms()).shuffle(messages)
            lines.append(json.dumps({"id": f"c{i}", "messages": messages}).encode())
            accepted, quarantined = accepted + good, quarantined + bad
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t"])))
        elif kind == "junk":
            lines.append(b"#" + draw(st.binary(max_size=20)).replace(b"\n", b""))
            quarantined += 1  # never JSON: rejected, whatever bytes follow
        elif kind == "bad_utf8":
            lines.append(b'{"conversation_id": "\xff", "timestamp": 0}')
            quarantined += 1
        else:
            lines.append(json.dumps({"id": f"c{i}", "messages": []}).encode())
            quarantined += 1
    return b"\n".join(lines), accepted, quarantined


@SETTINGS
@given(jsonl_upload(), st.sampled_from([1, 2, 3, 7]), st.booleans())
def test_jsonl_streamed_in_parts_is_the_whole_jsonl(
    case: tuple[bytes, int, int], part_records: int, gzipped: bool
) -> None:
    data, _, _ = case
    key = "u.jsonl.gz" if gzipped else "u.jsonl"
    body = gzip.compress(data) if gzipped else data
    whole = parse(key, body)  # one part: PART_RECORDS is far above any example's size
    with mock.patch.object(jsonl_format, "PART_RECORDS", part_records):
        parts = CollectedParts()
        read_upload(source_of(key, bytes_opener(body), size=len(body)), parts)
    if whole.records_in > 3 * part_records:  # a line holds at most 3 records here
        assert len(parts.parts) > 1  # really in parts
    streamed_parts = check(ParsedUpload.combined(key, parts.parts))
    assert_same(streamed_parts, whole)


@SETTINGS
@given(jsonl_upload())
def test_jsonl_every_record_is_accounted_for(case: tuple[bytes, int, int]) -> None:
    data, accepted, quarantined = case
    parsed = parse("u.jsonl", data)
    assert parsed.records_in == accepted + quarantined
    assert len(parsed.messages) == accepted
    assert len(parsed.quarantined) == quarantined
    assert all(q.position_kind == "line" for q in parsed.quarantined)


# --------------------------------------------------------------------------- gzip

def test_gzip_variants_and_corrupt_gzip() -> None:
    body = json.dumps([{"conversation_id": "c1", "timestamp": TS}]).encode()
    assert rows_of(parse("u.json.gz", gzip.compress(body))) == [("c1", ISO, "unknown", "")]
    csv_body = f"conversation_id,timestamp\nc1,{TS}\n".encode()
    assert len(parse("u.CSV.GZ", gzip.compress(csv_body)).messages) == 1
    for data in (b"not gzip at all", gzip.compress(body)[:-9], b""):
        parsed = parse("u.jsonl.gz", data)
        assert parsed.records_in == 1
        (only,) = parsed.quarantined
        assert only.position_kind == "file" and "not a valid gzip file" in only.reason


# --------------------------------------------------------------------------- the record type

def test_quarantined_record_json_line_is_unescaped_utf8() -> None:
    record = QuarantinedRecord("incoming/d/é.csv", "row", 3, "missing conversation_id",
                               'c1,"multi\nline",caf\u00e9 \U0001f600 \x00 \ud800')
    line = record.to_json_line()
    assert "\u00e9" in line and "\U0001f600" in line  # ensure_ascii=False
    assert json.loads(line) == {
        "upload": "incoming/d/é.csv", "row": 3, "reason": "missing conversation_id",
        "raw": 'c1,"multi\nline",caf\u00e9 \U0001f600 \x00 \ufffd',
    }
    assert list(json.loads(line)) == ["upload", "row", "reason", "raw"]


def test_parsed_upload_accounting_property() -> None:
    parsed = parse("u.csv", f"conversation_id,timestamp\nc1,{TS}\n,{TS}\n")
    assert parsed.accepted == 1 and parsed.records_in == 2


def test_json_message_id_inside_a_conversation_yields_to_the_conversation() -> None:
    doc = [{"id": "c1", "messages": [
        {"conversation_id": "c1", "timestamp": TS},
        {"conversation_id": "other", "timestamp": TS},
    ]}]
    parsed = parse("u.json", json.dumps(doc))
    assert parsed.messages["conversation_id"].tolist() == ["c1", "c1"]
    assert meta_dicts(parsed.messages["meta"]) == [{}, {"conversation_id": "other"}]


def test_json_text_that_only_looks_like_a_surrogate_escape_is_kept() -> None:
    parsed = parse("u.json", b"[" + message_bytes("c1", b"C:\\\\\\\\ud800 is a path") + b"]")
    assert parsed.messages["content"].tolist() == ["C:\\\\ud800 is a path"]


def test_json_naive_timestamps_use_tz_and_day_first() -> None:
    doc = [{"conversation_id": "c1", "timestamp": "11/02/2026 09:03"},
           {"conversation_id": "c2", "timestamp": "2026-02-11T09:03:00"}]
    parsed = parse("u.json", json.dumps(doc), tz=NY, day_first=True)
    assert parsed.messages["timestamp"].tolist() == [ISO, ISO]
