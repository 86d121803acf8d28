"""The one timestamp parser (seed fix 4): every accepted shape round-trips, junk never passes."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convsync_pipeline.core import dates
from convsync_pipeline.core.dates import (
    UTC,
    ColumnResult,
    DateParseError,
    compare_dates,
    get_earliest_date,
    get_latest_date,
    iso_strings,
    local_date,
    local_dates,
    normalize_column,
    normalize_date,
    parse_instant,
    to_iso,
    utc_now_iso,
)

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ZONES = [
    UTC,
    ZoneInfo("America/New_York"),
    ZoneInfo("Europe/London"),
    ZoneInfo("Asia/Kolkata"),  # +05:30
    ZoneInfo("Asia/Kathmandu"),  # +05:45
    ZoneInfo("Australia/Lord_Howe"),  # 30-minute DST
    ZoneInfo("Pacific/Chatham"),  # +12:45 / +13:45
    ZoneInfo("America/St_Johns"),  # -03:30
    ZoneInfo("Pacific/Kiritimati"),  # +14
]
NY = ZoneInfo("America/New_York")

# Instants well inside the accepted years, so that no shape's local date leaves them.
instants = st.datetimes(
    min_value=dt.datetime(1970, 1, 3), max_value=dt.datetime(2100, 12, 29),
    timezones=st.just(dt.UTC),
)
zones = st.sampled_from(ZONES)
offsets = st.integers(min_value=-14 * 4, max_value=14 * 4).map(lambda q: q * 15)


def trunc(moment: dt.datetime, unit: str) -> dt.datetime:
    """The instant a shape of this resolution can carry."""
    if unit == "us":
        return moment
    if unit == "ms":
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    fields = {"s": 0, "min": 1, "h": 2, "day": 3}[unit]
    moment = moment.replace(microsecond=0)
    if fields >= 1:
        moment = moment.replace(second=0)
    if fields >= 2:
        moment = moment.replace(minute=0)
    if fields >= 3:
        moment = moment.replace(hour=0)
    return moment


def fmt_offset(minutes: int, style: str) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    if style == "colon":
        return f"{sign}{hours:02d}:{mins:02d}"
    if style == "hours" and mins == 0:
        return f"{sign}{hours:02d}"
    return f"{sign}{hours:02d}{mins:02d}"


# --------------------------------------------------------------------------- examples

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-11T14:03:00Z", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11T14:03:00.000Z", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11T14:03:00+05:30", "2026-02-11T08:33:00.000Z"),
        ("2026-02-11T14:03:00-0800", "2026-02-11T22:03:00.000Z"),
        ("2026-02-11T14:03:00+01", "2026-02-11T13:03:00.000Z"),
        ("2026-02-11T14:03:00", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11 14:03:00", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11 14:03", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11 14", "2026-02-11T14:00:00.000Z"),
        ("2026-02-11", "2026-02-11T00:00:00.000Z"),
        ("2026-02-11T14:03:00.1Z", "2026-02-11T14:03:00.100Z"),
        ("2026-02-11T14:03:00.123456789Z", "2026-02-11T14:03:00.123Z"),
        ("2026-02-11T14:03:00,5Z", "2026-02-11T14:03:00.500Z"),
        ("2026-02-11T14:03:00.9999Z", "2026-02-11T14:03:00.999Z"),  # truncated, not rounded
        ("  2026-02-11T14:03:00Z\n", "2026-02-11T14:03:00.000Z"),
        ("2026-02-11 14:03:00 UTC", "2026-02-11T14:03:00.000Z"),
        (1770818580, "2026-02-11T14:03:00.000Z"),
        (1770818580123, "2026-02-11T14:03:00.123Z"),
        ("1770818580", "2026-02-11T14:03:00.000Z"),
        ("1770818580123", "2026-02-11T14:03:00.123Z"),
        (1770818580.5, "2026-02-11T14:03:00.500Z"),
        ("1770818580.123", "2026-02-11T14:03:00.123Z"),
        (1770818580.123, "2026-02-11T14:03:00.123Z"),  # not .122 from the binary float
        (100_000_000_000, "1973-03-03T09:46:40.000Z"),  # 1e11: milliseconds
        (99_999_999, "1973-03-03T09:46:39.000Z"),  # below 1e11: seconds
        (0, "1970-01-01T00:00:00.000Z"),
        ("Wed, 11 Feb 2026 14:03:00 +0000", "2026-02-11T14:03:00.000Z"),
        ("Wed, 11 Feb 2026 14:03:00 -0000", "2026-02-11T14:03:00.000Z"),
        ("11 Feb 2026 09:03:00 -0500", "2026-02-11T14:03:00.000Z"),
        ("Wed, 11 Feb 2026 14:03:00 GMT", "2026-02-11T14:03:00.000Z"),
        ("02/11/2026 2:03 PM", "2026-02-11T14:03:00.000Z"),
        ("2/11/2026 14:03", "2026-02-11T14:03:00.000Z"),
        ("02/11/2026 12:03 AM", "2026-02-11T00:03:00.000Z"),
        ("02/11/2026 12:03 pm", "2026-02-11T12:03:00.000Z"),
        ("Feb 11, 2026 14:03", "2026-02-11T14:03:00.000Z"),
        ("February 11, 2026 at 2:03 p.m.", "2026-02-11T14:03:00.000Z"),
        ("Feb 11th 2026", "2026-02-11T00:00:00.000Z"),
        ("11-Feb-2026", "2026-02-11T00:00:00.000Z"),
        ("2026/02/11 14:03:05", "2026-02-11T14:03:05.000Z"),
        ("Wed Feb 11 2026 14:03:00 GMT+0100 (Central European Standard Time)",
         "2026-02-11T13:03:00.000Z"),
        ("Wed Feb 11 14:03:00 2026", "2026-02-11T14:03:00.000Z"),
        ("Wed Feb 11 14:03:00 UTC 2026", "2026-02-11T14:03:00.000Z"),
        (dt.datetime(2026, 2, 11, 14, 3, tzinfo=dt.UTC), "2026-02-11T14:03:00.000Z"),
        (dt.datetime(2026, 2, 11, 14, 3), "2026-02-11T14:03:00.000Z"),
        (pd.Timestamp("2026-02-11T14:03:00.5Z"), "2026-02-11T14:03:00.500Z"),
        (dt.date(2026, 2, 11), "2026-02-11T00:00:00.000Z"),
        (np.int64(1770818580), "2026-02-11T14:03:00.000Z"),
    ],
)
def test_accepted_shapes(value: object, expected: str) -> None:
    assert normalize_date(value) == expected


@pytest.mark.parametrize(
    ("value", "tz", "expected"),
    [
        ("2026-02-11 09:03", NY, "2026-02-11T14:03:00.000Z"),
        ("02/11/2026 9:03 AM", NY, "2026-02-11T14:03:00.000Z"),
        ("2026-07-11 09:03", NY, "2026-07-11T13:03:00.000Z"),  # EDT
        ("2026-02-11T09:03:00-05:00", ZoneInfo("Asia/Tokyo"), "2026-02-11T14:03:00.000Z"),
        (1770818580, NY, "2026-02-11T14:03:00.000Z"),  # epochs have no zone to read
        # DST ends: 01:30 happens twice; the first (EDT) is taken.
        ("2026-11-01 01:30", NY, "2026-11-01T05:30:00.000Z"),
        # DST starts: 02:30 never happens; read with the offset before the change (EST).
        ("2026-03-08 02:30", NY, "2026-03-08T07:30:00.000Z"),
        (dt.datetime(2026, 2, 11, 9, 3), NY, "2026-02-11T14:03:00.000Z"),
    ],
)
def test_naive_values_are_read_in_tz(value: object, tz: ZoneInfo, expected: str) -> None:
    assert normalize_date(value, tz=tz) == expected


def test_epoch_unit_follows_magnitude_only() -> None:
    """Milliseconds before March 1973 are below 1e11: read as seconds, hence out of range."""
    with pytest.raises(DateParseError, match="year 4970 outside 1970-2100"):
        normalize_date(94_694_400_000)
    assert normalize_date(94_694_400) == "1973-01-01T00:00:00.000Z"


def test_day_first_changes_only_numeric_dates() -> None:
    assert normalize_date("11/02/2026 14:03", day_first=True) == "2026-02-11T14:03:00.000Z"
    assert normalize_date("11/02/2026 14:03") == "2026-11-02T14:03:00.000Z"
    assert normalize_date("2026-02-11", day_first=True) == "2026-02-11T00:00:00.000Z"
    assert normalize_date("Feb 11, 2026", day_first=True) == "2026-02-11T00:00:00.000Z"
    with pytest.raises(DateParseError, match="month 13 out of range"):
        normalize_date("13/02/2026")  # never swapped to make it fit
    with pytest.raises(DateParseError, match="month 13 out of range"):
        normalize_date("02/13/2026", day_first=True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing timestamp"),
        ("", "missing timestamp"),
        ("   \t", "missing timestamp"),
        (pd.NA, "missing timestamp"),
        (pd.NaT, "missing timestamp"),
        ("hello", "unparseable timestamp 'hello': no date"),
        ("14:03", "time of day without a date"),
        ("2:03 PM", "time of day without a date"),
        ("now", "no date"),
        ("today", "no date"),
        ("Feb 11", "not a recognised"),
        ("02/11", "not a recognised"),
        ("2026-02", "not a recognised"),
        ("2026-13-01", "month 13 out of range"),
        ("2026-02-30", "day 30 out of range for 2026-02"),
        ("02/30/2026", "day 30 out of range"),
        ("Feb 30, 2026", "day 30 out of range"),
        ("Foo 11, 2026", "unknown month name 'Foo'"),
        ("2026-02-11T24:00:00", "hour 24 out of range"),
        ("2026-02-11T14:60", "minute 60 out of range"),
        ("2026-02-11T23:59:60Z", "second 60 out of range"),
        ("02/11/2026 13:03 PM", "hour 13 out of range for a 12-hour clock"),
        ("2026-02-11T14:03:00+25:00", "offset"),
        ("2026-02-11 14:03 EST", "unsupported time zone name 'EST'"),
        ("2026-02-11 14:03 (EST)", "needs a UTC offset"),
        ("Tue, 11 Feb 2026 14:03:00 +0000", "does not match 2026-02-11 (a Wednesday)"),
        ("1850-01-01", "year 1850 outside 1970-2100"),
        ("1969-12-31T23:59:59.999Z", "year 1969 outside 1970-2100"),
        ("2101-01-01T00:00:00Z", "year 2101 outside 1970-2100"),
        ("0000-01-01", "year 0 outside 1970-2100"),
        ("9999-12-31T23:59:59Z", "year 9999 outside 1970-2100"),
        (-1, "year 1969 outside 1970-2100"),
        (5_000_000_000, "year 2128 outside 1970-2100"),  # seconds, > 2100
        (99_999_999_999, "year 5138 outside 1970-2100"),  # just below the ms threshold
        (10**30, "out of range"),
        ("1e999999999", "out of range"),
        ("-1e5", "year 1969"),
        (True, "boolean"),
        (False, "boolean"),
        (np.bool_(True), "boolean"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ([2026, 2, 11], "unsupported value type list"),
        ({"t": 1}, "unsupported value type dict"),
        ("٢٠٢٦-٠٢-١١", "not a recognised"),  # non-ASCII digits are not read
        ("20260211T140300Z", "not a recognised"),
        ("2026-02-11T14:03:00.1234567891Z", "not a recognised"),
        ("x" * 1000, "longer than 200"),
    ],
)
def test_rejected_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(DateParseError) as caught:
        parse_instant(value)
    assert reason in str(caught.value)
    # The column path gives the same verdict and the same words.
    result = normalize_column(pd.Series([value], dtype=object))
    assert result.iso[0] is None
    assert result.error[0] == str(caught.value)


def test_date_parse_error_is_a_value_error() -> None:
    assert issubclass(DateParseError, ValueError)


def test_to_iso_and_now_keep_their_shape() -> None:
    moment = dt.datetime(2026, 2, 11, 14, 3, 0, 999_999, tzinfo=ZoneInfo("Europe/Paris"))
    assert to_iso(moment) == "2026-02-11T13:03:00.999Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now_iso())


def test_helpers() -> None:
    values = ["2026-02-11T14:03:00.000Z", None, "2026-02-10T23:00:00.000Z", "2026-02-12T00:00:00Z"]
    assert get_earliest_date(values) == "2026-02-10T23:00:00.000Z"
    assert get_latest_date(values) == "2026-02-12T00:00:00.000Z"
    assert get_earliest_date([None]) is None
    assert get_latest_date([]) is None
    assert compare_dates("2026-02-11T14:03:00Z", 1770818580) == 0
    assert compare_dates("2026-02-11T14:03:00Z", "2026-02-11T14:03:00.001Z") == -1
    assert compare_dates("2026-02-11T15:03:00+01:00", "2026-02-11T14:02:59Z") == 1
    assert local_date("2026-02-11T03:00:00.000Z", NY) == "2026-02-10"
    assert local_date("2026-02-11T05:00:00.000Z", NY) == "2026-02-11"
    assert local_date(dt.datetime(2026, 2, 11, 3, tzinfo=dt.UTC), UTC) == "2026-02-11"
    with pytest.raises(DateParseError):
        compare_dates("nope", "2026-02-11")


# --------------------------------------------------------------------------- round trips

@dataclass(frozen=True)
class Rendered:
    """An instant written in one accepted shape, and how to read it back."""

    moment: dt.datetime
    value: object
    tz: dt.tzinfo
    day_first: bool
    unit: str  # what the shape carries: us, ms, s, min, h, day, or "frac" + its digits
    wall: bool  # written as a wall-clock reading in tz (no zone)


KINDS = [
    "iso_z", "iso_offset", "naive", "space", "partial_hour", "partial_minute", "date_only",
    "fraction", "epoch_s", "epoch_ms", "epoch_s_str", "epoch_ms_str", "epoch_float",
    "epoch_float_str", "rfc2822", "us_numeric", "day_first_numeric", "month_name",
    "day_month_name", "js_string", "ctime", "iso_slashes",
]


@st.composite
def rendered(draw: st.DrawFn, kinds: list[str] = KINDS) -> Rendered:
    moment = draw(instants)
    kind = draw(st.sampled_from(kinds))
    tz = draw(zones)
    wall = moment.astimezone(tz).replace(tzinfo=None)
    seconds = int(moment.timestamp())
    millis = seconds * 1000 + moment.microsecond // 1000

    def out(value: object, unit: str, *, is_wall: bool, day_first: bool = False) -> Rendered:
        return Rendered(moment, value, tz, day_first, unit, is_wall)

    def shifted() -> tuple[dt.datetime, int]:
        minutes = draw(offsets)
        return moment.astimezone(dt.timezone(dt.timedelta(minutes=minutes))), minutes

    if kind == "iso_z":
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return out(text, "ms", is_wall=False)
    if kind == "iso_offset":
        local, minutes = shifted()
        style = draw(st.sampled_from(["colon", "compact", "hours"]))
        sep = draw(st.sampled_from(["T", " "]))
        text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f") + fmt_offset(minutes, style)
        return out(text, "us", is_wall=False)
    if kind in ("naive", "space"):
        sep = "T" if kind == "naive" else " "
        return out(wall.strftime(f"%Y-%m-%d{sep}%H:%M:%S"), "s", is_wall=True)
    if kind == "partial_hour":
        return out(wall.strftime("%Y-%m-%d %H"), "h", is_wall=True)
    if kind == "partial_minute":
        fmt = draw(st.sampled_from(["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]))
        return out(wall.strftime(fmt), "min", is_wall=True)
    if kind == "date_only":
        return out(wall.strftime("%Y-%m-%d"), "day", is_wall=True)
    if kind == "fraction":
        digits = draw(st.integers(min_value=1, max_value=9))
        extra = draw(st.text("0123456789", min_size=3, max_size=3))
        fraction = (f"{moment.microsecond:06d}" + extra)[:digits]
        text = moment.strftime("%Y-%m-%dT%H:%M:%S") + "." + fraction + "Z"
        return out(text, "frac" + fraction, is_wall=False)
    if kind == "epoch_s":
        return out(seconds, "s", is_wall=False)
    if kind in ("epoch_ms", "epoch_ms_str"):
        # Below 1e11 a number is seconds (the SPEC's rule): ms epochs start in March 1973.
        assume(millis >= 10**11)
    if kind == "epoch_ms":
        return out(millis, "ms", is_wall=False)
    if kind == "epoch_s_str":
        return out(str(seconds), "s", is_wall=False)
    if kind == "epoch_ms_str":
        return out(str(millis), "ms", is_wall=False)
    if kind == "epoch_float":
        return out(millis / 1000, "ms", is_wall=False)
    if kind == "epoch_float_str":
        return out(f"{seconds}.{millis % 1000:03d}", "ms", is_wall=False)
    if kind == "rfc2822":
        return out(email.utils.format_datetime(shifted()[0]), "s", is_wall=False)
    if kind == "us_numeric":
        hour12, ampm = wall.hour % 12 or 12, "AM" if wall.hour < 12 else "PM"
        text = f"{wall.month:02d}/{wall.day:02d}/{wall.year} {hour12}:{wall.minute:02d} {ampm}"
        return out(text, "min", is_wall=True)
    if kind == "day_first_numeric":
        return out(wall.strftime("%d/%m/%Y %H:%M"), "min", is_wall=True, day_first=True)
    if kind == "month_name":
        fmt, unit = draw(st.sampled_from(
            [("%b %d, %Y %H:%M", "min"), ("%B %d, %Y", "day"), ("%b %d %Y %H:%M:%S", "s")]
        ))
        return out(wall.strftime(fmt), unit, is_wall=True, day_first=draw(st.booleans()))
    if kind == "day_month_name":
        return out(wall.strftime("%a, %d %b %Y %H:%M"), "min", is_wall=True)
    if kind == "js_string":
        local, minutes = shifted()
        text = (local.strftime("%a %b %d %Y %H:%M:%S GMT") + fmt_offset(minutes, "compact")
                + " (Some Zone Name)")
        return out(text, "s", is_wall=False)
    if kind == "ctime":
        return out(wall.strftime("%a %b %d %H:%M:%S %Y"), "s", is_wall=True)
    return out(wall.strftime("%Y/%m/%d %H:%M:%S"), "s", is_wall=True)  # iso_slashes


def _check_round_trip(case: Rendered, parsed: dt.datetime) -> None:
    moment = case.moment
    assert parsed.tzinfo is not None and parsed.utcoffset() == dt.timedelta(0)
    if case.unit.startswith("frac"):  # the fraction as written, to the microsecond
        assert parsed == moment.replace(microsecond=int(case.unit[4:10].ljust(6, "0")))
        return
    if not case.wall:
        assert parsed == trunc(moment, case.unit), case.value
        return
    # A wall-clock reading is the reading in tz, the first one when it happens twice (and
    # with the offset before the change when truncation lands in a DST gap): PEP 495 fold=0.
    truncated = trunc(moment.astimezone(case.tz).replace(tzinfo=None), case.unit)
    assert parsed == truncated.replace(tzinfo=case.tz).astimezone(dt.UTC), case.value
    once = truncated.replace(tzinfo=case.tz, fold=0).utcoffset()
    twice = truncated.replace(tzinfo=case.tz, fold=1).utcoffset()
    if once == twice:  # an unambiguous reading: the very instant, independently of zoneinfo
        assert parsed.astimezone(case.tz).replace(tzinfo=None) == truncated
        if case.unit in ("s", "min"):
            assert parsed == trunc(moment, case.unit), case.value


@SETTINGS
@given(rendered())
def test_every_shape_round_trips(case: Rendered) -> None:
    parsed = parse_instant(case.value, tz=case.tz, day_first=case.day_first)
    _check_round_trip(case, parsed)
    assert normalize_date(case.value, tz=case.tz, day_first=case.day_first) == to_iso(parsed)


@SETTINGS
@given(instants, zones)
def test_normalised_form_is_a_fixed_point(moment: dt.datetime, tz: dt.tzinfo) -> None:
    once = normalize_date(moment)
    assert normalize_date(once, tz=tz) == once
    assert once == to_iso(moment)


# --------------------------------------------------------------------------- junk

@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=["Nd"]), max_size=40))
def test_text_without_digits_is_always_rejected(text: str) -> None:
    with pytest.raises(DateParseError) as caught:
        parse_instant(text)
    assert str(caught.value)


junk_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789 :-/.,TZ+apmAPM", max_size=25),
    st.text(alphabet="0123456789 :-/.,TZ+", max_size=25).map(lambda s: s + " " + "Feb"),
    st.from_regex(r"[0-9]{1,2}:[0-9]{2}( ?[AP]M)?", fullmatch=True),
)


@SETTINGS
@given(junk_text, zones, st.booleans())
def test_random_text_is_rejected_or_read_from_what_it_says(
    text: str, tz: dt.tzinfo, day_first: bool
) -> None:
    """Never guessed: an accepted value's year is written in it (nothing filled from today)."""
    try:
        parsed = parse_instant(text, tz=tz, day_first=day_first)
    except DateParseError as exc:
        assert str(exc)
        return
    stripped = text.strip()
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", stripped):
        return  # an epoch number: its own rule
    years = {int(y) for y in re.findall(r"(?<!\d)\d{4}(?!\d)", stripped)}
    assert any(abs(parsed.year - y) <= 1 for y in years), (text, parsed)


