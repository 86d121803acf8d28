"""Backfills of a date range run as one run (`BackfillPolicy.single_run()`), date by date.

- the four assets carry the policy, and Dagster's own backfill planner turns a range into one
  run tagged `dagster/asset_partition_range_start`, which the instances' run queue limits;
- a range run writes exactly the documents and summaries that runs of each date write, with
  one materialization per date carrying that date's numbers;
- each date is worked on under its own lock: a date locked by another run fails alone, the
  others are done, and nothing of the locked date is touched or charged;
- a step retry of a range redoes only the dates that asked for it (attempt accounting stays
  exact, `CONVSYNC_BATCH_SIZE` holds per date); a system failure stops the run at once with
  the one message a run of one date gives.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, BackfillPolicy, DagsterInstance
from dagster._core.definitions.automation_tick_evaluation_context import (
    build_run_requests_with_backfill_policies,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.tags import TagConcurrencyLimitsCounter

from convsync_pipeline.core.keys import document_key, summary_key
from convsync_pipeline.definitions import build_definitions
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store
from tests.dagster.helpers import csv_upload, run_date, run_range, settings_for
from tests.fixtures.openai_server import FakeOpenAIServer, by_conversation, sequence

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ["raw_conversations", "normalized_conversations", "ai_analysis", "daily_summary"]
D1, D2, D3 = "2026-02-01", "2026-02-02", "2026-02-03"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def upload_dates(store: Store, spec: dict[str, list[str]], name: str = "export") -> None:
    """One upload per date: {date: [conversation ids]}, two messages each."""
    for date, ids in spec.items():
        rows = []
        for n, cid in enumerate(ids):
            rows.append((cid, f"{date}T09:{n:02d}:00Z", "user", f"My order {n} never arrived"))
            rows.append((cid, f"{date}T09:{n:02d}:30Z", "agent", "Sorry! I have re-sent it."))
        store.write(f"incoming/{date}/{name}.csv", csv_upload(*rows))


def document(store: Store, date: str) -> dict[str, Any]:
    data = store.read(document_key(date))
    assert data is not None, f"no document for {date}"
    return json.loads(data)


def statuses(store: Store, date: str) -> dict[str, tuple[str, int]]:
    return {
        c["id"]: (c["processingStatus"], c["retryCount"])
        for c in document(store, date)["conversations"]
    }


def comparable(store: Store, date: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The date's document and summary without the wall-clock stamps."""
    doc = document(store, date)
    for conversation in doc["conversations"]:
        conversation.pop("processedAt")
    doc["_blobMeta"].pop("updatedAt")
    summary = json.loads(store.read(summary_key(date)) or b"null")
    summary.pop("generatedAt")
    return doc, summary


def metadata_by_date(result: Any, asset: str) -> dict[str, dict[str, Any]]:
    """asset's materializations in the run: {partition: {key: value}}, one per date."""
    found: dict[str, dict[str, Any]] = {}
    for materialization in result.asset_materializations_for_node(asset):
        assert materialization.partition not in found, "two materializations of one date"
        found[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    return found


def step_retries(result: Any) -> int:
    return sum(1 for event in result.all_events if event.is_step_up_for_retry)


def failure_message(result: Any, step: str) -> str:
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == step
    user = failure.step_failure_data.user_failure_data
    return user.description if user is not None else failure.step_failure_data.error.message


def run_tags(instance: DagsterInstance, result: Any) -> dict[str, str]:
    """The run's tags as stored now (the result's own copy is from the run's start)."""
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


@pytest.fixture
def pipeline(store_factory) -> tuple[Store, Settings]:
    store = store_factory()
    return store, settings_for(store_factory.env(store), CONVSYNC_LOCK_WAIT_SECONDS="0.2")


# ------------------------------------------------------------------------------ definitions
def test_the_four_assets_carry_the_single_run_backfill_policy(tmp_path: Path) -> None:
    defs = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path)}))
    graph = defs.resolve_asset_graph()
    for name in ASSETS:
        assert graph.get(AssetKey(name)).backfill_policy == BackfillPolicy.single_run(), name
    assert graph.get(AssetKey("dead_letters")).backfill_policy is None  # not partitioned


