"""Scenario 3 - two deployments on one S3 store: two Dagster instances (separate
DAGSTER_HOMEs, so separate run queues that know nothing of each other) process the same
dates at the same time, `dagster asset materialize --select '*'` per date from each.

Only the store's date lock and its compare-and-swap saves stand between them. Three dates,
each with its own export plus one export that spans all three (both deployments ingest both
at once), 15 conversations per date; the model answers after a latency so the analyses
overlap. Default settings (5 s lock wait): a run that meets the other deployment's lock
either waits it out or fails with the lock conflict and nothing else.

Checked: every conversation sent to the model exactly once; each date's document consistent
and complete, every conversation `success`; the daily summary computed from the final
document version; every failed run failed on the date lock and wrote nothing.
"""

from __future__ import annotations

import time

import pytest

from convsync_pipeline.core.keys import document_key
from convsync_pipeline.store.s3 import S3Store
from tests.fixtures.moto import S3_TEST_PREFIX, create_bucket, make_s3_client
from tests.reliability.harness import (
    Outcome,
    cleanup,
    cli_env,
    conversation_ids,
    conversations_csv,
    read_document,
    read_summary,
    start_materialize,
    upload,
    wait_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DATES = ["2026-06-01", "2026-06-02", "2026-06-03"]
PER_DATE = 12
SPANNING = 3  # conversations per date in the export that spans all dates
DEPLOYMENTS = ("east", "west")


def test_two_deployments_same_dates(moto_endpoint, homes, model_server, tmp_path, record_outcome):
    started = time.monotonic()
    server, gate = model_server
    server.latency = 0.4
    gate.open()
    store = S3Store(make_s3_client(moto_endpoint), create_bucket(moto_endpoint), S3_TEST_PREFIX)
    store_env = {"CONVSYNC_STORE": store.url, "CONVSYNC_S3_ENDPOINT_URL": moto_endpoint}
    expected: dict[str, list[str]] = {}
    spanning_rows = []
    for number, date in enumerate(DATES):
        own = conversation_ids(f"d{number}", PER_DATE)
        upload(store, f"incoming/{date}/export.csv", conversations_csv(date, own))
        shared = conversation_ids(f"span{number}", SPANNING)
        spanning_rows.append(conversations_csv(date, shared).decode().split("\n", 1)[1])
        expected[date] = [*own, *shared]
    header = "conversation_id,timestamp,role,content\n"
    upload(store, "incoming/week/spanning.csv", (header + "".join(spanning_rows)).encode())

    home = {name: homes.new(name) for name in DEPLOYMENTS}
    runs = []
    try:
        for date in DATES:
            for name in DEPLOYMENTS:
                env = cli_env(store_env, home[name], server)
                runs.append(start_materialize(f"{name}-{date}", "*", date, env, tmp_path / "logs"))
        wait_all(runs, timeout=400)
    finally:
        cleanup(runs)

    conflicts = 0
    for run in runs:
        if run.poll() != 0:
            assert run.lost_lock_race(), run.tail()
            conflicts += 1
    sent = server.sent_counts()
    every_id = [cid for ids in expected.values() for cid in ids]
    assert sent == dict.fromkeys(every_id, 1), {c: n for c, n in sent.items() if n != 1}
    versions = {}
    for date in DATES:
        document = read_document(store, date)
        assert sorted(c.id for c in document.conversations) == sorted(expected[date])
        assert document.count_statuses().success == len(expected[date])
        summary = read_summary(store, date)
        assert summary is not None and summary["documentVersion"] == document.version, date
        writes = sorted(v for run in runs for v in run.blob_writes(document_key(date)))
        assert writes == list(range(1, document.version + 1)), (date, writes)
        versions[date] = document.version

    record_outcome(
        Outcome(
            "two-deployments",
            "s3",
            runs=len(runs),
            conversations=len(every_id),
            faults=0,
            duplicates=sum(count - 1 for count in sent.values()),
            lost=len(every_id) - sum(1 for cid in every_id if cid in sent),
            seconds=time.monotonic() - started,
            details={
                "deployments": len(DEPLOYMENTS),
                "dates": len(DATES),
                "runs_failed_on_lock": conflicts,
                "runs_succeeded": len(runs) - conflicts,
                "analysed_by": "+".join(
                    f"{run.name}:{run.analysed()}" for run in runs if run.analysed()
                ),
            },
        )
    )
