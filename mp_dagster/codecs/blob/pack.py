"""``pack``: the public encoder, with its fast path for C-contiguous arrays."""

from __future__ import annotations

import numpy as np

from mp_dagster.errors import BlobError

from .dtypes import _ENC_DTYPES, _enc_dtype_info
from .encode import _enc, _enc_array
from .format import (
    _ALIGN,
    _ARR_HDR,
    _MAGIC_LEN,
    _MAX_NDIM,
    _ORDER_C,
    _PREFIX_CACHE_MAX,
    _ZEROS,
    MAGIC,
)

# A C-contiguous array's blob is a prefix that depends only on (dtype, shape) -- MAGIC, the
# array header and the padding -- followed by its data: prefixes are cached (bounded).
_PACK_PREFIXES: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}
_SMALL_ARRAY = 16384  # bytes: below this ``prefix + tobytes()`` is the fastest way to build it


def _pack_prefix(arr: np.ndarray) -> bytes | None:
    """MAGIC + header + padding of a C-contiguous ``arr`` (cached); None to take the general path."""
    dt = arr.dtype
    info = _ENC_DTYPES.get(dt)
    if info is None:
        if dt.kind == "O":
            return None
        try:
            info = _enc_dtype_info(dt)
        except BlobError:
            return None  # the general path raises it
    if info[2] or arr.ndim > _MAX_NDIM:  # datetimes are exported as int64: general path
        return None
    ndim = arr.ndim
    head = info[0] + _ARR_HDR[ndim].pack(_ORDER_C, ndim, *arr.shape)
    pos = _MAGIC_LEN + len(head)
    prefix = MAGIC + head + _ZEROS[-pos % _ALIGN]
    if len(_PACK_PREFIXES) < _PREFIX_CACHE_MAX:
        _PACK_PREFIXES[(dt, arr.shape)] = prefix
    return prefix


def pack(obj: object) -> bytes:
    """Encode ``obj`` as a blob (``MAGIC`` + tagged value); see the package docstring.

    Supported: numpy arrays (numeric, bool, ``S``/``U``, datetime64/timedelta64 dtypes, any
    shape, C or F order; object arrays element by element), numpy scalars, ``None``, ``bool``,
    ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``/``bytearray`` (decoded as
    ``bytes``), ``list``, ``tuple``, ``dict`` (any encodable hashable keys), ``set``,
    ``frozenset``, ``decimal.Decimal``, ``uuid.UUID`` and ``datetime`` date/datetime/time/
    timedelta (naive or with a fixed ``datetime.timezone`` offset). Subclasses are encoded as
    their base type. Containers may nest up to :data:`MAX_DEPTH` levels.

    Raises:
        BlobError: ``obj`` (or something inside it) cannot be encoded exactly.
    """
    if type(obj) is np.ndarray:  # fast path for the common case
        if obj.flags.c_contiguous:
            prefix = _PACK_PREFIXES.get((obj.dtype, obj.shape))
            if prefix is None:
                prefix = _pack_prefix(obj)
            if prefix is not None:
                if obj.nbytes <= _SMALL_ARRAY:  # two small copies beat building a list
                    return prefix + obj.tobytes()
                return b"".join((prefix, obj))  # one copy of the data
        out = [MAGIC]
        _enc_array(obj, out, _MAGIC_LEN, 0)
        return b"".join(out)
    out = [MAGIC]
    try:
        _enc(obj, out, _MAGIC_LEN, 0)
    except RecursionError:
        raise BlobError(f"cannot encode {type(obj).__qualname__}: nested too deeply") from None
    return b"".join(out)

