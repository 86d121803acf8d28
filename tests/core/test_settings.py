"""Every variable is validated at start-up and a bad value names its variable."""

from __future__ import annotations

import datetime as dt

import pytest

from convsync_pipeline.settings import SettingsError, load_settings


def test_defaults():
    settings = load_settings({})
    assert settings.analyzer == "local"
    assert settings.timezone == "UTC"
    assert settings.start_date == dt.date(2024, 1, 1)
    assert settings.max_attempts == 3
    assert settings.store == "./convsync-store"


def test_openai_is_the_default_when_a_key_is_set():
    assert load_settings({"OPENAI_API_KEY": "sk-x"}).analyzer == "openai"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CONVSYNC_MAX_ATTEMPTS", "0", "CONVSYNC_MAX_ATTEMPTS must be between 1 and 100"),
        ("CONVSYNC_MAX_ATTEMPTS", "x", "CONVSYNC_MAX_ATTEMPTS must be a whole number"),
        ("CONVSYNC_TIMEZONE", "Mars/Base", "CONVSYNC_TIMEZONE must be an IANA timezone"),
        ("CONVSYNC_START_DATE", "01/02/2024", "CONVSYNC_START_DATE must be a date"),
        ("CONVSYNC_ANALYZER", "gpt", "CONVSYNC_ANALYZER must be 'local' or 'openai'"),
        ("CONVSYNC_ANALYZER", "openai", "OPENAI_API_KEY is not set"),
        ("CONVSYNC_STORE", "gs://bucket", "CONVSYNC_STORE must be a path"),
        ("CONVSYNC_LOCK_TTL_SECONDS", "-1", "CONVSYNC_LOCK_TTL_SECONDS must be between"),
        ("CONVSYNC_REDACT", "maybe", "CONVSYNC_REDACT must be true or false"),
        ("CONVSYNC_DATE_ORDER", "year-first", "CONVSYNC_DATE_ORDER must be"),
    ],
)
def test_bad_values_name_the_variable(name, value, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings({name: value})


def test_secrets_are_not_part_of_settings():
    settings = load_settings({"OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in settings.model_dump_json()
