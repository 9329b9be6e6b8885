"""Object stores on real stores: a directory, and the S3 protocol against moto's standalone
server on 127.0.0.1 (tests/store_servers.py). The same tests run on both (``store`` fixture)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from store_servers import S3_ENV, create_bucket, free_port, moto_server

from mp_dagster.errors import MPError
from mp_dagster.store_gc import collect_garbage
from mp_dagster.stores import (
    CHUNK,
    AddressError,
    CorruptObjectError,
    MissingObjectError,
    StoreError,
    configured_stores,
    content_address,
    get_store,
)

BIG = 50 * 2**20  # the streamed file
UNREACHABLE_WITHIN = 30.0  # seconds for an unreachable store to give its error


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """One moto server for the session (each test gets a bucket of its own)."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def configure_s3(monkeypatch, endpoint: str, name: str = "t") -> str:
    """Point store ``name`` at a fresh bucket on ``endpoint``; returns the bucket."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    create_bucket(endpoint, bucket)
    monkeypatch.setenv(f"MP_DAGSTER_STORE_{name.upper()}", f"s3://{bucket}/some/prefix")
    monkeypatch.setenv(f"MP_DAGSTER_STORE_{name.upper()}_ENDPOINT_URL", endpoint)
    return bucket


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch):
    """Store ``t``: a directory under tmp_path, or a fresh bucket on moto."""
    if request.param == "file":
        monkeypatch.setenv("MP_DAGSTER_STORE_T", (tmp_path / "store").as_uri())
    else:
        configure_s3(monkeypatch, request.getfixturevalue("moto_endpoint"))
    return get_store("t")


def addresses(store, **kwargs) -> list[str]:
    return [o.address for o in store.list(**kwargs)]


def big_file(path: Path, size: int = BIG) -> Path:
    """A file of ``size`` random bytes, written 1 MiB at a time."""
    with path.open("wb") as f:
        for _ in range(size // 2**20):
            f.write(os.urandom(2**20))
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def test_round_trip_bytes(store):
    data = os.urandom(100_000)
    address = store.put_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert address == content_address(digest) == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert store.get_bytes(address) == data
    with store.open(address) as f:
        assert f.read() == data
    assert store.exists(address) and store.size(address) == len(data)
    assert store.checksum(address) == hashlib.sha256(data).hexdigest()
    store.verify(address, size=len(data))
    (listed,) = store.list()
    assert listed.address == address and listed.size == len(data)
    assert abs(time.time() - listed.modified.timestamp()) < 60
    empty = store.put_bytes(b"", suffix=".npy")
    assert empty.endswith(".npy") and store.get_bytes(empty) == b""
    assert store.delete(address) and not store.exists(address) and not store.delete(address)
    with pytest.raises(MissingObjectError, match="'t'"):
        store.get_bytes(address)
    with pytest.raises(MissingObjectError):
        store.size(address)


def test_content_addressing_stores_once(store):
    first = store.put_bytes(b"same content")
    assert store.put_bytes(b"same content") == first
    assert store.put_file(io.BytesIO(b"same content")) == first
    other = store.put_bytes(b"other content")
    assert other != first
    assert sorted(addresses(store)) == sorted([first, other])
    # storing it again makes it young again: a running gc keeps content about to be referenced
    before = store.modified(first)
    time.sleep(1.1)  # S3 LastModified has a resolution of a second
    store.put_bytes(b"same content")
    assert store.modified(first) > before
    assert addresses(store, include_temp=True) == addresses(store)  # no temporary left


def test_large_file_streamed_in_bounded_memory(store, tmp_path):
    path = big_file(tmp_path / "big.bin")
    store.exists(content_address("0" * 64))  # the S3 client is made (its models loaded) first
    tracemalloc.start()
    try:
        started = time.perf_counter()
        address = store.put_file(path)
        put_seconds = time.perf_counter() - started
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with path.open("rb") as stream:  # a stream, not a path
            assert store.put_file(stream) == address
        stream_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        digest, size = hashlib.sha256(), 0
        with store.open(address) as f:
            while chunk := f.read(2**20):
                digest.update(chunk)
                size += len(chunk)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert address == content_address(file_sha256(path))
    assert size == BIG and digest.hexdigest() == file_sha256(path)
    assert store.size(address) == BIG
    store.verify(address, size=BIG)
    peaks = {"put": put_peak, "put stream": stream_peak, "read": read_peak}
    print(f"{store!r}: put {BIG / 2**20 / put_seconds:.0f} MB/s, peaks (MB): "
          + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in peaks.items()))
    assert all(peak < BIG / 2 for peak in peaks.values()), peaks  # never the whole file
    assert addresses(store, include_temp=True) == [address]


HOSTILE = ["../escaped", "a/../../escaped", "/etc/passwd", "..", ".", "", "a//b", "a/./b", "a/",
           "a\x00b", "a\nb", "a\rb", "a\x7fb", "a\\..\\b", "~/x", "*", "sha256/*", "a?", "[ab]",
           "x" * 1025]


def test_hostile_addresses_are_refused(store, tmp_path):
    operations = [store.get_bytes, store.exists, store.size, store.checksum, store.open,
                  store.delete, store.verify, store.local_path, store.modified,
                  lambda a: list(store.list(a + "/x")),  # list("") is the whole store
                  lambda a: store.put_file(io.BytesIO(b"evil"), address=a)]
    for address in HOSTILE:
        for operation in operations:
            with pytest.raises(AddressError, match="store 't'") as caught:
                operation(address)
            assert isinstance(caught.value, MPError) and repr(address)[1:-1][:50] in str(caught.value)
        with pytest.raises(AddressError):
            store.put_bytes(b"evil", suffix="/" + address)
        with pytest.raises(AddressError):
            collect_garbage(store, [], prefixes=[address + "/x"], dry_run=False)
    assert addresses(store, include_temp=True) == []
    assert not any("escaped" in p.name for p in tmp_path.rglob("*"))


def test_temporary_area_is_reserved(store):
    with pytest.raises(AddressError, match="reserved"):
        store.put_file(io.BytesIO(b"x"), address=".tmp/x")


class FailingStream:
    """A source that breaks after ``good`` bytes (a disk error, a dropped upload)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("the source disk failed")
        n = min(size, self.left)
        self.left -= n
        return b"\x01" * n


