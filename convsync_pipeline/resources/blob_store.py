"""`blob_store`: where uploads, date documents, summaries and locks live.

A folder, or `s3://bucket[/prefix]` reached through dagster-aws's `S3Resource` (nested, so
region, profile, endpoint and credentials are set the way Dagster users set them for S3;
`CONVSYNC_S3_ENDPOINT_URL` fills its `endpoint_url`). The store is opened once per run and
shared with the blob lock, which depends on this resource.

The field is typed as any resource and dagster-aws is imported only when S3 is configured:
importing it costs as much as importing Dagster itself (3.5 s against 3.5 s on the shared
benchmark machine), which a folder store — the default, the CLI, every run's start — would
otherwise pay for nothing.
"""

from typing import Any

from dagster import ConfigurableResource, DagsterInstance
from pydantic import Field, PrivateAttr

from convsync_pipeline.settings import Settings, check_store_url
from convsync_pipeline.store.base import Store, StoreError

# Launchers that start runs in other containers or machines: a local folder is not shared there.
MULTI_NODE_LAUNCHERS = frozenset(
    {"K8sRunLauncher", "DockerRunLauncher", "EcsRunLauncher", "CeleryK8sRunLauncher"}
)


class FolderStoreOnManyNodesError(StoreError):
    """Each node would see its own folder: documents and locks would silently diverge."""


class BlobStoreResource(ConfigurableResource):
    """The conversation store: a local folder or an S3 (or S3-compatible) bucket."""

    url: str = Field(
        description="CONVSYNC_STORE: a path or file:// URL (a local folder), or "
        "s3://bucket[/prefix]."
    )
    s3: ConfigurableResource | None = Field(
        default=None,
        description="A dagster-aws S3Resource, used when `url` is s3://; its endpoint_url "
        "comes from CONVSYNC_S3_ENDPOINT_URL. Unset: AWS itself, and for every setting "
        "(region, profile, credentials) the standard AWS chain.",
    )
    access: str = Field(
        default="owner",
        description="CONVSYNC_STORE_ACCESS (folder store): 'owner' makes files 0600 and "
        "folders 0700, 'group' 0640 and 0750, whatever the process umask.",
    )
    s3_sse: str | None = Field(
        default=None,
        description="CONVSYNC_S3_SSE: 'AES256' or 'aws:kms', applied to every object written.",
    )
    s3_kms_key_id: str | None = Field(
        default=None, description="CONVSYNC_S3_KMS_KEY_ID: the KMS key of aws:kms."
    )
    _store: Store | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> "BlobStoreResource":
        return cls(url=settings.store, s3=s3_resource(settings), **_protection(settings))

    @classmethod
    def at_launch(cls, settings: Settings) -> Any:
        """For `Definitions`: configured from `settings`, overridable per run, and shared by
        key with the resources that depend on it (the blob lock)."""
        return cls.configure_at_launch(
            url=settings.store, s3=s3_resource(settings), **_protection(settings)
        )

    def open(self) -> Store:
        """The store, opened once for this resource (and run)."""
        if self._store is None:
            self._store = self._open()
        return self._store

    def store_for_run(self, instance: DagsterInstance) -> Store:
        """The store, refused when runs may land on other machines than the folder it names."""
        refuse_folder_store_on_many_nodes(self.url, type(instance.run_launcher).__name__)
        return self.open()

    def _open(self) -> Store:
        url = check_store_url(self.url, "blob_store.url (CONVSYNC_STORE)", error=StoreError)
        if url.startswith("s3://"):
            from convsync_pipeline.store.s3 import S3Store, parse_s3_url

            bucket, prefix = parse_s3_url(url)
            s3 = self.s3 if self.s3 is not None else dagster_aws_s3()
            return S3Store(
                s3.get_client(),  # type: ignore[attr-defined]
                bucket,
                prefix,
                sse=self.s3_sse,
                kms_key_id=self.s3_kms_key_id,
            )
        from convsync_pipeline.store.local import LocalStore

        return LocalStore(url.removeprefix("file://"), access=self.access)


def _protection(settings: Settings) -> dict[str, Any]:
    return {
        "access": settings.store_access,
        "s3_sse": settings.s3_sse,
        "s3_kms_key_id": settings.s3_kms_key_id,
    }


def s3_resource(settings: Settings) -> ConfigurableResource | None:
    """The S3 client's resource the settings call for; None for a folder store without an
    S3 endpoint (nothing to configure, nothing to import)."""
    if store_kind(settings.store) == "folder" and not settings.s3_endpoint_url:
        return None
    return dagster_aws_s3(settings.s3_endpoint_url)


def dagster_aws_s3(endpoint_url: str | None = None) -> ConfigurableResource:
    from dagster_aws.s3 import S3Resource

    return S3Resource(endpoint_url=endpoint_url)


def store_kind(url: str) -> str:
    """`s3` or `folder`: the asset graph's `dagster/kind` tag, decided when definitions load."""
    return "s3" if url.startswith("s3://") else "folder"


def open_store(settings: Settings) -> Store:
    """The store named by the settings, outside Dagster (the `convsync` command, benchmarks)."""
    return BlobStoreResource.from_settings(settings).open()


def refuse_folder_store_on_many_nodes(url: str, launcher: str) -> None:
    if launcher in MULTI_NODE_LAUNCHERS and not url.startswith("s3://"):
        raise FolderStoreOnManyNodesError(
            f"CONVSYNC_STORE={url} is a local folder, but the instance launches runs "
            f"with {launcher} on other nodes, which would each see a different folder: set "
            "CONVSYNC_STORE to s3://bucket[/prefix] (shared by every node)"
        )
