"""The date document -> `summaries/D.json`, computed from one version and saying which."""

from __future__ import annotations

from convsync_pipeline.core.document import dump_json
from convsync_pipeline.core.keys import summary_key
from convsync_pipeline.core.summary import DailySummary, build_daily_summary
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.store.base import DateLocks, Store


def write_daily_summary(store: Store, locks: DateLocks, date: str, owner: str) -> DailySummary:
    """Held under the date lock so an older run can never overwrite a newer summary."""
    with locks.date_lock(date, owner) as lease:
        summary = build_daily_summary(load_document(store, date).document)
        lease.ensure_held()
        store.write(summary_key(date), dump_json(summary.model_dump()))
        return summary
