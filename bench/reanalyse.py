"""What a re-analysis costs the pipeline itself, beside a first analysis of the same date.

    .venv/bin/python bench/reanalyse.py [--conversations 5000]

Folder store in a temporary directory, the local analyser (no network: the figures are the
pipeline's own cost, which a real model's latency only hides). Two dates of N conversations:
one `pending` (the baseline: a first analysis pass), one `success` with answers of an older
version (stored before versions existed). For each, the real pass under the date lock; for
the re-analysis also the dry run (`plan_reanalysis`). Printed as `key: value` lines:

    conversations, baseline_seconds, baseline_bytes_written, baseline_log_entries,
    dry_run_seconds, reanalyse_seconds, reanalyse_bytes_written, reanalyse_log_entries,
    marking_entry_bytes (the one entry marking every conversation due again: it carries each
    previous answer), bytes_ratio (re-analysis / baseline), sent_twice (must be 0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convsync_pipeline.analyzers.local import ANALYSIS_VERSION, LocalAnalyzer
from convsync_pipeline.core.document import Conversation, DateDocument, Message
from convsync_pipeline.core.keys import document_key, entry_key
from convsync_pipeline.operations.reanalyse import (
    plan_reanalysis,
    reanalyse_dates,
)
from convsync_pipeline.pipeline.analyse import analyse_date
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.base import StoreLocks
from convsync_pipeline.store.local import LocalStore

PENDING, DONE = "2026-02-10", "2026-02-11"


def seed(store: LocalStore, date: str, n: int, *, analysed: bool) -> None:
    analyzer = LocalAnalyzer()
    conversations = []
    for i in range(n):
        conversation = Conversation(
            id=f"{date}-{i}",
            startedAt=f"{date}T09:00:00Z",
            endedAt=f"{date}T09:05:00Z",
            messages=[
                Message(role="user", content=f"My order {i} never arrived, I am upset",
                        timestamp=f"{date}T09:00:00Z"),
                Message(role="agent", content="Sorry! I have re-sent it today.",
                        timestamp=f"{date}T09:01:00Z"),
            ],
            source="bench",
            processingStatus="pending",
        )
        if analysed:
            old = analyzer.analyze_sync(conversation).model_dump()
            del old["analysisVersion"]  # stored before versions existed
            conversation = conversation.model_copy(
                update={"processing_status": "success", "analysis": old}
            )
        conversations.append(conversation)
    store.write(document_key(date), DateDocument(date=date, conversations=conversations)
                .sealed().to_json_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    args = parser.parse_args(argv)
    n = args.conversations
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = LocalStore(root)
        settings = load_settings({"CONVSYNC_STORE": str(root)})
        locks = StoreLocks(store, settings.lock_ttl_seconds, settings.lock_wait_seconds)
        seed(store, PENDING, n, analysed=False)
        seed(store, DONE, n, analysed=True)
        sent: dict[str, int] = {}

        class Counting(LocalAnalyzer):
            async def analyze(self, conversation):  # type: ignore[override]
                sent[conversation.id] = sent.get(conversation.id, 0) + 1
                return await super().analyze(conversation)

        started = time.perf_counter()
        baseline = analyse_date(store, locks, settings, Counting, PENDING, "bench")
        baseline_seconds = time.perf_counter() - started

        started = time.perf_counter()
        plan = plan_reanalysis(store, settings, [DONE], ANALYSIS_VERSION)
        dry_run_seconds = time.perf_counter() - started
        assert plan.conversations == n

        started = time.perf_counter()
        (report,) = reanalyse_dates(
            store, locks, settings, Counting, [DONE], ANALYSIS_VERSION, owner="bench"
        )
        reanalyse_seconds = time.perf_counter() - started
        marking = (root / entry_key(DONE, 1)).stat().st_size
    figures = {
        "conversations": n,
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_bytes_written": baseline.bytes_written,
        "baseline_log_entries": baseline.entries,
        "dry_run_seconds": round(dry_run_seconds, 3),
        "reanalyse_seconds": round(reanalyse_seconds, 3),
        "reanalyse_bytes_written": report.bytes_written,
        "reanalyse_log_entries": report.entries,
        "marking_entry_bytes": marking,
        "bytes_ratio": round(report.bytes_written / max(baseline.bytes_written, 1), 2),
        "reanalysed": report.succeeded,
        "sent_twice": sum(1 for count in sent.values() if count > 1),
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
