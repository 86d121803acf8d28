"""`new_upload_sensor` over an S3 bucket (moto_server) with more than a page of uploads.

Thousands of objects, keys arriving out of lexical order, dozens in the same second: every
upload is requested exactly once across ticks, later ticks look only at what is new, and a
tick stays within its time budget (work left over is picked up by the next tick).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.dagster.helpers import csv_upload, sensor_ticker, settings_for
from tests.fixtures.moto import make_s3_client

UPLOADS = 1_100  # more than one 1,000-key page of list_objects_v2


def put_uploads(client, bucket: str, keys: list[str]) -> None:
    def put(key: str) -> None:
        body = csv_upload((key.rsplit("/", 1)[-1], "2026-02-11T10:00:00Z", "user", "hello"))
        client.put_object(Bucket=bucket, Key=f"root/{key}", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))


@pytest.mark.slow
def test_sensor_over_more_than_a_page_with_same_second_bursts(s3_bucket):
    endpoint, bucket = s3_bucket
    client = make_s3_client(endpoint)
    # Reverse lexical order of arrival: later keys sort first.
    put_uploads(client, bucket, [f"incoming/bulk/{n:05d}.csv" for n in range(UPLOADS, 0, -1)])

    settings = settings_for(
        {"CONVSYNC_STORE": f"s3://{bucket}/root", "CONVSYNC_S3_ENDPOINT_URL": endpoint}
    )
    ticker = sensor_ticker(settings)

    def tick(cursor):
        requests, cursor = ticker(cursor)
        return [r.tags["convsync/upload"] for r in requests], cursor

    requested: list[str] = []
    cursor = None
    ticks = 0
    while True:
        found, cursor = tick(cursor)
        ticks += 1
        if not found:
            break
        requested.extend(found)
        assert ticks < 20
    assert len(requested) == UPLOADS
    assert len(set(requested)) == UPLOADS, "no upload requested twice"

    burst = [f"incoming/burst/{n:03d}.csv" for n in range(40)]
    put_uploads(client, bucket, burst)
    started = time.monotonic()
    found, cursor = tick(cursor)
    tick_seconds = time.monotonic() - started
    assert sorted(found) == burst
    assert tick(cursor)[0] == []
    print(
        f"sensor: {UPLOADS} uploads in {ticks - 1} ticks; "
        f"a 40-upload tick took {tick_seconds:.1f} s"
    )
