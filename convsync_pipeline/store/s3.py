"""S3 backend: exact-key reads, conditional writes and a fenced lease lock (SPEC sections 3, 5, 6).

Every document save is a compare-and-swap on the object's ETag (`IfMatch`, or
`IfNoneMatch='*'` to create), so a save that lost a race - including a late save from a
holder whose lease ran out - is rejected by S3 itself rather than by our own bookkeeping.

Tokens and `ObjectInfo.etag` use one convention: the ETag with its quotes stripped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import io
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

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

# A conditional write is retried this many times in total on 409 ConditionalRequestConflict,
# or when its outcome was unknown and a re-read showed it had not applied.
CAS_ATTEMPTS = 5
# The holder treats its lease as gone after this fraction of the TTL without a successful
# renewal: takers wait the whole TTL, so the holder stops first even with some clock drift.
LEASE_SAFETY = 0.8

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"}
_TRANSIENT_CODES = {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"}


def _clock() -> float:
    """Local elapsed time, never a wall clock: lease times are never compared across machines.

    CLOCK_BOOTTIME is CLOCK_MONOTONIC that also counts a suspended machine, so a holder
    whose laptop slept past its TTL knows its lease ran out; elsewhere `time.monotonic()`.
    """
    return time.clock_gettime(_CLOCK_ID) if _CLOCK_ID is not None else time.monotonic()


_CLOCK_ID: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` -> (bucket, prefix without surrounding slashes)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StoreError(f"not an S3 store URL: {url!r} (expected s3://bucket[/prefix])")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise StoreError(
            "CONVSYNC_STORE must be s3://bucket[/prefix] without credentials or a port: "
            "credentials come from the AWS chain, the endpoint from CONVSYNC_S3_ENDPOINT_URL"
        )
    return parts.netloc, parts.path.strip("/")


class _ReadErrors(io.RawIOBase):
    """A response body whose failures mid-read are StoreErrors saying what to fix."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        self._body, self._store, self._key = body, store, key

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except (ClientError, BotoCoreError) as exc:
            raise self._store._fail(exc, "read", self._key) from exc

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _token(etag: str) -> str:
    return etag.strip('"')


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _retried(exc: ClientError) -> bool:
    """Whether botocore retried the call: an earlier attempt may have applied."""
    return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) > 0


def _is_missing_key(exc: ClientError) -> bool:
    return _code(exc) in {"NoSuchKey", "NotFound"} or (
        _status(exc) == 404 and _code(exc) != "NoSuchBucket"
    )


def _utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _backoff(attempt: int) -> None:
    time.sleep(min(0.05 * 2**attempt, 1.0) * random.uniform(0.5, 1.5))


@dataclass(frozen=True)
class _Got:
    """One exact-key read, with the server's own clock for staleness hints."""

    data: bytes
    token: str
    last_modified: dt.datetime | None
    server_time: dt.datetime | None


@dataclass(frozen=True)
class _LockBody:
    state: str
    owner: str
    holder: str
    generation: int
    heartbeat: int
    ttl_seconds: float | None
    lease_end: str

    @classmethod
    def parse(cls, data: bytes) -> _LockBody:
        """Tolerant: an unreadable lock counts as held by someone unknown (never as free)."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            ttl = raw.get("ttlSeconds")
            return cls(
                state="free" if raw.get("state") == "free" else "held",
                owner=str(raw.get("owner", "unknown")),
                holder=str(raw.get("holder", "unknown")),
                generation=int(raw.get("generation", 0)),
                heartbeat=int(raw.get("heartbeat", 0)),
                ttl_seconds=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
                lease_end=str(raw.get("leaseEnd", "unknown")),
            )
        except (ValueError, TypeError):
            return cls("held", "unknown", "unreadable lock object", 0, 0, None, "unknown")

    def describe(self) -> str:
        return f"run {self.owner} ({self.holder}), lease ends {self.lease_end}"


def _lock_body(state: str, owner: str, generation: int, heartbeat: int, ttl: float) -> bytes:
    """A lock body; the nonce makes every body's bytes (and so its ETag) unique."""
    now = dt.datetime.now(dt.UTC)
    body = {
        "state": state,
        "owner": owner,
        "holder": f"{socket.gethostname()} pid {os.getpid()}",
        "generation": generation,
        "heartbeat": heartbeat,
        "ttlSeconds": ttl,
        "leaseEnd": _utc_iso(now + dt.timedelta(seconds=ttl) if state == "held" else now),
        "nonce": uuid.uuid4().hex,
    }
    return json.dumps(body).encode()


