"""CONVSYNC_* environment variables -> one validated, immutable settings object.

Every bad value is reported as a `SettingsError` naming the variable, at start-up, so a
typo never surfaces as a strange failure in the middle of a run. Some settings shape the
definitions themselves (timezone, start date, attempt limit, date order, retry delay); the
others become the values of the resources' fields (`resources/`), which a run may override.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from convsync_pipeline.core.redaction import PatternError, Redactor, compile_patterns

DEFAULT_STORE = "./convsync-store"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
# What one ingest may use for an upload's messages (grouping, parse blocks, one JSON
# document): with Python, pyarrow and Dagster around it, a run fits a 2 GB pod.
DEFAULT_INGEST_MEMORY_MB = 1024
OPENAI_MODES = ("live", "batch", "auto")
# `auto` sends a date through the Batch API above this many due conversations: below it a
# live pass at the default concurrency takes minutes, not worth waiting up to 24 hours.
DEFAULT_BATCH_THRESHOLD = 2_000
DEFAULT_BATCH_POLL_SECONDS = 300


class SettingsError(ValueError):
    """A configuration variable has a value convsync cannot use."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    store: str = DEFAULT_STORE
    s3_endpoint_url: str | None = None
    store_access: str = "owner"
    s3_sse: str | None = None
    s3_kms_key_id: str | None = None
    analyzer: str = "local"
    openai_model: str = DEFAULT_OPENAI_MODEL
    openai_base_url: str | None = None
    timezone: str = "UTC"
    start_date: dt.date = dt.date(2024, 1, 1)
    max_attempts: int = 3
    day_first: bool = False
    lock_ttl_seconds: float = 60.0
    lock_wait_seconds: float = 5.0
    analysis_concurrency: int = 8
    batch_size: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    request_timeout_seconds: float = 60.0
    redact: bool = True
    redact_patterns: tuple[str, ...] = ()
    retry_delay_seconds: float = 2.0
    ingest_memory_mb: int = DEFAULT_INGEST_MEMORY_MB
    max_inflate_ratio: float = 100.0
    max_inflated_mb: int = 51_200
    spill_dir: str | None = None
    # The daily schedule's run also re-analyses the previous day's answers of another
    # analysis version (off: a prompt or model change never costs money by surprise).
    reanalyse_on_version_change: bool = False
    openai_mode: str = "live"
    batch_threshold: int = DEFAULT_BATCH_THRESHOLD
    batch_poll_seconds: int = DEFAULT_BATCH_POLL_SECONDS

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def redactor(self) -> Redactor:
        """The one redaction for the model path and every display (patterns checked at load)."""
        return _redactor(self.redact, self.redact_patterns)

    @property
    def ingest_memory_bytes(self) -> int:
        return self.ingest_memory_mb * 2**20


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, lo: float, hi: float,
    what: str = "a number of seconds",
) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def check_store_url(url: str, name: str, error: type[Exception] = SettingsError) -> str:
    """`url` if it names a folder, a file:// URL or an S3 bucket; else `error` naming `name`."""
    if url.startswith("s3://") and len(url) <= len("s3://"):
        raise error(f"{name} must name a bucket: s3://bucket[/prefix], got {url!r}")
    if "://" in url and not url.startswith(("s3://", "file://")):
        raise error(f"{name} must be a path, a file:// URL or s3://bucket[/prefix], got {url!r}")
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every convsync variable from `env` (default: the process environment)."""
    env = os.environ if env is None else env

    store = check_store_url(_text(env, "CONVSYNC_STORE") or DEFAULT_STORE, "CONVSYNC_STORE")

    analyzer = _text(env, "CONVSYNC_ANALYZER")
    if analyzer is None:
        analyzer = "openai" if _text(env, "OPENAI_API_KEY") else "local"
    analyzer = analyzer.lower()
    if analyzer not in {"local", "openai"}:
        raise SettingsError(f"CONVSYNC_ANALYZER must be 'local' or 'openai', got {analyzer!r}")
    if analyzer == "openai" and not _text(env, "OPENAI_API_KEY"):
        raise SettingsError("CONVSYNC_ANALYZER is 'openai' but OPENAI_API_KEY is not set")

    timezone = _text(env, "CONVSYNC_TIMEZONE") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"CONVSYNC_TIMEZONE must be an IANA timezone such as 'UTC' or 'Europe/Berlin', "
            f"got {timezone!r}"
        ) from None

    raw_start = _text(env, "CONVSYNC_START_DATE") or "2024-01-01"
    try:
        start_date = dt.date.fromisoformat(raw_start)
    except ValueError:
        raise SettingsError(
            f"CONVSYNC_START_DATE must be a date as YYYY-MM-DD, got {raw_start!r}"
        ) from None

    date_order = (_text(env, "CONVSYNC_DATE_ORDER") or "month-first").lower()
    if date_order not in {"month-first", "day-first"}:
        raise SettingsError(
            f"CONVSYNC_DATE_ORDER must be 'month-first' or 'day-first', got {date_order!r}"
        )

    batch_size = _int(env, "CONVSYNC_BATCH_SIZE", None, 1, 10_000_000)
    openai_mode = (_text(env, "CONVSYNC_OPENAI_MODE") or "live").lower()
    if openai_mode not in OPENAI_MODES:
        raise SettingsError(
            f"CONVSYNC_OPENAI_MODE must be 'live', 'batch' or 'auto', got {openai_mode!r}"
        )
    return Settings(
        store=store,
        s3_endpoint_url=_text(env, "CONVSYNC_S3_ENDPOINT_URL"),
        store_access=_store_access(env),
        s3_sse=_s3_sse(env),
        s3_kms_key_id=_text(env, "CONVSYNC_S3_KMS_KEY_ID"),
        analyzer=analyzer,
        openai_model=_text(env, "CONVSYNC_OPENAI_MODEL") or DEFAULT_OPENAI_MODEL,
        openai_base_url=_text(env, "OPENAI_BASE_URL"),
        timezone=timezone,
        start_date=start_date,
        max_attempts=_int(env, "CONVSYNC_MAX_ATTEMPTS", 3, 1, 100),
        day_first=date_order == "day-first",
        lock_ttl_seconds=_float(env, "CONVSYNC_LOCK_TTL_SECONDS", 60.0, 1.0, 86_400.0),
        lock_wait_seconds=_float(env, "CONVSYNC_LOCK_WAIT_SECONDS", 5.0, 0.0, 3_600.0),
        analysis_concurrency=_int(env, "CONVSYNC_CONCURRENCY", 8, 1, 1_000),
        batch_size=batch_size,
        requests_per_minute=_int(env, "CONVSYNC_REQUESTS_PER_MINUTE", None, 1, 10_000_000),
        tokens_per_minute=_int(env, "CONVSYNC_TOKENS_PER_MINUTE", None, 1, 1_000_000_000),
        request_timeout_seconds=_float(env, "CONVSYNC_REQUEST_TIMEOUT_SECONDS", 60.0, 1.0, 3_600.0),
        redact=_bool(env, "CONVSYNC_REDACT", True),
        redact_patterns=redact_patterns(env),
        retry_delay_seconds=_float(env, "CONVSYNC_RETRY_DELAY_SECONDS", 2.0, 0.0, 3_600.0),
        ingest_memory_mb=_int(
            env, "CONVSYNC_INGEST_MEMORY_MB", DEFAULT_INGEST_MEMORY_MB, 16, 1_048_576
        ),
        max_inflate_ratio=_float(
            env, "CONVSYNC_MAX_INFLATE_RATIO", 100.0, 1.0, 1_000_000.0, "a number"
        ),
        max_inflated_mb=_int(env, "CONVSYNC_MAX_INFLATED_MB", 51_200, 1, 1_073_741_824),
        spill_dir=_spill_dir(env),
        reanalyse_on_version_change=_bool(env, "CONVSYNC_REANALYSE_ON_VERSION_CHANGE", False),
        openai_mode=openai_mode,
        batch_threshold=_int(
            env, "CONVSYNC_BATCH_THRESHOLD", DEFAULT_BATCH_THRESHOLD, 0, 100_000_000
        ),
        batch_poll_seconds=_int(
            env, "CONVSYNC_BATCH_POLL_SECONDS", DEFAULT_BATCH_POLL_SECONDS, 10, 86_400
        ),
    )


STORE_ACCESS = ("owner", "group")
S3_SSE = ("AES256", "aws:kms")


def _store_access(env: Mapping[str, str]) -> str:
    """CONVSYNC_STORE_ACCESS: who may read a folder store's files (owner: 0600/0700)."""
    value = (_text(env, "CONVSYNC_STORE_ACCESS") or "owner").lower()
    if value not in STORE_ACCESS:
        raise SettingsError(
            f"CONVSYNC_STORE_ACCESS must be 'owner' (files 0600, folders 0700) or 'group' "
            f"(0640, 0750), got {value!r}"
        )
    return value


