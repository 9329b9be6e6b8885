"""``<npy@store>``: numpy arrays as plain ``.npy`` files (readable by any numpy), fetched as
lazy references (:class:`NpyRef`) whose shape and dtype come from the column, not the store.

Writing streams the ``.npy`` header and then the array's own memory into the store (no copy of
the array, unless it is neither C- nor Fortran-contiguous), under a unique name
``objects/<schema>/<table>/<attribute>/<uuid>.npy``: no hashing, so writing costs about what
``np.save`` costs. The column keeps ``{"address", "size", "shape", "dtype", "fortran_order"}``,
so fetching 10,000 references reads no object at all. ``load()`` memory-maps the file on a
file store (read-only, nothing read until used) and reads it on S3; it checks the object's size
and header against the record, so a truncated or replaced file is an error, not a wrong array.
Dtypes are those of the blob format (no object or structured dtypes: never pickle).
"""

from __future__ import annotations

import io
import json
import math
import os
import uuid
from typing import Any

import numpy as np

from mp_dagster.errors import BlobError, DataError
from mp_dagster.store_addresses import (
    OBJECTS_PREFIX,
    CorruptObjectError,
    MissingObjectError,
    StoreError,
    check_address,
)
from mp_dagster.stores import Store, get_store

from .blob.dtypes import _parse_dtype
from .store_codec import StoreCodec, record_field, upload_counter


def _dtype(text: str) -> np.dtype:
    try:
        return _parse_dtype(text)
    except BlobError as exc:
        raise ValueError(str(exc).replace("blob declares", "dtype")) from None


class _Stream:
    """The ``.npy`` file as a read-only stream of memoryviews: header, then the array's memory."""

    def __init__(self, header: bytes, data: np.ndarray) -> None:
        self.parts = [memoryview(header), memoryview(data)]
        self.index = self.offset = 0

    def read(self, size: int = -1) -> memoryview | bytes:
        while self.index < len(self.parts):
            part = self.parts[self.index]
            left = len(part) - self.offset
            if left > 0:
                n = left if size is None or size < 0 else min(size, left)
                out = part[self.offset:self.offset + n]
                self.offset += n
                return out
            self.index, self.offset = self.index + 1, 0
        return b""


