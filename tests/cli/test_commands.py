"""What a new user meets first: --version, upload's errors and next step, read-only commands on
a store that does not exist, and help that says where things go."""

from __future__ import annotations

import csv
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

CONVSYNC = str(Path(sys.executable).with_name("convsync"))
READ_ONLY = [
    ["status"],
    ["status", "2026-02-11"],
    ["failed"],
    ["report"],
    ["requeue", "2026-02-11"],
    ["migrate"],
    ["migrate", "--dry-run"],
]


def test_version_is_the_installed_package() -> None:
    result = subprocess.run([CONVSYNC, "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"convsync {version('convsync')}"


@pytest.mark.parametrize("argv", READ_ONLY, ids=" ".join)
def test_read_only_commands_never_create_a_store(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    missing = tmp_path / "elsewhere" / "convsync-store"
    monkeypatch.setenv("CONVSYNC_STORE", str(missing))

    result = cli(*argv)

    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith(f"convsync: error: no store at {missing} ")
    assert f"CONVSYNC_STORE={missing}" in line
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "report.html").exists()


def test_the_default_store_is_named_as_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.delenv("CONVSYNC_STORE", raising=False)
    result = cli("status")  # the cli fixture runs in tmp_path
    assert result.code == 1
    assert f"no store at {tmp_path / 'convsync-store'}" in result.err
    assert "CONVSYNC_STORE unset: ./convsync-store" in result.err
    assert not (tmp_path / "convsync-store").exists()


def test_an_empty_store_says_what_to_do_next(root: Path, cli) -> None:
    result = cli("status")
    assert result.code == 0
    assert "no date documents" in result.out and "convsync upload" in result.out


def test_upload_of_a_directory_says_so(root: Path, tmp_path: Path, cli) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    result = cli("upload", str(folder))
    assert result.code == 1
    assert result.err.strip() == (
        f"convsync: error: {folder}: is a directory; give the files in it, "
        f"e.g. `convsync upload {folder}/*`"
    )
    assert not (root / "incoming").exists()


def write_export(path: Path, days: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conversation_id", "timestamp", "role", "content"])
        for n, day in enumerate(days):
            writer.writerow([f"c{n}", f"{day}T10:00:00Z", "user", "hello"])
            writer.writerow([f"c{n}", f"{day}T10:01:00Z", "assistant", "hi"])


def test_upload_ends_with_the_dates_and_the_next_step(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setenv("CONVSYNC_START_DATE", "2026-02-10")
    export = tmp_path / "export.csv"
    write_export(export, ["2026-02-09", "2026-02-11", "2026-02-12"])

    result = cli("upload", str(export), "--prefix", "batch1")

    assert result.code == 0, result.err
    assert (root / "incoming" / "batch1" / "export.csv").read_bytes() == export.read_bytes()
    assert "they hold conversations of 3 date(s): 2026-02-09 to 2026-02-12" in result.out
    assert "1 of them before CONVSYNC_START_DATE=2026-02-10" in result.out
    assert "turn on new_upload_sensor" in result.out
    # Only partitions are offered: 2026-02-09 is before the first one.
    launch = "dg launch --assets 'group:convsync' --partition-range 2026-02-11...2026-02-12"
    assert launch in result.out


def test_upload_of_one_date_names_its_partition(root: Path, tmp_path: Path, cli) -> None:
    export = tmp_path / "export.csv"
    write_export(export, ["2026-02-11"])
    result = cli("upload", str(export))
    assert "dg launch --assets '*' --partition 2026-02-11" in result.out


def test_report_help_says_where_the_page_goes(capsys: pytest.CaptureFixture[str]) -> None:
    from convsync_pipeline.cli import main

    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: report.html in the current folder" in text
