"""Re-analysis by analysis version, counted where it costs money: at the server.

The fake OpenAI server counts requests per conversation and per version (the model and a hash
of the system prompt and schema it received), so "exactly once per version" is checked on
what was actually sent. Changing `CONVSYNC_OPENAI_MODEL` is a change of analysis version, as a
prompt edit is. The real analysis pass runs on both stores (folder, S3 through moto_server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from convsync_pipeline.analyzers.openai import openai_analysis_version
from convsync_pipeline.core import status
from convsync_pipeline.core.analysis import version_of
from convsync_pipeline.core.document import Conversation, DateDocument, Message
from convsync_pipeline.core.keys import document_key
from convsync_pipeline.core.summary import build_daily_summary
from convsync_pipeline.operations.deadletters import list_failed, requeue_failed
from convsync_pipeline.operations.reanalyse import plan_reanalysis, reanalyse_dates
from convsync_pipeline.pipeline.analyse import analyse_date
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.analyzer import make_analyzer
from convsync_pipeline.resources.blob_lock import locks_from_settings
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store
from tests.dagster.helpers import settings_for
from tests.fixtures.openai_server import FakeOpenAIServer, Reply, by_conversation

D = "2026-02-11"
OLD_MODEL, NEW_MODEL = "gpt-4o-mini", "gpt-4.1-mini"
MAX_ATTEMPTS = 3


@pytest.fixture(autouse=True)
def _openai_env(monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAIServer) -> None:
    """The SDK reads the key from the environment (never from settings or run config)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-reanalyse-0000")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)


def settings(store_env: dict[str, str], server: FakeOpenAIServer, model: str, **extra: str):
    return settings_for(
        {
            **store_env,
            "CONVSYNC_ANALYZER": "openai",
            "CONVSYNC_OPENAI_MODEL": model,
            "OPENAI_API_KEY": "sk-test-reanalyse-0000",
            "OPENAI_BASE_URL": server.base_url,
            "CONVSYNC_RETRY_DELAY_SECONDS": "0.05",
            "CONVSYNC_REQUEST_TIMEOUT_SECONDS": "5",
            **extra,
        }
    )


def seed(store: Store, *ids: str) -> None:
    """A date of pending conversations, as a merge leaves it."""
    conversations = [
        Conversation(
            id=cid,
            startedAt=f"{D}T09:00:00Z",
            endedAt=f"{D}T09:05:00Z",
            messages=[
                Message(role="user", content=f"My order {cid} is late", timestamp=f"{D}T09:00Z"),
                Message(role="agent", content="Sorry! I re-sent it.", timestamp=f"{D}T09:01Z"),
            ],
            source="test",
            processingStatus="pending",
        )
        for cid in ids
    ]
    document = DateDocument(date=D, conversations=conversations).sealed()
    store.write(document_key(D), document.to_json_bytes())


def analyse(store: Store, config: Settings) -> Any:
    return analyse_date(
        store, locks_from_settings(store, config), config, lambda: make_analyzer(config), D, "t"
    )


def reanalyse(store: Store, config: Settings, owner: str = "t") -> Any:
    return reanalyse_dates(
        store,
        locks_from_settings(store, config),
        config,
        lambda: make_analyzer(config),
        [D],
        openai_analysis_version(config.openai_model),
        owner=owner,
    )


def state(store: Store) -> dict[str, Conversation]:
    return {c.id: c for c in load_document(store, D).document.conversations}


def per_version(server: FakeOpenAIServer, model: str) -> dict[str, int]:
    return {
        cid: n
        for (cid, version), n in server.sent_counts_by_version().items()
        if version.startswith(f"{model}:")
    }


