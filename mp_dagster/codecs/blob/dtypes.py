"""Array dtypes allowed in a blob: the allow-list checked before ``np.dtype`` sees a string,
and the cached header bytes per dtype."""

from __future__ import annotations

import re

import numpy as np

from mp_dagster.errors import BlobError

from .format import _T_ARRAY, _T_NPSCALAR, _Buffer

# --- dtypes ---------------------------------------------------------------------------------
_DTYPE_RE = re.compile(
    r"([<>|])([biufcSUMm])([0-9]{1,9})"
    r"(?:\[([0-9]{0,9})(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?"
)
_NUMERIC_SIZES = {
    "b": (1,),
    "i": (1, 2, 4, 8),
    "u": (1, 2, 4, 8),
    "f": (2, 4, 8, 12, 16),
    "c": (8, 16, 24, 32),
}
_DTYPE_CACHE_MAX = 4096
_DEC_DTYPES: dict[bytes, np.dtype] = {}  # dtype string -> validated dtype
_ENC_DTYPES: dict[np.dtype, tuple[bytes, bytes, bool]] = {}  # dtype -> (A hdr, n hdr, as_i8)


def _parse_dtype(text: str) -> np.dtype:
    """Validate a dtype string against the allow-list and build the dtype; BlobError otherwise."""
    m = _DTYPE_RE.fullmatch(text)
    if m is None:
        raise BlobError(f"blob declares unsupported or malformed dtype {text!r}")
    byteorder, kind, size_s, _mult, unit = m.groups()
    size = int(size_s)
    if kind in _NUMERIC_SIZES:
        ok = unit is None and size in _NUMERIC_SIZES[kind]
    elif kind in "SU":
        ok = unit is None and size >= 1
    else:  # datetime64 / timedelta64
        ok = size == 8
    if not ok:
        raise BlobError(f"blob declares unsupported dtype {text!r}")
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError) as exc:
        raise BlobError(f"blob declares dtype {text!r}, not available here: {exc}") from None
    if dt.str != text or dt.kind != kind or dt.hasobject or dt.fields is not None:
        raise BlobError(f"blob declares non-canonical dtype {text!r}")
    return dt


def _enc_dtype_info(dt: np.dtype) -> tuple[bytes, bytes, bool]:
    """Header bytes for arrays / scalars of ``dt`` (cached); BlobError if not encodable."""
    info = _ENC_DTYPES.get(dt)
    if info is not None:
        return info
    text = dt.str
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in "biufcSUMm":
        raise BlobError(
            f"cannot encode numpy dtype {dt!r} in a blob; supported dtypes: bool, int, uint, "
            "float, complex, fixed-width bytes (S) and unicode (U), datetime64, timedelta64"
        )
    try:
        _parse_dtype(text)  # whatever we write must be readable
    except BlobError:
        raise BlobError(f"cannot encode numpy dtype {dt!r} in a blob") from None
    raw = text.encode("ascii")
    info = (
        bytes([_T_ARRAY, len(raw)]) + raw,
        bytes([_T_NPSCALAR, len(raw)]) + raw,
        dt.kind in "Mm",  # no buffer protocol for datetimes: export as int64
    )
    if len(_ENC_DTYPES) < _DTYPE_CACHE_MAX:
        _ENC_DTYPES[dt] = info
    return info


def _read_dtype(buf: _Buffer, pos: int) -> tuple[np.dtype, int]:
    n = buf[pos]
    pos += 1
    end = pos + n
    if end > len(buf):
        raise BlobError("truncated blob (dtype)")
    key = bytes(buf[pos:end])
    dt = _DEC_DTYPES.get(key)
    if dt is None:
        try:
            text = key.decode("ascii")
        except UnicodeDecodeError:
            raise BlobError(f"blob declares malformed dtype {key!r}") from None
        dt = _parse_dtype(text)
        if len(_DEC_DTYPES) < _DTYPE_CACHE_MAX:
            _DEC_DTYPES[key] = dt
    return dt, end

