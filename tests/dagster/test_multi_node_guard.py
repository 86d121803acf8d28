"""A local folder store is refused when the instance launches runs on other nodes."""

from __future__ import annotations

import pytest
from dagster import instance_for_test

from convsync_pipeline.resources.blob_store import (
    FolderStoreOnManyNodesError,
    refuse_folder_store_on_many_nodes,
)
from tests.dagster.helpers import run_date, settings_for


@pytest.mark.parametrize("launcher", ["K8sRunLauncher", "DockerRunLauncher", "EcsRunLauncher"])
def test_folder_store_refused_with_multi_node_launchers(tmp_path, launcher):
    with pytest.raises(FolderStoreOnManyNodesError, match="set CONVSYNC_STORE to s3://"):
        refuse_folder_store_on_many_nodes(str(tmp_path), launcher)


def test_s3_store_and_single_node_launchers_are_fine(tmp_path):
    refuse_folder_store_on_many_nodes("s3://bucket/prefix", "K8sRunLauncher")
    refuse_folder_store_on_many_nodes(str(tmp_path), "DefaultRunLauncher")


def test_a_run_on_a_docker_launcher_instance_fails_before_touching_the_store(tmp_path):
    store_root = tmp_path / "store"
    settings = settings_for({"CONVSYNC_STORE": str(store_root)})
    overrides = {
        "run_launcher": {"module": "dagster_docker", "class": "DockerRunLauncher", "config": {}}
    }
    with instance_for_test(overrides=overrides) as instance:
        result = run_date(settings, "2026-02-11", instance=instance)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "DockerRunLauncher" in failure.step_failure_data.error.to_string()
    assert not (store_root / "conversations").exists()
