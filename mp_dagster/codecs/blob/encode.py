"""Encoders: one per Python / numpy type, each appending byte chunks to a list."""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from mp_dagster.errors import BlobError

from .dtypes import _ENC_DTYPES, _enc_dtype_info
from .format import (
    _ALIGN,
    _ARR_HDR,
    _B_FALSE,
    _B_NONE,
    _B_TRUE,
    _MAX_LEN,
    _ORDER_C,
    _ORDER_F,
    _SUPPORTED,
    _T_BIGINT,
    _T_BYTES,
    _T_COMPLEX,
    _T_DECIMAL,
    _T_DICT,
    _T_FLOAT,
    _T_FROZENSET,
    _T_INT,
    _T_LIST,
    _T_OBJARRAY,
    _T_SET,
    _T_STR,
    _T_TUPLE,
    _TAG_C128,
    _TAG_F64,
    _TAG_I64,
    _TAG_LEN,
    _ZEROS,
    MAX_DEPTH,
)
from .stdlib import _enc_date, _enc_datetime, _enc_time, _enc_timedelta, _enc_uuid

# --- encoding -------------------------------------------------------------------------------
# Every encoder has the signature (obj, out, pos, depth) -> pos: it appends byte chunks to
# `out` and returns the new total length (needed to align array data).
_Encoder = Callable[[Any, list, int, int], int]


def _unsupported(obj: object) -> BlobError:
    return BlobError(
        f"cannot encode object of type {type(obj).__qualname__} in a blob; supported: {_SUPPORTED}"
    )


def _enc(obj: Any, out: list, pos: int, depth: int) -> int:
    enc = _ENCODERS.get(type(obj))
    if enc is None:
        enc = _resolve_encoder(obj)
    return enc(obj, out, pos, depth)


def _enc_none(obj: None, out: list, pos: int, depth: int) -> int:
    out.append(_B_NONE)
    return pos + 1


def _enc_bool(obj: bool, out: list, pos: int, depth: int) -> int:
    out.append(_B_TRUE if obj else _B_FALSE)
    return pos + 1


def _enc_int(obj: int, out: list, pos: int, depth: int) -> int:
    if -0x8000000000000000 <= obj <= 0x7FFFFFFFFFFFFFFF:
        out.append(_TAG_I64.pack(_T_INT, obj))
        return pos + 9
    raw = int(obj).to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
    return _enc_raw(_T_BIGINT, raw, out, pos)


def _enc_float(obj: float, out: list, pos: int, depth: int) -> int:
    out.append(_TAG_F64.pack(_T_FLOAT, obj))
    return pos + 9


def _enc_complex(obj: complex, out: list, pos: int, depth: int) -> int:
    out.append(_TAG_C128.pack(_T_COMPLEX, obj.real, obj.imag))
    return pos + 17


def _enc_raw(tag: int, raw: bytes | bytearray | memoryview, out: list, pos: int) -> int:
    n = len(raw)
    if n > _MAX_LEN:
        raise BlobError(f"cannot encode a {n}-byte string in a blob (limit {_MAX_LEN} bytes)")
    out.append(_TAG_LEN.pack(tag, n))
    out.append(raw)
    return pos + 5 + n


def _enc_str(obj: str, out: list, pos: int, depth: int) -> int:
    try:
        raw = obj.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BlobError(f"cannot encode str in a blob: not valid unicode ({exc})") from None
    return _enc_raw(_T_STR, raw, out, pos)


def _enc_bytes(obj: bytes | bytearray, out: list, pos: int, depth: int) -> int:
    return _enc_raw(_T_BYTES, obj, out, pos)


def _enc_memoryview(obj: memoryview, out: list, pos: int, depth: int) -> int:
    return _enc_raw(_T_BYTES, obj.tobytes(), out, pos)


