"""Decoders: one per tag, each reading from a buffer and returning (value, new position)."""

from __future__ import annotations

import decimal
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from mp_dagster.errors import BlobError

from .dtypes import _read_dtype
from .format import (
    _ALIGN,
    _C128,
    _DIMS,
    _F64,
    _I64,
    _MAX_NDIM,
    _ORDER_C,
    _ORDER_F,
    _T_ARRAY,
    _T_BIGINT,
    _T_BYTES,
    _T_COMPLEX,
    _T_DATE,
    _T_DATETIME,
    _T_DECIMAL,
    _T_DICT,
    _T_FALSE,
    _T_FLOAT,
    _T_FROZENSET,
    _T_INT,
    _T_LIST,
    _T_NONE,
    _T_NPSCALAR,
    _T_OBJARRAY,
    _T_SET,
    _T_STR,
    _T_TIME,
    _T_TIMEDELTA,
    _T_TRUE,
    _T_TUPLE,
    _T_UUID,
    _U8U8,
    _U32,
    _ZEROS,
    MAX_DEPTH,
    _Buffer,
)
from .stdlib import _dec_date, _dec_datetime, _dec_time, _dec_timedelta, _dec_uuid

# --- decoding -------------------------------------------------------------------------------
# Every decoder has the signature (buf, pos, depth, copy) -> (value, pos), where pos is just
# past the tag. `copy` is True when the input buffer is read-only.
_Decoder = Callable[[_Buffer, int, int, bool], tuple[Any, int]]


