"""Progress on stderr: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO

MANY_DATES = 30
"""From this many dates on, progress is shown even when stderr is not a terminal."""


class ProgressLine:
    """A progress bar on stderr: redrawn in place on a terminal; elsewhere, from `plain_from`
    items on, one plain line per tenth so logs stay readable."""

    width = 24
    item_width = 40

    def __init__(
        self, label: str, stream: IO[str] | None = None, *, plain_from: int = MANY_DATES
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.plain_from = plain_from
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False
        self.last_tenth = -1

    def __call__(self, done: int, total: int, item: str) -> None:
        sys.stdout.flush()  # what was printed before comes first, also in a shared log
        if self.tty:
            filled = round(self.width * done / total) if total else self.width
            bar = "#" * filled + "." * (self.width - filled)
            shown = item[: self.item_width]
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {shown:<{self.item_width}}")
            self.stream.flush()
            self.drawn = True
        elif total >= self.plain_from and done:
            tenth = done * 10 // total
            if tenth != self.last_tenth:
                self.last_tenth = tenth
                print(f"{self.label}: {done}/{total} ({item})", file=self.stream, flush=True)

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.drawn:
            blank = len(self.label) + self.width + self.item_width + 20
            self.stream.write("\r" + " " * blank + "\r")
            self.stream.flush()
