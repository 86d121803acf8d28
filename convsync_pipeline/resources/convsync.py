"""The one resource every asset, sensor and check gets: settings, the store, the analyser.

Its fields mirror `Settings`, so Dagster shows (and lets a run override) every knob, while
the pipeline code below it keeps taking a plain `Settings`. The OpenAI key is deliberately not
a field: the SDK reads OPENAI_API_KEY from the environment, so it never enters run config,
the event log or the UI.
"""

import datetime as dt

from dagster import ConfigurableResource, DagsterInstance

from convsync_pipeline.core.analysis import Analyzer
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store, StoreError


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
    retry_delay_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConvsyncResource":
        return cls(**settings.model_dump(mode="json"))

    def settings(self) -> Settings:
        fields = self.model_dump()
        fields["start_date"] = dt.date.fromisoformat(self.start_date)
        return Settings(**fields)

    def open_store(self) -> Store:
        return open_store(self.settings())

    def store_for_run(self, instance: DagsterInstance) -> Store:
        """The store, refused when runs may land on other machines than the folder it names."""
        refuse_folder_store_on_many_nodes(self.settings(), type(instance.run_launcher).__name__)
        return self.open_store()

    def make_analyzer(self) -> Analyzer:
        return make_analyzer(self.settings())


# Launchers that start runs in other containers or machines: a local folder is not shared there.
MULTI_NODE_LAUNCHERS = frozenset(
    {"K8sRunLauncher", "DockerRunLauncher", "EcsRunLauncher", "CeleryK8sRunLauncher"}
)


class FolderStoreOnManyNodesError(StoreError):
    """Each node would see its own folder: documents and locks would silently diverge."""


def refuse_folder_store_on_many_nodes(settings: Settings, launcher: str) -> None:
    if launcher in MULTI_NODE_LAUNCHERS and not settings.store.startswith("s3://"):
        raise FolderStoreOnManyNodesError(
            f"CONVSYNC_STORE={settings.store} is a local folder, but the instance launches runs "
            f"with {launcher} on other nodes, which would each see a different folder: set "
            "CONVSYNC_STORE to s3://bucket[/prefix] (shared by every node)"
        )


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