def _dec(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    tag = buf[pos]
    dec = _DECODERS[tag]
    if dec is None:
        raise BlobError(f"corrupt blob: unknown tag {tag:#04x} at offset {pos}")
    return dec(buf, pos + 1, depth, copy)


def _const(value: object) -> _Decoder:
    def dec(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
        return value, pos

    return dec


def _dec_int(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    return _I64.unpack_from(buf, pos)[0], pos + 8


def _dec_float(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    return _F64.unpack_from(buf, pos)[0], pos + 8


def _dec_complex(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    re_, im = _C128.unpack_from(buf, pos)
    return complex(re_, im), pos + 16


def _raw(buf: _Buffer, pos: int, what: str) -> tuple[_Buffer, int]:
    (n,) = _U32.unpack_from(buf, pos)
    pos += 4
    end = pos + n
    if end > len(buf):
        raise BlobError(f"truncated blob: {what} of {n} bytes at offset {pos} runs past the end")
    return buf[pos:end], end


def _dec_bigint(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    raw, pos = _raw(buf, pos, "int")
    return int.from_bytes(raw, "little", signed=True), pos


def _dec_str(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    raw, pos = _raw(buf, pos, "str")
    try:
        return str(raw, "utf-8"), pos
    except UnicodeDecodeError:
        raise BlobError(f"corrupt blob: str before offset {pos} is not valid utf-8") from None


def _dec_bytes(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    raw, pos = _raw(buf, pos, "bytes")
    return bytes(raw), pos


def _count(buf: _Buffer, pos: int, depth: int, per_item: int) -> tuple[int, int]:
    if depth >= MAX_DEPTH:
        raise BlobError(f"blob nests containers more than {MAX_DEPTH} levels deep")
    (n,) = _U32.unpack_from(buf, pos)
    pos += 4
    if n * per_item > len(buf) - pos:  # every value takes at least one byte
        raise BlobError(f"truncated blob: container of {n} items at offset {pos} cannot fit")
    return n, pos


def _dec_list(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    n, pos = _count(buf, pos, depth, 1)
    depth += 1
    items = []
    append = items.append
    for _ in range(n):
        item, pos = _dec(buf, pos, depth, copy)
        append(item)
    return items, pos


def _dec_tuple(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    items, pos = _dec_list(buf, pos, depth, copy)
    return tuple(items), pos


def _dec_setlike(kind: type) -> _Decoder:
    def dec(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
        items, pos = _dec_list(buf, pos, depth, copy)
        try:
            result = kind(items)
        except TypeError:
            raise BlobError(f"corrupt blob: {kind.__name__} with unhashable items") from None
        if len(result) != len(items):
            raise BlobError(f"corrupt blob: {kind.__name__} with duplicate items")
        return result, pos

    return dec


def _dec_dict(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    n, pos = _count(buf, pos, depth, 2)
    depth += 1
    result = {}
    for _ in range(n):
        key, pos = _dec(buf, pos, depth, copy)
        value, pos = _dec(buf, pos, depth, copy)
        try:
            result[key] = value
        except TypeError:
            raise BlobError(
                f"corrupt blob: unhashable dict key of type {type(key).__name__}"
            ) from None
    if len(result) != n:
        raise BlobError("corrupt blob: dict with duplicate keys")
    return result, pos


def _read_shape(buf: _Buffer, pos: int) -> tuple[str, tuple[int, ...], int, int]:
    """Order, shape, element count (exact Python int) and new position of an array header."""
    order, ndim = _U8U8.unpack_from(buf, pos)
    if ndim > _MAX_NDIM:
        raise BlobError(f"corrupt blob: array with {ndim} dimensions (max {_MAX_NDIM})")
    if order == _ORDER_C:
        order_s = "C"
    elif order == _ORDER_F:
        order_s = "F"
    else:
        raise BlobError(f"corrupt blob: unknown array order byte {order:#04x}")
    shape = _DIMS[ndim].unpack_from(buf, pos + 2)
    count = 1
    for d in shape:
        if d >= 0x8000000000000000:
            raise BlobError(f"corrupt blob: array dimension {d} is out of range")
        count *= d
    return order_s, shape, count, pos + 2 + 8 * ndim


def _dec_array(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    dt, pos = _read_dtype(buf, pos)
    order, shape, count, pos = _read_shape(buf, pos)
    pad = -pos % _ALIGN
    if pad:
        if buf[pos : pos + pad] != _ZEROS[pad]:
            raise BlobError(f"corrupt blob: bad array padding at offset {pos}")
        pos += pad
    nbytes = count * dt.itemsize
    end = pos + nbytes
    if end > len(buf):
        raise BlobError(
            f"truncated or corrupt blob: array of shape {shape} and dtype {dt.str} needs "
            f"{nbytes} bytes at offset {pos}, only {max(len(buf) - pos, 0)} present"
        )
    if count:
        arr = np.frombuffer(buf, dt, count, pos)
        if copy:
            arr = arr.copy()
    else:
        arr = np.empty(0, dt)
    if len(shape) != 1:
        try:
            arr = arr.reshape(shape, order=order)
        except ValueError as exc:
            raise BlobError(f"corrupt blob: invalid array shape {shape}: {exc}") from None
    return arr, end


def _dec_objarray(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise BlobError(f"blob nests containers more than {MAX_DEPTH} levels deep")
    order, shape, count, pos = _read_shape(buf, pos)
    if count > len(buf) - pos:  # every element takes at least one byte
        raise BlobError(f"truncated blob: object array of shape {shape} cannot fit")
    depth += 1
    flat = np.empty(count, dtype=object)
    for i in range(count):
        flat[i], pos = _dec(buf, pos, depth, copy)
    try:
        arr = flat.reshape(shape, order=order)
    except ValueError as exc:
        raise BlobError(f"corrupt blob: invalid array shape {shape}: {exc}") from None
    return arr, pos


def _dec_npscalar(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    dt, pos = _read_dtype(buf, pos)
    end = pos + dt.itemsize
    if end > len(buf):
        raise BlobError("truncated blob (numpy scalar)")
    return np.frombuffer(buf, dt, 1, pos)[0], end


def _dec_decimal(buf: _Buffer, pos: int, depth: int, copy: bool) -> tuple[Any, int]:
    raw, pos = _raw(buf, pos, "decimal")
    try:
        return decimal.Decimal(bytes(raw).decode("ascii")), pos
    except (UnicodeDecodeError, decimal.InvalidOperation):
        raise BlobError("corrupt blob: invalid decimal") from None


_DECODERS: list[_Decoder | None] = [None] * 256
for _tag, _decoder in (
    (_T_NONE, _const(None)),
    (_T_TRUE, _const(True)),
    (_T_FALSE, _const(False)),
    (_T_INT, _dec_int),
    (_T_BIGINT, _dec_bigint),
    (_T_FLOAT, _dec_float),
    (_T_COMPLEX, _dec_complex),
    (_T_STR, _dec_str),
    (_T_BYTES, _dec_bytes),
    (_T_LIST, _dec_list),
    (_T_TUPLE, _dec_tuple),
    (_T_DICT, _dec_dict),
    (_T_SET, _dec_setlike(set)),
    (_T_FROZENSET, _dec_setlike(frozenset)),
    (_T_ARRAY, _dec_array),
    (_T_OBJARRAY, _dec_objarray),
    (_T_NPSCALAR, _dec_npscalar),
    (_T_DECIMAL, _dec_decimal),
    (_T_UUID, _dec_uuid),
    (_T_DATE, _dec_date),
    (_T_DATETIME, _dec_datetime),
    (_T_TIME, _dec_time),
    (_T_TIMEDELTA, _dec_timedelta),
):
    _DECODERS[_tag] = _decoder
del _tag, _decoder

# Anything a decoder can raise on malformed input that is not already a BlobError.
_DECODE_ERRORS = (
    struct.error,
    IndexError,
    KeyError,
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    OverflowError,
    ArithmeticError,  # includes decimal.InvalidOperation
    MemoryError,
    RecursionError,
    BufferError,
)
