"""Timestamps: one parser for every entry point (seed fix 4).

Every timestamp the pipeline stores goes through `parse_instant`, directly or through the
vectorised `normalize_column`, so an upload, a re-ingest and a migration can never disagree
about when a message happened. The parser accepts a closed list of shapes (SPEC section 4)
and rejects everything else with a reason: it never fills a missing year or day from "today"
and never swaps day and month to make a value fit.

Rules worth knowing:

* A numeric value (a number, or a string of digits with an optional sign, fraction or
  exponent) is an epoch: milliseconds when its magnitude is at least 1e11, else seconds.
* A value without a zone is a wall-clock time in ``tz``. A wall-clock time that occurs twice
  (DST ends) is its first occurrence, one that does not exist (DST starts) is read with the
  offset in force before the change (PEP 495 ``fold=0``, as Python does).
* Instants are kept to the microsecond by `parse_instant`; the normalised form and the
  epoch of `normalize_column` are truncated to the millisecond, like JavaScript's
  ``toISOString``, so the stored string and the stored epoch are the same instant.
* Accepted instants lie in 1970-01-01T00:00:00Z .. 2100-12-31T23:59:59.999Z.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

UTC = ZoneInfo("UTC")

MIN_YEAR = 1970
MAX_YEAR = 2100
_NS_PER_MS = 1_000_000
_MAX_MS = int(dt.datetime(MAX_YEAR + 1, 1, 1, tzinfo=dt.UTC).timestamp()) * 1000  # exclusive
_MAX_NS = _MAX_MS * _NS_PER_MS
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIN_US = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_US = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MS_THRESHOLD = 100_000_000_000  # 1e11: epoch magnitudes at or above are milliseconds
_MAX_TEXT = 200  # longer strings are not timestamps; refuse before running any regex
_SHOW = 60  # how much of a bad value a reason quotes


class DateParseError(ValueError):
    """A value that is not a usable timestamp; the message is the reason, fit for a person."""


def to_iso(moment: dt.datetime) -> str:
    """An aware datetime in JavaScript's `toISOString` shape: `2026-02-11T14:03:00.000Z`."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    return to_iso(dt.datetime.now(dt.UTC))


# --------------------------------------------------------------------------- scalar parser

_MONTHS = {
    "jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3,
    "apr": 4, "april": 4, "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7,
    "aug": 8, "august": 8, "sep": 9, "sept": 9, "september": 9, "oct": 10, "october": 10,
    "nov": 11, "november": 11, "dec": 12, "december": 12,
}
_WEEKDAYS = {
    "mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_FLAGS = re.IGNORECASE | re.ASCII | re.VERBOSE
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?", _FLAGS)
_WEEKDAY = r"(?:(?P<wd>[a-z]{3,9})\.?,?\s)?"
# Time of day, then an optional zone (only after a time), then an optional "(zone name)"
# comment as JavaScript's Date.toString() writes it.
_TIME = r"""
(?:
  (?:\s?T\s?|\s?,\s?|\s(?:at\s)?)
  (?P<h>[0-9]{1,2})
  (?::(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?)?
  (?:\s?(?P<ampm>[ap])\.?m\.?)?
  (?:\s?(?P<zn>z|utc|ut|gmt)(?![a-z]))?
  (?:\s?(?P<off>[+-][0-9]{2}(?::?[0-9]{2})?))?
  (?:\s?(?P<cmt>\([^()]*\)))?
)?
"""
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, _FLAGS))
    for name, pattern in (
        # 2026-02-11T14:03:00.000Z, 2026-02-11 14, 2026/02/11 2:03 PM
        ("ymd", _WEEKDAY + r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<mo>[0-9]{1,2})(?P=sep)"
                r"(?P<d>[0-9]{1,2})" + _TIME),
        # 02/11/2026 2:03 PM (month-first unless day_first)
        ("num", _WEEKDAY + r"(?P<a>[0-9]{1,2})(?P<sep>[-/.])(?P<b>[0-9]{1,2})(?P=sep)"
                r"(?P<y>[0-9]{4})" + _TIME),
        # Feb 11, 2026 14:03; Wed Feb 11 2026 14:03:00 GMT+0000 (Coordinated Universal Time)
        ("mdy", _WEEKDAY + r"(?P<mon>[a-z]{3,9})\.?[\s-](?P<d>[0-9]{1,2})(?:st|nd|rd|th)?"
                r"(?:,\s?|[\s-])(?P<y>[0-9]{4})" + _TIME),
        # 11 Feb 2026; Wed, 11 Feb 2026 14:03:00 +0000 (RFC 2822); 11-Feb-2026
        ("dmy", _WEEKDAY + r"(?P<d>[0-9]{1,2})(?:st|nd|rd|th)?[\s-](?:of\s)?"
                r"(?P<mon>[a-z]{3,9})\.?(?:,\s?|[\s-])(?P<y>[0-9]{4})" + _TIME),
        # Wed Feb 11 14:03:00 2026, Wed Feb 11 14:03:00 UTC 2026 (C ctime, Unix date)
        ("ctime", _WEEKDAY + r"(?P<mon>[a-z]{3,9})\s(?P<d>[0-9]{1,2})\s(?P<h>[0-9]{1,2})"
                  r":(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2}))?\s(?:(?P<zn>utc|ut|gmt)\s)?"
                  r"(?P<y>[0-9]{4})"),
    )
)
_ZONE_NAME = re.compile(r"[0-9]\s?([a-z]{2,5})$", _FLAGS)
_BARE_TIME = re.compile(r"[0-9]{1,2}(?::[0-9]{2}){1,2}(?:\.[0-9]+)?\s?(?:[ap]\.?m\.?)?", _FLAGS)


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "…")


