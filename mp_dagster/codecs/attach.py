"""``<attach@store>``: a file's bytes with its name. Insert a path; the file is streamed into the
store content-addressed (the same file attached twice is stored once) and the column keeps
``{"address", "size", "sha256", "name"}``. Fetch gives an :class:`Attachment`: its name and
size at once, its content on ``download(folder)`` (the name preserved) or ``read_bytes()``,
checked against the checksum. A name that could leave the folder (``..``, separators, control
characters) is refused, on insert and again on download."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

from mp_dagster.store_addresses import CorruptObjectError, StoreError
from mp_dagster.stores import CHUNK, Store, get_store

from .store_codec import StoreCodec, record_address, record_field, upload_counter

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}\Z")
MAX_NAME = 255  # bytes, as most filesystems


def safe_name(name: Any) -> str:
    """``name`` if it is a plain file name (no folder, ``.``/``..``, control character,
    backslash, at most 255 bytes), else ValueError."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"attachment name {name!r} refused: a plain file name is needed (no folder, '.' or '..')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name.encode("utf-8", "replace")) > MAX_NAME:
        raise ValueError(f"attachment name {name!r} refused: control characters or longer than {MAX_NAME} bytes")
    return name


class Attachment:
    """A fetched ``<attach@store>`` value: ``name``, ``size``, ``sha256`` without store I/O."""

    __slots__ = ("address", "name", "sha256", "size", "store", "where")

    def __init__(self, store: str, address: str, name: str, size: int, sha256: str, where: str = "") -> None:
        self.store, self.address, self.name, self.size, self.sha256, self.where = (
            store, address, name, size, sha256, where)

    def __repr__(self) -> str:
        return f"<Attachment {self.name!r} ({self.size} bytes) in store {self.store!r}>"

    def record(self) -> dict[str, Any]:
        return {"address": self.address, "size": self.size, "sha256": self.sha256, "name": self.name}

    def open(self) -> IO[bytes]:
        """A binary stream of the content (not checked: use download or read_bytes for that)."""
        return get_store(self.store).open(self.address)

    def _copy(self, out: IO[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        with self.open() as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != self.size or digest.hexdigest() != self.sha256:
            raise CorruptObjectError(f"{self.where}: attachment {self.name!r} at {self.address!r} in store "
                                     f"{self.store!r} is truncated or corrupt ({size} bytes, {self.size} written)")

    def read_bytes(self) -> bytes:
        """The content, checked against its size and checksum."""
        import io

        out = io.BytesIO()
        self._copy(out)
        return out.getvalue()

    def download(self, folder: str | os.PathLike[str] = ".") -> Path:
        """Write the file into ``folder`` under its name and return its path. The content is
        checked before the file appears (written to a temporary name, then renamed); a file of
        that name with the same content is kept as is, with other content it is an error."""
        name = safe_name(self.name)
        folder = Path(folder)
        target = folder / name
        if target.resolve().parent != folder.resolve():
            raise StoreError(f"{self.where}: attachment name {name!r} would leave {folder}")
        if target.exists():
            if target.is_file() and target.stat().st_size == self.size and _file_sha256(target) == self.sha256:
                return target
            raise StoreError(f"{self.where}: {target} exists with other content: not overwritten")
        fd, tmp = tempfile.mkstemp(prefix=".mp-download-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                self._copy(out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class AttachCodec(StoreCodec):
    """``<attach@store>``: insert a file's path; fetch an :class:`Attachment`."""

    name = "attach"

    def validate(self, value: Any) -> None:
        if isinstance(value, Attachment):
            return
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"expected the path of a file to attach, got {type(value).__name__}")
        if not os.path.isfile(value):
            raise ValueError(f"{os.fspath(value)!r} is not a file")
        safe_name(os.path.basename(os.fspath(value)))

    def put(self, store: Store, value: Any, where: str) -> dict[str, Any]:
        if isinstance(value, Attachment):
            if value.store == store.name:
                store.refresh(value.address, value.size)  # young again: gc keeps it
                return value.record()
            with tempfile.TemporaryDirectory() as folder:
                return self.put(store, value.download(folder), where)
        path = os.fspath(value)
        name = safe_name(os.path.basename(path))
        suffix = os.path.splitext(name)[1]
        size = os.path.getsize(path)
        address = store.put_file(path, suffix=suffix if _SUFFIX.match(suffix) else "",
                                 written=upload_counter(store.name))
        if os.path.getsize(path) != size:
            raise ValueError(f"{path!r} changed while it was being stored")
        return {"address": address, "size": size, "sha256": address.split("/")[3][:64], "name": name}

    def get(self, store: Store, record: dict[str, Any], where: str) -> Attachment:
        sha = record_field(record, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"damaged store record: sha256 {sha!r}")
        return Attachment(store.name, record_address(store, record, where),
                          record_field(record, "name", str, where),  # checked again on download
                          record_field(record, "size", int, where), sha, where)