def npy_header(array: np.ndarray, fortran_order: bool) -> bytes:
    """The ``.npy`` header np.save would write for ``array`` (format 1.0, else 2.0)."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": fortran_order,
              "shape": array.shape}
    out = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(out, header)
    except ValueError:  # a header over 64 KiB
        out = io.BytesIO()
        np.lib.format.write_array_header_2_0(out, header)
    return out.getvalue()


def object_address(where: str, suffix: str) -> str:
    """A new unique address ``objects/<schema>/<table>/<attribute>/<uuid><suffix>``."""
    parts = [p for p in where.split(".") if p]
    folder = "/".join(parts) if len(parts) == 3 and all(p.isidentifier() for p in parts) else "unnamed"
    return f"{OBJECTS_PREFIX}{folder}/{uuid.uuid4().hex}{suffix}"


_DTYPES: dict[str, np.dtype] = {}  # dtype text -> validated dtype


def _cached_dtype(text: str) -> np.dtype:
    dtype = _DTYPES.get(text)
    if dtype is None:
        dtype = _dtype(text)
        if len(_DTYPES) < 1024:
            _DTYPES[text] = dtype
    return dtype


class NpyRef:
    """A lazy reference to an array in a store: ``shape``, ``dtype``, ``nbytes`` without any
    store I/O; ``load()`` (memory-mapped on file stores) or ``np.asarray(ref)`` reads it.

    A fetched reference keeps its JSON record as the database returned it and reads it on
    first use, so a fetch of many references costs little more than a fetch of the rows."""

    __slots__ = ("_meta", "_record", "store", "where")

    def __init__(self, store: str, record: dict[str, Any] | str, where: str = "") -> None:
        self.store, self._record, self.where = store, record, where
        self._meta: tuple[str, tuple[int, ...], np.dtype, int, bool] | None = None

    def _parsed(self) -> tuple[str, tuple[int, ...], np.dtype, int, bool]:
        meta = self._meta
        if meta is None:
            meta = self._meta = _parse_record(self.store, self._record, self.where)
        return meta

    address = property(lambda self: self._parsed()[0], doc="The object's address in the store.")
    shape = property(lambda self: self._parsed()[1], doc="The array's shape (from the row).")
    dtype = property(lambda self: self._parsed()[2], doc="The array's dtype (from the row).")
    size = property(lambda self: self._parsed()[3], doc="The .npy file's size in bytes.")
    fortran_order = property(lambda self: self._parsed()[4], doc="True if stored in Fortran order.")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the array's data (the object is a little larger: the .npy header)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array reference")
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"<NpyRef {self.where or '?'} shape={self.shape} dtype={self.dtype} "
                f"in store {self.store!r} at {self.address!r}>")

    def record(self) -> dict[str, Any]:
        """The JSON record the column keeps."""
        address, shape, dtype, size, fortran = self._parsed()
        return {"address": address, "size": size, "shape": list(shape), "dtype": dtype.str,
                "fortran_order": fortran}

    def _corrupt(self, why: str) -> CorruptObjectError:
        return CorruptObjectError(f"{self.where}: <npy@{self.store}> object {self.address!r}: {why}")

    def load(self, mmap: bool = True) -> np.ndarray:
        """The array. On a file store, memory-mapped read-only (``mmap=False``: read into
        memory); on S3, read (one array's memory). A missing, truncated or replaced object is a
        StoreError naming the attribute."""
        store = get_store(self.store)
        path = store.local_path(self.address)
        try:
            actual = os.stat(path).st_size if path is not None else store.size(self.address)
        except FileNotFoundError:
            raise MissingObjectError(f"{self.where}: {store!r}: no object at {self.address!r}") from None
        except MissingObjectError as exc:
            raise MissingObjectError(f"{self.where}: {exc}") from None
        if actual != self.size:
            raise self._corrupt(f"{actual} bytes, {self.size} were written: truncated or replaced")
        try:
            if path is not None:
                array = np.load(path, mmap_mode="r" if mmap and self.nbytes else None, allow_pickle=False)
            else:
                with store.open(self.address) as f:
                    array = np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise self._corrupt(f"not a readable .npy file ({type(exc).__name__}: {exc})") from None
        if array.shape != self.shape or array.dtype != self.dtype:
            raise self._corrupt(f"holds {array.shape} {array.dtype}, {self.shape} {self.dtype} were written")
        return array

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.load(mmap=not copy)
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        return np.array(array) if copy else np.asarray(array)


def _parse_record(store: str, record: Any, where: str) -> tuple[str, tuple[int, ...], np.dtype, int, bool]:
    """(address, shape, dtype, size, fortran_order) of a JSON record (text or dict), checked."""
    try:
        if isinstance(record, (str, bytes)):
            record = json.loads(record)
        shape = record_field(record, "shape", list, where)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"damaged store record: shape {shape!r}")
        return (check_address(record_field(record, "address", str, where), store), tuple(shape),
                _cached_dtype(record_field(record, "dtype", str, where)), record_field(record, "size", int, where),
                bool(record.get("fortran_order", False)))
    except (ValueError, StoreError) as exc:
        raise DataError(f"{where}: <npy@{store}>: {exc}") from None


class NpyCodec(StoreCodec):
    """``<npy@store>``: arrays as ``.npy`` files; fetched as :class:`NpyRef`."""

    name = "npy"

    def validate(self, value: Any) -> None:
        if not isinstance(value, (np.ndarray, np.generic, NpyRef)):
            raise TypeError(f"expected a numpy array, got {type(value).__name__}")
        if not isinstance(value, NpyRef):
            dtype = np.asarray(value).dtype
            if dtype.hasobject or dtype.fields is not None:
                raise TypeError(f"dtype {dtype} is not stored as .npy (object and structured dtypes "
                                "would need pickle)")
            _dtype(dtype.str)

    takes_json_text = True  # fetch hands over the column's JSON text: NpyRef reads it when used

    def store_decoder(self, store_name: str, where: str) -> Any:
        """A reference per value, without touching the store (nor parsing the record yet)."""
        return lambda record: NpyRef(store_name, record, where)

    def put(self, store: Store, value: Any, where: str) -> dict[str, Any]:
        if isinstance(value, NpyRef):
            if value.store == store.name:  # the same object: one more reference, no copy
                store.refresh(value.address, value.size)  # young again: gc keeps it
                return value.record()
            value = value.load()
        array = np.asarray(value)
        fortran = not array.flags.c_contiguous and array.flags.f_contiguous
        if not (array.flags.c_contiguous or fortran):
            array = np.ascontiguousarray(array)  # the one copy: a strided view
        header = npy_header(array, fortran)
        data = (array.T if fortran else array).reshape(-1).view(np.uint8)
        address = store.put_file(_Stream(header, data), address=object_address(where, ".npy"),
                                 written=upload_counter(store.name))
        return {"address": address, "size": len(header) + array.nbytes, "shape": list(array.shape),
                "dtype": array.dtype.str, "fortran_order": fortran}

    def get(self, store: Store, record: dict[str, Any], where: str) -> NpyRef:
        ref = NpyRef(store.name, record, where)
        ref._parsed()
        return ref