def _fail(value: str, why: str) -> DateParseError:
    return DateParseError(f"unparseable timestamp {_show(value)}: {why}")


def _year_error(year: int, value: object) -> DateParseError:
    shown = _show(value) if isinstance(value, str) else repr(value)
    return DateParseError(f"year {year} outside {MIN_YEAR}-{MAX_YEAR} (timestamp {shown})")


def _from_epoch_us(us: int, value: object) -> dt.datetime:
    """Microseconds since the epoch to an aware UTC datetime, inside the accepted years."""
    if not 0 <= us < _MAX_MS * 1000:
        if _MIN_US <= us <= _MAX_US:  # representable: name the year, like any other date
            year = (_EPOCH + dt.timedelta(microseconds=us)).year
            raise _year_error(year, value)
        raise DateParseError(
            f"epoch value {_show(str(value))} out of range: year outside {MIN_YEAR}-{MAX_YEAR}"
        )
    return _EPOCH + dt.timedelta(microseconds=us)


def _epoch_from_decimal(number: Decimal, value: object) -> dt.datetime:
    magnitude = number.copy_abs()  # context-free: "1e999999999" must neither trap nor blow up
    if magnitude and magnitude.adjusted() >= 20:
        raise DateParseError(
            f"epoch value {_show(str(value))} out of range: year outside {MIN_YEAR}-{MAX_YEAR}"
        )
    scale = 1000 if magnitude >= _MS_THRESHOLD else 1_000_000
    with localcontext() as exact:  # enough digits that the product is exact, then truncate
        exact.prec = 2 * _MAX_TEXT + 40
        us = int(number * scale)
    return _from_epoch_us(us, value)


def _epoch_from_float(number: float, value: object) -> dt.datetime:
    if not math.isfinite(number):
        raise DateParseError(f"unparseable timestamp {number!r}: not a finite number")
    if abs(number) >= 1e20:
        raise DateParseError(
            f"epoch value {number!r} out of range: year outside {MIN_YEAR}-{MAX_YEAR}"
        )
    # round() on the scaled double (half to even), exactly what the vectorised path does.
    scale = 1e3 if abs(number) >= _MS_THRESHOLD else 1e6
    return _from_epoch_us(round(number * scale), value)


