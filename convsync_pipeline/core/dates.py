"""Timestamps: one parser for every entry point (seed fix 4). PLACEHOLDER: being completed."""

from __future__ import annotations

import datetime as dt


def to_iso(moment: dt.datetime) -> str:
    """An aware datetime in JavaScript's `toISOString` shape: `2026-02-11T14:03:00.000Z`."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    return to_iso(dt.datetime.now(dt.UTC))