class S3Store:
    """The `Store` protocol on one S3 bucket (optionally under a prefix)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        sse: str | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        self._client = client
        # CONVSYNC_S3_SSE: server-side encryption asked for on every PUT (documents, log
        # entries, staging, quarantine, summaries, locks, indexes), so a bucket policy that
        # denies unencrypted puts never refuses one of ours.
        self._sse: dict[str, str] = {}
        if sse:
            self._sse["ServerSideEncryption"] = sse
            if kms_key_id:
                self._sse["SSEKMSKeyId"] = kms_key_id
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None) -> S3Store:
        """Build the client the way Dagster resources do (standard AWS credential chain)."""
        from dagster_aws.s3 import S3Resource  # heavy import, only where it is needed

        bucket, prefix = parse_s3_url(url)
        return cls(S3Resource(endpoint_url=endpoint_url).get_client(), bucket, prefix)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        """The endpoint URL for messages, without any user info."""
        parts = urlsplit(str(getattr(self._client.meta, "endpoint_url", "") or "AWS S3"))
        if not parts.scheme:
            return parts.path
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    # -- keys ------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    # -- errors ----------------------------------------------------------------------------

    def _fail(self, exc: Exception, action: str, key: str | None = None) -> StoreError:
        """Turn a boto error into one message saying what to fix (never credentials)."""
        what = f"{action} {key!r} in {self.url}" if key is not None else f"{action} {self.url}"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StoreError(
                f"no usable AWS credentials to {what}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the machine a role"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return StoreError(
                f"cannot reach the S3 endpoint {self.endpoint} to {what}: check "
                "CONVSYNC_S3_ENDPOINT_URL and that the server is running"
            )
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket":
                return StoreError(
                    f"the S3 bucket {self.bucket!r} does not exist at {self.endpoint}: create "
                    "it, or fix CONVSYNC_STORE / CONVSYNC_S3_ENDPOINT_URL"
                )
            if code in _CREDENTIAL_CODES:
                return StoreError(
                    f"{self.endpoint} rejected the AWS credentials ({code}) to {what}: check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile"
                )
            if code in {"AccessDenied", "AllAccessDisabled"} or status == 403:
                return StoreError(
                    f"access denied to {what} ({code or status}): the credentials need "
                    f"s3:GetObject, s3:PutObject and s3:ListBucket on bucket {self.bucket!r}"
                )
            if code in _REGION_CODES or status == 301:
                return StoreError(
                    f"the S3 bucket {self.bucket!r} is in another region ({code or status}): "
                    "set AWS_DEFAULT_REGION to the bucket's region"
                )
            message = exc.response.get("Error", {}).get("Message", "")
            return StoreError(f"S3 error {code or status} to {what}: {message}".rstrip(": "))
        return StoreError(f"S3 at {self.endpoint} failed to {what}: {exc}")

    # -- reads -----------------------------------------------------------------------------

    def _get(self, key: str) -> _Got | None:
        check_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
            data = response["Body"].read()
        except ClientError as exc:
            if _is_missing_key(exc):
                return None
            raise self._fail(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "read", key) from exc
        server_time = None
        date_header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date_header:
            with contextlib.suppress(TypeError, ValueError):
                server_time = email.utils.parsedate_to_datetime(date_header)
        return _Got(data, _token(response["ETag"]), response.get("LastModified"), server_time)

    @contextlib.contextmanager
    def open_versioned(self, key: str, token: str | None = None) -> Iterator[Streamed | None]:
        check_key(key)
        request = {"Bucket": self.bucket, "Key": self._full(key)}
        if token is not None:
            request["IfMatch"] = f'"{token}"'
        try:
            response = self._client.get_object(**request)
        except ClientError as exc:
            if _is_missing_key(exc) or (token is not None and _status(exc) == 412):
                yield None
                return
            raise self._fail(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "read", key) from exc
        body = response["Body"]
        try:
            stream = _ReadErrors(body, self, key)
            yield Streamed(stream, _token(response["ETag"]), response.get("ContentLength"))
        finally:
            body.close()

    def read(self, key: str) -> bytes | None:
        got = self._get(key)
        return None if got is None else got.data

    def read_versioned(self, key: str) -> Versioned | None:
        got = self._get(key)
        return None if got is None else Versioned(got.data, got.token)

    # -- writes ----------------------------------------------------------------------------

    def write(self, key: str, data: bytes | BinaryIO) -> None:
        check_key(key)
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, **self._sse
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "write", key) from exc

    def write_file(self, key: str, path: str) -> None:
        """One PUT streamed from the file (up to S3's 5 GB for one PUT; staged objects are
        compressed, a fraction of their upload)."""
        with open(path, "rb") as body:
            self.write(key, body)

    def compare_and_swap(self, key: str, data: bytes, expected: str | None) -> str:
        """Conditional put; when its outcome is unknown, re-read and decide instead of guessing."""
        check_key(key)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": f'"{expected}"'}
        uncertain = False  # an earlier attempt (ours or botocore's) may have applied
        for attempt in range(CAS_ATTEMPTS):
            try:
                response = self._client.put_object(
                    Bucket=self.bucket, Key=self._full(key), Body=data, **condition, **self._sse
                )
                return _token(response["ETag"])
            except ClientError as exc:
                code, status = _code(exc), _status(exc)
                lost = status == 412 or code == "PreconditionFailed"
                if lost or (expected is not None and _is_missing_key(exc)):
                    if uncertain or _retried(exc):
                        applied = self._holds(key, data)
                        if applied is not None:
                            return applied
                    raise ConflictError(key, f"expected {expected or 'no object'}") from None
                if status == 409 or code == "ConditionalRequestConflict":
                    _backoff(attempt)
                    continue
                if status < 500 and code not in _TRANSIENT_CODES:
                    raise self._fail(exc, "write", key) from exc
                failure: Exception = exc
            except (NoCredentialsError, PartialCredentialsError) as exc:
                raise self._fail(exc, "write", key) from exc
            except BotoCoreError as exc:  # timeouts, dropped or refused connections
                failure = exc
            # The outcome is unknown: the put may or may not have applied.
            uncertain = True
            current = self._get(key)
            if current is not None and current.data == data:
                return current.token
            unchanged = current.token == expected if current is not None else expected is None
            if not unchanged:
                raise ConflictError(key, "changed while the outcome of our write was unknown")
            log.warning("[Blob] retrying conditional write of %s after: %s", key, failure)
            _backoff(attempt)
        raise StoreError(
            f"could not write {key!r} to {self.url} after {CAS_ATTEMPTS} attempts "
            f"(S3 at {self.endpoint} kept failing or reporting conflicting requests)"
        )

    def _holds(self, key: str, data: bytes) -> str | None:
        """The token of `key` if it now holds exactly `data` (our write applied), else None."""
        current = self._get(key)
        return current.token if current is not None and current.data == data else None

    # -- listing ---------------------------------------------------------------------------

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects under `prefix` in key order (S3 lists UTF-8 byte order = code point order)."""
        if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
            raise InvalidKeyError(f"invalid store prefix {prefix!r}")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:
            kwargs["StartAfter"] = self._full(start_after)
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    key = self._relative(item["Key"])
                    if key.endswith("/"):  # a console "folder" marker: no data, not a key
                        continue
                    try:
                        check_key(key)
                    except InvalidKeyError:
                        log.warning("[Blob] skipping %s: not a valid store key", item["Key"])
                        continue
                    yield ObjectInfo(
                        key=key,
                        size=int(item["Size"]),
                        last_modified=item["LastModified"].astimezone(dt.UTC),
                        etag=_token(item["ETag"]),
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "list", prefix or "/") from exc

    # -- the date lock ---------------------------------------------------------------------

    @contextlib.contextmanager
    def date_lock(
        self, date: str, owner: str, *, ttl_seconds: float, wait_seconds: float
    ) -> Iterator[S3Lease]:
        """Hold `locks/<date>.lock` as a renewed lease; see `S3Lease` for the protocol."""
        if ttl_seconds <= 0 or wait_seconds < 0:
            raise ValueError("ttl_seconds must be > 0 and wait_seconds >= 0")
        lease = self._acquire(date, owner, ttl_seconds, wait_seconds)
        lease.start_renewing()
        try:
            yield lease
        finally:
            lease.release()

    def _acquire(self, date: str, owner: str, ttl: float, wait: float) -> S3Lease:
        """Create, take a free lock, or take over one seen unchanged for its whole TTL.

        Takeover is judged on our own clock (`_clock`) only. When the server's clock says the
        lease ran out already (its holder missed every renewal), we keep watching past `wait`
        until the TTL watch completes: otherwise a short wait could never take over a lock
        that a dead run left behind.
        """
        key = check_key(lock_key(date))
        deadline = _clock() + wait
        poll = min(max(ttl / 30, 0.1), 0.5)
        watched: str | None = None
        watched_since = 0.0
        while True:
            got = self._get(key)
            now = _clock()
            seen = None if got is None else _LockBody.parse(got.data)
            their_ttl = ttl if seen is None or seen.ttl_seconds is None else seen.ttl_seconds
            # (generation to write, token to replace, what we do) when we may take it now
            move: tuple[int, str | None, str] | None = None
            if got is None or seen is None:
                move = (1, None, "Created")
            elif seen.state == "free":
                move = (seen.generation + 1, got.token, "Acquired")
            else:
                if got.token != watched:
                    watched, watched_since = got.token, now
                if now - watched_since >= their_ttl:
                    move = (seen.generation + 1, got.token, "Took over")
            if move is not None:
                generation, expected, how = move
                sent = _clock()
                body = _lock_body("held", owner, generation, 0, ttl)
                try:
                    token = self.compare_and_swap(key, body, expected)
                except ConflictError:
                    continue  # someone else moved first: look again
                if how == "Took over" and seen is not None:
                    log.warning(
                        "[Lock] Took over expired lock for %s from %s (generation %d, owner %s)",
                        date,
                        seen.describe(),
                        generation,
                        owner,
                    )
                else:
                    log.info(
                        "[Lock] %s lock for %s (generation %d, owner %s)",
                        how,
                        date,
                        generation,
                        owner,
                    )
                return S3Lease(self, key, date, owner, generation, token, ttl, sent)
            assert seen is not None
            limit = deadline
            if self._looks_expired(got, their_ttl):
                limit = max(deadline, watched_since + their_ttl + poll)
            now = _clock()
            if now >= limit:
                log.warning(
                    "[Lock] Failed to acquire lock for %s: held by %s", date, seen.describe()
                )
                raise DateLockedError(date, seen.describe())
            due = watched_since + their_ttl - now
            time.sleep(max(0.0, min(poll * random.uniform(0.5, 1.5), limit - now, due)))

    @staticmethod
    def _looks_expired(got: _Got | None, ttl: float) -> bool:
        """A hint only, from the server's own clock: not renewed for a whole TTL.

        Both times are whole seconds (`Date`, `Last-Modified`), so a lease that looks a TTL
        old may be up to a second younger: it must look a second older than that.
        """
        if got is None or got.server_time is None or got.last_modified is None:
            return False
        return (got.server_time - got.last_modified).total_seconds() >= ttl + 1