def _epoch_from_int(number: int, value: object) -> dt.datetime:
    scale = 1000 if abs(number) >= _MS_THRESHOLD else 1_000_000
    if abs(number) >= 10**20:
        raise DateParseError(
            f"epoch value {_show(str(value))} out of range: year outside {MIN_YEAR}-{MAX_YEAR}"
        )
    return _from_epoch_us(number * scale, value)


def _offset(match: re.Match[str], value: str) -> dt.tzinfo | None:
    zone, off = match.group("zn"), match.groupdict().get("off")
    if off is None:
        return dt.UTC if zone else None
    digits = off[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise _fail(value, f"UTC offset {off} out of range")
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if off[0] == "-" else delta)


def _wall_clock(shape: str, m: re.Match[str], value: str, day_first: bool) -> dt.datetime:
    """The naive wall-clock datetime a matched shape describes, with every field checked."""
    groups = m.groupdict()
    year = int(groups["y"])
    if shape == "ymd":
        month, day = int(groups["mo"]), int(groups["d"])
    elif shape == "num":
        first, second = int(groups["a"]), int(groups["b"])
        month, day = (second, first) if day_first else (first, second)
        if not 1 <= month <= 12:
            order = "day-first" if day_first else "month-first"
            raise _fail(value, f"month {month} out of range (dates are read {order})")
    else:
        name = groups["mon"].lower()
        if name not in _MONTHS:
            raise _fail(value, f"unknown month name {groups['mon']!r}")
        month, day = _MONTHS[name], int(groups["d"])
    if not 1 <= month <= 12:
        raise _fail(value, f"month {month} out of range")
    if year < 1:
        raise _year_error(year, value)
    days_in_month = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days_in_month:
        raise _fail(value, f"day {day} out of range for {year:04d}-{month:02d}")

    hour = int(groups["h"] or 0)
    minute = int(groups["mi"] or 0)
    second = int(groups["s"] or 0)
    fraction = groups.get("f") or ""
    ampm = (groups.get("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            raise _fail(value, f"hour {hour} out of range for a 12-hour clock")
        hour = hour % 12 + (12 if ampm == "p" else 0)
    if hour > 23:
        raise _fail(value, f"hour {hour} out of range")
    if minute > 59:
        raise _fail(value, f"minute {minute} out of range")
    if second > 59:
        raise _fail(value, f"second {second} out of range (leap seconds are not supported)")
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    wall = dt.datetime(year, month, day, hour, minute, second, micro)

    weekday = groups.get("wd")
    if weekday:
        expected = _WEEKDAYS.get(weekday.lower())
        if expected is None:
            raise _fail(value, f"unknown weekday or month name {weekday!r}")
        if expected != wall.weekday():
            raise _fail(
                value, f"weekday {weekday!r} does not match {wall.date()} "
                f"(a {_WEEKDAY_NAMES[wall.weekday()]})"
            )
    return wall


def _parse_text(text: str, tz: dt.tzinfo, day_first: bool) -> dt.datetime:
    value = text.strip()
    if not value:
        raise DateParseError("missing timestamp")
    if len(value) > _MAX_TEXT:
        raise _fail(value, f"longer than {_MAX_TEXT} characters")
    if _NUMERIC.fullmatch(value):
        return _epoch_from_decimal(Decimal(value), value)
    compact = " ".join(value.split())
    for shape, pattern in _SHAPES:
        m = pattern.fullmatch(compact)
        if m is None:
            continue
        wall = _wall_clock(shape, m, value, day_first)
        zone = _offset(m, value)
        if m.groupdict().get("cmt") and zone is None:
            raise _fail(value, "a zone name in parentheses needs a UTC offset before it")
        aware = wall.replace(tzinfo=zone if zone is not None else tz)
        try:
            moment = aware.astimezone(dt.UTC)
        except OverflowError:
            raise _year_error(wall.year, value) from None
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise _year_error(moment.year, value)
        return moment
    if not any(ch.isdigit() for ch in compact):
        raise _fail(value, "no date in it")
    if _BARE_TIME.fullmatch(compact):
        raise _fail(value, "a time of day without a date")
    zone_name = _ZONE_NAME.search(compact)
    if zone_name and zone_name.group(1).lower() not in _MONTHS:
        raise _fail(value, f"unsupported time zone name {zone_name.group(1)!r} (use a UTC offset)")
    raise _fail(value, "not a recognised date/time format")


def parse_instant(
    value: object, *, tz: dt.tzinfo = UTC, day_first: bool = False
) -> dt.datetime:
    """Read one timestamp of any accepted shape as an aware UTC datetime, or say why not."""
    if value is None or value is pd.NaT or value is pd.NA:
        raise DateParseError("missing timestamp")
    if isinstance(value, bool | np.bool_):
        raise DateParseError(f"unparseable timestamp {value!r}: a boolean is not a timestamp")
    if isinstance(value, str):
        return _parse_text(value, tz, day_first)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=tz)
        try:
            moment = aware.astimezone(dt.UTC)
        except OverflowError:
            raise _year_error(value.year, str(value)) from None
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise _year_error(moment.year, str(value))
        return moment
    if isinstance(value, dt.date):
        return parse_instant(dt.datetime(value.year, value.month, value.day), tz=tz)
    if isinstance(value, numbers.Integral):
        return _epoch_from_int(int(value), value)
    if isinstance(value, float | np.floating):
        return _epoch_from_float(float(value), value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DateParseError(f"unparseable timestamp {value!r}: not a finite number")
        return _epoch_from_decimal(value, value)
    raise DateParseError(
        f"unparseable timestamp {_show(repr(value))}: unsupported value type "
        f"{type(value).__name__}"
    )


def normalize_date(value: object, *, tz: dt.tzinfo = UTC, day_first: bool = False) -> str:
    """The one normalised form of a timestamp: UTC, `2026-02-11T14:03:00.000Z`."""
    return to_iso(parse_instant(value, tz=tz, day_first=day_first))


def get_earliest_date(values: Iterable[object]) -> str | None:
    """The earliest of some timestamps (None ignored), normalised; None when there are none."""
    moments = [parse_instant(v) for v in values if v is not None]
    return to_iso(min(moments)) if moments else None


def get_latest_date(values: Iterable[object]) -> str | None:
    """The latest of some timestamps (None ignored), normalised; None when there are none."""
    moments = [parse_instant(v) for v in values if v is not None]
    return to_iso(max(moments)) if moments else None


def compare_dates(a: object, b: object) -> int:
    """-1, 0 or 1 as `a` is before, at or after `b` (by instant, whatever their shapes)."""
    left, right = parse_instant(a), parse_instant(b)
    return (left > right) - (left < right)


def local_date(value: object, tz: dt.tzinfo) -> str:
    """The calendar date (YYYY-MM-DD) in `tz` of an instant: a conversation's partition."""
    return parse_instant(value, tz=tz).astimezone(tz).date().isoformat()


# --------------------------------------------------------------------------- vectorised

@dataclass(frozen=True)
class ColumnResult:
    """`normalize_column`'s answer, aligned with its input's index.

    `iso`: the normalised string or None; `epoch_ns`: nullable Int64, the same instant
    (millisecond precision); `error`: None or the reason the value was rejected.
    """

    iso: pd.Series
    epoch_ns: pd.Series
    error: pd.Series

    @property
    def ok(self) -> pd.Series:
        return self.error.isna()


@dataclass
class _Parsed:
    """Internal, positional: epoch milliseconds where `ok`, reasons where not.

    For string input, `source` is the text and `canonical` marks the values already in the
    normalised shape, whose text is reused instead of formatted again.
    """

    ms: np.ndarray  # int64, meaningful where ok
    ok: np.ndarray  # bool
    errors: dict[int, str]
    source: pa.Array | None = None
    canonical: np.ndarray | None = None

    def iso(self, rows: np.ndarray) -> pa.Array:
        """Normalised strings of the (ok) values selected by a boolean mask."""
        if self.source is None or self.canonical is None or not self.canonical[rows].any():
            return iso_strings(self.ms[rows])
        canonical = self.canonical[rows]
        text = self.source.filter(pa.array(rows))
        if canonical.all():
            return text
        formatted = iso_strings(self.ms[rows][~canonical]).cast(text.type)
        return pc.replace_with_mask(text, pa.array(~canonical), formatted)


# Years 1900-2199 only: the fast path must stay inside what nanoseconds can hold.
_DATE = r"(?:19|20|21)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_CLOCK = r"(?:[01][0-9]|2[0-3])(?::[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)?"
_RE_CANONICAL = "^" + _DATE + r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$"
_RE_ZONED = "^" + _DATE + "[T ]" + _CLOCK + r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)$"
_RE_NAIVE = "^" + _DATE + "(?:[T ]" + _CLOCK + ")?$"
_RE_INT = r"^-?[0-9]{1,15}$"
# The two human forms spreadsheets export most: `02/11/2026 2:03 PM`, `Feb 11, 2026 14:03`.
_RE_SLASHED = (r"^(?P<a>[0-9]{1,2})/(?P<b>[0-9]{1,2})/(?P<y>[0-9]{4}) "
               r"(?P<h>[0-9]{1,2}):(?P<mi>[0-9]{2}) (?P<ampm>[AaPp])[Mm]$")
_RE_NAMED = (r"^(?P<mon>[A-Za-z]{3}) (?P<d>[0-9]{1,2}), (?P<y>[0-9]{4}) "
             r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2})$")
_MONTH_ABBREVIATIONS = pa.array([name for name in _MONTHS if len(name) == 3 and name != "sept"])
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_ASCII_SPACE = " \t\n\r\x0b\x0c"


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _cast_ns(strings: pa.Array, zoned: bool) -> np.ndarray:
    """Epoch ns (int64, NaT as INT64 min) of strings already known to be ISO-shaped."""
    target = pa.timestamp("ns", tz="UTC") if zoned else pa.timestamp("ns")
    try:
        return pc.cast(strings, target).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # one impossible value (2026-02-30) spoils Arrow's cast: let pandas sort it out
    parsed = pd.to_datetime(
        pd.Series(strings.to_pylist(), dtype=object),
        format="ISO8601", utc=zoned, errors="coerce",
    )
    return np.asarray(parsed.dt.as_unit("ns").array.asi8)


def _localize(naive_ns: np.ndarray, tz: dt.tzinfo) -> np.ndarray:
    """Wall-clock ns in `tz` to UTC ns; ambiguous / nonexistent ones come back NaT."""
    if tz is UTC or tz is dt.UTC:
        return naive_ns
    index = pd.DatetimeIndex(naive_ns.view("M8[ns]"))
    local = index.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return np.asarray(local.asi8)


def _parse_strings(arr: pa.Array, tz: dt.tzinfo, day_first: bool) -> _Parsed:
    """Strings to instants: each fast shape on what is left, the general parser last."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    ms = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    canonical = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    if n == 0:
        return _Parsed(ms, ok, errors, arr, canonical)

    def take(rows: np.ndarray, ns: np.ndarray) -> np.ndarray:
        """Accept rows whose ns are in range; return the rows still to do."""
        good = (ns >= 0) & (ns < _MAX_NS)  # NaT is INT64 min: never good
        ok[rows[good]] = True
        ms[rows[good]] = ns[good] // _NS_PER_MS
        return rows[~good]

    # 1. Already normalised: the common case, and its text is reused as is.
    hit = _mask(pc.match_substring_regex(arr, _RE_CANONICAL))
    rows = np.flatnonzero(hit)
    if len(rows):
        ns = _cast_ns(arr.filter(pa.array(hit)), zoned=True)
        canonical[rows] = (ns >= 0) & (ns < _MAX_NS)
        take(rows, ns)
    todo = np.flatnonzero(~ok)
    if len(todo) == 0:
        return _Parsed(ms, ok, errors, arr, canonical)

    # 2. Other ISO shapes (zoned, then naive in tz), then integer epochs, on what is left.
    text = pc.utf8_trim(arr.take(pa.array(todo)), characters=_ASCII_SPACE)
    for pattern, zoned in ((_RE_ZONED, True), (_RE_NAIVE, False)):
        hit = _mask(pc.match_substring_regex(text, pattern))
        if hit.any():
            ns = _cast_ns(text.filter(pa.array(hit)), zoned)
            left = take(todo[hit], ns if zoned else _localize(ns, tz))
            keep = ~hit
            keep[np.searchsorted(todo, left)] = True
            todo, text = todo[keep], text.filter(pa.array(keep))
    hit = _mask(pc.match_substring_regex(text, _RE_INT))
    if hit.any():
        ints = pc.cast(text.filter(pa.array(hit)), pa.int64()).to_numpy(zero_copy_only=False)
        scaled = np.where(np.abs(ints) >= _MS_THRESHOLD, ints, ints * 1000)
        in_range = (scaled >= 0) & (scaled < _MAX_MS)
        left = take(todo[hit][in_range], scaled[in_range] * _NS_PER_MS)
        keep = ~hit
        keep[np.searchsorted(todo, np.concatenate([left, todo[hit][~in_range]]))] = True
        todo, text = todo[keep], text.filter(pa.array(keep))

    # 3. Common human forms, vectorised; what they do not take stays for the general parser.
    if len(todo):
        hit, naive_ns = _human_forms(text, day_first)
        if hit.any():
            left = take(todo[hit], _localize(naive_ns[hit], tz))
            keep = ~hit
            keep[np.searchsorted(todo, left)] = True
            todo, text = todo[keep], text.filter(pa.array(keep))

    # 4. The general parser, once per distinct leftover value.
    if len(todo):
        encoded = text.dictionary_encode()
        codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        valid = encoded.is_valid().to_numpy(zero_copy_only=False)
        outcome = [_scalar_ms(v, tz, day_first) for v in encoded.dictionary.to_pylist()]
        for pos, code, present in zip(todo.tolist(), codes.tolist(), valid.tolist(), strict=True):
            result = outcome[code] if present else "missing timestamp"
            if isinstance(result, str):
                errors[pos] = result
            else:
                ok[pos] = True
                ms[pos] = result
    return _Parsed(ms, ok, errors, arr, canonical)


def _human_forms(text: pa.Array, day_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(taken, wall-clock ns) for values in one of two strict human forms with every field in
    range, read exactly as the general parser reads them (its "num" and "mdy" shapes).
    Anything else, or out of range, is not taken: the general parser then says why."""
    taken = np.zeros(len(text), dtype=bool)
    naive_ns = np.zeros(len(text), dtype=np.int64)
    for pattern in (_RE_SLASHED, _RE_NAMED):
        matched = pc.extract_regex(text, pattern)
        rows = np.flatnonzero(_mask(matched.is_valid()))
        if len(rows) == 0:
            continue
        fields = matched.filter(matched.is_valid())

        def number(name: str, fields: pa.StructArray = fields) -> np.ndarray:
            digits = pc.struct_field(fields, name)
            return np.asarray(pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False))

        year, hour, minute = number("y"), number("h"), number("mi")
        if pattern is _RE_SLASHED:
            first, second = number("a"), number("b")
            month, day = (second, first) if day_first else (first, second)
            twelve = (hour >= 1) & (hour <= 12)
            pm = _mask(pc.equal(pc.utf8_lower(pc.struct_field(fields, "ampm")), "p"))
            hour = hour % 12 + np.where(pm, 12, 0)
        else:
            names = pc.utf8_lower(pc.struct_field(fields, "mon"))
            month = pc.index_in(names, value_set=_MONTH_ABBREVIATIONS).fill_null(-1)
            month = np.asarray(month.to_numpy(zero_copy_only=False), dtype=np.int64) + 1
            day = number("d")
            twelve = np.ones(len(rows), dtype=bool)
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        in_range = (month >= 1) & (month <= 12) & (year >= MIN_YEAR - 1) & (year <= MAX_YEAR + 1)
        last_day = _DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
        good = in_range & twelve & (day >= 1) & (day <= last_day) & (hour <= 23) & (minute <= 59)
        rows, year, month, day = rows[good], year[good], month[good], day[good]
        months = (year - 1970) * 12 + (month - 1)
        days = months.astype("M8[M]").astype("M8[D]") + (day - 1).astype("m8[D]")
        naive_ns[rows] = (
            days.astype("M8[ns]").astype(np.int64)
            + hour[good] * 3_600_000_000_000
            + minute[good] * 60_000_000_000
        )
        taken[rows] = True
    return taken, naive_ns


