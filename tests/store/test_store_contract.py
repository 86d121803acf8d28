"""The Store contract, run against both backends (folder and S3 on a real moto_server).

Everything the pipeline relies on is pinned here once, so a third backend - or a change to
either - is checked by the same tests. S3-only behaviour (error messages, uncertain writes)
is at the bottom.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.stub import Stubber

from convsync_pipeline.store.base import (
    ConflictError,
    DateLockedError,
    InvalidKeyError,
    Store,
    StoreError,
)
from convsync_pipeline.store.s3 import S3Store
from tests.fixtures.moto import S3Bucket, StoreFactory, make_s3_client

INVALID_KEYS = ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a/\x00b"]


# -- reads and writes ----------------------------------------------------------------------


def test_read_missing_is_none(any_store: Store) -> None:
    assert any_store.read("conversations/2026-02-11.json") is None
    assert any_store.read_versioned("conversations/2026-02-11.json") is None


def test_write_then_read(any_store: Store) -> None:
    any_store.write("summaries/2026-02-11.json", b'{"a": 1}')
    assert any_store.read("summaries/2026-02-11.json") == b'{"a": 1}'
    any_store.write("summaries/2026-02-11.json", b"\x00\xffbinary")
    assert any_store.read("summaries/2026-02-11.json") == b"\x00\xffbinary"
    found = any_store.read_versioned("summaries/2026-02-11.json")
    assert found is not None and found.data == b"\x00\xffbinary" and found.token


def test_reads_are_by_exact_key(any_store: Store) -> None:
    """Seed fix 6: a key never resolves to another object that merely starts like it."""
    any_store.write("conversations/2026-02-11.json.bak", b"wrong")
    any_store.write("conversations/2026-02-11.jsonx", b"wrong")
    assert any_store.read("conversations/2026-02-11.json") is None
    assert any_store.read("conversations/2026-02-1") is None
    assert any_store.read("conversations") is None


def test_open_versioned_streams_one_version(any_store: Store) -> None:
    key = "incoming/2026-02-11/big.csv"
    body = bytes(range(256)) * 40_000  # 10 MB: read in pieces, as the CSV reader does
    with any_store.open_versioned(key) as missing:
        assert missing is None
    any_store.write(key, body)
    token = any_store.read_versioned(key).token
    with any_store.open_versioned(key) as found:
        assert found is not None and found.token == token
        pieces = []
        while piece := found.stream.read(1 << 20):
            pieces.append(piece)
        assert b"".join(pieces) == body
    with any_store.open_versioned(key, token) as again:
        assert again is not None and again.stream.read() == body
    with any_store.open_versioned(key) as before_replace:
        assert before_replace is not None
        head = before_replace.stream.read(1000)
        any_store.write(key, b"a new version")
        assert head == body[:1000]
    with any_store.open_versioned(key, token) as stale:
        assert stale is None  # that version is gone: a second read never mixes versions
    with any_store.open_versioned("incoming/2026-02-11/big.cs") as prefix_only:
        assert prefix_only is None  # by exact key


def test_url_is_set(any_store: Store) -> None:
    assert any_store.url
    assert "testing" not in any_store.url  # never the credentials


def test_reopened_store_sees_the_same_objects(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.write("a/b.json", b"1")
    assert store_factory.reopen(store).read("a/b.json") == b"1"
    assert store_factory.env(store)["CONVSYNC_STORE"] == store.url


# -- compare-and-swap ----------------------------------------------------------------------


def test_cas_create_only(any_store: Store) -> None:
    key = "conversations/2026-02-11.json"
    token = any_store.compare_and_swap(key, b"v1", None)
    found = any_store.read_versioned(key)
    assert found is not None and found.data == b"v1" and found.token == token
    with pytest.raises(ConflictError) as raised:
        any_store.compare_and_swap(key, b"v2", None)
    assert raised.value.key == key
    assert any_store.read(key) == b"v1"


def test_cas_update_returns_new_token(any_store: Store) -> None:
    key = "conversations/2026-02-11.json"
    first = any_store.compare_and_swap(key, b"v1", None)
    second = any_store.compare_and_swap(key, b"v2", first)
    assert second != first
    found = any_store.read_versioned(key)
    assert found is not None and (found.data, found.token) == (b"v2", second)
    third = any_store.compare_and_swap(key, b"v3", second)
    assert any_store.read_versioned(key) == type(found)(b"v3", third)


def test_cas_with_stale_token_conflicts_and_keeps_data(any_store: Store) -> None:
    key = "conversations/2026-02-11.json"
    first = any_store.compare_and_swap(key, b"v1", None)
    second = any_store.compare_and_swap(key, b"v2", first)
    with pytest.raises(ConflictError):
        any_store.compare_and_swap(key, b"late", first)
    found = any_store.read_versioned(key)
    assert found is not None and (found.data, found.token) == (b"v2", second)


def test_cas_expecting_a_missing_object_conflicts(any_store: Store) -> None:
    first = any_store.compare_and_swap("a/x.json", b"v1", None)
    with pytest.raises(ConflictError):
        any_store.compare_and_swap("a/y.json", b"v1", first)
    assert any_store.read("a/y.json") is None


def test_unconditional_write_invalidates_tokens(any_store: Store) -> None:
    key = "summaries/2026-02-11.json"
    token = any_store.compare_and_swap(key, b"v1", None)
    any_store.write(key, b"v2")
    with pytest.raises(ConflictError):
        any_store.compare_and_swap(key, b"v3", token)
    assert any_store.read(key) == b"v2"


def test_concurrent_cas_has_one_winner_per_version(any_store: Store) -> None:
    """Eight threads CAS-increment one counter: no increment is lost, none applied twice."""
    key = "state/counter.json"
    any_store.compare_and_swap(key, b"0", None)

    def increment(_: int) -> int:
        conflicts = 0
        while True:
            found = any_store.read_versioned(key)
            assert found is not None
            try:
                any_store.compare_and_swap(key, str(int(found.data) + 1).encode(), found.token)
                return conflicts
            except ConflictError:
                conflicts += 1

    with ThreadPoolExecutor(8) as pool:
        conflicts = sum(pool.map(increment, range(40)))
    assert any_store.read(key) == b"40"
    assert conflicts >= 0


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(any_store: Store, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        any_store.write(key, b"x")
    with pytest.raises(InvalidKeyError):
        any_store.compare_and_swap(key, b"x", None)
    with pytest.raises(InvalidKeyError):
        any_store.read(key)
    assert list(any_store.list("")) == []


# -- listing -------------------------------------------------------------------------------


def test_list_prefix_order_and_start_after(any_store: Store) -> None:
    keys = [
        "incoming/2026-02-11/b.csv",
        "incoming/2026-02-11/a.csv",
        "incoming/2026-02-10/z.json",
        "incoming/2026-02-11/sub/c.jsonl",
        "incoming-other/x.csv",
        "conversations/2026-02-11.json",
    ]
    for key in keys:
        any_store.write(key, key.encode())
    listed = list(any_store.list("incoming/"))
    assert [info.key for info in listed] == [
        "incoming/2026-02-10/z.json",
        "incoming/2026-02-11/a.csv",
        "incoming/2026-02-11/b.csv",
        "incoming/2026-02-11/sub/c.jsonl",
    ]
    assert [info.size for info in listed] == [len(info.key) for info in listed]
    after = [info.key for info in any_store.list("incoming/", "incoming/2026-02-11/a.csv")]
    assert after == ["incoming/2026-02-11/b.csv", "incoming/2026-02-11/sub/c.jsonl"]
    assert [info.key for info in any_store.list("incoming/2026-02-11/")] == [
        "incoming/2026-02-11/a.csv",
        "incoming/2026-02-11/b.csv",
        "incoming/2026-02-11/sub/c.jsonl",
    ]
    assert list(any_store.list("nothing-here/")) == []
    assert list(any_store.list("incoming/", "incoming/zzz")) == []
    everything = [info.key for info in any_store.list("")]
    assert set(keys) <= set(everything)
    assert everything == sorted(everything)


def test_list_metadata(any_store: Store) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    token = any_store.compare_and_swap("incoming/a.csv", b"hello", None)
    (info,) = any_store.list("incoming/")
    assert info.size == 5
    assert info.last_modified.tzinfo is not None
    assert info.last_modified.utcoffset() == dt.timedelta(0)
    assert before <= info.last_modified <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert info.etag == token  # one convention for list ETags and CAS tokens
    any_store.write("incoming/a.csv", b"hello again")
    (changed,) = any_store.list("incoming/")
    assert changed.etag != info.etag


def test_the_same_bytes_written_again_are_the_same_version(any_store: Store) -> None:
    """An upload re-written with identical bytes must not look new (SPEC: uploads are ingested
    once per version), on a folder as on S3; different bytes under the key are a new version."""
    key = "incoming/2026-02-11/export.csv"
    any_store.write(key, b"id,text\n1,hello\n")
    (first,) = any_store.list("incoming/")
    token = any_store.read_versioned(key).token
    any_store.write(key, b"id,text\n1,hello\n")
    (again,) = any_store.list("incoming/")
    assert again.etag == first.etag == token
    with any_store.open_versioned(key, token) as same:
        assert same is not None and same.token == token
    any_store.write(key, b"id,text\n1,hello!\n")
    (changed,) = any_store.list("incoming/")
    assert changed.etag != first.etag
    assert any_store.read_versioned(key).token == changed.etag


def test_list_paginates_past_1000_keys(any_store: Store) -> None:
    """S3 pages at 1000 keys: every key must come back, once, in order."""
    keys = [f"staging/2026-02-11/{n:05d}.json" for n in range(1050)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: any_store.write(key, b"{}"), keys))
    any_store.write("staging/2026-02-12/x.json", b"{}")
    assert [info.key for info in any_store.list("staging/2026-02-11/")] == keys
    tail = [info.key for info in any_store.list("staging/2026-02-11/", keys[20])]
    assert tail == keys[21:]


# -- the date lock -------------------------------------------------------------------------


def test_lock_acquire_release_reacquire(any_store: Store) -> None:
    with any_store.date_lock("2026-02-11", "run-a", ttl_seconds=30, wait_seconds=1) as lease:
        assert (lease.date, lease.owner) == ("2026-02-11", "run-a")
        lease.ensure_held()
        first = lease.generation
    with any_store.date_lock("2026-02-11", "run-b", ttl_seconds=30, wait_seconds=1) as lease:
        lease.ensure_held()
        assert lease.owner == "run-b"
        assert lease.generation > first
        second = lease.generation
    with any_store.date_lock("2026-02-11", "run-a", ttl_seconds=30, wait_seconds=1) as lease:
        assert lease.generation > second


def test_second_acquirer_is_refused_with_date_and_holder(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with any_store.date_lock("2026-02-11", "run-holder", ttl_seconds=30, wait_seconds=1):
        with (
            caplog.at_level(logging.WARNING, logger="convsync"),
            pytest.raises(DateLockedError) as raised,
            any_store.date_lock("2026-02-11", "run-other", ttl_seconds=30, wait_seconds=0.3),
        ):
            pytest.fail("a second holder got the lock")
        # other dates are independent
        with any_store.date_lock("2026-02-12", "run-other", ttl_seconds=30, wait_seconds=0):
            pass
    assert raised.value.date == "2026-02-11"
    assert "run-holder" in raised.value.holder
    assert "2026-02-11" in str(raised.value) and "run-holder" in str(raised.value)
    assert "[Lock] Failed to acquire lock for 2026-02-11" in caplog.text
    # released: the refused run can now take it
    with any_store.date_lock("2026-02-11", "run-other", ttl_seconds=30, wait_seconds=0):
        pass


def test_lock_waits_for_a_release(any_store: Store) -> None:
    import threading

    entered = threading.Event()
    released = threading.Event()

    def hold() -> None:
        with any_store.date_lock("2026-02-11", "run-first", ttl_seconds=30, wait_seconds=1):
            entered.set()
            released.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(5)
    threading.Timer(0.3, released.set).start()
    with any_store.date_lock("2026-02-11", "run-second", ttl_seconds=30, wait_seconds=5) as lease:
        assert released.is_set()
        assert lease.owner == "run-second"
    thread.join()


def test_exception_in_block_propagates_and_releases(any_store: Store) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        any_store.date_lock("2026-02-11", "run-a", ttl_seconds=30, wait_seconds=0),
    ):
        raise RuntimeError("boom")
    with any_store.date_lock("2026-02-11", "run-b", ttl_seconds=30, wait_seconds=0) as lease:
        lease.ensure_held()


def test_lock_object_is_kept_and_keys_are_shared(any_store: Store) -> None:
    with any_store.date_lock("2026-02-11", "run-a", ttl_seconds=30, wait_seconds=0):
        pass
    assert any_store.read("locks/2026-02-11.lock") is not None
    assert "locks/2026-02-11.lock" in [info.key for info in any_store.list("locks/")]


# -- S3 only: whole-store errors and uncertain writes --------------------------------------


def test_s3_missing_bucket_is_one_clear_error(moto_endpoint: str) -> None:
    store = S3Store(make_s3_client(moto_endpoint), "no-such-bucket-here", "root")
    for call in (
        lambda: store.read("a.json"),
        lambda: store.write("a.json", b"x"),
        lambda: store.compare_and_swap("a.json", b"x", None),
        lambda: list(store.list("")),
    ):
        with pytest.raises(StoreError) as raised:
            call()
        assert not isinstance(raised.value, ConflictError)
        assert "no-such-bucket-here" in str(raised.value)
        assert "does not exist" in str(raised.value)
        assert "testing" not in str(raised.value)


def test_s3_unreachable_endpoint_names_it() -> None:
    client = make_s3_client("http://127.0.0.1:9", retries={"max_attempts": 1})
    store = S3Store(client, "bucket", "")
    with pytest.raises(StoreError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        store.read("a.json")
    with pytest.raises(StoreError, match="CONVSYNC_S3_ENDPOINT_URL"):
        store.compare_and_swap("a.json", b"x", None)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, "access denied"),
        ("InvalidAccessKeyId", 403, "rejected the AWS credentials"),
        ("SignatureDoesNotMatch", 403, "rejected the AWS credentials"),
        ("PermanentRedirect", 301, "another region"),
    ],
)
def test_s3_store_errors_say_what_to_fix(
    s3_bucket: S3Bucket, code: str, status: int, expected: str
) -> None:
    client = make_s3_client(s3_bucket.endpoint_url)
    store = S3Store(client, s3_bucket.name, "root")
    with Stubber(client) as stub:
        stub.add_client_error("get_object", code, "denied", status)
        with pytest.raises(StoreError, match=expected) as raised:
            store.read("a.json")
    assert not isinstance(raised.value, ConflictError)
    assert s3_bucket.name in str(raised.value)


def test_s3_url_and_prefix(s3_bucket: S3Bucket) -> None:
    client = make_s3_client(s3_bucket.endpoint_url)
    store = S3Store(client, s3_bucket.name, "/root/sub/")
    assert store.url == f"s3://{s3_bucket.name}/root/sub"
    store.write("a/b.json", b"1")
    raw = client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert [item["Key"] for item in raw] == ["root/sub/a/b.json"]
    assert [info.key for info in store.list("a/")] == ["a/b.json"]
    bare = S3Store(client, s3_bucket.name)
    assert bare.url == f"s3://{s3_bucket.name}"
    assert bare.read("root/sub/a/b.json") == b"1"


def test_s3_list_skips_folder_markers(s3_bucket: S3Bucket) -> None:
    client = make_s3_client(s3_bucket.endpoint_url)
    client.put_object(Bucket=s3_bucket.name, Key="root/incoming/", Body=b"")
    client.put_object(Bucket=s3_bucket.name, Key="root/incoming/a.csv", Body=b"x")
    store = S3Store(client, s3_bucket.name, "root")
    assert [info.key for info in store.list("incoming/")] == ["incoming/a.csv"]


def test_s3_from_url_uses_dagster_aws(s3_bucket: S3Bucket) -> None:
    store = S3Store.from_url(f"s3://{s3_bucket.name}/data", endpoint_url=s3_bucket.endpoint_url)
    assert store.url == f"s3://{s3_bucket.name}/data"
    token = store.compare_and_swap("a.json", b"1", None)
    assert store.read_versioned("a.json") is not None
    assert store.compare_and_swap("a.json", b"2", token) != token
    with pytest.raises(StoreError, match="not an S3 store URL"):
        S3Store.from_url("https://example.com/x")
    with pytest.raises(StoreError, match="without credentials") as raised:
        S3Store.from_url("s3://AKIDEXAMPLE:s3cr3t@bucket/x")
    assert "s3cr3t" not in str(raised.value)


def _stubbed_store(s3_bucket: S3Bucket) -> tuple[S3Store, Stubber]:
    client = make_s3_client(s3_bucket.endpoint_url)
    return S3Store(client, s3_bucket.name, "root"), Stubber(client)


def _get_response(data: bytes, etag: str) -> dict[str, object]:
    from io import BytesIO

    from botocore.response import StreamingBody

    return {"Body": StreamingBody(BytesIO(data), len(data)), "ETag": f'"{etag}"'}


def test_s3_cas_after_a_5xx_that_applied_returns_the_new_token(s3_bucket: S3Bucket) -> None:
    """A 500 after the write applied: the re-read shows our bytes, so it succeeded."""
    store, stub = _stubbed_store(s3_bucket)
    stub.add_client_error("put_object", "InternalError", "oops", 500)
    stub.add_response("get_object", _get_response(b"ours", "new-etag"))
    with stub:
        assert store.compare_and_swap("a.json", b"ours", "old-etag") == "new-etag"
    stub.assert_no_pending_responses()


def test_s3_cas_after_a_5xx_that_did_not_apply_retries(s3_bucket: S3Bucket) -> None:
    store, stub = _stubbed_store(s3_bucket)
    stub.add_client_error("put_object", "InternalError", "oops", 500)
    stub.add_response("get_object", _get_response(b"theirs", "old-etag"))
    stub.add_response("put_object", {"ETag": '"new-etag"'})
    with stub:
        assert store.compare_and_swap("a.json", b"ours", "old-etag") == "new-etag"
    stub.assert_no_pending_responses()


def test_s3_cas_after_a_5xx_when_someone_else_wrote_conflicts(s3_bucket: S3Bucket) -> None:
    store, stub = _stubbed_store(s3_bucket)
    stub.add_client_error("put_object", "InternalError", "oops", 500)
    stub.add_response("get_object", _get_response(b"theirs", "their-etag"))
    with stub, pytest.raises(ConflictError):
        store.compare_and_swap("a.json", b"ours", "old-etag")


def test_s3_cas_412_after_an_uncertain_attempt_checks_the_bytes(s3_bucket: S3Bucket) -> None:
    """Our first put timed out but applied late: the retry's 412 is our own success."""
    store, stub = _stubbed_store(s3_bucket)
    stub.add_client_error("put_object", "ServiceUnavailable", "busy", 503)
    stub.add_client_error("get_object", "NoSuchKey", "missing", 404)  # not applied yet
    stub.add_client_error("put_object", "PreconditionFailed", "exists", 412)
    stub.add_response("get_object", _get_response(b"ours", "our-etag"))
    with stub:
        assert store.compare_and_swap("a.json", b"ours", None) == "our-etag"


def test_s3_cas_retries_409_conditional_request_conflict(s3_bucket: S3Bucket) -> None:
    store, stub = _stubbed_store(s3_bucket)
    stub.add_client_error("put_object", "ConditionalRequestConflict", "busy", 409)
    stub.add_client_error("put_object", "ConditionalRequestConflict", "busy", 409)
    stub.add_response("put_object", {"ETag": '"new-etag"'})
    with stub:
        assert store.compare_and_swap("a.json", b"ours", None) == "new-etag"
    stub.assert_no_pending_responses()
