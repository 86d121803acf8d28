"""The same uploads give the same documents on the folder store and on S3 (timestamps aside),
and the S3 date locks live in the bucket as lease objects."""

from __future__ import annotations

import json

import pytest

from convsync_pipeline.core.keys import document_key, lock_key, summary_key
from convsync_pipeline.store.local import LocalStore
from convsync_pipeline.store.s3 import S3Store
from tests.dagster.helpers import csv_upload, run_date, settings_for
from tests.fixtures.moto import make_s3_client

UPLOADS = {
    "incoming/2026-02-11/a.csv": csv_upload(
        ("c-1", "2026-02-11T09:00:00Z", "user", "I was charged twice, I want a refund"),
        ("c-1", "2026-02-11T09:01:00Z", "agent", "Refunded!"),
        ("c-2", "02/11/2026 2:03 PM", "user", "the new dashboard is great!"),
        ("late", "2026-02-11T23:59:00Z", "user", "I need to talk to a manager"),
        ("late", "2026-02-12T00:01:00Z", "agent", "Escalating."),
        ("", "2026-02-11T10:00:00Z", "user", "no id"),
    ),
    "incoming/2026-02-11/b.csv": csv_upload(
        ("c-2", "2026-02-11T08:00:00Z", "user", "duplicate of an existing id"),
        ("c-3", "2026-02-12T07:00:00Z", "user", "The app keeps crashing"),
    ),
}
VOLATILE = {"updatedAt", "processedAt", "generatedAt"}


def without_timestamps(value):
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [without_timestamps(item) for item in value]
    return value


def run_all(store, env):
    for key, body in UPLOADS.items():
        store.write(key, body)
    settings = settings_for(env)
    for date in ("2026-02-11", "2026-02-12"):
        assert run_date(settings, date).success
    return {
        key: without_timestamps(json.loads(store.read(key)))
        for date in ("2026-02-11", "2026-02-12")
        for key in (document_key(date), summary_key(date))
    }


@pytest.mark.slow
def test_folder_and_s3_stores_write_the_same_documents(tmp_path, s3_bucket):
    local = LocalStore(tmp_path / "store")
    on_folder = run_all(local, {"CONVSYNC_STORE": local.url})

    endpoint, bucket = s3_bucket
    s3 = S3Store(make_s3_client(endpoint), bucket, "root")
    on_s3 = run_all(
        s3, {"CONVSYNC_STORE": f"s3://{bucket}/root", "CONVSYNC_S3_ENDPOINT_URL": endpoint}
    )
    assert on_s3 == on_folder
    assert [c["id"] for c in on_s3[document_key("2026-02-11")]["conversations"]] == [
        "c-1",
        "c-2",
        "late",
    ]

    lock = json.loads(s3.read(lock_key("2026-02-11")))
    assert lock["state"] == "free" and lock["generation"] == 3  # merge, analysis, summary
    keys = {info.key for info in s3.list("locks/")}
    assert keys == {lock_key("2026-02-11"), lock_key("2026-02-12")}
