"""`convsync batches [DATE]` and `convsync batches --cancel ID`: the OpenAI batches of the
store's dates, as their ledgers (`batches/D.json`) recorded them, and a way to stop one.

Listing is read-only and offline: it shows each batch as the last run (or the sensor's run)
saw it. Cancelling asks the provider; the next run of the date folds in what the batch
finished, and each conversation it never answered is charged one attempt.
"""

from __future__ import annotations

import argparse

from convsync_pipeline.cli.operations import _text_table, _user_errors, existing_store
from convsync_pipeline.core.batch_ledger import LEDGER_PREFIX, BatchLedger
from convsync_pipeline.operations import OperationError, parse_date
from convsync_pipeline.pipeline.ledger import parse_ledger
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import Store, StoreError


def register(commands: argparse._SubParsersAction) -> None:
    batches = commands.add_parser(
        "batches",
        help="the OpenAI batches of each date (batch mode); --cancel ID stops one",
        description=(
            "List the OpenAI batches of one date or all dates, as the runs recorded them "
            "(offline). With --cancel ID, ask OpenAI to cancel that batch: the next run of its "
            "date folds in the answers it finished and charges one attempt to each "
            "conversation it left unanswered."
        ),
    )
    batches.add_argument("date", nargs="?", metavar="DATE", help="one date (default: all)")
    batches.add_argument("--cancel", metavar="ID", help="cancel this batch (its batch id)")
    batches.set_defaults(handler=_batches)


def ledgers(store: Store, date: str | None) -> list[BatchLedger]:
    keys = (
        [f"{LEDGER_PREFIX}{date}.json"]
        if date
        else [info.key for info in store.list(LEDGER_PREFIX) if info.key.endswith(".json")]
    )
    found = []
    for key in keys:
        data = store.read(key)
        if data is not None:
            try:
                found.append(parse_ledger(key, data))
            except StoreError as error:
                raise OperationError(str(error)) from None
    return found


@_user_errors
def _batches(args: argparse.Namespace) -> int:
    settings = load_settings()
    date = parse_date(args.date) if args.date else None
    store = existing_store(settings)
    known = ledgers(store, date)
    if args.cancel:
        return _cancel(args.cancel.strip(), known, settings.openai_base_url)
    if not known:
        where = f" for {date}" if date else ""
        print(f"no OpenAI batches{where} in {store.url}")
        return 0
    rows = []
    for ledger in known:
        for r in ledger.batches:
            rows.append(
                [
                    ledger.date,
                    r.batch_id or "-",
                    r.state,
                    r.provider_status or "-",
                    r.requests,
                    r.request_counts.get("completed", 0),
                    r.request_counts.get("failed", 0),
                    r.succeeded,
                    r.failed_attempts,
                    r.usage.get("totalTokens", 0),
                    "-" if r.estimated_cost_usd is None else f"{r.estimated_cost_usd:.4f}",
                    r.created_at,
                ]
            )
    print(f"store: {store.url}")
    print(
        _text_table(
            [
                "date",
                "batch",
                "state",
                "provider",
                "requests",
                "completed",
                "failed",
                "succeeded",
                "failed attempts",
                "tokens",
                "cost USD",
                "created",
            ],
            rows,
        )
    )
    open_count = sum(len(ledger.open_records()) for ledger in known)
    if open_count:
        print(
            f"\n{open_count} open: openai_batch_sensor requests each date's run once its batch "
            "ends; `convsync batches --cancel ID` stops one"
        )
    return 0


def _cancel(batch_id: str, known: list[BatchLedger], base_url: str | None) -> int:
    from convsync_pipeline.analyzers.openai_batch import BatchClient
    from convsync_pipeline.core.analysis import SystemAnalysisError

    owner = next((ledger for ledger in known if ledger.by_batch_id(batch_id)), None)
    if owner is None:
        raise OperationError(
            f"no batch {batch_id!r} in this store's ledgers (see `convsync batches`)"
        )
    record = owner.by_batch_id(batch_id)
    assert record is not None
    if not record.open:
        raise OperationError(f"batch {batch_id} of {owner.date} is already {record.state}")
    client = BatchClient(base_url=base_url)
    try:
        info = client.cancel(batch_id)
    except SystemAnalysisError as error:
        raise OperationError(str(error)) from None
    finally:
        client.close()
    print(
        f"batch {batch_id} of {owner.date}: {info.status}. The next run of {owner.date} folds "
        "in what it finished; each conversation it left unanswered is charged one attempt."
    )
    return 0