def test_source_failing_mid_write_leaves_nothing(store, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where S3 uploads spool a stream
    with pytest.raises(OSError, match="source disk failed") as caught:
        store.put_file(FailingStream(3 * CHUNK + 5))
    assert not isinstance(caught.value, StoreError)  # the caller's error, unchanged
    with pytest.raises(OSError, match="source disk failed"):
        store.put_file(FailingStream(10), address="named/file.bin")
    assert addresses(store, include_temp=True) == []
    assert list(spool.iterdir()) == []


def test_unreachable_store_is_a_clear_error(request, tmp_path, monkeypatch, store):
    """file: the root cannot be created (under a regular file); s3: the server went away."""
    data = b"x" * 1000
    if store.is_local:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        monkeypatch.setenv("MP_DAGSTER_STORE_GONE", (blocker / "store").as_uri())
        gone = get_store("gone")
    else:  # a moto of its own, stopped after a first write
        with moto_server(tmp_path / "moto.log") as endpoint:
            configure_s3(monkeypatch, endpoint, name="gone")
            gone = get_store("gone")
            stored = gone.put_bytes(b"written while the server was up")
        with pytest.raises(StoreError, match="store 'gone'|'gone'"):
            gone.get_bytes(stored)
    for operation in [lambda: gone.put_bytes(data), lambda: gone.put_file(io.BytesIO(data)),
                      lambda: gone.put_file(big_file(tmp_path / "f.bin", 2**20)),
                      lambda: gone.exists(content_address("0" * 64))]:
        started = time.monotonic()
        with pytest.raises(StoreError, match="'gone'") as caught:
            operation()
        assert time.monotonic() - started < UNREACHABLE_WITHIN
        assert not isinstance(caught.value, MissingObjectError)  # not "absent": unreachable
        assert "cannot" in str(caught.value)
    if store.is_local:
        assert not (blocker / "store").exists() and blocker.read_text() == ""
    # a port nobody listens on
    monkeypatch.setenv("MP_DAGSTER_STORE_NOBODY", "s3://bucket/prefix")
    monkeypatch.setenv("MP_DAGSTER_STORE_NOBODY_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match=r"'nobody'.*127\.0\.0\.1.*cannot write"):
        get_store("nobody").put_bytes(data)


def test_truncated_object_is_detected(store):
    data = os.urandom(300_000)
    address = store.put_bytes(data)
    store.fs.pipe_file(f"{store.root}/{address}", data[:1000])  # truncated behind our back
    assert store.size(address) == 1000
    with pytest.raises(CorruptObjectError, match="1000 bytes, 300000 were written"):
        store.verify(address, size=len(data))
    with pytest.raises(CorruptObjectError, match="truncated or corrupt"):
        store.verify(address)
    with pytest.raises(CorruptObjectError, match="truncated or corrupt"):
        store.get_bytes(address)
    assert store.get_bytes(address, verify=False) == data[:1000]
    named = store.put_file(io.BytesIO(data), address="named/data.bin")
    store.fs.pipe_file(f"{store.root}/{named}", data[:10])
    with pytest.raises(CorruptObjectError):
        store.verify(named, checksum=hashlib.sha256(data).hexdigest())
    assert store.put_bytes(data) == address  # writing it again repairs it
    store.verify(address, size=len(data))


GRACE = timedelta(seconds=3)


def test_gc_grace_period(store):
    old_referenced = store.put_bytes(b"old, referenced")
    old_unreferenced = store.put_bytes(b"old, unreferenced")
    old_rewritten = store.put_bytes(b"old, written again just now")
    user_file = store.put_file(io.BytesIO(b"a user's file"), address="raw/image.npy")
    if store.is_local:  # the temporary file of a write killed long ago
        stale = Path(store.root) / ".tmp" / "killed-write"
        stale.write_bytes(b"partial")
    time.sleep(GRACE.total_seconds() + 1.5)
    fresh_unreferenced = store.put_bytes(b"fresh, unreferenced: a write in flight")
    fresh_referenced = store.put_bytes(b"fresh, referenced")
    assert store.put_bytes(b"old, written again just now") == old_rewritten
    missing = content_address("f" * 64)
    referenced = {old_referenced, fresh_referenced, missing}

    preview = store.collect_garbage(referenced, grace=GRACE)  # a dry run by default
    expected = {old_unreferenced} | ({".tmp/killed-write"} if store.is_local else set())
    assert {o.address for o in preview.unreferenced} == expected
    assert preview.deleted == [] and preview.dry_run
    assert preview.referenced == 2 and preview.recent == 2 and preview.missing == [missing]
    assert preview.unreferenced_bytes == sum(o.size for o in preview.unreferenced)
    assert store.exists(old_unreferenced)

    scanned_after_listing = []

    def references() -> set[str]:  # what schema.gc() passes: read after the listing
        scanned_after_listing.append(True)
        return referenced

    report = store.collect_garbage(references, grace=GRACE, dry_run=False)
    assert scanned_after_listing and sorted(report.deleted) == sorted(expected)
    for kept in (old_referenced, fresh_referenced, fresh_unreferenced, old_rewritten, user_file):
        assert store.exists(kept), kept
    assert not store.exists(old_unreferenced)
    assert addresses(store, include_temp=True) == addresses(store)
    again = store.collect_garbage(referenced, grace=timedelta(0), dry_run=False)
    assert set(again.deleted) == {fresh_unreferenced, old_rewritten}  # nothing referenced
    assert store.exists(old_referenced) and store.exists(fresh_referenced)
    assert store.exists(user_file)  # outside the collected prefixes: never collected
    with pytest.raises(StoreError, match="negative"):
        store.collect_garbage([], grace=timedelta(seconds=-1))


def test_configuration_by_environment(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("MP_DAGSTER_STORE_")]:
        monkeypatch.delenv(key)
    with pytest.raises(StoreError, match="set MP_DAGSTER_STORE_RAW to its URL.*stores: none"):
        get_store("raw")
    monkeypatch.setenv("MP_DAGSTER_STORE_RAW", (tmp_path / "raw").as_uri())
    assert get_store("raw").root == str(tmp_path / "raw") and get_store("raw").is_local
    assert get_store("raw") is get_store("raw")
    assert configured_stores() == ["raw"]
    monkeypatch.setenv("MP_DAGSTER_STORE_IMAGING", "s3://bucket/a/b/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert get_store("imaging").root == "bucket/a/b"
    assert get_store("imaging").endpoint_url == "http://127.0.0.1:1"
    monkeypatch.setenv("MP_DAGSTER_STORE_IMAGING_ENDPOINT_URL", "http://127.0.0.1:2")
    assert get_store("imaging").endpoint_url == "http://127.0.0.1:2"  # the store's own first
    assert configured_stores() == ["imaging", "raw"]
    for name in ["../x", "Raw!", "", "x_endpoint_url", "1abc"]:
        with pytest.raises(StoreError, match="not a store name"):
            get_store(name)
    bad_urls = {"file://relative/path": "file:///absolute/path", "/data/raw": "unsupported",
                "ftp://host/x": "unsupported", "s3://key:secret@bucket/x": "credentials never",
                "s3:///prefix": "s3://bucket", "s3://bucket/../x": "refused",
                "file:///data/../etc": "not allowed", "s3://bucket/x?token=1": "no query"}
    for url, message in bad_urls.items():
        monkeypatch.setenv("MP_DAGSTER_STORE_BAD", url)
        with pytest.raises(StoreError, match=message) as caught:
            get_store("bad")
        assert "MP_DAGSTER_STORE_BAD" in str(caught.value) or "'bad'" in str(caught.value)


def test_s3_endpoint_from_aws_variable(monkeypatch, moto_endpoint):
    """Without the store's own endpoint setting, the standard AWS_ENDPOINT_URL applies."""
    configure_s3(monkeypatch, moto_endpoint, name="aws")
    monkeypatch.delenv("MP_DAGSTER_STORE_AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = get_store("aws")
    assert store.endpoint_url == moto_endpoint
    assert store.get_bytes(store.put_bytes(b"via AWS_ENDPOINT_URL")) == b"via AWS_ENDPOINT_URL"