def _scalar_ms(value: object, tz: dt.tzinfo, day_first: bool) -> int | str:
    """Epoch ms of one value, or the reason it is rejected."""
    try:
        moment = parse_instant(value, tz=tz, day_first=day_first)
    except DateParseError as exc:
        return str(exc)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def _parse_objects(values: Sequence[object], tz: dt.tzinfo, day_first: bool) -> _Parsed:
    """Mixed Python values (from JSON): strings, ints and floats vectorised, the rest one by one."""
    n = len(values)
    ms = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    str_rows: list[int] = []
    str_vals: list[str] = []
    int_rows: list[int] = []
    int_vals: list[int] = []
    float_rows: list[int] = []
    float_vals: list[float] = []
    other: dict[tuple[type, Any], int | str] = {}
    for i, value in enumerate(values):
        kind = type(value)
        if kind is str:
            str_rows.append(i)
            str_vals.append(value)  # type: ignore[arg-type]
        elif kind is int and -(2**62) < value < 2**62:  # type: ignore[operator]
            int_rows.append(i)
            int_vals.append(value)  # type: ignore[arg-type]
        elif kind is float and math.isfinite(value):  # type: ignore[arg-type]
            float_rows.append(i)
            float_vals.append(value)  # type: ignore[arg-type]
        else:
            try:
                key = (kind, value)
                result = other[key] if key in other else other.setdefault(
                    key, _scalar_ms(value, tz, day_first)
                )
            except TypeError:  # unhashable (a list, a dict): rejected anyway
                result = _scalar_ms(value, tz, day_first)
            if isinstance(result, str):
                errors[i] = result
            else:
                ok[i], ms[i] = True, result

    def merge(rows_list: list[int], sub: _Parsed) -> None:
        rows = np.asarray(rows_list, dtype=np.int64)
        ok[rows] = sub.ok
        ms[rows] = sub.ms
        for pos, reason in sub.errors.items():
            errors[int(rows[pos])] = reason

    if str_rows:
        strings = _parse_strings(pa.array(str_vals, type=pa.string()), tz, day_first)
        if len(str_rows) == n:
            return strings  # all text (the usual JSON): keep what it knows about its shapes
        merge(str_rows, strings)
    for rows_list, numbers_list, parse in (
        (int_rows, int_vals, _ints_ms),
        (float_rows, float_vals, _floats_ms),
    ):
        if rows_list:
            sub_ms, sub_ok = parse(numbers_list)
            sub_errors = {
                j: str(_scalar_ms(numbers_list[j], tz, day_first))
                for j in np.flatnonzero(~sub_ok).tolist()
            }
            merge(rows_list, _Parsed(sub_ms, sub_ok, sub_errors))
    return _Parsed(ms, ok, errors)


