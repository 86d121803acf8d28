"""`convsync demo` as a new user runs it (`scripts/demo`): quiet, progress per date, the table,
the next steps, and the same numbers when run again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONVSYNC = str(Path(sys.executable).with_name("convsync"))
DAYS = 2


def run_demo(home: Path, store: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONVSYNC_", "OPENAI_"))
    }
    env.update(DAGSTER_HOME=str(home), CONVSYNC_STORE=str(store))
    return subprocess.run(
        [CONVSYNC, "demo", "--days", str(DAYS), *argv],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """DAGSTER_HOME with the repository's dagster.yaml: the store's log lines are captured
    into the event log there, which is what used to flood the terminal."""
    folder = tmp_path / "home"
    folder.mkdir()
    shutil.copy(ROOT / "dagster.yaml", folder / "dagster.yaml")
    return folder


def quarantined(store: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (store / "quarantine").rglob("*.jsonl"))


def files(store: Path, folder: str) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in (store / folder).rglob("*") if p.is_file())


@pytest.mark.slow
def test_the_demo_is_quiet_shows_progress_and_says_what_next(home: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"

    first = run_demo(home, store)

    assert first.returncode == 0, first.stderr
    assert "[Blob]" not in first.stdout + first.stderr
    assert "__ephemeral_asset_job__" not in first.stdout + first.stderr
    progress = [line for line in first.stderr.splitlines() if line.startswith("demo: ")]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"], first.stderr
    assert re.search(r"^date +total +success +failed +pending +ver$", first.stdout, re.M)
    rows = re.findall(r"^(\d{4}-\d\d-\d\d) +(\d+) +(\d+) +0 +0 +\d+$", first.stdout, re.M)
    assert len(rows) == DAYS and all(total == success != "0" for _, total, success in rows)
    first_day = rows[0][0]
    assert f"CONVSYNC_START_DATE={first_day} .venv/bin/dg dev" in first.stdout
    assert f"CONVSYNC_STORE={store}" in first.stdout
    assert first.stdout.rstrip().endswith(".venv/bin/convsync status")

    # Point 2: the same sample bytes again are the same uploads: nothing is ingested twice.
    before = quarantined(store), files(store, "staging"), files(store, "state/uploads")
    second = run_demo(home, store)
    assert second.returncode == 0, second.stderr
    after = quarantined(store), files(store, "staging"), files(store, "state/uploads")
    assert after == before
    count = before[0]
    assert f"quarantined records: {count} " in first.stdout
    assert f"quarantined records: {count} " in second.stdout


@pytest.mark.slow
def test_verbose_shows_the_stores_log_lines(home: Path, tmp_path: Path) -> None:
    result = run_demo(home, tmp_path / "store", "--verbose")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[Blob\] wrote conversations/\d{4}-\d\d-\d\d\.json at version \d+", (
        result.stdout + result.stderr
    ))


def test_write_samples_makes_files_upload_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from convsync_pipeline.cli import main

    store = tmp_path / "store"
    monkeypatch.setenv("CONVSYNC_STORE", str(store))
    samples = tmp_path / "samples"

    assert main(["demo", "--write-samples", str(samples), "--days", "3"]) == 0
    written = sorted(p.name for p in samples.iterdir())
    out = capsys.readouterr().out
    assert len(written) >= 3 and all(name in out for name in written)
    assert not store.exists(), "writing samples touches no store"

    assert main(["upload", *(str(samples / name) for name in written)]) == 0
    uploaded = sorted(p.name for p in (store / "incoming").rglob("*") if p.is_file())
    assert uploaded == written
    assert "they hold conversations of" in capsys.readouterr().out
