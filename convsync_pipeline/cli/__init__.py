"""The `convsync` command: each sub-command lives in its own module with a `register`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from convsync_pipeline.settings import SettingsError
from convsync_pipeline.store.base import StoreError

COMMAND_MODULES = ("demo", "upload", "operations", "batches")


TERMINAL = logging.StreamHandler()
"""Log lines on stderr. WARNING and up only: inside a Dagster run the `convsync` logger is
raised to INFO for the event log, and those lines reach the terminal only with --verbose."""
TERMINAL.setFormatter(logging.Formatter("%(message)s"))
TERMINAL.setLevel(logging.WARNING)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def installed_version() -> str:
    try:
        return version("convsync")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed: run scripts/setup)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convsync",
        description="Keep conversation exports in blob storage in sync with their AI analysis.",
    )
    parser.add_argument(
        "--version", action="version", version=f"convsync {installed_version()}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"convsync_pipeline.cli.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    root = logging.getLogger()
    if not root.handlers:  # what logging.basicConfig would do, with the handler kept
        root.setLevel(logging.WARNING)
        root.addHandler(TERMINAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CommandError, SettingsError, StoreError) as error:
        print(f"convsync: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("convsync: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