def _s3_sse(env: Mapping[str, str]) -> str | None:
    """CONVSYNC_S3_SSE: server-side encryption of every object written (AES256 or aws:kms)."""
    value = _text(env, "CONVSYNC_S3_SSE")
    key = _text(env, "CONVSYNC_S3_KMS_KEY_ID")
    if value is not None and value not in S3_SSE:
        raise SettingsError(f"CONVSYNC_S3_SSE must be 'AES256' or 'aws:kms', got {value!r}")
    if key is not None and value != "aws:kms":
        raise SettingsError(
            "CONVSYNC_S3_KMS_KEY_ID is set but CONVSYNC_S3_SSE is not 'aws:kms': "
            "set CONVSYNC_S3_SSE=aws:kms to encrypt with that key"
        )
    return value


def _spill_dir(env: Mapping[str, str]) -> str | None:
    """CONVSYNC_SPILL_DIR: where ingest spills a large upload (default: the system's temp)."""
    path = _text(env, "CONVSYNC_SPILL_DIR")
    if path is not None and not os.path.isdir(path):
        raise SettingsError(f"CONVSYNC_SPILL_DIR must be an existing folder, got {path!r}")
    return path


def redact_patterns(env: Mapping[str, str]) -> tuple[str, ...]:
    """CONVSYNC_REDACT_PATTERNS: a JSON list of regular expressions, or one expression.

    Each is compiled here, at start-up, so a typo is reported naming the variable and the
    pattern instead of surfacing as an unredacted line in the middle of a run.
    """
    raw = _text(env, "CONVSYNC_REDACT_PATTERNS")
    if raw is None:
        return ()
    sources: list[str] = [raw]
    if raw.startswith("["):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None  # not JSON: a single expression such as "[A-Z]{3}-\\d+"
        if isinstance(parsed, list):
            if not all(isinstance(item, str) and item for item in parsed):
                raise SettingsError(
                    "CONVSYNC_REDACT_PATTERNS must be a JSON list of non-empty strings, "
                    f"got {raw!r}"
                )
            sources = parsed
    try:
        compile_patterns(sources)
    except PatternError as error:
        raise SettingsError(f"CONVSYNC_REDACT_PATTERNS: {error}") from None
    return tuple(sources)


