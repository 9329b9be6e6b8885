"""``<filepath@store>``: a file already in the store (put there by an instrument, a copy...),
tracked by its path relative to the store's root and its checksum. Insert the relative path
(or, on a file store, an absolute path under its root); the column keeps ``{"address", "size",
"sha256"}``. Fetch gives a :class:`StoredFile`, checked first: a file that is gone, or whose
size or checksum changed since it was inserted, is an error naming the attribute. These files
belong to the user: the garbage collector never removes them.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import IO, Any

from mp_dagster.store_addresses import TEMP_PREFIX, CorruptObjectError, check_address
from mp_dagster.stores import Store, get_store

from .store_codec import StoreCodec, managed, record_address, record_field

_verified: dict[tuple[str, str, int, str], str] = {}  # (store, address, size, mtime) -> sha256
_verified_lock = threading.Lock()
MAX_VERIFIED = 100_000


class StoredFile:
    """A fetched ``<filepath@store>`` value: ``address`` (relative to the store's root), ``size``,
    ``sha256``; ``path`` is the local path on a file store (None on S3), ``open()`` reads it
    anywhere. Usable as a path on file stores (``np.load(f)``, ``open(f)``)."""

    __slots__ = ("address", "path", "sha256", "size", "store", "where")

    def __init__(self, store: str, address: str, size: int, sha256: str, path: str | None, where: str = "") -> None:
        self.store, self.address, self.size, self.sha256, self.path, self.where = (
            store, address, size, sha256, path, where)

    def __repr__(self) -> str:
        return f"<StoredFile {self.address!r} ({self.size} bytes) in store {self.store!r}>"

    def __fspath__(self) -> str:
        if self.path is None:
            raise TypeError(f"{self.address!r} is in S3 store {self.store!r}, not a local file: use .open()")
        return self.path

    def record(self) -> dict[str, Any]:
        return {"address": self.address, "size": self.size, "sha256": self.sha256}

    def open(self) -> IO[bytes]:
        """A binary stream of the file."""
        return get_store(self.store).open(self.address)

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()


def _checked(store: Store, address: str, size: int | None, sha256: str | None, where: str) -> tuple[int, str]:
    """(size, sha256) of the object, compared with ``size``/``sha256`` when given. The checksum
    is computed once per (object, size, modification time) in this process."""
    actual, token = store.version(address)
    if size is not None and actual != size:
        raise CorruptObjectError(f"{where}: {store!r}: file {address!r} has {actual} bytes, it had "
                                 f"{size} when it was inserted: it changed or was truncated")
    key = (store.name, address, actual, token)
    digest = _verified.get(key)
    if digest is None:
        digest = store.checksum(address)
        with _verified_lock:
            if len(_verified) >= MAX_VERIFIED:
                _verified.clear()
            _verified[key] = digest
    if sha256 is not None and digest != sha256:
        raise CorruptObjectError(f"{where}: {store!r}: file {address!r} does not have the checksum it had "
                                 "when it was inserted: its content changed")
    return actual, digest


class FilepathCodec(StoreCodec):
    """``<filepath@store>``: insert a path in the store; fetch a checked :class:`StoredFile`."""

    name = "filepath"

    def validate(self, value: Any) -> None:
        if not isinstance(value, (str, os.PathLike, StoredFile)):
            raise TypeError(f"expected a path relative to the store, got {type(value).__name__}")

    def relative(self, store: Store, value: Any) -> str:
        """The address of ``value`` in ``store``; AddressError/ValueError if it is outside."""
        text = os.fspath(value)
        if os.path.isabs(text):
            if not store.is_local:
                raise ValueError(f"{text!r} is an absolute path; {store!r} is on S3: give the key "
                                 "relative to the store's root")
            root = Path(store.root).resolve()
            resolved = Path(text).resolve()
            if resolved != root and root not in resolved.parents:
                raise ValueError(f"{text!r} is not under {store!r}'s root {store.root}")
            text = resolved.relative_to(root).as_posix()
        address = check_address(text, store.name)
        if managed(address) or address.startswith(TEMP_PREFIX):
            raise ValueError(f"{address!r} is in an area the store manages itself (sha256/, objects/, "
                             ".tmp/): <filepath> tracks files of your own")
        return address

    def put(self, store: Store, value: Any, where: str) -> dict[str, Any]:
        if isinstance(value, StoredFile):
            if value.store == store.name:
                return value.record()
            value = value.address
        address = self.relative(store, value)
        size, digest = _checked(store, address, None, None, where)
        return {"address": address, "size": size, "sha256": digest}

    def get(self, store: Store, record: dict[str, Any], where: str) -> StoredFile:
        address = record_address(store, record, where)
        size = record_field(record, "size", int, where)
        sha = record_field(record, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"damaged store record: sha256 {sha!r}")
        _checked(store, address, size, sha, where)
        return StoredFile(store.name, address, size, sha, store.local_path(address), where)
