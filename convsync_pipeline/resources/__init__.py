"""The three resources every run is wired with, as the design card names them.

- `blob_store` (`BlobStoreResource`): the folder or S3 bucket, S3 through dagster-aws.
- `blob_lock` (`BlobLockResource`): the date lock, depending on `blob_store`.
- `analyzer` (`AnalyzerResource`): local or OpenAI, with its pacing and redaction.

Each asset, sensor and op asks only for those it uses. Settings that shape the definitions
themselves (timezone, start date, attempt limit, date order, retry delay) are not resource
fields: they are read once when the definitions load (`settings.py`).
"""

from typing import Any

from convsync_pipeline.resources.analyzer import AnalyzerResource
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources for `Definitions` (and tests' `materialize`), configured from `settings`.

    `blob_store` is configured at launch: the lock depends on that very object, so Dagster
    hands both the same store, and a run's override of the store reaches its lock too.
    """
    blob_store = BlobStoreResource.at_launch(settings)
    return {
        "blob_store": blob_store,
        "blob_lock": BlobLockResource(
            blob_store=blob_store,
            ttl_seconds=settings.lock_ttl_seconds,
            wait_seconds=settings.lock_wait_seconds,
        ),
        "analyzer": AnalyzerResource.from_settings(settings),
    }
