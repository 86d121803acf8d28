"""The viewers' webserver (deploy/access/viewer.sh: `dagster-webserver --read-only`) shows
assets and refuses to launch anything: a real webserver, asked over GraphQL as the UI asks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.dagster_dev import (
    ROOT,
    DagsterDev,
    DagsterDevError,
    convsync_env,
    free_port,
    stop,
)

D = "2026-02-11"
ASSETS = """
query Assets {
  assetNodes { assetKey { path } isPartitioned }
}
"""
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on Error { message }
  }
}
"""


@contextlib.contextmanager
def read_only_webserver(home: Path, store: Path) -> Iterator[DagsterDev]:
    """The command of deploy/access/viewer.sh, on the convsync definitions directly."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "webserver.log"
    full_env = {**os.environ, "DAGSTER_HOME": str(home)}
    for name, value in convsync_env(store).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    command = [
        sys.executable, "-m", "dagster_webserver", "-m", "convsync_pipeline.definitions",
        "-h", "127.0.0.1", "-p", str(port), "--read-only",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = DagsterDev(process=process, port=port, home=home, log_path=log_path)
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.exit_code = stop(process)


def test_viewer_script_runs_the_webserver_read_only() -> None:
    script = (ROOT / "deploy/access/viewer.sh").read_text()
    assert "dagster-webserver" in script and "--read-only" in script


@pytest.mark.slow
def test_read_only_webserver_reads_assets_and_refuses_launches(tmp_path: Path) -> None:
    with read_only_webserver(tmp_path / "home", tmp_path / "store") as server:
        server.wait_for_location("convsync_pipeline.definitions")
        nodes = server.graphql(ASSETS)["assetNodes"]
        names = {node["assetKey"]["path"][-1] for node in nodes}
        assert {"raw_conversations", "ai_analysis", "daily_summary"} <= names

        with pytest.raises(DagsterDevError, match="launchPartitionBackfill failed"):
            server.launch_partition_backfill(
                {"assetSelection": [{"path": ["ai_analysis"]}], "partitionNames": [D]}
            )
        backfill = server.graphql(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p)
            { __typename ... on Error { message } } }""",
            {"p": {"assetSelection": [{"path": ["ai_analysis"]}], "partitionNames": [D]}},
        )["launchPartitionBackfill"]
        assert backfill["__typename"] == "UnauthorizedError", backfill

        run = server.graphql(
            LAUNCH_RUN,
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": "convsync_pipeline.definitions",
                        "repositoryName": "__repository__",
                        "jobName": "__ASSET_JOB",
                        "assetSelection": [{"path": ["ai_analysis"]}],
                    },
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": D}]},
                }
            },
        )["launchRun"]
        assert run["__typename"] == "UnauthorizedError", run
    assert not (tmp_path / "store" / "conversations").exists(), "nothing ran"
