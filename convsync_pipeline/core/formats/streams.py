"""An upload's bytes as a UTF-8 stream: gunzipped within limits, UTF-16/32 re-encoded.

Everything here reads as it goes: nothing holds an upload whole. What makes the bytes
unreadable as text at all - a broken gzip stream, a gzip that inflates past its limit (a
decompression bomb), text invalid in the encoding its byte-order mark names - raises
`UnreadableUpload` as soon as it is seen, after reading no more than the limit; the reader
of the format then quarantines the whole file with that reason.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

from convsync_pipeline.core.records import FILE_RAW_LIMIT

Opener = Callable[[], AbstractContextManager[BinaryIO]]
_READ = 1 << 16
# UTF-32 LE starts as UTF-16 LE does: the longer marks are tried first.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


class UnreadableUpload(Exception):
    """The upload cannot be read as text at all; `reason` says why, for the quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceReadError(Exception):
    """Reading the store failed mid-upload: a system error, never the upload's fault."""


@dataclass(frozen=True)
class ReadLimits:
    """What an upload may cost to read (CONVSYNC_MAX_INFLATE_RATIO, CONVSYNC_MAX_INFLATED_MB,
    and the largest JSON document or JSONL line parsed, from CONVSYNC_INGEST_MEMORY_MB)."""

    max_inflate_ratio: float = 100.0
    max_inflated_bytes: int = 50 * 2**30
    max_json_bytes: int = 100 * 2**20

    def inflate_limit(self, compressed_size: int | None) -> tuple[int, str]:
        """The most bytes a gzip upload may inflate to, and what sets that limit."""
        absolute = (self.max_inflated_bytes, f"CONVSYNC_MAX_INFLATED_MB="
                    f"{self.max_inflated_bytes // 2**20}")
        if compressed_size is None:
            return absolute
        by_ratio = int(self.max_inflate_ratio * max(compressed_size, 1))
        if by_ratio < absolute[0]:
            return by_ratio, (f"CONVSYNC_MAX_INFLATE_RATIO={self.max_inflate_ratio:g} times its "
                              f"{compressed_size} compressed bytes")
        return absolute


@dataclass(frozen=True)
class Source:
    """One version of one upload, which a reader may open more than once."""

    key: str
    open_raw: Opener  # a fresh stream of the stored bytes, from the start, each call
    size: int | None  # the stored size, when known
    gzipped: bool
    limits: ReadLimits = ReadLimits()

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The upload as UTF-8 bytes (a UTF-8 byte-order mark is left for the format)."""
        with self.open_raw() as raw:
            stream: BinaryIO = _Guarded(raw, self.key)  # type: ignore[assignment]
            if self.gzipped:
                limit, why = self.limits.inflate_limit(self.size)
                stream = _Inflated(stream, limit, why)  # type: ignore[assignment]
            head = read_at_most(stream, 4)
            for bom, encoding in _BOMS:
                if head.startswith(bom):
                    stream = _Transcoded(_Prefixed(head, stream), encoding)  # type: ignore[assignment]
                    break
            else:
                stream = _Prefixed(head, stream)  # type: ignore[assignment]
            yield io.BufferedReader(stream, _READ)  # type: ignore[arg-type,misc]

    def head(self) -> tuple[bytes, bool]:
        """The stored bytes' beginning (the raw text of a whole-file quarantine), and whether
        there is more."""
        with self.open_raw() as raw:
            data = read_at_most(_Guarded(raw, self.key), FILE_RAW_LIMIT + 1)
        return data[:FILE_RAW_LIMIT], len(data) > FILE_RAW_LIMIT


def with_head(stream: BinaryIO) -> tuple[bytes, BinaryIO]:
    """The first `FILE_RAW_LIMIT` + 1 bytes of `stream` (what a whole-file quarantine keeps,
    and one more to tell whether there is more), and the stream again from its start."""
    head = read_at_most(stream, FILE_RAW_LIMIT + 1)
    return head, io.BufferedReader(_Prefixed(head, stream), _READ)  # type: ignore[arg-type]


def read_at_most(stream: Any, size: int) -> bytes:
    pieces, left = [], size
    while left > 0:
        piece = stream.read(left)
        if not piece:
            break
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


class _Raw(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


class _Guarded(_Raw):
    """The store's stream; an OS error reading it is the store's failure, not the upload's."""

    def __init__(self, raw: BinaryIO, key: str) -> None:
        self._raw, self._key = raw, key
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        try:
            piece = self._raw.read(size)
        except OSError as exc:
            raise SourceReadError(f"reading {self._key} from the store failed: {exc}") from exc
        self.consumed += len(piece or b"")
        return piece or b""


class _Prefixed(_Raw):
    """`head` followed by the rest of `stream` (what was peeked at, put back)."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                size = len(self._head)
            piece, self._head = bytes(self._head[:size]), self._head[size:]
            return piece
        return self._stream.read(size)


class _Inflated(_Raw):
    """A gzip stream inflated as read, refused past `limit` bytes (a decompression bomb)."""

    def __init__(self, compressed: _Guarded, limit: int, why: str) -> None:
        self._compressed = compressed
        self._gzip = gzip.GzipFile(fileobj=compressed, mode="rb")
        self._limit, self._why = limit, why
        self.inflated = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _READ
        try:
            piece = self._gzip.read(min(size, self._limit + 1 - self.inflated) or 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableUpload(f"not a valid gzip file: {exc}") from None
        if not piece and self._compressed.consumed == 0:
            raise UnreadableUpload("not a valid gzip file: the file is empty")
        self.inflated += len(piece)
        if self.inflated > self._limit:
            raise UnreadableUpload(
                f"refused as a decompression bomb: it inflates to more than {self._limit} "
                f"bytes ({self._why}); nothing of it was ingested. Split it into smaller "
                "uploads, or raise the limit if the data is genuine"
            )
        return piece


class _Transcoded(_Raw):
    """UTF-16 / UTF-32 with a byte-order mark (Excel's "Unicode text") re-encoded as UTF-8."""

    def __init__(self, stream: Any, encoding: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._pending = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _READ
        while len(self._pending) < size and not self._done:
            chunk = self._stream.read(_READ)
            self._done = not chunk
            try:
                text = self._decoder.decode(chunk, final=self._done)
            except UnicodeDecodeError as exc:
                raise UnreadableUpload(
                    f"not valid text in the encoding its BOM names: {exc}"
                ) from None
            self._pending += text.encode("utf-8")
        piece, self._pending = self._pending[:size], self._pending[size:]
        return piece


def bytes_opener(data: bytes) -> Opener:
    """An `Opener` of bytes in memory."""

    @contextlib.contextmanager
    def open_bytes() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    return open_bytes
