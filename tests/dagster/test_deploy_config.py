"""Every instance / workspace / run-config file under deploy/ (and the root dagster.yaml) is
valid for the Dagster version we pin, checked with Dagster's own config schemas; and the
production instance really runs against PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    job,
    materialize,
    op,
    validate_run_config,
)
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.workspace.config_schema import ensure_workspace_config
from dagster._serdes import ConfigurableClassData, class_from_code_pointer

from tests.fixtures.postgres import PgConn

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

DEPLOY_INSTANCES = [
    DEPLOY / "dagster.yaml",
    DEPLOY / "k8s" / "dagster.yaml",
    DEPLOY / "docker" / "dagster.yaml",
]
ROOT_INSTANCE = ROOT / "dagster.yaml"
INSTANCE_FILES = [*DEPLOY_INSTANCES, *([ROOT_INSTANCE] if ROOT_INSTANCE.exists() else [])]

# Values for every {env: NAME} the files read; only the shape matters here.
DUMMY_ENV = {
    "DAGSTER_PG_HOST": "postgres.invalid",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_COMPUTE_LOG_BUCKET": "convsync-logs",
}

PER_PARTITION_RULES = [
    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    {"key": "dagster/asset_partition_range_start", "limit": 1},  # one range run at a time
    {"key": "convsync/ingest", "limit": 2},  # two upload ingests at a time (their memory)
]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def dummy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)


def _home_with(tmp_path: Path, source: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, home / "dagster.yaml")
    return home


def _configurable_classes(ref: InstanceRef) -> dict[str, ConfigurableClassData]:
    found = {
        "storage": ref.storage_data,
        "run_storage": ref.run_storage_data,
        "event_log_storage": ref.event_storage_data,
        "schedule_storage": ref.schedule_storage_data,
        "compute_logs": ref.compute_logs_data,
        "local_artifact_storage": ref.local_artifact_storage_data,
        "run_coordinator": ref.run_coordinator_data,
        "run_launcher": ref.run_launcher_data,
        "scheduler": ref.scheduler_data,
    }
    return {name: data for name, data in found.items() if data is not None}


def _class_config_errors(home: Path) -> list[str]:
    """Every pluggable class the instance names (storage, run launcher, compute logs, ...)
    imports and accepts its config block, env vars resolved. Checked without constructing
    them: a K8sRunLauncher or DockerRunLauncher would need a cluster / a Docker daemon."""
    errors = []
    for name, data in _configurable_classes(InstanceRef.from_dir(str(home))).items():
        klass = class_from_code_pointer(data.module_name, data.class_name)
        block = yaml.safe_load(data.config_yaml) or {}
        result = process_config(klass.config_type(), block)
        if not result.success:
            errors += [
                f"{name} ({data.module_name}.{data.class_name}): {error.message}"
                for error in result.errors or []
            ]
    return errors


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=_rel)
def test_instance_yaml_is_valid_dagster_config(path: Path, tmp_path: Path, dummy_env: None):
    home = _home_with(tmp_path, path)

    # The instance schema (Dagster's loader: also rejects run_queue + concurrency mixes).
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    assert _class_config_errors(home) == []

    # The run queue: one run per date, including range backfills.
    assert "run_queue" not in config and "run_coordinator" not in config
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == PER_PARTITION_RULES
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["max_retries"] >= 1
    assert config["telemetry"]["enabled"] is False


@pytest.mark.parametrize("path", DEPLOY_INSTANCES, ids=_rel)
def test_production_instances_use_postgres_from_env(path: Path):
    config = yaml.safe_load(path.read_text())
    database = config["storage"]["postgres"]["postgres_db"]
    assert database["scheme"] == "postgresql+psycopg2"
    assert {
        field: database[field] for field in ("username", "password", "hostname", "db_name")
    } == {
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    assert database["port"] == {"env": "DAGSTER_PG_PORT"}
    assert config["run_monitoring"]["enabled"] is True
    # Every variable the file reads is documented in its header.
    header = path.read_text().split("\nstorage:")[0]
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME",
                 "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):  # fmt: skip
        assert name in header, f"{_rel(path)} does not document {name}"


def test_the_validation_catches_a_broken_launcher_config(tmp_path: Path, dummy_env: None):
    broken = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())
    broken["run_launcher"]["config"]["job_namspace"] = "typo"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(broken))
    [error] = _class_config_errors(home)
    assert "job_namspace" in error


def test_launchers_are_the_scale_out_ones(dummy_env: None, tmp_path: Path):
    k8s = InstanceRef.from_dir(str(_home_with(tmp_path / "k8s", DEPLOY / "k8s" / "dagster.yaml")))
    docker = InstanceRef.from_dir(
        str(_home_with(tmp_path / "docker", DEPLOY / "docker" / "dagster.yaml"))
    )
    assert (k8s.run_launcher_data.module_name, k8s.run_launcher_data.class_name) == (
        "dagster_k8s",
        "K8sRunLauncher",
    )
    assert (docker.run_launcher_data.module_name, docker.run_launcher_data.class_name) == (
        "dagster_docker",
        "DockerRunLauncher",
    )


def test_workspace_yaml_points_at_the_code_server():
    path = DEPLOY / "workspace.yaml"
    config: Any = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    [entry] = config["load_from"]
    server = entry["grpc_server"]
    assert server["port"] == 4266
    assert server["location_name"] == "convsync"
    assert server["host"]


@op
def _noop() -> None:
    pass


def test_k8s_job_executor_run_config_is_valid():
    from dagster_k8s import k8s_job_executor

    @job(executor_def=k8s_job_executor)
    def k8s_example():
        _noop()

    run_config = yaml.safe_load((DEPLOY / "k8s" / "run_config.yaml").read_text())
    validate_run_config(k8s_example, run_config)


def test_docker_executor_run_config_is_valid():
    from dagster_docker import docker_executor

    @job(executor_def=docker_executor)
    def docker_example():
        _noop()

    run_config = yaml.safe_load((DEPLOY / "docker" / "run_config.yaml").read_text())
    validate_run_config(docker_example, run_config)


@pytest.mark.skipif(not ROOT_INSTANCE.exists(), reason="no root dagster.yaml yet")
def test_root_instance_loads_with_the_run_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = _home_with(tmp_path, ROOT_INSTANCE)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        _assert_one_run_per_partition(instance)


def _assert_one_run_per_partition(instance: DagsterInstance) -> None:
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    rules = {
        (rule["key"], rule["limit"], json.dumps(rule.get("value"), sort_keys=True))
        for rule in queue.tag_concurrency_limits
    }
    assert rules == {
        ("dagster/partition", 1, json.dumps({"applyLimitPerUniqueValue": True})),
        ("dagster/asset_partition_range_start", 1, "null"),
        ("convsync/ingest", 2, "null"),
    }


_PARTITIONS = DailyPartitionsDefinition(start_date="2026-01-01")


@asset(partitions_def=_PARTITIONS)
def deploy_smoke_asset(context) -> int:
    context.log.info(f"deploy smoke test for {context.partition_key}")
    return 1


def test_production_instance_runs_on_postgres(
    postgres_database: PgConn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    for name, value in postgres_database.dagster_env().items():
        monkeypatch.setenv(name, value)
    home = _home_with(tmp_path, DEPLOY / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The default IO manager writes under the working directory's storage/ otherwise.
    monkeypatch.chdir(tmp_path)

    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        _assert_one_run_per_partition(instance)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled

        result = materialize([deploy_smoke_asset], instance=instance, partition_key="2026-01-02")
        assert result.success
        run_id = result.run_id

    # Recorded in PostgreSQL, as any other process (webserver, daemon) would see it.
    with postgres_database.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, partition FROM runs WHERE run_id = %s", (run_id,))
        assert cursor.fetchall() == [("SUCCESS", "2026-01-02")]
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run_id, "ASSET_MATERIALIZATION"),
        )
        assert cursor.fetchone() == (1,)
    connection.close()

    with DagsterInstance.get() as again:
        run = again.get_run_by_id(run_id)
        assert run is not None and run.is_success
        assert run.tags["dagster/partition"] == "2026-01-02"