# --------------------------------------------------------------------------- column

def _expected(value: object, tz: dt.tzinfo, day_first: bool) -> tuple[str | None, str | None]:
    try:
        return normalize_date(value, tz=tz, day_first=day_first), None
    except DateParseError as exc:
        return None, str(exc)


column_values = st.one_of(
    rendered().map(lambda case: case.value),
    junk_text,
    st.none(),
    st.integers(min_value=-(10**14), max_value=10**14),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", " ", "2026-11-01 01:30", "2026-03-08 02:30", "1770818580.5",
                     "2026-02-30T00:00:00Z", "1850-01-01T00:00:00Z", "  2026-02-11T14:03Z"]),
)


def _assert_column_agrees(
    values: list[object], result: ColumnResult, index: pd.Index, tz: dt.tzinfo, day_first: bool
) -> None:
    assert list(result.iso.index) == list(index)
    assert list(result.epoch_ns.index) == list(index)
    assert list(result.error.index) == list(index)
    assert str(result.epoch_ns.dtype) == "Int64"
    for position, value in enumerate(values):
        iso, error = _expected(value, tz, day_first)
        assert result.iso.iloc[position] == iso, value
        assert result.error.iloc[position] == error, value
        epoch = result.epoch_ns.iloc[position]
        if iso is None:
            assert epoch is pd.NA
        else:
            expected_ns = int(pd.Timestamp(iso).value)
            assert epoch == expected_ns, value


