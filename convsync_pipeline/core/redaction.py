"""Remove personal data from conversation text before it leaves the machine.

E-mail addresses, phone numbers and payment-card numbers are replaced by `[EMAIL]`, `[PHONE]`
and `[CARD]`, so an external LLM never receives them while the analysis still knows that the
customer shared one. Pure functions, no I/O: the analyser calls `redact` on every message.

Deliberate trade-offs (precision vs. recall; a leak is worse than a lost order number):
- A card is 13-19 digits, optionally grouped by single spaces or dashes, that passes the
  Luhn check. A digit run failing Luhn is not a card (it may still be a phone number).
- A phone number is 7-15 digits that either starts with `+`, or is written with phone-style
  separators (spaces, dashes, dots, parentheses), or is a bare run of 10-15 digits. Dates
  (2026-02-11 14:03, 11/02/2026), times and dotted IP addresses are left alone, and so are
  bare runs of fewer than 10 digits (order and ticket numbers). Numbers written with
  separators, such as "12-345-67", are redacted even when they are not phone numbers.
"""

from __future__ import annotations

import re

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])",
)
# 13-19 digits, each group separated by at most one space or dash.
_CARD_RE = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)")
# Phone candidates, with look-alikes matched first so they are kept verbatim: an alternation
# tries the `keep` branch at each position before the phone branch, and scanning resumes after
# whatever matched, so "2026-02-11 14:03" is a date, never a phone.
_PHONE_RE = re.compile(
    r"(?P<keep>"
    r"\d{4}([-/.])\d{1,2}\2\d{1,2}(?:[T ]\d{1,2}(?::\d{2}){1,2})?(?!\.?\d)"  # 2026-02-11 14:03
    r"|\d{1,2}([-/.])\d{1,2}\3\d{4}(?!\.?\d)"  # 11/02/2026, 11.02.2026, 11-02-2026
    r"|\d{1,2}/\d{1,2}/\d{2}(?![\d/])"  # 11/02/26
    r"|\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)"  # 192.168.0.1
    r"|\d{1,2}:\d{2}(?::\d{2})?(?!\d)"  # 14:03, 14:03:22
    r")"
    r"|(?<![\w+./])(?P<phone>(?:\+|\(\s?\+?)?\d(?:[\d \t().-]{0,24}\d)?)(?![\w])"
)


def luhn_valid(digits: str) -> bool:
    """The payment-card checksum (every second digit from the right doubled)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return CARD if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.group("keep") is not None:
        return text
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return text
    if text.startswith(("+", "(")) or not text.isdigit():
        return PHONE  # written like a phone number: +44..., (555) ..., 555-123-4567
    return PHONE if len(digits) >= 10 else text  # bare short runs are order/ticket numbers


def redact(text: str) -> str:
    """Replace e-mail addresses, payment-card numbers and phone numbers with placeholders."""
    if not text:
        return text
    text = _EMAIL_RE.sub(EMAIL, text)
    text = _CARD_RE.sub(_card, text)
    return _PHONE_RE.sub(_phone, text)


__all__ = ["CARD", "EMAIL", "PHONE", "luhn_valid", "redact"]
