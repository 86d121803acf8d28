"""Remove personal data from conversation text before it leaves the machine.

E-mail addresses, IBANs, payment-card numbers and phone numbers are replaced by `[EMAIL]`,
`[IBAN]`, `[CARD]` and `[PHONE]`, and whatever matches one of the user's own patterns
(`CONVSYNC_REDACT_PATTERNS`) by `[REDACTED]`, so an external LLM never receives them while the
analysis still knows that the customer shared one. The same `Redactor` guards every other way
text leaves the store (metadata, logs, the report, CLI tables): one rule, one implementation.
Pure functions, no I/O.

Deliberate trade-offs (precision vs. recall; a leak is worse than a lost order number):
- An IBAN is two letters, two check digits and 11-30 letters or digits, optionally grouped by
  single spaces, that passes the ISO 13616 mod-97 check; anything failing it is left to the
  card and phone rules.
- A card is 13-19 digits, optionally grouped by single spaces or dashes, that passes the
  Luhn check. A digit run failing Luhn is not a card (it may still be a phone number).
- A phone number is 7-15 digits that either starts with `+`, or is written with phone-style
  separators (spaces, dashes, dots, parentheses), or is a bare run of 10-15 digits. Dates
  (2026-02-11 14:03, 11/02/2026), times and dotted IP addresses are left alone, and so are
  bare runs of fewer than 10 digits (order and ticket numbers), and so are UUIDs (run ids
  shown next to redacted text must stay whole). Numbers written with
  separators, such as "12-345-67", are redacted even when they are not phone numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
IBAN = "[IBAN]"
CUSTOM = "[REDACTED]"

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])",
)
# Country code, check digits, then 11-30 alphanumerics, each at most one space apart; the
# callback tries the longest candidate first and shortens it until mod-97 holds.
_IBAN_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_IBAN_PREFIX_RE = re.compile(r"[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
# 13-19 digits, each group separated by at most one space or dash.
_CARD_RE = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)")
# Phone candidates, with look-alikes matched first so they are kept verbatim: an alternation
# tries the `keep` branch at each position before the phone branch, and scanning resumes after
# whatever matched, so "2026-02-11 14:03" is a date, never a phone.
_PHONE_RE = re.compile(
    r"(?P<keep>"
    r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![\w-])"  # a UUID
    r"|"
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


def iban_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters as 10..35, mod 97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    if not compact.isalnum() or not compact.isascii():
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rotated)) % 97 == 1


def _iban_in(text: str) -> str:
    """Redact the longest valid IBAN starting at the beginning of `text`, keep the rest."""
    end = len(text)
    while end > 0:
        candidate = text[:end].rstrip()
        match = _IBAN_PREFIX_RE.fullmatch(candidate)
        if match is None:
            break
        if iban_valid(candidate):
            return IBAN + text[len(candidate) :]
        end = len(candidate) - 1
    return text


def _iban(match: re.Match[str]) -> str:
    return _iban_in(match.group(0))


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


def redact(text: str, patterns: tuple[re.Pattern[str], ...] = ()) -> str:
    """Replace e-mail addresses, IBANs, card and phone numbers, then whatever matches one of
    `patterns`, with placeholders."""
    if not text:
        return text
    for pattern in patterns:  # first: a user's pattern may span digits the others would split
        text = pattern.sub(CUSTOM, text)
    text = _EMAIL_RE.sub(EMAIL, text)
    text = _IBAN_RE.sub(_iban, text)
    text = _CARD_RE.sub(_card, text)
    return _PHONE_RE.sub(_phone, text)


class PatternError(ValueError):
    """A user's redaction pattern is not a usable regular expression."""


def compile_patterns(sources: list[str] | tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """Compile the user's extra patterns; a bad one raises PatternError naming it."""
    compiled = []
    for source in sources:
        try:
            pattern = re.compile(source)
        except re.error as error:
            raise PatternError(f"{source!r} is not a valid regular expression: {error}") from None
        if pattern.fullmatch(""):
            raise PatternError(f"{source!r} matches the empty string")
        compiled.append(pattern)
    return tuple(compiled)


@dataclass(frozen=True)
class Redactor:
    """The one redaction every piece of text leaving the store goes through.

    `enabled=False` (`CONVSYNC_REDACT=false`) passes text through unchanged, for the model
    path and every display alike: one switch, so what the model saw is what people see.
    """

    enabled: bool = True
    patterns: tuple[re.Pattern[str], ...] = ()

    def __call__(self, text: str) -> str:
        if not self.enabled or not isinstance(text, str):
            return text
        return redact(text, self.patterns)


__all__ = [
    "CARD",
    "CUSTOM",
    "EMAIL",
    "IBAN",
    "PHONE",
    "PatternError",
    "Redactor",
    "compile_patterns",
    "iban_valid",
    "luhn_valid",
    "redact",
]