@SETTINGS
@given(st.lists(column_values, max_size=30), zones, st.booleans())
def test_normalize_column_agrees_with_normalize_date(
    values: list[object], tz: dt.tzinfo, day_first: bool
) -> None:
    index = pd.Index([f"r{i}" for i in range(len(values))])
    series = pd.Series(values, index=index, dtype=object)
    result = normalize_column(series, tz=tz, day_first=day_first)
    _assert_column_agrees(values, result, index, tz, day_first)


@SETTINGS
@given(st.lists(st.one_of(rendered().map(lambda c: str(c.value)), junk_text), max_size=30),
       zones)
def test_normalize_column_agrees_on_string_columns(values: list[str], tz: dt.tzinfo) -> None:
    """`str` dtype goes through Arrow's fast paths; every answer must still be the scalar one."""
    index = pd.RangeIndex(10, 10 + len(values))
    result = normalize_column(pd.Series(values, index=index, dtype="str"), tz=tz)
    _assert_column_agrees(values, result, index, tz, False)


def test_normalize_column_many_rows_few_distinct() -> None:
    """The general parser runs per distinct value; duplicates still get their own rows right."""
    base = ["02/11/2026 2:03 PM", "junk", "2026-02-11T14:03:00.000Z", "1770818580",
            "2026-02-11 09:03", None, 1770818580123, "Feb 11, 2026 14:03"]
    values = base * 500
    rng = np.random.default_rng(7)
    rng.shuffle(values)
    result = normalize_column(pd.Series(values, dtype=object), tz=NY)
    expected = {repr(v): _expected(v, NY, False) for v in base}
    for position, value in enumerate(values):
        iso, error = expected[repr(value)]
        assert result.iso.iloc[position] == iso
        assert result.error.iloc[position] == error


