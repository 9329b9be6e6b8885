"""Object stores: named places, outside the database, for values too large for a row.

A store is configured by URL in the environment, never in code::

    MP_DAGSTER_STORE_RAW=file:///data/raw          # store "raw": a directory
    MP_DAGSTER_STORE_IMAGING=s3://bucket/prefix    # store "imaging": an S3 prefix
    MP_DAGSTER_STORE_IMAGING_ENDPOINT_URL=http://127.0.0.1:9000   # an S3-compatible server

(without a store's own ``..._ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3`` then ``AWS_ENDPOINT_URL``
apply). S3 credentials and region come from the usual AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``...) or AWS's own
configuration files; a URL carrying credentials is refused. All I/O goes through fsspec (s3fs
for S3: ``pip install 'mp_dagster[s3]'``).

An object is named by its *address*, a relative POSIX path under the store's root. Objects
written by :meth:`Store.put_bytes` and :meth:`Store.put_file` are content-addressed:
``sha256/ab/cd/abcd...`` (the SHA-256 of the content, hex, in a two-level fan-out), so identical
content is stored once. A reader never sees a partial object: on a file store an object is
written to a temporary name in the store's ``.tmp/`` folder, flushed to disk, then renamed into
place; on S3 a single PUT or a completed multipart upload is atomic.

Master-part all-or-nothing with a store (DESIGN.md section 4): write the objects first, then
commit the rows that reference them in one transaction. A crash in between leaves only
unreferenced objects, which :meth:`Store.collect_garbage` removes once they are older than a
grace period. Writing content that is already stored refreshes the object's modification time,
so an object about to be referenced again is young in the collector's eyes.

This module is the relational layer's: it imports nothing from Dagster.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .store_addresses import (
    CONTENT_PREFIX,
    TEMP_PREFIX,
    AddressError,
    CorruptObjectError,
    MissingObjectError,
    StoreError,
    check_address,
    content_address,
    content_digest,
)
from .store_io import (
    CHUNK,
    SourceFailed,
    hash_stream,
    modified_time,
    now_utc,
    opened,
    read_source,
    silently,
    store_exceptions,
)

if TYPE_CHECKING:
    import fsspec

    from .store_gc import GCReport

ENV_PREFIX = "MP_DAGSTER_STORE_"
ENDPOINT_SUFFIX = "_ENDPOINT_URL"
S3_PART = 5 * 2**20  # bytes per S3 multipart part (S3's minimum; s3fs raises it for huge files)
S3_CONCURRENCY = 1  # parts in flight per S3 upload: memory is about 2 * S3_PART * this
S3_BLOCK = 4 * 2**20  # bytes per S3 read request when reading an opened object
CONNECT_TIMEOUT = 5.0  # seconds to reach an S3 endpoint
READ_TIMEOUT = 60.0  # seconds without a byte from an S3 endpoint
S3_ATTEMPTS = 3  # tries per S3 request by botocore (connection errors, throttling, 5xx)
S3FS_RETRIES = 2  # s3fs's own tries around botocore's (e.g. a response body cut short)
DEFAULT_GRACE = timedelta(days=1)  # gc keeps unreferenced objects younger than this

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class StoredObject:
    """One object as listed: its address, size in bytes and modification time (UTC)."""

    address: str
    size: int
    modified: datetime


def store_variable(name: str) -> str:
    """The environment variable holding store ``name``'s URL (``raw`` -> MP_DAGSTER_STORE_RAW)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.upper().endswith(ENDPOINT_SUFFIX):
        raise StoreError(f"{name!r} is not a store name: lowercase letters, digits and '_', "
                         f"starting with a letter (and not ending in {ENDPOINT_SUFFIX.lower()!r})")
    return ENV_PREFIX + name.upper()


def configured_stores() -> list[str]:
    """Names of the stores configured in the environment, sorted."""
    return sorted(key[len(ENV_PREFIX):].lower() for key, value in os.environ.items()
                  if key.startswith(ENV_PREFIX) and value and not key.endswith(ENDPOINT_SUFFIX)
                  and _NAME.match(key[len(ENV_PREFIX):].lower()))