def test_reanalysis_sends_once_per_version_and_keeps_old_answers(store_factory, openai_server):
    store = store_factory()
    old = settings(store_factory.env(store), openai_server, OLD_MODEL)
    new = settings(store_factory.env(store), openai_server, NEW_MODEL)
    seed(store, "c1", "c2", "c3", "c-refused")
    analyse(store, old)
    before = state(store)
    old_version, new_version = (openai_analysis_version(m) for m in (OLD_MODEL, NEW_MODEL))
    assert {version_of(c.analysis) for c in before.values()} == {old_version}
    assert per_version(openai_server, OLD_MODEL) == dict.fromkeys(before, 1)

    # The dry run: counts, tokens and cost at both prices; nothing sent, nothing written.
    version_before = load_document(store, D).document.version
    plan = plan_reanalysis(store, new, [D], new_version)
    assert plan.conversations == 4 and plan.usage.promptTokens > 0
    live, batch = plan.cost_usd(), plan.cost_usd(batch=True)
    assert live is not None and batch is not None and 0 < batch < live
    assert openai_server.total_requests == 4
    assert load_document(store, D).document.version == version_before

    openai_server.behaviour = by_conversation({"c-refused": "refusal"})
    (report,) = reanalyse(store, new)
    assert report.reanalysis_marked == 4 and report.succeeded == 3
    assert report.reanalysis_failed == 1

    after = state(store)
    assert per_version(openai_server, NEW_MODEL) == {"c1": 1, "c2": 1, "c3": 1, "c-refused": 3}
    assert per_version(openai_server, OLD_MODEL) == dict.fromkeys(before, 1)
    for cid in ("c1", "c2", "c3"):
        assert after[cid].processing_status == "success"
        assert version_of(after[cid].analysis) == new_version
        assert after[cid].previous_analysis is None and after[cid].reanalysis is None
    refused = after["c-refused"]
    assert refused.processing_status == "success", "a failed re-analysis is not a failure"
    assert refused.analysis == before["c-refused"].analysis, "its old answer is kept"
    assert status.reanalysis_failed(refused) and refused.retry_count == MAX_ATTEMPTS
    (dead,) = list_failed(store, [D]).entries
    assert dead.id == "c-refused" and dead.reanalysis_to == new_version
    assert dead.last_error is not None and "refused" in dead.last_error
    document = load_document(store, D).document
    assert document.processed_count == 4
    summary = build_daily_summary(document)
    assert summary.analysisVersions == {new_version: 3, old_version: 1}
    assert summary.mixedVersions and summary.processedCount == 4

    # Re-running a finished re-analysis sends nothing (the failed one waits for a requeue).
    sent = openai_server.total_requests
    openai_server.behaviour = "success"
    (again,) = reanalyse(store, new)
    assert again.reanalysis_marked == 0 and again.selected == 0
    assert openai_server.total_requests == sent
    assert plan_reanalysis(store, new, [D], new_version).conversations == 0

    # A requeue after review: one more budget for the new version, the old answer kept
    # until it succeeds.
    requeued = requeue_failed(
        store, locks_from_settings(store, new), D, owner="t", ids=["c-refused"]
    )
    assert requeued.requeued == ["c-refused"] and requeued.ok
    assert state(store)["c-refused"].previous_analysis == before["c-refused"].analysis
    analyse(store, new)
    assert version_of(state(store)["c-refused"].analysis) == new_version
    assert per_version(openai_server, NEW_MODEL)["c-refused"] == MAX_ATTEMPTS + 1


def test_two_reanalyses_at_once_send_each_conversation_once(store_factory, openai_server):
    store = store_factory()
    env = store_factory.env(store)
    old = settings(env, openai_server, OLD_MODEL)
    new = settings(env, openai_server, NEW_MODEL, CONVSYNC_LOCK_WAIT_SECONDS="60")
    ids = [f"c{n}" for n in range(6)]
    seed(store, *ids)
    analyse(store, old)
    openai_server.latency = 0.1  # the two runs overlap
    errors: list[BaseException] = []
    reports: list[Any] = []

    def run(owner: str) -> None:
        try:
            reports.extend(reanalyse(store_factory.reopen(store), new, owner))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"run-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert per_version(openai_server, NEW_MODEL) == dict.fromkeys(ids, 1)
    # One run marked and sent everything; the other, holding the lock after it, found
    # nothing of another version left.
    assert sorted(r.reanalysis_marked for r in reports) == [0, 6]
    assert sorted(r.succeeded for r in reports) == [0, 6]
    new_version = openai_analysis_version(NEW_MODEL)
    assert {version_of(c.analysis) for c in state(store).values()} == {new_version}