@functools.lru_cache(maxsize=8)
def _redactor(enabled: bool, sources: tuple[str, ...]) -> Redactor:
    return Redactor(enabled=enabled, patterns=compile_patterns(sources))


def display_redactor(env: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for text shown to people (metadata, logs, report, CLI), from the same two
    variables as the model path; reads only those, so a display never fails on another one."""
    env = os.environ if env is None else env
    return _display_redactor(env.get("CONVSYNC_REDACT"), env.get("CONVSYNC_REDACT_PATTERNS"))


@functools.lru_cache(maxsize=8)
def _display_redactor(enabled: str | None, patterns: str | None) -> Redactor:
    """Keyed by the two raw values: a report's every cell does not re-read the settings."""
    env = {
        name: value
        for name, value in (
            ("CONVSYNC_REDACT", enabled),
            ("CONVSYNC_REDACT_PATTERNS", patterns),
        )
        if value is not None
    }
    return _redactor(_bool(env, "CONVSYNC_REDACT", True), redact_patterns(env))


class RedactingFilter(logging.Filter):
    """Every line of the `convsync` logger through the display redactor: a log line is text
    leaving the store like any other (compute logs, the Dagster event log, a terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: logging reports it itself
        redacted = display_redactor()(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install_log_redaction() -> None:
    """Attach the filter once to the `convsync` logger (idempotent)."""
    logger = logging.getLogger("convsync")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
