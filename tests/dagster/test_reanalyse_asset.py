"""Re-analysis from Dagster: the `reanalyse` config field of `ai_analysis` (the launchpad of a
run or backfill), its metadata, the mixed-versions warning, and the schedule's setting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dagster import build_schedule_context, materialize, validate_run_config

from convsync_pipeline.analyzers.openai import openai_analysis_version
from convsync_pipeline.definitions import build_assets, build_definitions
from convsync_pipeline.resources import build_resources
from convsync_pipeline.settings import Settings, SettingsError, load_settings
from tests.dagster.helpers import csv_upload, settings_for
from tests.fixtures.openai_server import FakeOpenAIServer

D = "2026-02-11"
REANALYSE = {"ops": {"ai_analysis": {"config": {"reanalyse": True}}}}


@pytest.fixture(autouse=True)
def _openai_env(monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAIServer) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-reanalyse-0000")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)


def openai_settings(tmp_path: Any, server: FakeOpenAIServer, model: str) -> Settings:
    return settings_for(
        {
            "CONVSYNC_STORE": str(tmp_path / "store"),
            "CONVSYNC_ANALYZER": "openai",
            "CONVSYNC_OPENAI_MODEL": model,
            "OPENAI_API_KEY": "sk-test-reanalyse-0000",
            "OPENAI_BASE_URL": server.base_url,
            "CONVSYNC_RETRY_DELAY_SECONDS": "0.05",
        }
    )


def run(settings: Settings, run_config: dict | None = None) -> Any:
    result = materialize(
        build_assets(settings),
        partition_key=D,
        resources=build_resources(settings),
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success
    return result


def upload(settings: Settings, name: str, *ids: str) -> None:
    from convsync_pipeline.resources.blob_store import open_store

    rows = [(cid, f"{D}T09:00:00Z", "user", f"Where is my parcel {cid}?") for cid in ids]
    open_store(settings).write(f"incoming/{D}/{name}.csv", csv_upload(*rows))


def metadata(result: Any) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("ai_analysis")
    return {key: value.value for key, value in materialization.metadata.items()}


def version_check(result: Any) -> Any:
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "single_analysis_version"
    ]
    return check


def test_launchpad_reanalysis_and_the_mixed_versions_warning(tmp_path, openai_server):
    old = openai_settings(tmp_path, openai_server, "gpt-4o-mini")
    new = openai_settings(tmp_path, openai_server, "gpt-4.1-mini")
    upload(old, "first", "a1", "a2", "a3")
    first = run(old)
    assert metadata(first)["at_current_version"] == 3
    assert metadata(first)["analysis_version"] == openai_analysis_version("gpt-4o-mini")
    assert version_check(first).passed

    # A model change alone re-analyses nothing: never by surprise.
    sent = openai_server.total_requests
    unchanged = run(new)
    assert openai_server.total_requests == sent
    assert metadata(unchanged)["at_current_version"] == 0
    assert metadata(unchanged)["other_versions"] == 3

    # New conversations get the new version: the date is mixed, a warning, not a failure.
    upload(new, "second", "b1")
    mixed = run(new)
    check = version_check(mixed)
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["versions"].value == 2
    assert mixed.success

    # The launchpad's `reanalyse: true`: each old answer sent once with the new version.
    done = run(new, REANALYSE)
    assert metadata(done)["reanalysis_marked"] == 3
    assert metadata(done)["at_current_version"] == 4
    assert version_check(done).passed
    by_version = openai_server.sent_counts_by_version()
    assert sorted(n for (cid, v), n in by_version.items() if v.startswith("gpt-4.1-mini")) == [
        1
    ] * 4
    sent = openai_server.total_requests
    run(new, REANALYSE)  # a finished re-analysis: nothing more is sent
    assert openai_server.total_requests == sent


@pytest.mark.parametrize("on", [False, True])
def test_the_schedule_brings_the_previous_day_up_only_if_asked(tmp_path, on):
    env = {"CONVSYNC_STORE": str(tmp_path)}
    if on:
        env["CONVSYNC_REANALYSE_ON_VERSION_CHANGE"] = "true"
    settings = settings_for(env)
    assert settings.reanalyse_on_version_change is on
    definitions = build_definitions(settings)
    schedule = definitions.resolve_schedule_def("convsync_daily_schedule")
    context = build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 2, 12, 0, 15, tzinfo=dt.UTC),
        repository_def=definitions.get_repository_def(),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == D
    config = request.run_config or {}
    assert bool(config) is on
    if on:
        assert config == REANALYSE
        job = definitions.resolve_job_def("convsync_daily")
        validate_run_config(job, config)  # the job accepts it as it is


def test_the_setting_is_validated():
    with pytest.raises(SettingsError, match="CONVSYNC_REANALYSE_ON_VERSION_CHANGE"):
        load_settings({"CONVSYNC_REANALYSE_ON_VERSION_CHANGE": "sometimes"})
    assert not load_settings({}).reanalyse_on_version_change
