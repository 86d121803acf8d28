"""Data at rest: a folder store readable by its owner only (or a group, when asked), whatever
the umask; on S3, server-side encryption on every object convsync writes.

Both go through the real pipeline (ingest with a quarantined record, merge, analysis,
summary, a forget's tombstone, a requeue) so every kind of object exists: documents, log
entries, the id index, staging, quarantine, summaries, locks, upload and merge markers, the
folder store's own digests and guards.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from convsync_pipeline.analyzers.local import LocalAnalyzer
from convsync_pipeline.operations.forget import Selector, forget
from convsync_pipeline.pipeline.analyse import analyse_date
from convsync_pipeline.pipeline.ingest import ingest_new_uploads
from convsync_pipeline.pipeline.merge_date import merge_date
from convsync_pipeline.pipeline.summarise import write_daily_summary
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import SettingsError, load_settings
from convsync_pipeline.store.base import Store, StoreLocks
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload
from tests.fixtures.moto import S3Bucket, make_s3_client

D = "2026-02-11"
SETTINGS = load_settings({"CONVSYNC_STORE": "./unused", "CONVSYNC_START_DATE": "2026-01-01"})


def _everything(store: Store) -> None:
    store.write(
        f"incoming/{D}/export.csv",
        csv_upload(
            ("a", f"{D}T09:00:00Z", "user", "Where is my parcel?"),
            ("b", f"{D}T09:01:00Z", "user", "Refund please"),
            ("c", "not a time", "user", "quarantined"),
        ),
    )
    locks = StoreLocks(store, ttl_seconds=30, wait_seconds=5)
    assert list(ingest_new_uploads(store, SETTINGS))
    merge_date(store, locks, D, "test")
    analyse_date(store, locks, SETTINGS, LocalAnalyzer, D, "test")
    write_daily_summary(store, locks, D, "test")
    forget(store, locks, Selector(ids=frozenset({"b"})), owner="test")


@pytest.mark.parametrize(("access", "file_mode", "dir_mode"), [
    ("owner", 0o600, 0o700), ("group", 0o640, 0o750),
])
def test_folder_store_modes_whatever_the_umask(
    tmp_path: Path, access: str, file_mode: int, dir_mode: int
) -> None:
    previous = os.umask(0)  # the widest umask: every mode comes from the store itself
    try:
        root = tmp_path / "store"
        _everything(LocalStore(root, access=access))
    finally:
        os.umask(previous)
    files = [p for p in root.rglob("*") if p.is_file()]
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    kinds = {p.relative_to(root).parts[0] for p in files}
    assert {"conversations", "journal", "staging", "quarantine", "summaries", "locks",
            "state", ".convsync"} <= kinds
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(file_mode)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(dir_mode)}


def test_store_access_and_sse_are_checked_at_start_up() -> None:
    with pytest.raises(SettingsError, match="CONVSYNC_STORE_ACCESS must be 'owner'"):
        load_settings({"CONVSYNC_STORE_ACCESS": "world"})
    with pytest.raises(SettingsError, match="CONVSYNC_S3_SSE must be 'AES256' or 'aws:kms'"):
        load_settings({"CONVSYNC_S3_SSE": "yes"})
    with pytest.raises(SettingsError, match="CONVSYNC_S3_KMS_KEY_ID is set"):
        load_settings({"CONVSYNC_S3_SSE": "AES256", "CONVSYNC_S3_KMS_KEY_ID": "k"})
    settings = load_settings({"CONVSYNC_S3_SSE": "aws:kms", "CONVSYNC_S3_KMS_KEY_ID": "k"})
    assert (settings.s3_sse, settings.s3_kms_key_id) == ("aws:kms", "k")


@pytest.mark.parametrize(("sse", "key"), [("AES256", None), ("aws:kms", "alias/convsync")])
def test_every_object_written_to_s3_is_encrypted(
    s3_bucket: S3Bucket, sse: str, key: str | None
) -> None:
    settings = load_settings(
        {
            "CONVSYNC_STORE": f"s3://{s3_bucket.name}/tenant",
            "CONVSYNC_S3_ENDPOINT_URL": s3_bucket.endpoint_url,
            "CONVSYNC_S3_SSE": sse,
            **({"CONVSYNC_S3_KMS_KEY_ID": key} if key else {}),
        }
    )
    store = BlobStoreResource.from_settings(settings).open()
    client = make_s3_client(s3_bucket.endpoint_url)
    _everything(store)
    listed = client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    ours = [o["Key"] for o in listed if not o["Key"].startswith("tenant/incoming/")]
    kinds = {k.split("/")[1] for k in ours}
    assert {"conversations", "journal", "staging", "quarantine", "summaries", "locks",
            "state"} <= kinds
    for object_key in ours:
        head = client.head_object(Bucket=s3_bucket.name, Key=object_key)
        assert head.get("ServerSideEncryption") == sse, object_key
        if key:
            assert key in head.get("SSEKMSKeyId", ""), object_key
    upload = client.head_object(Bucket=s3_bucket.name, Key=f"tenant/incoming/{D}/export.csv")
    assert upload.get("ServerSideEncryption") == sse, "written by convsync's store too"