def _root_and_deploy_limits() -> dict[str, list[dict[str, Any]]]:
    files = [ROOT / "dagster.yaml", *sorted((ROOT / "deploy").rglob("dagster.yaml"))]
    return {
        str(path.relative_to(ROOT)): yaml.safe_load(path.read_text())["concurrency"]["runs"][
            "tag_concurrency_limits"
        ]
        for path in files
    }


def test_a_range_backfill_is_one_run_and_the_run_queue_allows_one_range_run_at_a_time(
    tmp_path: Path,
) -> None:
    """Dagster's own backfill planner, on our asset graph: three dates of the four assets are
    one run with range tags and no `dagster/partition`. Every instance file allows one run with
    that tag at a time, whatever its start, so overlapping backfills never work on a shared
    date at once; a one-date run inside the range is not held back by the queue (different
    tags), so the date lock is what keeps the two apart (next tests)."""
    graph = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path)})).resolve_asset_graph()
    wanted = [AssetKeyPartitionKey(AssetKey(a), d) for a in ASSETS for d in (D1, D2, D3)]
    with DagsterInstance.ephemeral() as instance:
        (request,) = build_run_requests_with_backfill_policies(wanted, graph, instance)
    assert request.tags[RANGE_START] == D1 and request.tags[RANGE_END] == D3
    assert "dagster/partition" not in request.tags
    assert set(request.asset_selection or []) == {AssetKey(a) for a in ASSETS}

    range_run = DagsterRun(job_name="__ASSET_JOB", tags=dict(request.tags))
    same_start = DagsterRun(job_name="__ASSET_JOB", tags={RANGE_START: D1, RANGE_END: D2})
    other_start = DagsterRun(job_name="__ASSET_JOB", tags={RANGE_START: D2, RANGE_END: D3})
    one_date = DagsterRun(job_name="convsync_daily", tags={"dagster/partition": D2})
    same_date = DagsterRun(job_name="convsync_daily", tags={"dagster/partition": D2})
    for name, limits in _root_and_deploy_limits().items():
        assert {"key": RANGE_START, "limit": 1} in limits, name
        counter = TagConcurrencyLimitsCounter(limits, [range_run, one_date])
        assert counter.is_blocked(same_start), name
        assert counter.is_blocked(other_start), name  # overlapping ranges: one at a time
        assert counter.is_blocked(same_date), name
        assert not counter.is_blocked(
            DagsterRun(job_name="convsync_daily", tags={"dagster/partition": D3})
        ), name


# ------------------------------------------------------------------------------ range runs
def test_a_range_run_writes_what_runs_of_each_date_write(store_factory) -> None:
    per_date_store, range_store = store_factory(), store_factory()
    spec = {D1: ["a-1", "a-2"], D3: ["c-1"]}  # D2 has no upload: an empty document
    for store in (per_date_store, range_store):
        upload_dates(store, spec)
        upload_dates(store, {D2: ["b-1"], D3: ["c-2"]}, name="second")

    per_date = settings_for(store_factory.env(per_date_store))
    for date in (D1, D2, D3):
        assert run_date(per_date, date).success, date
    result = run_range(settings_for(store_factory.env(range_store)), D1, D3)
    assert result.success

    for date in (D1, D2, D3):
        assert comparable(range_store, date) == comparable(per_date_store, date), date
    # lockGeneration above counts the date's lock acquisitions: the same in both.

    # One materialization per date and asset, each with its own date's numbers.
    raw = metadata_by_date(result, "raw_conversations")
    assert {d: m["uploads_staged_for_date"] for d, m in raw.items()} == {D1: 1, D2: 1, D3: 2}
    assert all(m["uploads_ingested"] == 4 for m in raw.values())  # parsed once, in total
    merged = metadata_by_date(result, "normalized_conversations")
    assert {d: m["new_conversations"] for d, m in merged.items()} == {D1: 2, D2: 1, D3: 2}
    analysed = metadata_by_date(result, "ai_analysis")
    assert {d: m["succeeded"] for d, m in analysed.items()} == {D1: 2, D2: 1, D3: 2}
    summaries = metadata_by_date(result, "daily_summary")
    assert {d: m["success"] for d, m in summaries.items()} == {D1: 2, D2: 1, D3: 2}
    assert {d: m["document_version"] for d, m in summaries.items()} == {
        d: document(range_store, d)["_blobMeta"]["version"] for d in (D1, D2, D3)
    }

    # The checks: one evaluation per check for the whole range, naming its dates.
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(evaluations) == {
        "ids_unique",
        "processed_count_matches",
        "nothing_left_processing",
        "no_failed",
        "single_analysis_version",
        "summary_matches_document",
    }
    for evaluation in evaluations.values():
        assert evaluation.passed, evaluation
        assert evaluation.metadata["dates"].value == 3
        assert (
            evaluation.metadata["first_date"].value,
            evaluation.metadata["last_date"].value,
        ) == (
            D1,
            D3,
        )

    # A second range run changes nothing and analyses nothing again.
    again = run_range(settings_for(store_factory.env(range_store)), D1, D3)
    assert again.success
    assert all(m["selected"] == 0 for m in metadata_by_date(again, "ai_analysis").values())
    for date in (D1, D2, D3):
        assert comparable(range_store, date)[0] == comparable(per_date_store, date)[0], date


