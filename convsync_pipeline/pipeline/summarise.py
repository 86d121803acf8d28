"""The date document -> `summaries/D.json`, computed from one version and saying which."""

from __future__ import annotations

from convsync_pipeline.core.document import dump_json
from convsync_pipeline.core.keys import summary_key
from convsync_pipeline.core.summary import DailySummary, build_daily_summary
from convsync_pipeline.pipeline.documents import DateWriter, load_document
from convsync_pipeline.store.base import DateLocks, Store


def write_daily_summary(store: Store, locks: DateLocks, date: str, owner: str) -> DailySummary:
    """Held under the date lock so an older run can never overwrite a newer summary.

    The end of a run's work on the date: entries the document has not folded yet (merges
    below the checkpoint threshold) are checkpointed first, so the summary's
    `documentVersion` names a document that alone holds the state it summarises.
    """
    with locks.date_lock(date, owner) as lease:
        loaded = load_document(store, date)
        document = loaded.document
        if loaded.unfolded_entries:
            writer = DateWriter.over(store, loaded, lease)
            writer.checkpoint()
            assert writer.stored is not None
            document = document.model_copy(update={"blob_meta": writer.stored.blob_meta})
        summary = build_daily_summary(document)
        lease.ensure_held()
        store.write(summary_key(date), dump_json(summary.model_dump()))
        return summary
