"""The one resource every asset, sensor and check gets: settings, the store, the analyser.

Its fields mirror `Settings`, so Dagster shows (and lets a run override) every knob, while
the pipeline code below it keeps taking a plain `Settings`. The OpenAI key is deliberately not
a field: the SDK reads OPENAI_API_KEY from the environment, so it never enters run config,
the event log or the UI.
"""


import datetime as dt

from dagster import ConfigurableResource

from convsync_pipeline.core.analysis import Analyzer
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store


class ConvsyncResource(ConfigurableResource):
    store: str
    s3_endpoint_url: str | None = None
    analyzer: str = "local"
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    timezone: str = "UTC"
    start_date: str = "2024-01-01"
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

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConvsyncResource":
        return cls(**settings.model_dump(mode="json"))

    def settings(self) -> Settings:
        fields = self.model_dump()
        fields["start_date"] = dt.date.fromisoformat(self.start_date)
        return Settings(**fields)

    def open_store(self) -> Store:
        return open_store(self.settings())

    def make_analyzer(self) -> Analyzer:
        return make_analyzer(self.settings())


def open_store(settings: Settings) -> Store:
    """`s3://bucket[/prefix]` -> S3 (through dagster-aws); a path or file:// URL -> folder."""
    url = settings.store
    if url.startswith("s3://"):
        from convsync_pipeline.store.s3 import S3Store

        return S3Store.from_url(url, endpoint_url=settings.s3_endpoint_url)
    from convsync_pipeline.store.local import LocalStore

    return LocalStore(url.removeprefix("file://"))


def make_analyzer(settings: Settings) -> Analyzer:
    if settings.analyzer == "openai":
        from convsync_pipeline.analyzers.openai import OpenAIAnalyzer

        return OpenAIAnalyzer(
            settings.openai_model,
            base_url=settings.openai_base_url,
            timeout_seconds=settings.request_timeout_seconds,
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            redact=settings.redact,
        )
    from convsync_pipeline.analyzers.local import LocalAnalyzer

    return LocalAnalyzer()