@pytest.mark.parametrize("dtype", [object, "str"])
@pytest.mark.parametrize(
    "tz", [NY, ZoneInfo("Europe/London"), ZoneInfo("Australia/Lord_Howe"), UTC]
)
def test_normalize_column_dst_edges_agree_with_the_scalar_rule(dtype: object, tz: ZoneInfo) -> None:
    """Repeated and skipped wall-clock times: the vectorised path must not pick differently."""
    values = [
        "2026-11-01 01:30", "2026-11-01T01:59:59", "2026-03-08 02:30", "2026-03-08T02:00",
        "2026-10-25 01:30", "2026-03-29 01:30", "2026-04-05 01:45", "2026-10-04 02:15",
        "2026-04-05 01:30", "2026-10-04 02:00", "2026-07-01 12:00",
    ]
    result = normalize_column(pd.Series(values * 3, dtype=dtype), tz=tz)
    _assert_column_agrees(values * 3, result, pd.RangeIndex(len(values) * 3), tz, False)
    assert result.error.isna().all()


def test_normalize_column_empty_and_str_missing() -> None:
    empty = normalize_column(pd.Series([], dtype=object))
    assert len(empty.iso) == len(empty.epoch_ns) == len(empty.error) == 0
    result = normalize_column(pd.Series(["2026-02-11T14:03:00Z", None], dtype="str"))
    assert result.iso.tolist() == ["2026-02-11T14:03:00.000Z", None]
    assert result.error.tolist() == [None, "missing timestamp"]
    assert result.ok.tolist() == [True, False]