def _ints_ms(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ints = np.asarray(values, dtype=np.int64)
    big = np.abs(ints) >= _MS_THRESHOLD
    good = np.where(big, (ints >= 0) & (ints < _MAX_MS), (ints >= 0) & (ints < _MAX_MS // 1000))
    return np.where(good, np.where(big, ints, ints * 1000), 0), good


def _floats_ms(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    floats = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 becomes inf: rejected below
        us = np.round(floats * np.where(np.abs(floats) >= _MS_THRESHOLD, 1e3, 1e6))
    good = (us >= 0) & (us < _MAX_MS * 1000)
    return np.where(good, us, 0).astype(np.int64) // 1000, good


def _parse_any(values: pd.Series | pa.Array | Sequence[object], tz: dt.tzinfo,
               day_first: bool) -> _Parsed:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            return _parse_strings(values, tz, day_first)
        return _parse_objects(values.to_pylist(), tz, day_first)
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype):
            arrow = pa.array(values.array)
            if isinstance(arrow, pa.ChunkedArray):
                arrow = arrow.combine_chunks()
            if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type):
                return _parse_strings(arrow, tz, day_first)
        return _parse_objects(values.tolist(), tz, day_first)
    return _parse_objects(list(values), tz, day_first)


# Civil-from-days (H. Hinnant), vectorised: formats millions of instants without strftime.
def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = days.astype(np.int32) + np.int32(719468)
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _render(template: bytes, fields: Sequence[tuple[int, int, np.ndarray]], n: int) -> pa.Array:
    """Fixed-width ASCII strings: `template` with each (offset, width, numbers) written in."""
    columns = np.empty((len(template), n), dtype=np.uint8)  # one contiguous row per character
    for offset, char in enumerate(template):
        columns[offset] = char
    for offset, width, values in fields:
        rest = values.astype(np.int32)
        for k in range(width - 1, -1, -1):
            quotient = rest // 10
            columns[offset + k] = rest - quotient * 10 + 48
            rest = quotient
    data = np.ascontiguousarray(columns.T).tobytes()
    offsets = np.arange(n + 1, dtype=np.int64) * len(template)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def iso_strings(ms: np.ndarray) -> pa.Array:
    """Epoch milliseconds (1970..2100) as normalised ISO strings, vectorised; = `to_iso`."""
    ms = np.asarray(ms, dtype=np.int64)
    days = ms // 86_400_000
    rem = (ms - days * 86_400_000).astype(np.int32)
    year, month, day = _civil(days)
    seconds = rem // 1000
    minutes = seconds // 60
    fields = (
        (0, 4, year), (5, 2, month), (8, 2, day), (11, 2, minutes // 60),
        (14, 2, minutes % 60), (17, 2, seconds % 60), (20, 3, rem % 1000),
    )
    return _render(b"0000-00-00T00:00:00.000Z", fields, len(ms))


def normalize_column(
    values: pd.Series, *, tz: dt.tzinfo = UTC, day_first: bool = False
) -> ColumnResult:
    """`normalize_date` over a whole column, fast: same answers, aligned with the index."""
    parsed = _parse_any(values, tz, day_first)
    n = len(values)
    iso = np.full(n, None, dtype=object)
    iso[parsed.ok] = parsed.iso(parsed.ok).to_numpy(zero_copy_only=False)
    error = np.full(n, None, dtype=object)
    for pos, reason in parsed.errors.items():
        error[pos] = reason
    epoch = pd.arrays.IntegerArray(parsed.ms * _NS_PER_MS, ~parsed.ok)
    index = values.index
    return ColumnResult(
        iso=pd.Series(iso, index=index, dtype=object),
        epoch_ns=pd.Series(epoch, index=index, dtype="Int64"),
        error=pd.Series(error, index=index, dtype=object),
    )


def local_dates(epoch_ns: pd.Series, tz: dt.tzinfo) -> pd.Series:
    """Calendar dates (YYYY-MM-DD, `str` dtype, NaN where missing) in `tz` of epoch ns."""
    ints = pd.array(epoch_ns, dtype="Int64")
    missing = np.asarray(ints.isna())
    raw = np.asarray(ints.fillna(0).to_numpy(dtype=np.int64))
    utc = pd.DatetimeIndex(raw.view("M8[ns]")).tz_localize("UTC")
    wall = np.asarray(utc.tz_convert(tz).tz_localize(None).asi8)
    year, month, day = _civil(wall // (86_400 * 10**9))
    text = _render(b"0000-00-00", ((0, 4, year), (5, 2, month), (8, 2, day)), len(raw))
    out = pd.Series(text.to_pandas().array, index=epoch_ns.index, dtype="str")
    if missing.any():
        out[missing] = np.nan
    return out
