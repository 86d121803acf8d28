"""The stderr progress line: drawn on a terminal, plain lines only for long runs elsewhere."""

from __future__ import annotations

import io

from convsync_pipeline.cli.progress import MANY_DATES, ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_and_cleared() -> None:
    stream = Terminal()
    with ProgressLine("status", stream) as progress:
        for done in range(1, 4):
            progress(done, 3, f"2026-02-1{done}")
    text = stream.getvalue()
    assert text.count("\r") >= 4 and "\n" not in text
    assert "3/3 2026-02-13" in text
    assert text.endswith("\r"), "the bar is cleared before the results are printed"


def test_a_pipe_gets_nothing_for_a_few_dates_and_tenths_for_many() -> None:
    few, many = io.StringIO(), io.StringIO()
    with ProgressLine("migrate", few) as progress:
        for done in range(1, 6):
            progress(done, 5, "d")
    total = MANY_DATES * 4
    with ProgressLine("migrate", many) as progress:
        for done in range(1, total + 1):
            progress(done, total, "d")
    assert few.getvalue() == ""
    lines = many.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert lines[-1] == f"migrate: {total}/{total} (d)"