@SETTINGS
@given(st.lists(instants, min_size=1, max_size=40))
def test_iso_strings_matches_to_iso(moments: list[dt.datetime]) -> None:
    ms = np.array([(m - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
                   for m in moments], dtype=np.int64)
    assert iso_strings(ms).to_pylist() == [to_iso(m) for m in moments]


def test_iso_strings_edges() -> None:
    last = dt.datetime(2100, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC)
    ms = np.array([0, int(last.timestamp() * 1000), 951_782_400_000], dtype=np.int64)
    assert iso_strings(ms).to_pylist() == [
        "1970-01-01T00:00:00.000Z", "2100-12-31T23:59:59.999Z", "2000-02-29T00:00:00.000Z"
    ]
    assert isinstance(iso_strings(np.zeros(0, np.int64)), pa.Array)


@SETTINGS
@given(st.lists(st.one_of(st.none(), instants), max_size=30), zones)
def test_local_dates_agrees_with_local_date(
    moments: list[dt.datetime | None], tz: dt.tzinfo
) -> None:
    ns = pd.array(
        [None if m is None else int(pd.Timestamp(m).value) for m in moments], dtype="Int64"
    )
    index = pd.RangeIndex(5, 5 + len(moments))
    out = local_dates(pd.Series(ns, index=index), tz)
    assert list(out.index) == list(index)
    for moment, got in zip(moments, out.tolist(), strict=True):
        if moment is None:
            assert isinstance(got, float) and math.isnan(got)
        else:
            assert got == local_date(moment, tz)


def test_fast_path_handles_a_large_canonical_column_in_reasonable_time() -> None:
    rng = np.random.default_rng(1)
    ms = rng.integers(0, 4_102_444_800_000, 200_000)
    text = iso_strings(ms)
    result = normalize_column(pd.Series(text.to_pandas(), dtype="str"))
    assert result.error.isna().all()
    assert (result.epoch_ns.to_numpy(dtype=np.int64) == ms * 1_000_000).all()
    assert result.iso.tolist() == text.to_pylist()


HUMAN_FORM = st.one_of(
    st.builds(
        "{:0{}d}/{:d}/{:04d} {:d}:{:02d} {}".format,
        st.integers(0, 32), st.sampled_from([1, 2]), st.integers(0, 32),
        st.integers(1960, 2110), st.integers(0, 25), st.integers(0, 61),
        st.sampled_from(["AM", "PM", "am", "pM"]),
    ),
    st.builds(
        "{} {:d}, {:04d} {:02d}:{:02d}".format,
        st.sampled_from(["Jan", "feb", "MAR", "May", "Sep", "Dec", "Foo", "Sun"]),
        st.integers(0, 32), st.integers(1960, 2110), st.integers(0, 25), st.integers(0, 61),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(HUMAN_FORM, min_size=1, max_size=20),
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Europe/London"]),
    day_first=st.booleans(),
)
def test_human_forms_read_vectorised_as_the_general_parser_reads_them(values, zone, day_first):
    tz = ZoneInfo(zone)
    parsed = dates._parse_strings(pa.array(values), tz, day_first)
    for row, value in enumerate(values):
        expected = dates._scalar_ms(value, tz, day_first)
        if isinstance(expected, str):
            assert not parsed.ok[row] and parsed.errors[row] == expected, value
        else:
            assert parsed.ok[row] and parsed.ms[row] == expected, value


def test_human_forms_do_not_go_one_by_one_through_the_general_parser(monkeypatch):
    calls = []
    monkeypatch.setattr(dates, "_scalar_ms", lambda *args: calls.append(args) or "x")
    values = pa.array(["02/11/2026 2:03 PM", "Feb 11, 2026 14:03", "11 Feb 2026 14:03"])
    parsed = dates._parse_strings(values, ZoneInfo("UTC"), False)
    assert parsed.ok.tolist() == [True, True, False]
    assert [args[0] for args in calls] == ["11 Feb 2026 14:03"]  # only the other form
