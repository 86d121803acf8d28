"""The whole `defs` loads: a broken definition fails CI, a bad variable names itself."""

from __future__ import annotations

import importlib
import subprocess
import sys

from dagster import AssetKey

EXPECTED = ["raw_conversations", "normalized_conversations", "ai_analysis", "daily_summary"]


def test_definitions_load_with_four_partitioned_assets_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVSYNC_STORE", str(tmp_path))
    module = importlib.reload(importlib.import_module("convsync_pipeline.definitions"))
    defs = module.defs
    graph = defs.resolve_asset_graph()
    for name in EXPECTED:
        node = graph.get(AssetKey(name))
        assert node.partitions_def is not None, name
        assert node.partitions_def.end_offset == 1
    assert graph.get(AssetKey("normalized_conversations")).parent_keys == {
        AssetKey("raw_conversations")
    }
    assert graph.get(AssetKey("ai_analysis")).parent_keys == {AssetKey("normalized_conversations")}
    assert graph.get(AssetKey("daily_summary")).parent_keys == {AssetKey("ai_analysis")}
    assert defs.resolve_sensor_def("new_upload_sensor")
    assert defs.resolve_sensor_def("ingested_upload_sensor")
    assert defs.resolve_job_def("convsync_ingest")
    assert defs.resolve_job_def("convsync_daily")
    analysis = defs.resolve_assets_def(AssetKey("ai_analysis"))
    policy = analysis.op.retry_policy
    assert policy.max_retries == 2  # three attempts in total by default


def test_a_bad_variable_fails_loading_with_its_name(tmp_path):
    env = {"CONVSYNC_STORE": str(tmp_path), "CONVSYNC_MAX_ATTEMPTS": "three", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", "import convsync_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    message = "convsync: error: CONVSYNC_MAX_ATTEMPTS must be a whole number, got 'three'"
    assert result.stderr.splitlines()[0] == message, "the one good message comes first"
    assert result.stderr.strip() == message, "nothing caught it: no traceback after it"
