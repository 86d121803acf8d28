"""The three resources: what each asset asks for, how the variables reach them, per-run overrides.

Resources are built directly (no environment juggling); `build_resources(settings)` is what
`defs` and the helpers use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize, serialize_value
from dagster_aws.s3 import S3Resource
from pydantic import ValidationError

from convsync_pipeline.analyzers.local import LocalAnalyzer
from convsync_pipeline.analyzers.openai import OpenAIAnalyzer
from convsync_pipeline.core.keys import document_key, lock_key
from convsync_pipeline.definitions import build_assets, build_definitions
from convsync_pipeline.resources import build_resources
from convsync_pipeline.resources.analyzer import AnalyzerNotReadyError, AnalyzerResource
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import SettingsError, load_settings
from convsync_pipeline.store.base import DateLockedError, StoreError
from convsync_pipeline.store.local import LocalStore
from convsync_pipeline.store.s3 import S3Store
from tests.dagster.helpers import csv_upload, settings_for
from tests.fixtures.moto import StoreFactory

D = "2026-02-11"
UPLOAD = csv_upload(
    ("c-1", "2026-02-11T09:00:00Z", "user", "I was charged twice, I want a refund"),
    ("c-2", "2026-02-11T10:00:00Z", "user", "The app keeps crashing"),
)


def test_each_asset_sensor_and_op_asks_for_exactly_what_it_uses(tmp_path: Path) -> None:
    defs = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path)}))

    def uses(name: str) -> set[str]:
        keys = defs.resolve_assets_def(AssetKey(name)).required_resource_keys
        return set(keys) - {"io_manager"}

    assert uses("raw_conversations") == {"blob_store"}
    assert uses("normalized_conversations") == {"blob_store", "blob_lock"}
    assert uses("ai_analysis") == {"blob_store", "blob_lock", "analyzer"}
    assert uses("daily_summary") == {"blob_store", "blob_lock"}
    assert uses("dead_letters") == {"blob_store"}
    for sensor in ("new_upload_sensor", "ingested_upload_sensor"):
        assert set(defs.resolve_sensor_def(sensor).required_resource_keys) == {"blob_store"}
    batch_sensor = defs.resolve_sensor_def("openai_batch_sensor")
    assert set(batch_sensor.required_resource_keys) == {"blob_store", "analyzer"}
    (ingest,) = defs.resolve_job_def("convsync_ingest").graph.node_defs
    assert set(ingest.required_resource_keys) == {"blob_store"}
    (migrate,) = defs.resolve_job_def("convsync_migrate").graph.node_defs
    assert set(migrate.required_resource_keys) == {"blob_store", "blob_lock"}


@pytest.mark.parametrize(
    ("env", "store_kind", "analysis_kinds"),
    [
        ({}, "folder", {"folder"}),
        ({"CONVSYNC_STORE": "s3://bucket/prefix"}, "s3", {"s3"}),
        (
            {"CONVSYNC_ANALYZER": "openai", "OPENAI_API_KEY": "sk-test-kinds"},
            "folder",
            {"folder", "openai"},
        ),
    ],
)
def test_assets_carry_kind_tags_of_the_configured_store_and_analyser(
    tmp_path: Path, env: dict[str, str], store_kind: str, analysis_kinds: set[str]
) -> None:
    defs = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path), **env}))

    def kinds(name: str) -> set[str]:
        spec = defs.resolve_assets_def(AssetKey(name)).specs_by_key[AssetKey(name)]
        return {tag.removeprefix("dagster/kind/") for tag in spec.tags if "/kind/" in tag}

    for name in ("raw_conversations", "normalized_conversations", "daily_summary"):
        assert kinds(name) == {store_kind}, name
    assert kinds("ai_analysis") == analysis_kinds


def test_every_variable_reaches_its_resource_field() -> None:
    settings = load_settings(
        {
            "CONVSYNC_STORE": "s3://bucket/prefix",
            "CONVSYNC_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "CONVSYNC_ANALYZER": "openai",
            "OPENAI_API_KEY": "sk-test-NEVER-IN-CONFIG",
            "OPENAI_BASE_URL": "http://127.0.0.1:9001/v1",
            "CONVSYNC_OPENAI_MODEL": "gpt-test",
            "CONVSYNC_LOCK_TTL_SECONDS": "30",
            "CONVSYNC_LOCK_WAIT_SECONDS": "0.5",
            "CONVSYNC_CONCURRENCY": "3",
            "CONVSYNC_BATCH_SIZE": "10",
            "CONVSYNC_REQUESTS_PER_MINUTE": "60",
            "CONVSYNC_TOKENS_PER_MINUTE": "1000",
            "CONVSYNC_REQUEST_TIMEOUT_SECONDS": "9",
            "CONVSYNC_REDACT": "false",
            "CONVSYNC_OPENAI_MODE": "auto",
            "CONVSYNC_BATCH_THRESHOLD": "500",
        }
    )
    resources = build_resources(settings)
    store = BlobStoreResource.from_settings(settings)
    assert (store.url, store.s3.endpoint_url) == ("s3://bucket/prefix", "http://127.0.0.1:9000")
    assert resources["blob_store"].data == store.model_dump() | {"s3": store.s3}
    lock = resources["blob_lock"]
    assert (lock.ttl_seconds, lock.wait_seconds) == (30.0, 0.5)
    assert lock.blob_store is resources["blob_store"]  # one store, shared by key
    analyzer = resources["analyzer"]
    assert analyzer.model_dump() == {
        "kind": "openai",
        "model": "gpt-test",
        "base_url": "http://127.0.0.1:9001/v1",
        "concurrency": 3,
        "batch_size": 10,
        "requests_per_minute": 60,
        "tokens_per_minute": 1000,
        "request_timeout_seconds": 9.0,
        "redact": False,
        "mode": "auto",
        "batch_threshold": 500,
        "redact_patterns": [],
    }
    # The key is no field of any resource: it stays in the environment, for the SDK alone.
    shown = serialize_value(
        [store.model_dump(mode="json"), lock.ttl_seconds, analyzer.model_dump(mode="json")]
    )
    assert "NEVER-IN-CONFIG" not in shown
    assert not any("key" in name for name in AnalyzerResource.model_fields)


# (variable, resource class, field, lowest valid, highest valid, value below, value above)
BOUNDS = [
    ("CONVSYNC_LOCK_TTL_SECONDS", BlobLockResource, "ttl_seconds", 1.0, 86_400.0, 0.5, 86_401.0),
    ("CONVSYNC_LOCK_WAIT_SECONDS", BlobLockResource, "wait_seconds", 0.0, 3_600.0, -1.0, 3_601.0),
    ("CONVSYNC_CONCURRENCY", AnalyzerResource, "concurrency", 1, 1_000, 0, 1_001),
    ("CONVSYNC_BATCH_SIZE", AnalyzerResource, "batch_size", 1, 10_000_000, 0, 10_000_001),
    ("CONVSYNC_REQUESTS_PER_MINUTE", AnalyzerResource, "requests_per_minute", 1, 10**7, 0, 10**7 + 1),  # noqa: E501
    ("CONVSYNC_TOKENS_PER_MINUTE", AnalyzerResource, "tokens_per_minute", 1, 10**9, 0, 10**9 + 1),
    ("CONVSYNC_REQUEST_TIMEOUT_SECONDS", AnalyzerResource, "request_timeout_seconds", 1.0, 3600.0, 0.5, 3601.0),  # noqa: E501
    ("CONVSYNC_BATCH_THRESHOLD", AnalyzerResource, "batch_threshold", 0, 10**8, -1, 10**8 + 1),
]  # fmt: skip


def test_the_openai_mode_is_checked_like_the_others() -> None:
    assert load_settings({"CONVSYNC_OPENAI_MODE": " Batch "}).openai_mode == "batch"
    assert load_settings({}).openai_mode == "live"
    with pytest.raises(SettingsError, match="CONVSYNC_OPENAI_MODE must be 'live', 'batch' or"):
        load_settings({"CONVSYNC_OPENAI_MODE": "cheap"})
    with pytest.raises(ValidationError, match="mode"):
        AnalyzerResource(mode="cheap")  # type: ignore[arg-type]
    for good in ("10", "86400"):
        assert load_settings({"CONVSYNC_BATCH_POLL_SECONDS": good}).batch_poll_seconds == int(good)
    for bad in ("9", "86401", "soon"):
        with pytest.raises(SettingsError, match="CONVSYNC_BATCH_POLL_SECONDS"):
            load_settings({"CONVSYNC_BATCH_POLL_SECONDS": bad})


@pytest.mark.parametrize(("variable", "cls", "field", "low", "high", "below", "above"), BOUNDS)
def test_a_run_override_is_held_to_the_bounds_of_its_variable(
    variable: str, cls: type, field: str, low: float, high: float, below: float, above: float
) -> None:
    """The launchpad cannot set what the variable may not: both refuse the same values."""
    extra = {"blob_store": BlobStoreResource(url="unused")} if cls is BlobLockResource else {}
    for good in (low, high):
        load_settings({variable: str(good)})
        cls(**extra, **{field: good})
    for bad in (below, above):
        with pytest.raises(SettingsError, match=variable):
            load_settings({variable: str(bad)})
        with pytest.raises(ValidationError, match=field):
            cls(**extra, **{field: bad})


def test_a_launchpad_override_holds_for_one_run_and_reaches_the_lock(tmp_path: Path) -> None:
    default_root, other_root = tmp_path / "default", tmp_path / "other"
    for root in (default_root, other_root):
        LocalStore(root).write(f"incoming/{D}/export.csv", UPLOAD)
    settings = settings_for({"CONVSYNC_STORE": str(default_root)})
    resources = build_resources(settings)
    instance = DagsterInstance.ephemeral()
    overrides = {
        "blob_store": {"config": {"url": str(other_root)}},
        "blob_lock": {"config": {"wait_seconds": 0.0}},
        "analyzer": {"config": {"batch_size": 1}},
    }

    once = materialize(
        build_assets(settings),
        partition_key=D,
        resources=resources,
        run_config={"resources": overrides},
        instance=instance,
    )

    assert once.success
    assert not (default_root / "conversations").exists()
    assert not (default_root / "locks").exists()
    document = json.loads(LocalStore(other_root).read(document_key(D)) or b"{}")
    assert document["summary"]["success"] == 1 and document["summary"]["pending"] == 1
    (analysis,) = once.asset_materializations_for_node("ai_analysis")
    assert analysis.metadata["deferred_by_batch_size"].value == 1
    # The lock followed the store override: the three writers (merge, analysis, summary) each
    # took the lease in the other store, and the document's last save (the analysis) recorded
    # its lease's fencing generation.
    lease = json.loads(LocalStore(other_root).read(lock_key(D)) or b"{}")
    assert lease["generation"] == 3
    assert document["_blobMeta"]["lockGeneration"] == 2

    # The next run, without overrides, is back on the configured store and bounds.
    after = materialize(build_assets(settings), partition_key=D, resources=resources)
    assert after.success
    document = json.loads(LocalStore(default_root).read(document_key(D)) or b"{}")
    assert document["summary"]["success"] == 2


def _blob_store(factory: StoreFactory, url: str) -> BlobStoreResource:
    s3 = S3Resource(endpoint_url=factory.endpoint_url) if factory.endpoint_url else None
    return BlobStoreResource(url=url, s3=s3)


def test_the_lock_resource_hands_out_fenced_leases_in_its_store(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    lock = BlobLockResource(blob_store=_blob_store(store_factory, store.url), wait_seconds=0)
    # Another process's view: its own resource and its own connection to the same store.
    rival = BlobLockResource(blob_store=_blob_store(store_factory, store.url), wait_seconds=0)
    assert isinstance(lock.blob_store.open(), S3Store if store_factory.kind == "s3" else LocalStore)

    with lock.date_lock(D, "run-a") as first:
        assert store.read(lock_key(D)) is not None  # the lease lives in the configured store
        with pytest.raises(DateLockedError, match="run-a"), rival.date_lock(D, "run-b"):
            pass
    with rival.date_lock(D, "run-b") as second:
        assert second.generation > first.generation  # the fencing token only grows


def test_a_folder_store_never_imports_dagster_aws(tmp_path: Path) -> None:
    """dagster-aws costs as much to import as Dagster: only an S3 configuration pays it."""
    code = "import sys, convsync_pipeline.definitions; print('dagster_aws' in sys.modules)"
    env = {"PATH": os.environ.get("PATH", ""), "CONVSYNC_STORE": str(tmp_path)}
    for store, imported in ((str(tmp_path), "False"), ("s3://bucket/prefix", "True")):
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "CONVSYNC_STORE": store},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == imported, (store, result.stderr[-2000:])


def test_a_bad_store_url_from_the_launchpad_names_the_field() -> None:
    with pytest.raises(StoreError, match=r"blob_store\.url \(CONVSYNC_STORE\) must be a path"):
        BlobStoreResource(url="ftp://example.com/x").open()


def test_both_analysers_come_from_the_one_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(AnalyzerResource().make(), LocalAnalyzer)
    openai = AnalyzerResource(
        kind="openai",
        model="gpt-test",
        base_url="http://127.0.0.1:9/v1",
        request_timeout_seconds=7,
        redact=False,
    ).make()
    assert isinstance(openai, OpenAIAnalyzer)
    assert (openai.model, openai.base_url, openai.timeout_seconds, openai.redact) == (
        "gpt-test",
        "http://127.0.0.1:9/v1",
        7,
        False,
    )
    with pytest.raises(ValidationError):
        AnalyzerResource(kind="claude")  # type: ignore[arg-type]


def test_openai_chosen_for_one_run_without_a_key_fails_at_once_and_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = tmp_path / "store"
    LocalStore(root).write(f"incoming/{D}/export.csv", UPLOAD)
    settings = settings_for({"CONVSYNC_STORE": str(root)})

    result = materialize(
        build_assets(settings),
        partition_key=D,
        resources=build_resources(settings),
        run_config={"resources": {"analyzer": {"config": {"kind": "openai"}}}},
        raise_on_error=False,
    )

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "ai_analysis"
    assert "OPENAI_API_KEY is not set" in failure.step_failure_data.user_failure_data.description
    document = json.loads(LocalStore(root).read(document_key(D)) or b"{}")
    assert {c["processingStatus"] for c in document["conversations"]} == {"pending"}
    assert {c["retryCount"] for c in document["conversations"]} == {0}


def test_analyser_not_ready_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    AnalyzerResource(kind="local").check_ready()
    with pytest.raises(AnalyzerNotReadyError, match="OPENAI_API_KEY"):
        AnalyzerResource(kind="openai").check_ready()
