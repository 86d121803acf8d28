"""A folder store in tmp_path that the CLI reaches through CONVSYNC_STORE, and a CLI runner."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from convsync_pipeline.cli import main
from convsync_pipeline.store.local import LocalStore


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    for name in ("CONVSYNC_ANALYZER", "OPENAI_API_KEY", "CONVSYNC_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVSYNC_STORE", str(path))
    monkeypatch.setenv("CONVSYNC_LOCK_WAIT_SECONDS", "0")
    return path


@pytest.fixture
def store(root: Path) -> LocalStore:
    return LocalStore(root)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`cli("status")` -> Result(code, out, err), through `convsync_pipeline.cli.main`."""
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@contextlib.contextmanager
def held_lock(store: LocalStore, date: str, owner: str) -> Iterator[None]:
    """Another 'process' (a thread with its own descriptor) holds the date lock meanwhile."""
    acquired, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with store.date_lock(date, owner, ttl_seconds=60, wait_seconds=0):
                acquired.set()
                release.wait(30)
        except BaseException as error:  # surfaced below
            failure.append(error)
            acquired.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert acquired.wait(10)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        release.set()
        thread.join(10)
