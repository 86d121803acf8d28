"""The folder backend: the same keys as S3, laid out as files under one root.

Writes go to a temp file in the same directory, are fsynced and `os.replace`d into place, so
a reader never sees half a document. Compare-and-swap holds an `flock` on a per-key lock
file while it checks the token; create-only (a log entry, a new document) hard-links the
complete temp file to its name, which fails if the name exists. The date lock is an `flock`
on `locks/D.lock`, a file that is never replaced: the kernel frees it when its holder dies,
so a killed process can never leave a date stuck.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.keys import lock_key
from convsync_pipeline.store.base import (
    ConflictError,
    DateLockedError,
    InvalidKeyError,
    LeaseLostError,
    ObjectInfo,
    StoreError,
    Streamed,
    Versioned,
    check_key,
)

log = logging.getLogger("convsync")

_TEMP_MARK = ".convsync-tmp-"
_INTERNAL_DIR = ".convsync"  # CAS guards and digests; never listed, not part of the key space
_HASH_BLOCK = 1 << 20


Signature = tuple[int, int, int, int]


def _signature(stat: os.stat_result) -> Signature:
    """What changes whenever a file's bytes may have: a replace gives a new inode, an in-place
    write a new mtime/ctime (and usually size)."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class Modes:
    """The permissions of what the folder store creates, set explicitly (chmod after
    creating) so the process umask never widens them: customers' words are not for other
    users of the machine (CONVSYNC_STORE_ACCESS)."""

    file: int
    folder: int

    def make_dirs(self, path: Path) -> None:
        """`mkdir -p`, each folder it creates getting `folder`; existing ones are left."""
        missing = []
        while not path.exists():
            missing.append(path)
            if path.parent == path:
                break
            path = path.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # made meanwhile by another writer, with these same modes
            os.chmod(folder, self.folder)

    def open_fd(self, path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
        fd = os.open(path, flags, self.file)
        try:
            os.fchmod(fd, self.file)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def create(self, path: Path) -> BinaryIO:
        """A new file (never an existing one), opened for writing, with `file`."""
        return os.fdopen(self.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")


MODES = {"owner": Modes(0o600, 0o700), "group": Modes(0o640, 0o750)}


def _digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class Digests:
    """Version tokens of the folder store: a digest of the content, like S3's ETag, so the same
    bytes written again under a key are the same version (and the same upload) on both
    backends. Hashing a large upload costs a read, so a digest is remembered by the file's
    signature: in memory, and, once the file has been left alone for `SETTLED_NS`, in
    `.convsync/digests/` for the next process (a write in the same clock tick as the hash
    could otherwise hide behind an unchanged signature)."""

    SETTLED_NS = 2_000_000_000

    def __init__(self, root: Path, modes: Modes | None = None) -> None:
        self.folder = root / _INTERNAL_DIR / "digests"
        self.modes = modes or MODES["owner"]
        self.memo: dict[str, tuple[Signature, str]] = {}

    def wrote(self, key: str, stat: os.stat_result, digest: str) -> str:
        """Our own replace: nobody else has had the new file yet, so its digest is certain."""
        self.memo[key] = (_signature(stat), digest)
        return digest

    def of_handle(self, key: str, handle: BinaryIO) -> str:
        """The digest of the open file `handle` (left at offset 0)."""
        stat = os.fstat(handle.fileno())
        known = self._known(key, stat)
        if known is not None:
            return known
        hasher = hashlib.sha256()
        while piece := handle.read(_HASH_BLOCK):
            hasher.update(piece)
        handle.seek(0)
        digest = hasher.hexdigest()[:32]
        self._remember(key, stat, os.fstat(handle.fileno()), digest)
        return digest

    def of_data(self, key: str, stat: os.stat_result, data: bytes) -> str:
        """The digest of `data`, just read whole from the file whose stat was `stat`."""
        known = self._known(key, stat)
        if known is not None:
            return known
        digest = _digest(data)
        self._remember(key, stat, stat, digest)
        return digest

    def of_path(self, key: str, path: Path) -> str | None:
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with handle:
            return self.of_handle(key, handle)

    def _known(self, key: str, stat: os.stat_result) -> str | None:
        signature = _signature(stat)
        remembered = self.memo.get(key)
        if remembered is not None and remembered[0] == signature:
            return remembered[1]
        try:
            stored = json.loads(self._file(key).read_bytes())
            if stored["key"] == key and tuple(stored["signature"]) == signature:
                self.memo[key] = (signature, stored["digest"])
                return str(stored["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _remember(
        self, key: str, before: os.stat_result, after: os.stat_result, digest: str
    ) -> None:
        signature = _signature(before)
        if _signature(after) != signature:
            return  # written to while we hashed: the digest is of no one version
        self.memo[key] = (signature, digest)
        if time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < self.SETTLED_NS:
            return
        path = self._file(key)
        body = json.dumps({"key": key, "signature": list(signature), "digest": digest})
        temp = path.with_name(f"{_TEMP_MARK}{path.name}.{secrets.token_hex(4)}")
        try:  # a cache: losing it costs one hash; failing to write it costs nothing
            self.modes.make_dirs(path.parent)
            with self.modes.create(temp) as handle:
                handle.write(body.encode())
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()

    def _file(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.folder / name[:2] / f"{name}.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectInfo(ObjectInfo):
    """A listed file whose `etag` (its content digest) is worked out only when asked for: most
    listings (documents, staging, the upload index) never look at it, uploads do."""

    def __init__(self, store: LocalStore, key: str, stat: os.stat_result) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "size", stat.st_size)
        object.__setattr__(
            self, "last_modified", dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
        )
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_etag", None)
        object.__setattr__(self, "_signature", _signature(stat))

    @property
    def listed_version(self) -> str:
        """The file's inode, size, mtime and ctime: no read of its content."""
        return "-".join(f"{part:x}" for part in self._signature)

    @property
    def etag(self) -> str:  # type: ignore[override]
        if self._etag is None:
            digest = self._store.digests.of_path(self.key, self._store._path(self.key))
            # Gone since it was listed: a token no version has, so it is never taken as one.
            object.__setattr__(self, "_etag", digest or "deleted")
        return self._etag


@dataclass
class LocalLease:
    date: str
    owner: str
    generation: int
    path: Path
    inode: int

    def ensure_held(self) -> None:
        """The flock lives as long as our descriptor; only a removed lock file can break it."""
        try:
            current = self.path.stat().st_ino
        except FileNotFoundError:
            current = -1
        if current != self.inode:
            raise LeaseLostError(f"the lock file for {self.date} was removed or replaced")


class LocalStore:
    """A store rooted at a local folder (`CONVSYNC_STORE=/path` or `file:///path`)."""

    def __init__(self, root: str | Path, access: str = "owner") -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        if access not in MODES:
            raise StoreError(f"store access must be one of {', '.join(MODES)}, got {access!r}")
        self.modes = MODES[access]
        self.digests = Digests(self.root, self.modes)
        try:
            self.modes.make_dirs(self.root)
        except OSError as error:
            raise StoreError(
                f"cannot create the store folder {self.root} ({error.strerror}): "
                "set CONVSYNC_STORE to a writable folder"
            ) from None

    # -- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    # -- reads ---------------------------------------------------------------------------

    def read(self, key: str) -> bytes | None:
        """The bytes alone: no version token, so nothing is hashed."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_versioned(self, key: str) -> Versioned | None:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                data = handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return Versioned(data=data, token=self.digests.of_data(key, stat, data))

    @contextlib.contextmanager
    def open_versioned(self, key: str, token: str | None = None) -> Iterator[Streamed | None]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            yield None
            return
        with handle:
            current = self.digests.of_handle(key, handle)
            size = os.fstat(handle.fileno()).st_size
            # A replace makes a new inode: the open file stays the version it was.
            found = Streamed(handle, current, size)
            yield None if token is not None and token != current else found

    # -- writes --------------------------------------------------------------------------

    def write(self, key: str, data: bytes) -> None:
        """No token is returned, so nothing is hashed: staging, quarantine and summaries are
        written far more often than anyone asks for their version."""
        self._replace(key, data)

    def write_file(self, key: str, path: str) -> None:
        self._replace(key, Path(path))

    def _replace(self, key: str, data: bytes | Path) -> os.stat_result:
        path = self._path(key)
        try:
            return self._replace_or_raise(path, data)
        except OSError as error:
            raise StoreError(
                f"cannot write {path.relative_to(self.root).as_posix()} under {self.root}: "
                f"{error.strerror or error}"
            ) from None

    def _replace_or_raise(self, path: Path, data: bytes | Path) -> os.stat_result:
        """Write `data` (bytes, or a local file's bytes, copied a piece at a time) in place."""
        temp = self._write_temp(path, data)
        try:
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        _fsync_dir(path.parent)
        return path.stat()

    def _write_temp(self, path: Path, data: bytes | Path) -> Path:
        """`data` in a fsynced temp file beside `path`, ready to be renamed or linked."""
        self.modes.make_dirs(path.parent)
        temp = path.with_name(f"{_TEMP_MARK}{path.name}.{secrets.token_hex(4)}")
        try:
            with self.modes.create(temp) as handle:
                if isinstance(data, Path):
                    with data.open("rb") as source:
                        shutil.copyfileobj(source, handle, 1 << 20)
                else:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return temp

    def _create_or_raise(self, path: Path, data: bytes) -> os.stat_result:
        """Create `path` holding `data` only if absent: a hard link of a complete temp file
        fails when the name exists, so the object appears whole or not at all, and no lock
        is needed (a log entry of a large date is one of these per window refill)."""
        temp = self._write_temp(path, data)
        try:
            os.link(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        _fsync_dir(path.parent)
        return path.stat()

    def compare_and_swap(self, key: str, data: bytes, expected: str | None) -> str:
        path = self._path(key)
        if expected is None:
            try:
                stat = self._create_or_raise(path, data)
            except FileExistsError:
                raise ConflictError(key, "it already exists") from None
            except OSError as error:
                raise StoreError(
                    f"cannot write {key} under {self.root}: {error.strerror or error}"
                ) from None
            return self.digests.wrote(key, stat, _digest(data))
        guard = (
            self.root
            / _INTERNAL_DIR
            / "cas"
            / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        )
        self.modes.make_dirs(guard.parent)
        fd = self.modes.open_fd(guard)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.digests.of_path(key, path)
            if current != expected:
                raise ConflictError(key, "it already exists" if expected is None else "")
            return self.digests.wrote(key, self._replace(key, data), _digest(data))
        finally:
            os.close(fd)

    def delete(self, key: str) -> bool:
        """Remove `key`; whether it existed. Only `convsync compact --prune` calls this, on
        request: the pipeline itself never deletes an object."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    # -- listing -------------------------------------------------------------------------

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        directory, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not base.is_dir():
            return
        found: list[tuple[str, os.stat_result]] = []
        for folder, dirnames, filenames in os.walk(base):
            if Path(folder) == self.root and _INTERNAL_DIR in dirnames:
                dirnames.remove(_INTERNAL_DIR)
            dirnames.sort()
            relative = Path(folder).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_TEMP_MARK):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if not key.startswith(prefix) or (start_after and key <= start_after):
                    continue
                if not _valid_key(key):  # as on S3: such a name cannot be read by exact key
                    log.warning("[Blob] skipping %r: not a valid store key", key)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.append((key, os.stat(os.path.join(folder, name))))
        for key, stat in sorted(found, key=lambda item: item[0]):
            yield LocalObjectInfo(self, key, stat)

    # -- the date lock -------------------------------------------------------------------

    @contextlib.contextmanager
    def date_lock(
        self, date: str, owner: str, *, ttl_seconds: float, wait_seconds: float
    ) -> Iterator[LocalLease]:
        """`ttl_seconds` is unused here: the kernel ends the lease when the holder dies."""
        path = self._path(lock_key(date))
        self.modes.make_dirs(path.parent)
        fd = self.modes.open_fd(path)
        try:
            self._flock_within(fd, path, date, wait_seconds)
            previous = _read_lock_body(path)
            generation = int(previous.get("generation", 0)) + 1
            _rewrite(
                fd,
                {
                    "state": "held",
                    "owner": owner,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": utc_now_iso(),
                    "generation": generation,
                },
            )
            lease = LocalLease(date, owner, generation, path, os.fstat(fd).st_ino)
            try:
                yield lease
            finally:
                _rewrite(
                    fd, {"state": "free", "generation": generation, "releasedAt": utc_now_iso()}
                )
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _flock_within(self, fd: int, path: Path, date: str, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        pause = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                log.warning("[Lock] Failed to acquire lock for %s", date)
                raise DateLockedError(date, _describe_holder(_read_holder(path)))
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


def _valid_key(key: str) -> bool:
    """A file name the key space can hold: `check_key` passes and it is valid UTF-8 (Linux
    names are bytes; undecodable ones arrive as lone surrogates that no key can carry)."""
    try:
        check_key(key)
        key.encode("utf-8")
    except (InvalidKeyError, UnicodeEncodeError):
        return False
    return True


def _read_lock_body(path: Path) -> dict[str, object]:
    try:
        body = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _read_holder(path: Path) -> dict[str, object]:
    """The holder rewrites its body in place on acquire; retry briefly past that instant."""
    for _ in range(5):
        body = _read_lock_body(path)
        if body.get("state") == "held":
            return body
        time.sleep(0.01)
    return body


def _rewrite(fd: int, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _describe_holder(body: dict[str, object]) -> str:
    if body.get("state") != "held":
        return "another process (it is just starting)"
    return (
        f"run {body.get('owner', '?')} (pid {body.get('pid', '?')} on {body.get('host', '?')}, "
        f"since {body.get('since', '?')})"
    )