def test_a_date_locked_by_another_run_fails_alone(pipeline) -> None:
    store, settings = pipeline
    upload_dates(store, {D1: ["a-1"], D2: ["b-1", "b-2"], D3: ["c-1"]})
    first_two = ["raw_conversations", "normalized_conversations"]
    assert run_range(settings, D1, D3, selection=first_two).success
    before = document(store, D2)

    with store.date_lock(D2, "another-run", ttl_seconds=60, wait_seconds=0):
        result = run_range(settings, D1, D3, selection=["ai_analysis", "daily_summary"])
    assert not result.success
    message = failure_message(result, "ai_analysis")
    assert f"date {D2} is locked by" in message and "another-run" in message, message
    assert D1 not in message and D3 not in message, message
    assert step_retries(result) == 0, "a lock conflict alone is not retried in the run"
    # The other dates are fully analysed; the locked one is untouched and charged nothing.
    assert statuses(store, D1) == {"a-1": ("success", 0)}
    assert statuses(store, D3) == {"c-1": ("success", 0)}
    assert document(store, D2) == before
    assert statuses(store, D2) == {"b-1": ("pending", 0), "b-2": ("pending", 0)}

    # Once the lock is free, the same range completes; the done dates are no-ops.
    result = run_range(settings, D1, D3)
    assert result.success
    analysed = metadata_by_date(result, "ai_analysis")
    assert {d: m["succeeded"] for d, m in analysed.items()} == {D1: 0, D2: 2, D3: 0}
    assert statuses(store, D2) == {"b-1": ("success", 0), "b-2": ("success", 0)}


class _ReleaseOnLine(logging.Handler):
    def __init__(self, line: str, release: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.line, self.event = line, release  # not `self.release`: a Handler method

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.line):
            self.event.set()


def test_a_merge_retry_redoes_only_the_locked_date(pipeline) -> None:
    """normalized_conversations waits for a locked date with its RetryPolicy (5 s base delay):
    the retry merges that date only; the dates merged by the first try are left alone."""
    store, settings = pipeline
    upload_dates(store, {D1: ["a-1"], D2: ["b-1"], D3: ["c-1"]})
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.date_lock(D2, "another-run", ttl_seconds=60, wait_seconds=0):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    # Released once the first try has met the lock (its "[Lock] Failed" line), however long
    # the run took to get there on a loaded machine; the retry then finds the date free.
    met = _ReleaseOnLine(f"[Lock] Failed to acquire lock for {D2}", release)
    logging.getLogger("convsync").addHandler(met)
    instance = DagsterInstance.ephemeral()
    try:
        result = run_range(
            settings, D1, D3, instance, ["raw_conversations", "normalized_conversations"]
        )
    finally:
        logging.getLogger("convsync").removeHandler(met)
        release.set()
        holder.join()
    assert result.success
    assert step_retries(result) >= 1
    merged = metadata_by_date(result, "normalized_conversations")
    assert merged[D2]["new_conversations"] == 1
    for date in (D1, D3):
        assert "new_conversations" not in merged[date], merged[date]
        assert "earlier try" in merged[date]["this_try"]
    for date in (D1, D2, D3):
        assert len(document(store, date)["conversations"]) == 1
    tag = json.loads(run_tags(instance, result)["convsync/normalized_conversations.retry"])
    assert tag["dates"] == [D2] and tag["run"] == result.run_id


# ------------------------------------------------------------------------------ analysis retries
API_KEY = "sk-test-SECRET-1234567890"


