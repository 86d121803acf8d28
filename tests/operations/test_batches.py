"""`convsync batches [DATE]`, `convsync batches --cancel ID` and what `convsync status` says
about batches: a batch submitted through the real pass and the fake Batch API."""

from __future__ import annotations

import pytest

from convsync_pipeline.store.local import LocalStore
from tests.operations.test_status import table_rows
from tests.pipeline.test_batch_mode import API_KEY, D, batch_settings, run_pass, seed, state


@pytest.fixture
def submitted(root, store: LocalStore, openai_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    seed(store, ["q1", "q2", "q3"])
    settings = batch_settings(openai_server.base_url)
    run_pass(store, settings)
    return settings


def test_batches_lists_each_batch_and_status_shows_tokens_and_cost(
    submitted, store, openai_server, cli
) -> None:
    (batch_id,) = openai_server.batch.batches
    listing = cli("batches")
    assert listing.code == 0, listing.err
    rows = table_rows(listing.out)
    assert rows[D][1:5] == [batch_id, "submitted", "validating", "3"]
    assert "1 open" in listing.out
    status = cli("status", D)
    assert "3 conversation(s) waiting on OpenAI batches" in status.out
    assert "no inconsistencies found" in status.out, "waiting on a batch is not stuck"

    openai_server.batch.run_to_end()
    run_pass(store, submitted)
    rows = table_rows(cli("batches", D).out)
    assert rows[D][2:10] == ["collected", "completed", "3", "3", "0", "3", "0", rows[D][9]]
    assert int(rows[D][9]) > 0, "tokens"
    assert float(rows[D][10]) > 0, "cost at batch prices"
    status = cli("status", D)
    assert "OpenAI batches: 1 collected" in status.out and "at batch prices" in status.out


def test_cancel_a_batch_and_the_next_run_charges_what_it_left(
    submitted, store, openai_server, cli
) -> None:
    (batch_id,) = openai_server.batch.batches
    assert cli("batches", "--cancel", "batch_nope").code == 1
    result = cli("batches", "--cancel", batch_id)
    assert result.code == 0, result.err
    assert "cancelling" in result.out
    openai_server.batch.advance()
    assert openai_server.batch.batches[batch_id]["status"] == "cancelled"
    run_pass(store, submitted.model_copy(update={"openai_mode": "live"}))
    now = state(store)
    # Each was charged one attempt by the cancelled batch, then answered live in that pass.
    assert {(c["processingStatus"], c["retryCount"]) for c in now.values()} == {("success", 1)}
    assert openai_server.sent_counts() == {"q1": 1, "q2": 1, "q3": 1}
    again = cli("batches", "--cancel", batch_id)
    assert again.code == 1 and "already collected" in again.err