_cache: dict[tuple[str, str, str | None, int], Store] = {}
_cache_lock = threading.Lock()


def get_store(name: str) -> Store:
    """The store configured as ``MP_DAGSTER_STORE_<NAME>``; an :class:`StoreError` naming the
    variable to set when it is not. Cached per process for the same configuration."""
    variable = store_variable(name)
    url = os.environ.get(variable, "").strip()
    if not url:
        known = ", ".join(configured_stores()) or "none"
        raise StoreError(f"store {name!r} is not configured: set {variable} to its URL "
                         f"(file:///absolute/path or s3://bucket/prefix); configured stores: {known}")
    endpoint = (os.environ.get(variable + ENDPOINT_SUFFIX) or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    key = (name, url, endpoint, os.getpid())
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Store(name, url, endpoint_url=endpoint)
        return _cache[key]


class Store:
    """A named object store: a directory (``file:///...``) or an S3 prefix (``s3://...``).

    Get one with :func:`get_store`. Every failure is a :class:`StoreError` naming the store;
    addresses are checked with :func:`check_address`.
    """

    def __init__(self, name: str, url: str, *, endpoint_url: str | None = None) -> None:
        self.name = name
        self.url = url
        self.endpoint_url = endpoint_url
        parts = urlsplit(url)
        where = f"store {name!r} ({store_variable(name)}={url!r})"
        if parts.query or parts.fragment:
            raise StoreError(f"{where}: no query or fragment is allowed in a store URL")
        if parts.scheme == "file":
            path = unquote(parts.path)
            if parts.netloc not in ("", "localhost") or not path.startswith("/"):
                raise StoreError(f"{where}: a file store is file:///absolute/path")
            if path != "/" and any(p in (".", "..") for p in path.rstrip("/").split("/")[1:]):
                raise StoreError(f"{where}: '.' and '..' are not allowed in the store's path")
            self.protocol, self.root = "file", path.rstrip("/") or "/"
        elif parts.scheme == "s3":
            if "@" in parts.netloc or parts.password:
                raise StoreError(f"{where}: credentials never go in a store URL; set "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
            bucket, prefix = parts.netloc, parts.path.strip("/")
            if not bucket:
                raise StoreError(f"{where}: an S3 store is s3://bucket or s3://bucket/prefix")
            if prefix:
                check_address(prefix, name)
            self.protocol, self.root = "s3", f"{bucket}/{prefix}" if prefix else bucket
        else:
            raise StoreError(f"{where}: unsupported URL; use file:///absolute/path or "
                             "s3://bucket/prefix")
        self._fs: fsspec.AbstractFileSystem | None = None
        self._fs_pid = 0

    def __repr__(self) -> str:
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"<Store {self.name!r} {self.url}{at}>"

    @property
    def is_local(self) -> bool:
        """True for a file store (objects are files on this machine)."""
        return self.protocol == "file"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (made once per process: a forked child makes its own)."""
        if self._fs is None or self._fs_pid != os.getpid():
            with self._errors("connect to", "the store"):
                self._fs = self._make_fs()
            self._fs_pid = os.getpid()
        return self._fs

    def _make_fs(self) -> fsspec.AbstractFileSystem:
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file", skip_instance_cache=True)
        try:
            import s3fs
        except ImportError as exc:
            raise StoreError(f"store {self.name!r} is on S3: pip install 'mp_dagster[s3]'") from exc
        fs = s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": self.endpoint_url} if self.endpoint_url else {},
            config_kwargs={"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
                           "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"}},
            skip_instance_cache=True, use_listings_cache=False, default_block_size=S3_BLOCK,
            max_concurrency=S3_CONCURRENCY)
        fs.retries = S3FS_RETRIES
        return fs

    @contextmanager
    def _errors(self, doing: str, address: str) -> Iterator[None]:
        """Turn the filesystem's exceptions into StoreErrors naming the store and address."""
        try:
            yield
        except (StoreError, SourceFailed):
            raise
        except store_exceptions() as exc:
            if isinstance(exc, FileNotFoundError) and doing != "write":
                raise MissingObjectError(f"{self!r}: no object at {address!r}") from exc
            raise StoreError(f"{self!r}: cannot {doing} {address!r}: "
                             f"{type(exc).__name__}: {exc}") from exc

    def _path(self, address: str) -> str:
        """The filesystem path of a checked address (always strictly under the root)."""
        check_address(address, self.name)
        path = f"{self.root.rstrip('/')}/{address}"
        assert path.startswith(self.root.rstrip("/") + "/")
        return path

    def _address(self, path: str) -> str:
        return path[len(self.root.rstrip("/")) + 1:]

    # ---- writing ----------------------------------------------------------------------

    def put_bytes(self, data: bytes, *, suffix: str = "",
                  written: Callable[[int], None] | None = None) -> str:
        """Store ``data`` content-addressed; returns its address ``sha256/ab/cd/<hex><suffix>``.

        Identical content is stored once (writing it again only refreshes its modification
        time). ``suffix`` (e.g. ``.npy``) is part of the address, for readers that go by it.
        ``written``, if given, is called with the number of bytes actually transferred (0
        when the content was already stored).
        """
        address = content_address(hashlib.sha256(data).hexdigest(), suffix)
        path = self._path(address)
        sent = len(data)
        with self._errors("write", address):
            if self.is_local:
                if self._refresh(path, len(data)):
                    sent = 0
                else:
                    tmp = self._path(TEMP_PREFIX + uuid.uuid4().hex)
                    self._write_local(io.BytesIO(data), tmp)
                    self._rename(tmp, path)
            else:
                self.fs.pipe_file(path, bytes(data))  # one PUT (or multipart): atomic
        if written is not None:
            written(sent)
        return address

    def put_file(self, source: str | os.PathLike[str] | IO[bytes], *, suffix: str = "",
                 address: str | None = None, written: Callable[[int], None] | None = None) -> str:
        """Store a local file (a path) or a binary stream, read in chunks of CHUNK bytes, never
        whole; returns its address: content-addressed as :meth:`put_bytes`, or ``address``
        when given (an existing object there is replaced atomically; the content is then not
        hashed). A stream's ``read`` may return bytes or memoryviews.

        An exception raised while reading ``source`` propagates unchanged; either way nothing
        partial is left in the store. ``written``: as in :meth:`put_bytes`.
        """
        if address is not None and check_address(address, self.name).startswith(TEMP_PREFIX):
            raise AddressError(f"store {self.name!r}: {TEMP_PREFIX} is reserved for writes in flight")
        try:
            if self.is_local:
                address, sent = self._put_file_local(source, suffix, address)
            else:
                address, sent = self._put_file_remote(source, suffix, address)
        except SourceFailed as failed:
            raise failed.__cause__ from None  # type: ignore[misc]
        if written is not None:
            written(sent)
        return address

    def _put_file_local(self, source: Any, suffix: str, address: str | None) -> tuple[str, int]:
        with opened(source) as src:
            tmp = self._path(TEMP_PREFIX + uuid.uuid4().hex)
            with self._errors("write", address or "a new object"):
                digest, size = self._write_local(src, tmp, hash_content=address is None)
            address = address or content_address(digest, suffix)
            with self._errors("write", address):
                path = self._path(address)
                if address.startswith(CONTENT_PREFIX) and self._refresh(path, size):
                    self.fs.rm_file(tmp)
                    return address, 0
                self._rename(tmp, path)
        return address, size

    def _put_file_remote(self, source: Any, suffix: str, address: str | None) -> tuple[str, int]:
        if not isinstance(source, (str, os.PathLike)):  # a stream: spool it to a local file
            with tempfile.NamedTemporaryFile(prefix="mp-store-") as spool:
                while chunk := read_source(source, CHUNK):
                    spool.write(chunk)
                spool.flush()
                return self._put_file_remote(spool.name, suffix, address)
        if address is None:
            with opened(source) as src:
                digest, size = hash_stream(src)
            address = content_address(digest, suffix)
        path = self._path(address)
        size = os.path.getsize(source)
        with self._errors("write", address):
            if address.startswith(CONTENT_PREFIX) and self._refresh(path, size):
                return address, 0
            self.fs.put_file(os.fspath(source), path, chunksize=S3_PART)  # atomic on completion
        return address, size

    def _write_local(self, src: IO[bytes], tmp: str, hash_content: bool = True) -> tuple[str, int]:
        """Copy ``src`` to ``tmp`` (flushed to disk), hashing it unless ``hash_content`` is
        False; (sha256 hex or "", size)."""
        digest, size = hashlib.sha256(), 0
        self.fs.makedirs(self.fs._parent(tmp), exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as out:
                while chunk := read_source(src, CHUNK):
                    if hash_content:
                        digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            silently(self.fs.rm_file, tmp)
            raise
        return digest.hexdigest() if hash_content else "", size

    def _rename(self, tmp: str, path: str) -> None:
        """Move a written temporary file into place: one rename, atomic (never a copy, which
        fsspec's ``mv`` falls back to across devices), then made durable: the rows that will
        reference the object are committed durably too. On failure the temporary goes."""
        folder = self.fs._parent(path)
        try:
            self.fs.makedirs(folder, exist_ok=True)
            os.replace(tmp, path)
        except BaseException:
            silently(self.fs.rm_file, tmp)
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def refresh(self, address: str, size: int) -> None:
        """Make the object young again (as writing its content again would), before a new row
        references it; a :class:`MissingObjectError` if it is gone or not ``size`` bytes long."""
        path = self._path(address)
        with self._errors("refresh", address):
            if not self._refresh(path, size):
                raise MissingObjectError(f"{self!r}: no object of {size} bytes at {address!r}")

    def _refresh(self, path: str, size: int) -> bool:
        """If an object of ``size`` bytes is at ``path``, make it young again (so a running gc
        keeps it) and return True; False when it must be (re)written."""
        try:
            if self.fs.info(path)["size"] != size:
                return False  # truncated or foreign: rewrite it
            if self.is_local:
                os.utime(path)
                return True
        except FileNotFoundError:
            return False
        try:  # S3 has no touch: copy the object onto itself with new metadata
            self.fs.setxattr(path, mp_dagster_refreshed=now_utc().isoformat())
            return True
        except store_exceptions():
            return False  # gone meanwhile, or too large (over 5 GB) to copy at once: rewrite

    # ---- reading ----------------------------------------------------------------------

    def open(self, address: str, mode: str = "rb") -> IO[bytes]:
        """A binary file object reading the object (on S3 in requests of S3_BLOCK bytes).

        Errors while reading are the filesystem's (OSError); opening is a StoreError.
        """
        if mode != "rb":
            raise StoreError(f"{self!r}: objects are opened 'rb' only; write with put_bytes/put_file")
        path = self._path(address)
        with self._errors("open", address):
            return self.fs.open(path, "rb")

    def get_bytes(self, address: str, *, verify: bool = True) -> bytes:
        """The object's content. A content-addressed object is checked against its address
        unless ``verify=False`` (a :class:`CorruptObjectError` when it does not match)."""
        path = self._path(address)
        with self._errors("read", address):
            data = self.fs.cat_file(path)
        digest = content_digest(address)
        if verify and digest and hashlib.sha256(data).hexdigest() != digest:
            raise CorruptObjectError(f"{self!r}: object {address!r} is truncated or corrupt "
                                     f"({len(data)} bytes do not hash to its address)")
        return data

    def local_path(self, address: str) -> str | None:
        """The object's path on this machine (file stores; e.g. for memory mapping), else None."""
        path = self._path(address)
        return path if self.is_local else None

    def exists(self, address: str) -> bool:
        """True if an object is at ``address`` (an unreachable store is a StoreError, not False)."""
        try:
            self._info(address)
            return True
        except MissingObjectError:
            return False

    def _info(self, address: str) -> dict[str, Any]:
        path = self._path(address)
        with self._errors("look up", address):
            info = self.fs.info(path)
        if info.get("type") != "file":
            raise MissingObjectError(f"{self!r}: {address!r} is a folder, not an object")
        return info

    def size(self, address: str) -> int:
        """The object's size in bytes (compare with the size recorded when it was written)."""
        return int(self._info(address)["size"])

    def modified(self, address: str) -> datetime:
        """The object's modification time (UTC; on S3 the server's LastModified)."""
        return modified_time(self._info(address))

    def version(self, address: str) -> tuple[int, str]:
        """(size, token): the token changes when the object is rewritten (its modification
        time, and on S3 its ETag), for caching what was computed from its content."""
        info = self._info(address)
        return int(info["size"]), f"{modified_time(info).isoformat()}/{info.get('ETag', '')}"

    def checksum(self, address: str) -> str:
        """The SHA-256 (hex) of the object's content, read in chunks."""
        digest = hashlib.sha256()
        with self.open(address) as src, self._errors("read", address):
            while chunk := src.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def verify(self, address: str, *, size: int | None = None, checksum: str | None = None) -> None:
        """Check the object: its size against ``size``, then its content against ``checksum``
        or, for a content address, against the address. A :class:`CorruptObjectError` says
        what differs (e.g. a truncated upload)."""
        actual_size = self.size(address)
        if size is not None and actual_size != size:
            raise CorruptObjectError(f"{self!r}: object {address!r} has {actual_size} bytes, "
                                     f"{size} were written: truncated or replaced")
        expected = checksum or content_digest(address)
        if expected is not None and self.checksum(address) != expected:
            raise CorruptObjectError(f"{self!r}: object {address!r} ({actual_size} bytes) does "
                                     f"not have checksum {expected}: truncated or corrupt")

    # ---- deleting and listing ---------------------------------------------------------

    def delete(self, address: str) -> bool:
        """Remove the object; False if there was none (looked up first: S3 deletes of a
        missing key succeed). Only the garbage collector should delete objects that rows may
        reference."""
        if not self.exists(address):
            return False
        with self._errors("delete", address):
            self.fs.rm_file(self._path(address))
        return True

    def list(self, prefix: str = "", *, include_temp: bool = False) -> Iterator[StoredObject]:
        """The objects under the folder ``prefix`` ('' for all), with sizes and modification
        times, in address order. Objects being written (``.tmp/``) only with ``include_temp``."""
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        with self._errors("list", prefix or "the store"):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                found = {}
        for path in sorted(found):
            info = found[path]
            address = self._address(self.fs._strip_protocol(path))
            if info.get("type") != "file" or (address.startswith(TEMP_PREFIX) and not include_temp):
                continue
            yield StoredObject(address, int(info["size"]), modified_time(info))

    # ---- garbage collection -----------------------------------------------------------

    def collect_garbage(self, referenced: Iterable[str] | Callable[[], Iterable[str]], *,
                        grace: timedelta = DEFAULT_GRACE, dry_run: bool = True,
                        prefixes: Iterable[str] = (CONTENT_PREFIX,),
                        now: datetime | None = None) -> GCReport:
        """Remove (or with ``dry_run``, the default, only report) the objects under
        ``prefixes`` that no committed row references and that are older than ``grace``:
        see :func:`mp_dagster.store_gc.collect_garbage`."""
        from .store_gc import collect_garbage

        return collect_garbage(self, referenced, grace=grace, dry_run=dry_run,
                               prefixes=prefixes, now=now)


__all__ = ["CONTENT_PREFIX", "DEFAULT_GRACE", "AddressError", "CorruptObjectError",
           "MissingObjectError", "Store", "StoreError", "StoredObject", "check_address",
           "configured_stores", "content_address", "content_digest", "get_store"]
