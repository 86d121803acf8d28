"""Fixtures of the reliability suite and the summary lines it prints at the end of a session.

Each scenario records an `Outcome`; they are printed as `RELIABILITY ...` lines in pytest's
terminal summary and, when CONVSYNC_RELIABILITY_RESULTS names a file, appended to it as JSON
lines (`python -m tests.reliability.report FILE` renders them as the tables of
docs/reliability-processes.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer
from tests.reliability.harness import Gate, Homes, Outcome, start_server

_OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="session")
def homes() -> Iterator[Homes]:
    """Fresh DAGSTER_HOMEs for CLI runs, copied from one prepared template."""
    factory = Homes()
    try:
        yield factory
    finally:
        factory.remove()


@pytest.fixture
def model_server() -> Iterator[tuple[FakeOpenAIServer, Gate]]:
    """A fake OpenAI server in this process whose chat answers pass through a `Gate`."""
    server, gate = start_server()
    try:
        yield server, gate
    finally:
        gate.open()
        server.stop()


@pytest.fixture
def record_outcome() -> Callable[[Outcome], None]:
    def record(outcome: Outcome) -> None:
        _OUTCOMES.append(outcome)
        print(outcome.line())
        target = os.environ.get("CONVSYNC_RELIABILITY_RESULTS")
        if target:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(dataclasses.asdict(outcome)) + "\n")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _OUTCOMES:
        terminalreporter.section("reliability outcomes")
        for outcome in _OUTCOMES:
            terminalreporter.write_line(outcome.line())
