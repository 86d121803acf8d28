"""Render the reliability suite's outcomes as the markdown tables of
docs/reliability-processes.md.

    CONVSYNC_RELIABILITY_RESULTS=/tmp/rel.jsonl .venv/bin/pytest tests/reliability
    .venv/bin/python -m tests.reliability.report /tmp/rel.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| backend | runs | conversations | faults injected | duplicates (sent twice) | "
    "data lost | seconds | details |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def render(lines: list[str]) -> str:
    latest: dict[tuple[str, str], dict] = {}
    for line in lines:
        if line.strip():
            outcome = json.loads(line)
            latest[(outcome["scenario"], outcome["backend"])] = outcome  # the last run wins
    out: list[str] = []
    scenarios = list(dict.fromkeys(scenario for scenario, _ in latest))
    for scenario in scenarios:
        out += [f"#### {scenario}", "", HEADER]
        for (name, backend), outcome in latest.items():
            if name != scenario:
                continue
            details = ", ".join(f"{key} {value}" for key, value in outcome["details"].items())
            out.append(
                f"| {backend} | {outcome['runs']} | {outcome['conversations']} | "
                f"{outcome['faults']} | {outcome['duplicates']} | {outcome['lost']} | "
                f"{outcome['seconds']:.0f} | {details} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m tests.reliability.report RESULTS.jsonl")
    print(render(Path(argv[0]).read_text(encoding="utf-8").splitlines()))


if __name__ == "__main__":
    main(sys.argv[1:])