def _deeper(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise BlobError(
            f"cannot encode containers nested more than {MAX_DEPTH} levels deep "
            "(or a container that contains itself)"
        )
    return depth + 1


def _enc_seq(tag: int) -> _Encoder:
    def enc(obj: Any, out: list, pos: int, depth: int) -> int:
        depth = _deeper(depth)
        n = len(obj)
        if n > _MAX_LEN:
            raise BlobError(f"cannot encode a container of {n} items in a blob")
        out.append(_TAG_LEN.pack(tag, n))
        pos += 5
        for item in obj:
            pos = _enc(item, out, pos, depth)
        return pos

    return enc


_enc_list = _enc_seq(_T_LIST)
_enc_tuple = _enc_seq(_T_TUPLE)
_enc_set = _enc_seq(_T_SET)
_enc_frozenset = _enc_seq(_T_FROZENSET)


def _enc_dict(obj: dict, out: list, pos: int, depth: int) -> int:
    depth = _deeper(depth)
    n = len(obj)
    if n > _MAX_LEN:
        raise BlobError(f"cannot encode a dict of {n} items in a blob")
    out.append(_TAG_LEN.pack(_T_DICT, n))
    pos += 5
    for key, value in obj.items():
        pos = _enc(key, out, pos, depth)
        pos = _enc(value, out, pos, depth)
    return pos


def _enc_array(arr: np.ndarray, out: list, pos: int, depth: int) -> int:
    dt = arr.dtype
    info = _ENC_DTYPES.get(dt)
    if info is None:
        if dt.kind == "O":
            return _enc_objarray(arr, out, pos, depth)
        info = _enc_dtype_info(dt)
    flags = arr.flags
    if flags.c_contiguous:
        order, data = _ORDER_C, arr
    elif flags.f_contiguous:
        order, data = _ORDER_F, arr.T  # same memory, C-contiguous
    else:
        arr = arr.copy(order="K")  # keeps an F-like layout F
        if not arr.flags.c_contiguous and arr.flags.f_contiguous:
            order, data = _ORDER_F, arr.T
        else:
            arr = np.ascontiguousarray(arr)
            order, data = _ORDER_C, arr
    ndim = arr.ndim
    head = info[0]
    dims = _ARR_HDR[ndim].pack(order, ndim, *arr.shape)
    out.append(head)
    out.append(dims)
    pos += len(head) + len(dims)
    pad = -pos % _ALIGN
    if pad:
        out.append(_ZEROS[pad])
        pos += pad
    nbytes = arr.nbytes
    if nbytes:
        if info[2]:
            data = data.view(np.int64)
        view = data.data
        if ndim != 1:
            view = view.cast("B")
        out.append(view)
    return pos + nbytes


def _enc_objarray(arr: np.ndarray, out: list, pos: int, depth: int) -> int:
    depth = _deeper(depth)
    order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
    ndim = arr.ndim
    out.append(bytes([_T_OBJARRAY]))
    out.append(_ARR_HDR[ndim].pack(ord(order), ndim, *arr.shape))
    pos += 3 + 8 * ndim
    for item in arr.ravel(order=order):
        pos = _enc(item, out, pos, depth)
    return pos


def _enc_npscalar(obj: np.generic, out: list, pos: int, depth: int) -> int:
    arr = np.asarray(obj)  # 0-d; also gives zero-length str_/bytes_ a 1-char dtype
    if arr.dtype.kind == "O":
        raise _unsupported(obj)
    info = _enc_dtype_info(arr.dtype)
    raw = arr.tobytes()
    out.append(info[1])
    out.append(raw)
    return pos + len(info[1]) + len(raw)


def _enc_decimal(obj: decimal.Decimal, out: list, pos: int, depth: int) -> int:
    return _enc_raw(_T_DECIMAL, str(obj).encode("ascii"), out, pos)


def _enc_ndarray_subclass(obj: np.ndarray, out: list, pos: int, depth: int) -> int:
    if isinstance(obj, np.ma.MaskedArray):
        raise BlobError(
            "cannot encode a numpy masked array in a blob (the mask would be lost); "
            "encode arr.filled(...) or the data and mask separately"
        )
    return _enc_array(np.asarray(obj), out, pos, depth)


_ENCODERS: dict[type, _Encoder] = {
    type(None): _enc_none,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_memoryview,
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    set: _enc_set,
    frozenset: _enc_frozenset,
    np.ndarray: _enc_array,
    decimal.Decimal: _enc_decimal,
    uuid.UUID: _enc_uuid,
    _dt.date: _enc_date,
    _dt.datetime: _enc_datetime,
    _dt.time: _enc_time,
    _dt.timedelta: _enc_timedelta,
}

# Subclasses (IntEnum, OrderedDict, namedtuple, np.float64 <: float...) are encoded as their
# base type; order matters: numpy scalars before float/int/str/bytes, bool before int,
# datetime before date.
_SUBCLASS_ENCODERS: tuple[tuple[type, _Encoder], ...] = (
    (np.ndarray, _enc_ndarray_subclass),
    (np.generic, _enc_npscalar),
    (bool, _enc_bool),
    (int, _enc_int),
    (float, _enc_float),
    (complex, _enc_complex),
    (str, _enc_str),
    (bytes, _enc_bytes),
    (bytearray, _enc_bytes),
    (list, _enc_list),
    (tuple, _enc_tuple),
    (dict, _enc_dict),
    (set, _enc_set),
    (frozenset, _enc_frozenset),
    (decimal.Decimal, _enc_decimal),
    (uuid.UUID, _enc_uuid),
    (_dt.datetime, _enc_datetime),
    (_dt.date, _enc_date),
    (_dt.time, _enc_time),
    (_dt.timedelta, _enc_timedelta),
)


def _resolve_encoder(obj: object) -> _Encoder:
    for base, enc in _SUBCLASS_ENCODERS:
        if isinstance(obj, base):
            return enc
    raise _unsupported(obj)