class S3Lease:
    """A held date lock, renewed by CAS in a background thread at about TTL/3.

    The lease is lost when a renewal meets a conflict (someone took over) or when no renewal
    succeeded for `LEASE_SAFETY * ttl` on our own clock (a paused, suspended or partitioned
    holder): `ensure_held()` raises from then on. Documents are saved by compare-and-swap, so
    even a holder that paused right after `ensure_held()` cannot overwrite a taker's save.
    """

    def __init__(
        self,
        store: S3Store,
        key: str,
        date: str,
        owner: str,
        generation: int,
        token: str,
        ttl: float,
        renewed_at: float,
    ) -> None:
        self.date = date
        self.owner = owner
        self.generation = generation
        self.ttl_seconds = ttl
        self._store = store
        self._key = key
        self._token = token
        self._heartbeat = 0
        self._renewed_at = renewed_at  # `_clock()` when the last successful renewal was sent
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"convsync-lease-{date}", daemon=True
        )

    @property
    def token(self) -> str:
        """The lock object's current ETag (for tests and diagnostics)."""
        with self._mutex:
            return self._token

    def ensure_held(self) -> None:
        with self._mutex:
            self._check_expiry()
            lost = self._lost
        if lost is not None:
            raise LeaseLostError(
                f"lost the lock for {self.date} (generation {self.generation}, owner "
                f"{self.owner}): {lost}; stopping before writing anything"
            )

    def _check_expiry(self) -> None:
        elapsed = _clock() - self._renewed_at
        if self._lost is None and elapsed > LEASE_SAFETY * self.ttl_seconds:
            self._lost = f"not renewed for {elapsed:.1f}s (TTL {self.ttl_seconds:g}s)"

    def start_renewing(self) -> None:
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.ttl_seconds / 3
        retry = min(interval / 3, 1.0)
        delay = interval
        while not self._stop.wait(delay):
            with self._mutex:
                self._check_expiry()
                if self._lost is not None:
                    break
                token, heartbeat = self._token, self._heartbeat + 1
            sent = _clock()
            body = _lock_body("held", self.owner, self.generation, heartbeat, self.ttl_seconds)
            try:
                new_token = self._store.compare_and_swap(self._key, body, token)
            except ConflictError:
                with self._mutex:
                    self._lost = "another run took the lock over"
                break
            except StoreError as exc:
                log.warning("[Lock] Renewing the lock for %s failed: %s", self.date, exc)
                delay = retry
                continue
            with self._mutex:
                self._token, self._heartbeat, self._renewed_at = new_token, heartbeat, sent
            delay = max(0.0, sent + interval - _clock())
        if self._lost is not None:
            log.warning("[Lock] Lost the lock for %s: %s", self.date, self._lost)

    def release(self) -> None:
        """Stop renewing, then free the lock by CAS unless someone else holds it now."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._mutex:
            token, heartbeat = self._token, self._heartbeat + 1
        body = _lock_body("free", self.owner, self.generation, heartbeat, self.ttl_seconds)
        try:
            self._store.compare_and_swap(self._key, body, token)
        except ConflictError:
            log.warning(
                "[Lock] Lock for %s was taken over by another run; left as it is", self.date
            )
        except StoreError as exc:
            # The work under the lock is done; the lease will run out and be taken over.
            log.warning(
                "[Lock] Could not release the lock for %s (%s); it expires after %gs",
                self.date,
                exc,
                self.ttl_seconds,
            )
        else:
            log.info("[Lock] Released lock for %s (generation %d)", self.date, self.generation)
