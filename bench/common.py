"""Shared by bench/analysis.py and bench/merge.py: a quiet machine, a real S3, write counts."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def wait_quiet(threshold: float | None, timeout: float = 900) -> float:
    """Wait (up to `timeout`) until the 1-minute load is under `threshold`; the load then."""
    deadline = time.monotonic() + timeout
    while threshold is not None and os.getloadavg()[0] >= threshold:
        if time.monotonic() > deadline:
            break
        time.sleep(5)
    return round(os.getloadavg()[0], 2)


class S3Server:
    """A real moto_server for `--store s3`, started as tests/fixtures/moto.py starts it."""

    def __init__(self) -> None:
        from tests.fixtures import moto

        os.environ.update(moto.DUMMY_AWS_ENV)
        self._moto = moto
        self._log = Path(tempfile.mkdtemp(prefix="convsync-bench-moto-")) / "moto.log"
        self.process, self.endpoint = moto._start_moto(self._log)

    def bucket(self) -> str:
        return self._moto.create_bucket(self.endpoint)

    def close(self) -> None:
        self._moto._stop(self.process)


class WriteCounter:
    """Objects and bytes a store is asked to write (either backend), while `counting`."""

    def __init__(self, store: Any) -> None:
        self.writes = 0
        self.bytes = 0
        self.document_saves = 0  # writes of conversations/D.json
        self.counting = False
        for name in ("write", "compare_and_swap"):
            setattr(store, name, self._counted(getattr(store, name)))

    def _counted(self, original: Any) -> Any:
        def counted(key: str, data: bytes, *args: Any) -> Any:
            result = original(key, data, *args)
            if self.counting:
                self.writes += 1
                self.bytes += len(data)
                self.document_saves += key.startswith("conversations/")
            return result

        return counted


def os_write_bytes() -> int:
    """The kernel's count of bytes this process had written to storage (/proc/self/io)."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
