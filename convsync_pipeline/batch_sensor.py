"""`openai_batch_sensor`: requests a date's analysis run when one of its OpenAI batches ended.

Why a sensor, and why without a cursor. A batch takes minutes to 24 hours; a run waiting on it
would hold a run slot (and the date's lock) idle for that long. The sensor ticks every
CONVSYNC_BATCH_POLL_SECONDS, reads the open batches from the dates' ledgers
(`batches/D.json`, one small object per date that ever used batch mode) and asks the provider
about each; the state lives in the ledgers, written under the date lock, so a cursor would
only duplicate it (and could drift from it). Each ended batch gets one run of
`convsync_analyse` for its date with run key `batch:<id>:<status>`: Dagster never launches
the same run key twice for a sensor, so a batch is requested once however many ticks see it
ended before the run folds it. A `submitting` record (a run died before recording its batch)
gets a run too once it is 15 minutes old (younger, a run is most likely submitting it right
now), which finds the batch by its token. The run does the folding: the sensor
never writes to the store.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from convsync_pipeline.core.analysis import SystemAnalysisError
from convsync_pipeline.core.batch import ENDED_STATES
from convsync_pipeline.core.batch_ledger import LEDGER_PREFIX, BatchLedger
from convsync_pipeline.jobs import convsync_analyse_job
from convsync_pipeline.pipeline.ledger import parse_ledger
from convsync_pipeline.resources.analyzer import AnalyzerResource
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import Settings
from convsync_pipeline.store.base import Store

# A `submitting` record this old belongs to a run that died before recording its batch.
UNRECORDED_AFTER = dt.timedelta(minutes=15)


def open_ledgers(store: Store) -> list[BatchLedger]:
    """Every date's ledger with a batch not yet folded in."""
    ledgers = []
    for info in store.list(LEDGER_PREFIX):
        if not info.key.endswith(".json"):
            continue
        data = store.read(info.key)
        if data is None:
            continue
        ledger = parse_ledger(info.key, data)
        if ledger.open_records():
            ledgers.append(ledger)
    return ledgers


def _stale(created_at: str) -> bool:
    """Older than UNRECORDED_AFTER: no live run takes that long between its ledger's first
    write and recording the batch id."""
    try:
        created = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return True
    return dt.datetime.now(dt.UTC) - created > UNRECORDED_AFTER


def build_batch_sensor(settings: Settings):
    @sensor(
        name="openai_batch_sensor",
        job=convsync_analyse_job,
        minimum_interval_seconds=settings.batch_poll_seconds,
        # Idle unless a batch is open: a tick is one listing of batches/ then.
        default_status=DefaultSensorStatus.RUNNING,
        description="Polls the open OpenAI batches of every date (batch mode) and requests "
        "the date's analysis run once a batch has ended, to fold its answers in.",
    )
    def openai_batch_sensor(
        context: SensorEvaluationContext,
        blob_store: BlobStoreResource,
        analyzer: AnalyzerResource,
    ) -> list[RunRequest] | SkipReason:
        store = blob_store.store_for_run(context.instance)
        ledgers = open_ledgers(store)
        if not ledgers:
            return SkipReason("no open OpenAI batches")
        if analyzer.kind != "openai":
            return SkipReason(
                f"{sum(len(ledger.open_records()) for ledger in ledgers)} open OpenAI batches, "
                "but the analyzer is not 'openai' (CONVSYNC_ANALYZER): they cannot be read"
            )
        client = analyzer.batch_client()
        requests: list[RunRequest] = []
        waiting = 0
        try:
            for ledger in ledgers:
                for record in ledger.open_records():
                    if record.batch_id is None:  # a run died before recording it?
                        if not _stale(record.created_at):
                            continue  # more likely a run submitting it right now
                        key = f"batch:{record.token}:unrecorded"
                    else:
                        info = client.retrieve(record.batch_id)
                        if info.status not in ENDED_STATES:
                            waiting += 1
                            continue
                        key = f"batch:{info.id}:{info.status}"
                    requests.append(
                        RunRequest(
                            run_key=key,
                            partition_key=ledger.date,
                            tags={"convsync/batch": record.batch_id or record.token},
                        )
                    )
        except SystemAnalysisError as error:
            return SkipReason(str(error))
        finally:
            client.close()
        if not requests:
            return SkipReason(f"{waiting} OpenAI batches still running")
        return requests

    return openai_batch_sensor
