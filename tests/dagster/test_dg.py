"""`dg`, Dagster's command line, from the repository root: the project loads, launches a date,
prints no warning in normal use, and a bad setting is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dagster.helpers import csv_upload

ROOT = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).with_name("dg"))
D = "2026-02-11"

pytestmark = pytest.mark.slow


def dg(
    tmp_path: Path, *argv: str, merged: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run dg from the repository root; `merged`: stderr into stdout, in order, as a terminal
    shows them."""
    home = tmp_path / "home"
    if not home.exists():
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSYNC_", "OPENAI_"))}
    full.update(
        DAGSTER_HOME=str(home),
        CONVSYNC_STORE=str(tmp_path / "store"),
        CONVSYNC_START_DATE="2026-02-01",
        **env,
    )
    return subprocess.run(
        [DG, *argv],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=300,
    )


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if "warning" in line.lower()]


def test_dg_check_defs_passes_without_a_warning(tmp_path: Path) -> None:
    result = dg(tmp_path, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr
    assert warnings_in(result.stdout + result.stderr) == []


def test_dg_launch_materialises_a_date_without_a_warning(tmp_path: Path) -> None:
    upload = tmp_path / "store" / "incoming" / D / "export.csv"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(
        csv_upload(("c-1", f"{D}T09:00:00Z", "user", "The app keeps crashing"))
    )

    result = dg(tmp_path, "launch", "--assets", "*", "--partition", D)

    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stdout + result.stderr) == []
    document = json.loads((tmp_path / "store" / "conversations" / f"{D}.json").read_bytes())
    assert document["summary"]["success"] == 1


def test_a_bad_setting_under_dg_is_one_line(tmp_path: Path) -> None:
    bad = {"CONVSYNC_TIMEZONE": "Mars/Base"}
    result = dg(tmp_path, "launch", "--assets", "*", "--partition", D, **bad)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "convsync: error: CONVSYNC_TIMEZONE must be an IANA timezone such as 'UTC' or "
        "'Europe/Berlin', got 'Mars/Base'"
    ]

    checked = dg(tmp_path, "check", "defs", merged=True, **bad)
    assert checked.returncode == 1
    said = [line for line in checked.stdout.splitlines() if line.strip()]
    first = next(i for i, line in enumerate(said) if "CONVSYNC_TIMEZONE" in line)
    assert said[first].startswith("convsync: error: CONVSYNC_TIMEZONE must be"), said
    assert first <= 1, "only dg's own 'component YAML validated' line may come before it"