@pytest.fixture
def openai_range(
    tmp_path: Path, openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Store, Any]:
    from convsync_pipeline.store.local import LocalStore

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    root = tmp_path / "store"

    def settings(**extra: str) -> Settings:
        return settings_for(
            {
                "CONVSYNC_STORE": str(root),
                "CONVSYNC_ANALYZER": "openai",
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": openai_server.base_url,
                "CONVSYNC_RETRY_DELAY_SECONDS": "0.05",
                "CONVSYNC_REQUEST_TIMEOUT_SECONDS": "5",
            },
            **extra,
        )

    return LocalStore(root), settings


def test_a_retry_of_a_range_redoes_only_the_dates_that_asked(openai_range, openai_server) -> None:
    """D2's conversation fails once (invalid JSON): the step retries, and the retry sends only
    D2's conversation again; the other dates are not even locked again."""
    store, settings = openai_range
    upload_dates(store, {D1: ["a-1", "a-2"], D2: ["b-bad", "b-ok"], D3: ["c-1"]})
    openai_server.behaviour = by_conversation({"b-bad": sequence("invalid_json", "success")})
    instance = DagsterInstance.ephemeral()
    result = run_range(settings(), D1, D3, instance)
    assert result.success
    assert step_retries(result) == 1
    assert openai_server.sent_counts() == {"a-1": 1, "a-2": 1, "b-bad": 2, "b-ok": 1, "c-1": 1}
    assert statuses(store, D2) == {"b-bad": ("success", 1), "b-ok": ("success", 0)}
    analysed = metadata_by_date(result, "ai_analysis")
    assert analysed[D2]["succeeded"] == 1 and analysed[D2]["selected"] == 1
    for date in (D1, D3):
        assert "earlier try" in analysed[date]["this_try"], analysed[date]
    tag = json.loads(run_tags(instance, result)["convsync/ai_analysis.retry"])
    assert tag == {"run": result.run_id, "try": 1, "dates": [D2]}


def test_the_batch_size_holds_per_date_across_retries_of_a_range(
    openai_range, openai_server
) -> None:
    store, settings = openai_range
    upload_dates(store, {D1: ["a-1", "a-2", "a-3"], D2: ["b-bad"]})
    openai_server.behaviour = by_conversation({"b-bad": sequence("invalid_json", "success")})
    result = run_range(settings(CONVSYNC_BATCH_SIZE="1"), D1, D2)
    assert result.success
    assert step_retries(result) == 1
    # One batch of D1 in the run, as in a run of D1 alone: two left for the next run.
    assert sorted(statuses(store, D1).values()) == [
        ("pending", 0),
        ("pending", 0),
        ("success", 0),
    ]
    assert statuses(store, D2) == {"b-bad": ("success", 1)}


def test_attempts_stay_exact_when_a_date_fails_every_try(openai_range, openai_server) -> None:
    store, settings = openai_range
    upload_dates(store, {D1: ["a-1"], D2: ["b-bad"], D3: ["c-1"]})
    openai_server.behaviour = by_conversation({"b-bad": "invalid_json"})
    result = run_range(settings(), D1, D3)
    assert result.success, "a conversation ending failed does not fail the run"
    assert step_retries(result) == 2  # CONVSYNC_MAX_ATTEMPTS=3
    assert openai_server.sent_counts() == {"a-1": 1, "b-bad": 3, "c-1": 1}
    assert statuses(store, D2) == {"b-bad": ("failed", 3)}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_failed"].passed
    assert checks["no_failed"].metadata["failing_dates"].value == [D2]
    assert checks["processed_count_matches"].passed


def test_a_system_failure_stops_a_range_at_once_with_one_message(
    openai_range, openai_server
) -> None:
    store, settings = openai_range
    upload_dates(store, {D1: ["a-1"], D2: ["b-1"], D3: ["c-1"]})
    openai_server.behaviour = "invalid_api_key"
    result = run_range(settings(), D1, D3)
    assert not result.success
    assert step_retries(result) == 0
    message = failure_message(result, "ai_analysis")
    for date in (D1, D2, D3):  # nothing was charged, nothing analysed
        assert set(statuses(store, date).values()) == {("pending", 0)}, date
    assert D2 not in message and D3 not in message
    # The same message a run of one date gives.
    single = run_date(settings(), D1)
    assert not single.success
    assert failure_message(single, "ai_analysis") == message
