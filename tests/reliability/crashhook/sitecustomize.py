"""Test-only crash points for the reliability suite; no product code knows about them.

A CLI run started with this folder on PYTHONPATH imports this module at interpreter start-up
(Python's `sitecustomize` hook). When CONVSYNC_TEST_CRASH is set to `<n>:<mode>[:<prefix>]`,
the n-th conditional write under `<prefix>` in this process SIGKILLs the process at one point
inside that write. The prefix is `conversations/` (saves of a date document: checkpoints)
unless given; `journal/` counts the entries of the date's log (created only if absent):

- `before`   the bytes are ready, the conditional write not yet sent (both stores);
- `after`    the conditional write applied, the process dies before it learns so (both);
- `torn`     folder store: the temp file holds half the new bytes, not yet renamed/linked;
- `replaced` folder store: renamed (a document) or linked (an entry) into place, the
             directory not yet fsynced.

Before dying it appends `<mode> save=<n> key=<key> pid=<pid>` to CONVSYNC_TEST_CRASH_LOG,
so the test knows the kill landed where it meant it to. Without the variable this module
does nothing.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("CONVSYNC_TEST_CRASH", "").strip()


def _die(mode: str, number: int, key: str) -> None:
    log = os.environ.get("CONVSYNC_TEST_CRASH_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{mode} save={number} key={key} pid={os.getpid()}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _install(spec: str) -> None:
    number_text, _, rest = spec.partition(":")
    mode, _, prefix = rest.partition(":")
    prefix = prefix or "conversations/"
    target = int(number_text)
    if mode not in {"before", "after", "torn", "replaced"}:
        raise ValueError(f"CONVSYNC_TEST_CRASH mode must be before/after/torn/replaced: {spec}")

    from convsync_pipeline.store import local, s3

    saves = {"count": 0, "armed": None}

    def wrap_cas(cls: type) -> None:
        original = cls.compare_and_swap

        def compare_and_swap(self, key, data, expected):  # type: ignore[no-untyped-def]
            if not key.startswith(prefix):
                return original(self, key, data, expected)
            saves["count"] += 1
            if saves["count"] != target:
                return original(self, key, data, expected)
            if mode == "before":
                _die(mode, target, key)
            if mode in {"torn", "replaced"}:
                saves["armed"] = key
                return original(self, key, data, expected)
            token = original(self, key, data, expected)
            _die(mode, target, key)
            return token

        cls.compare_and_swap = compare_and_swap

    wrap_cas(local.LocalStore)
    wrap_cas(s3.S3Store)

    def crash_inside(original, finish):  # type: ignore[no-untyped-def]
        """A folder-store write that, when armed, leaves the temp file (half of it if torn),
        `finish`es it into place if `replaced`, and dies before the directory fsync."""

        def write(self, path, data):  # type: ignore[no-untyped-def]
            key = saves["armed"]
            if key is None:
                return original(self, path, data)
            saves["armed"] = None
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f"{local._TEMP_MARK}{path.name}.crash{os.getpid()}")
            with temp.open("wb") as handle:
                handle.write(data if mode == "replaced" else data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
            if mode == "replaced":
                finish(temp, path)
            _die(mode, target, key)

        return write

    def link(temp, path):  # type: ignore[no-untyped-def]
        os.link(temp, path)
        os.unlink(temp)

    store = local.LocalStore
    store._replace_or_raise = crash_inside(store._replace_or_raise, os.replace)  # documents
    store._create_or_raise = crash_inside(store._create_or_raise, link)  # log entries


if _SPEC:
    _install(_SPEC)
