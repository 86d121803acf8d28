"""Personal data never reaches an external LLM: e-mails, phones and card numbers are replaced."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convsync_pipeline.core.redaction import (
    CARD,
    CUSTOM,
    EMAIL,
    IBAN,
    PHONE,
    PatternError,
    Redactor,
    compile_patterns,
    iban_valid,
    luhn_valid,
    redact,
)


@pytest.mark.parametrize(
    "text",
    [
        "john.doe@example.com",
        "John.Doe+billing@mail.example.co.uk",
        "JANE_99@foo-bar.io",
        "müller@beispiel.de",
    ],
)
def test_emails_are_redacted(text: str) -> None:
    assert redact(f"write to {text}, thanks") == f"write to {EMAIL}, thanks"


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0958",
        "+1-555-123-4567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "01.23.45.67.89",
        "0049 30 1234567",
        "+4915112345678",
        "5551234567",
        "555-1234",
    ],
)
def test_phone_numbers_are_redacted(text: str) -> None:
    assert redact(f"call me on {text} tonight") == f"call me on {PHONE} tonight"


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "378282246310005",  # Amex, 15 digits
        "6011000990139424",
    ],
)
def test_luhn_valid_card_numbers_are_redacted(text: str) -> None:
    assert redact(f"my card is {text}.") == f"my card is {CARD}."


@pytest.mark.parametrize(
    "text",
    [
        "order 123456 shipped on 2026-02-11 14:03",
        "at 2026-02-11T14:03:22Z the app crashed",
        "since 11/02/2026, also 11.02.2026 and 11/02/26",
        "server 192.168.100.200 is down",
        "ticket 12345678",
        "it costs $1,234.56 or 1234.56 EUR",
        "version 1.2.3 at 12:30 then 5551234",
        "see https://example.com/orders/1234567890",
        "a 23-digit reference 12345678901234567890123",
        "",
        "no numbers here",
    ],
)
def test_look_alikes_are_kept(text: str) -> None:
    assert redact(text) == text


def test_a_digit_run_failing_luhn_is_not_a_card() -> None:
    # 16 digits, bad checksum, too long for a phone number: left alone.
    assert redact("ref 4111111111111112") == "ref 4111111111111112"


def test_mixed_text_and_idempotence() -> None:
    text = (
        "Hi, I'm jane@example.com, phone +1 (555) 123-4567, card 4111 1111 1111 1111; "
        "order 123456 from 2026-02-11."
    )
    once = redact(text)
    assert once == (f"Hi, I'm {EMAIL}, phone {PHONE}, card {CARD}; order 123456 from 2026-02-11.")
    assert redact(once) == once


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111 1111")


def _with_luhn_digit(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


@given(
    body=st.text(alphabet="0123456789", min_size=15, max_size=15).filter(lambda s: s[0] != "0"),
    grouping=st.sampled_from(["", " ", "-"]),
    before=st.text(alphabet="abc ,.:", max_size=10),
    after=st.text(alphabet="abc ,.:", max_size=10),
)
def test_any_luhn_valid_16_digit_card_is_redacted(
    body: str, grouping: str, before: str, after: str
) -> None:
    number = _with_luhn_digit(body)
    written = grouping.join(number[i : i + 4] for i in range(0, 16, 4))
    result = redact(f"{before} {written} {after}")
    assert number not in result.replace(" ", "").replace("-", "")
    assert CARD in result


@given(
    local=st.from_regex(r"[a-z][a-z0-9._+]{0,12}[a-z0-9]", fullmatch=True),
    domain=st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
    tld=st.sampled_from(["com", "de", "co.uk", "io"]),
)
def test_any_plain_email_is_redacted(local: str, domain: str, tld: str) -> None:
    address = f"{local}@{domain}.{tld}"
    result = redact(f"mail {address} please")
    assert "@" not in result
    assert result == f"mail {EMAIL} please"


# ------------------------------------------------------- IBANs and the user's own patterns


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "gb82west12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
    ],
)
def test_valid_ibans_are_redacted(text: str) -> None:
    assert redact(f"pay to {text}, thanks") == f"pay to {IBAN}, thanks"


def test_an_iban_followed_by_words_keeps_the_words() -> None:
    assert redact("IBAN DE89 3704 0044 0532 0130 00 AND THEN") == f"IBAN {IBAN} AND THEN"


@pytest.mark.parametrize(
    "text", ["DE88 3704 0044 0532 0130 00", "XX00 1234 5678 9012 34", "AB12CDEFGHIJKLMNOP"]
)
def test_strings_failing_mod_97_are_not_ibans(text: str) -> None:
    assert IBAN not in redact(text)
    assert not iban_valid(text)


def test_user_patterns_are_masked_first() -> None:
    patterns = compile_patterns([r"ACME-\d{6}", r"(?i)order #\d+"])
    assert redact("ref ACME-004217, Order #55", patterns) == f"ref {CUSTOM}, {CUSTOM}"


def test_redactor_can_be_switched_off_and_leaves_non_text_alone() -> None:
    assert Redactor(enabled=False)("a@example.com") == "a@example.com"
    assert Redactor()("a@example.com") == EMAIL
    assert Redactor()(None) is None  # type: ignore[arg-type]


def test_bad_patterns_are_refused_naming_them() -> None:
    with pytest.raises(PatternError, match=r"'\(abc' is not a valid regular expression"):
        compile_patterns(["(abc"])
    with pytest.raises(PatternError, match="matches the empty string"):
        compile_patterns(["x*"])


def test_settings_validate_the_patterns_at_start_up() -> None:
    from convsync_pipeline.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"CONVSYNC_REDACT_PATTERNS: '\[a-' is not a valid"):
        load_settings({"CONVSYNC_REDACT_PATTERNS": '["ok", "[a-"]'})
    with pytest.raises(SettingsError, match="CONVSYNC_REDACT_PATTERNS must be a JSON list"):
        load_settings({"CONVSYNC_REDACT_PATTERNS": '["ok", 3]'})
    single = load_settings({"CONVSYNC_REDACT_PATTERNS": r"[A-Z]{3}-\d+"})
    assert single.redactor("see ABC-12") == f"see {CUSTOM}"
    listed = load_settings({"CONVSYNC_REDACT_PATTERNS": r'["ACME-\\d+", "secret"]'})
    assert listed.redactor("ACME-1 secret") == f"{CUSTOM} {CUSTOM}"
    assert load_settings({"CONVSYNC_REDACT": "false"}).redactor("a@b.example") == "a@b.example"


@pytest.mark.parametrize(
    "uuid", ["12345678-1234-5678-1234-567812345678", "b4d2e8f0-1234-5678-9abc-def012345678"]
)
def test_uuids_are_never_taken_for_phone_numbers(uuid: str) -> None:
    assert redact(f"run {uuid} failed; call 555-123-4567") == f"run {uuid} failed; call {PHONE}"