def test_sigkill_during_reanalysis_costs_one_attempt_and_keeps_the_old_answer(
    store_factory, openai_server: FakeOpenAIServer
):
    store = store_factory()
    # On S3 the next run waits for the dead holder's lease to expire, then takes it over.
    env = {**store_factory.env(store), "CONVSYNC_LOCK_TTL_SECONDS": "3"}
    old = settings(env, openai_server, OLD_MODEL)
    new = settings(env, openai_server, NEW_MODEL, CONVSYNC_LOCK_WAIT_SECONDS="30")
    ids = ["k1", "k2", "k3"]
    seed(store, *ids)
    analyse(store, old)
    before = state(store)

    held = Reply("timeout", delay=60)  # chat requests held until the process is killed
    openai_server.behaviour = lambda request: held if request.endpoint == "chat" else "success"
    child_env = {
        **os.environ,
        **env,
        "CONVSYNC_ANALYZER": "openai",
        "CONVSYNC_OPENAI_MODEL": NEW_MODEL,
        "OPENAI_API_KEY": "sk-test-reanalyse-0000",
        "OPENAI_BASE_URL": openai_server.base_url,
        "CONVSYNC_START_DATE": "2026-01-01",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from convsync_pipeline.cli import main; "
         "sys.exit(main())", "reanalyse", "--from", D, "--to", D],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(per_version(openai_server, NEW_MODEL)) < len(ids):
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            assert time.monotonic() < deadline, "the re-analysis never reached the server"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        openai_server.reset()

    killed = state(store)
    for cid in ids:
        assert killed[cid].processing_status == "processing"
        assert killed[cid].previous_analysis == before[cid].analysis, "old answer kept"
    # Nothing lost in between: the summary still stands on the old answers.
    summary = build_daily_summary(load_document(store, D).document)
    assert summary.awaitingReanalysis == 3 and sum(summary.sentiment.values()) == 3

    (report,) = reanalyse(store, new)
    assert report.recovered_interrupted == 3 and report.reanalysis_marked == 0
    after = state(store)
    new_version = openai_analysis_version(NEW_MODEL)
    for cid in ids:
        assert after[cid].processing_status == "success"
        assert version_of(after[cid].analysis) == new_version
        assert after[cid].retry_count == 1, "the kill cost one attempt of the new version"
    assert per_version(openai_server, NEW_MODEL) == dict.fromkeys(ids, 1)  # since the reset


def test_reanalysis_through_the_batch_api(store_factory, openai_server):
    """CONVSYNC_OPENAI_MODE=batch: the marked conversations go out in one batch, their old
    answers standing meanwhile; each line runs once per version; one failing every time ends
    `success` with its old answer."""
    from convsync_pipeline.analyzers.openai_batch import BatchClient

    store = store_factory()
    env = store_factory.env(store)
    old = settings(env, openai_server, OLD_MODEL)
    new = settings(env, openai_server, NEW_MODEL, CONVSYNC_OPENAI_MODE="batch")
    ids = ["b1", "b2", "b-bad"]
    seed(store, *ids)
    analyse(store, old)
    before = state(store)
    api = openai_server.batch
    openai_server.behaviour = by_conversation({"b-bad": "schema_violation"})

    def batch_pass() -> Any:
        (report,) = reanalyse_dates(
            store,
            locks_from_settings(store, new),
            new,
            lambda: make_analyzer(new),
            [D],
            openai_analysis_version(NEW_MODEL),
            owner="t",
            make_batch_client=lambda: BatchClient(base_url=new.openai_base_url),
        )
        return report

    first = batch_pass()
    assert first.mode == "batch" and first.reanalysis_marked == 3
    submitted = state(store)
    for cid in ids:
        assert submitted[cid].processing_status == "processing"
        assert submitted[cid].previous_analysis == before[cid].analysis
    assert build_daily_summary(load_document(store, D).document).awaitingReanalysis == 3
    for _ in range(MAX_ATTEMPTS):
        api.run_to_end()
        batch_pass()
    after = state(store)
    new_version = openai_analysis_version(NEW_MODEL)
    for cid in ("b1", "b2"):
        assert version_of(after[cid].analysis) == new_version
        assert after[cid].previous_analysis is None
    assert after["b-bad"].processing_status == "success"
    assert after["b-bad"].analysis == before["b-bad"].analysis
    assert status.reanalysis_failed(after["b-bad"])
    runs = {
        cid: n
        for (cid, version), n in api.run_counts_by_version().items()
        if version.startswith(f"{NEW_MODEL}:")
    }
    assert runs == {"b1": 1, "b2": 1, "b-bad": MAX_ATTEMPTS}
    assert per_version(openai_server, NEW_MODEL) == {}, "nothing went out live"
