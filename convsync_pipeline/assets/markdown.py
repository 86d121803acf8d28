"""Small helpers that turn reports into metadata a person can read in the Dagster UI."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from convsync_pipeline.core.document import StatusSummary


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], limit: int = 50) -> str:
    """A markdown table, cut at `limit` rows with a note, so huge runs stay readable. Every
    text cell goes through the display redactor: this is how conversation text (and errors
    or topics derived from it) reaches the event log."""
    from convsync_pipeline.settings import display_redactor

    redactor = display_redactor()
    rows = [[redactor(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows[:limit]:
        cells = (plain(cell).replace("|", "\\|").replace("\n", " ") for cell in row)
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n… and {len(rows) - limit} more rows")
    return "\n".join(lines)


def plain(value: object) -> str:
    """A value as a person reads it: `positive 3, negative 1` for a mapping, items joined by
    commas for a list, never a Python repr."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {plain(item)}" for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(item) for item in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, str | int):
        return str(value)
    return json.dumps(value, default=str)


def date_totals(counts: StatusSummary) -> dict[str, int]:
    """A date's conversations by status, as every materialisation of `ai_analysis` and
    `daily_summary` records them: the partition's latest one always shows where the date
    stands, whatever the run itself did (and the UI plots them across partitions)."""
    return {
        "total": counts.total,
        "success": counts.success,
        "failed": counts.failed,
        "pending": counts.pending,
        "processing": counts.processing,
    }
