"""scripts/setup says what it does on a first run or after pyproject.toml changed, and is
silent (no pip at all) when .venv is current. Run in a copy with a stand-in Python that only
records its calls, so no package is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
"""


def setup_in(folder: Path, *argv: str) -> tuple[str, list[str]]:
    calls = folder / "calls.log"
    calls.write_text("")
    result = subprocess.run(
        ["bash", str(folder / "scripts" / "setup"), *argv],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(folder / "python"), "CALLS": str(calls)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.strip(), calls.read_text().splitlines()


def test_setup_says_what_it_does_and_skips_pip_when_current(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "python").write_text(STAND_IN)
    (tmp_path / "python").chmod(0o755)

    said, calls = setup_in(tmp_path)
    assert said == "setting up .venv (first run, about a minute)…"
    assert calls[0] == "-m venv .venv" and "pip install" in calls[1] and calls[1].endswith("-e .")

    assert setup_in(tmp_path) == ("", []), "current: silent, no pip"

    said, calls = setup_in(tmp_path, "--dev")
    assert said == "updating .venv (pyproject.toml changed)…"
    assert calls[-1].endswith("-e .[dev]")
    assert setup_in(tmp_path, "--dev") == ("", [])
    assert setup_in(tmp_path) == ("", []), "installed with [dev] covers a plain setup"

    with (tmp_path / "pyproject.toml").open("a") as handle:
        handle.write("\n# a new dependency\n")
    said, calls = setup_in(tmp_path)
    assert said == "updating .venv (pyproject.toml changed)…" and len(calls) == 1
