"""Batch mode through the real assets and the real sensor: a run submits, the sensor waits
while the batch runs and requests the date's run once it ended (once), that run folds the
answers in, and the metadata shows the batches and their cost at batch prices."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context

from convsync_pipeline.core.batch_ledger import ledger_key
from convsync_pipeline.definitions import build_definitions
from convsync_pipeline.resources import build_resources
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload, run_date, settings_for

API_KEY = "sk-test-SENSOR-1234567890"
D = "2026-02-12"


def test_a_run_submits_the_sensor_requests_the_run_that_folds(
    tmp_path, openai_server, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    store = LocalStore(tmp_path / "store")
    settings = settings_for(
        {
            "CONVSYNC_STORE": str(tmp_path / "store"),
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai_server.base_url,
            "CONVSYNC_OPENAI_MODE": "auto",
            "CONVSYNC_BATCH_THRESHOLD": "2",
        }
    )
    rows = [(f"b{n}", f"{D}T09:0{n}:00Z", "user", f"Where is order {n}?") for n in range(4)]
    store.write(f"incoming/{D}/export.csv", csv_upload(*rows))

    first = run_date(settings, D)
    assert first.success
    metadata = first.asset_materializations_for_node("ai_analysis")[0].metadata
    assert metadata["openai_mode"].value == "batch"
    assert metadata["batch_requests_submitted"].value == 4
    assert "submitted" in metadata["batches"].value
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks["nothing_left_processing"], "waiting on a live batch is not left over"
    (record,) = json.loads(store.read(ledger_key(D)) or b"{}")["batches"]

    sensor = build_definitions(settings).resolve_sensor_def("openai_batch_sensor")
    resources = build_resources(settings)
    instance = DagsterInstance.ephemeral()

    def tick():
        with build_sensor_context(resources=resources, instance=instance) as context:
            return sensor(context)

    waiting = tick()
    assert isinstance(waiting, SkipReason) and "still running" in (waiting.skip_message or "")
    openai_server.batch.run_to_end()
    (request,) = tick()
    assert request.partition_key == D and request.run_key == f"batch:{record['batchId']}:completed"
    assert sensor.job_name == "convsync_analyse"

    second = run_date(settings, D)
    assert second.success
    metadata = second.asset_materializations_for_node("ai_analysis")[0].metadata
    assert metadata["succeeded"].value == 4 and metadata["batches_collected"].value == 1
    assert metadata["estimated_cost_usd"].value > 0
    assert metadata["estimated_batch_cost_usd"].value == metadata["estimated_cost_usd"].value
    doc = json.loads(store.read(f"conversations/{D}.json") or b"{}")
    assert {c["processingStatus"] for c in doc["conversations"]} == {"success"}
    summary = json.loads(store.read(f"summaries/{D}.json") or b"{}")
    assert summary["processedCount"] == 4
    assert isinstance(tick(), SkipReason), "nothing open any more"
    assert openai_server.total_requests == 0


def test_a_batch_left_unrecorded_by_a_dead_run_gets_its_run_once_it_is_stale(
    tmp_path, openai_server, monkeypatch: pytest.MonkeyPatch
):
    from convsync_pipeline.core.batch_ledger import BatchLedger, BatchRecord

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    store = LocalStore(tmp_path / "store")
    settings = settings_for(
        {
            "CONVSYNC_STORE": str(tmp_path / "store"),
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": openai_server.base_url,
        }
    )
    fresh = BatchRecord(token="cs-fresh")
    stale = BatchRecord(token="cs-stale", createdAt="2026-02-12T00:00:00.000Z")
    ledger = BatchLedger(date=D, batches=[fresh, stale])
    store.write(ledger_key(D), ledger.to_json_bytes())
    sensor = build_definitions(settings).resolve_sensor_def("openai_batch_sensor")
    with build_sensor_context(
        resources=build_resources(settings), instance=DagsterInstance.ephemeral()
    ) as context:
        (request,) = sensor(context)
    assert request.run_key == "batch:cs-stale:unrecorded" and request.partition_key == D
