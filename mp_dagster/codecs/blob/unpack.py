"""``unpack``: the public decoder, with its cached-layout fast path for single arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from mp_dagster.errors import BlobError

from .decode import _DECODE_ERRORS, _dec
from .format import _ALIGN, _MAGIC_LEN, _ORDER_F, _PREFIX_CACHE_MAX, _T_ARRAY, MAGIC, _Buffer


def _bad_magic(buf: _Buffer) -> BlobError:
    head = bytes(buf[:_MAGIC_LEN])
    if head[:3] == MAGIC[:3] and len(head) == _MAGIC_LEN and head[4:] == b"\0":
        return BlobError(f"unsupported blob format version {head[3:4]!r} (this code reads 1)")
    if head[:4] in (b"mYm\0", b"dj0\0") or head == b"ZL123":
        return BlobError("not an mp_dagster blob: this looks like a DataJoint (mYm/dj0) blob")
    return BlobError(f"not an mp_dagster blob: bad magic {head!r} (expected {MAGIC!r})")


def unpack(data: bytes | bytearray | memoryview) -> object:
    """Decode a blob written by :func:`pack`.

    Arrays come back writable with their dtype, shape and C/F order. For read-only input
    (``bytes``) array data is copied exactly once; for writable input (``bytearray`` or a
    writable ``memoryview``) arrays are zero-copy views sharing memory with ``data`` -- see
    the package docstring for the measurements behind this choice.

    Raises:
        BlobError: ``data`` is not bytes-like, or is truncated, corrupt, has trailing bytes,
            uses an unknown tag or a disallowed dtype, declares an array larger than the
            bytes present, or nests deeper than :data:`MAX_DEPTH`. No other exception type
            escapes for any input.
    """
    if type(data) is bytes:
        # fast path: one array whose header was seen (and fully validated) before
        n = len(data)
        if n > 16 and data[5] == _T_ARRAY:
            end = 9 + data[6]
            if end < n:
                end += 8 * data[end - 1]
                start = end + (-end % _ALIGN)
                layout = _UNPACK_LAYOUTS.get(data[:start])
                if layout is not None and n - start == layout[3]:
                    dt, shape, count, _nbytes, order = layout
                    arr = np.frombuffer(data, dt, count, start).copy()
                    return arr if order is None else arr.reshape(shape, order=order)
        return _unpack_buffer(data, True)
    if type(data) is bytearray and len(data) > 16 and data[5] == _T_ARRAY:
        # the same fast path for writable input: a zero-copy view (see the package docstring)
        n = len(data)
        end = 9 + data[6]
        if end < n:
            end += 8 * data[end - 1]
            start = end + (-end % _ALIGN)
            layout = _UNPACK_LAYOUTS.get(bytes(data[:start]))
            if layout is not None and n - start == layout[3]:
                dt, shape, count, _nbytes, order = layout
                arr = np.frombuffer(data, dt, count, start)
                return arr if order is None else arr.reshape(shape, order=order)
    return _unpack_general(data)


def _unpack_general(data: Any) -> object:
    """:func:`unpack` for anything but ``bytes``: through a byte ``memoryview``."""
    try:
        view = memoryview(data)
    except TypeError:
        raise BlobError(
            f"cannot decode a blob from {type(data).__qualname__}; expected bytes-like"
        ) from None
    if view.ndim != 1 or view.format != "B":
        try:
            view = view.cast("B")
        except TypeError:  # non-contiguous, or zeros in shape
            view = memoryview(view.tobytes())
    return _unpack_buffer(view, view.readonly)


def _unpack_buffer(buf: _Buffer, copy: bool) -> object:
    if buf[:_MAGIC_LEN] != MAGIC:
        raise _bad_magic(buf)
    try:
        value, pos = _dec(buf, _MAGIC_LEN, 0, copy)
    except BlobError:
        raise
    except _DECODE_ERRORS as exc:
        raise BlobError(f"truncated or corrupt blob ({type(exc).__name__}: {exc})") from None
    if pos != len(buf):
        raise BlobError(f"corrupt blob: {len(buf) - pos} trailing bytes after the value")
    if type(value) is np.ndarray and buf[_MAGIC_LEN] == _T_ARRAY and value.size:
        _remember_layout(buf, value)
    return value


# Blobs of one array whose header (MAGIC .. padding) was decoded and validated before are
# decoded from a cached layout: header bytes -> (dtype, shape, count, nbytes, reshape order).
_UNPACK_LAYOUTS: dict[bytes, tuple[np.dtype, tuple[int, ...], int, int, str | None]] = {}


def _remember_layout(buf: bytes, arr: np.ndarray) -> None:
    if len(_UNPACK_LAYOUTS) >= _PREFIX_CACHE_MAX:
        return
    start = len(buf) - arr.nbytes
    if start <= _MAGIC_LEN or start % _ALIGN:
        return
    order = None if arr.ndim == 1 else ("F" if buf[_MAGIC_LEN + 2 + buf[_MAGIC_LEN + 1]] == _ORDER_F else "C")
    _UNPACK_LAYOUTS[bytes(buf[:start])] = (arr.dtype, arr.shape, arr.size, arr.nbytes, order)
