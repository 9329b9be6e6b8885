"""The blob format's constants: magic, tags, precompiled structs, limits (see the package
docstring for the layout)."""

from __future__ import annotations

import struct

MAGIC = b"mpb1\0"
"""Prefix of every blob written by :func:`pack` (format version 1)."""

MAX_DEPTH = 100
"""Maximum nesting of containers (list, tuple, dict, set, object arrays) in a blob."""

_MAGIC_LEN = len(MAGIC)
_ALIGN = 16  # array data starts at a multiple of this offset from the start of the blob
_MAX_NDIM = 64
_MAX_LEN = 0xFFFFFFFF  # u32 lengths and counts
_ZEROS = tuple(bytes(k) for k in range(_ALIGN))
_SUPPORTED = (
    "numpy arrays (bool, int, uint, float, complex, S, U, datetime64, timedelta64 dtypes, "
    "or object arrays of supported values), numpy scalars, None, bool, int, float, complex, "
    "str, bytes, bytearray, list, tuple, dict, set, frozenset, decimal.Decimal, uuid.UUID, "
    "datetime.date, datetime.datetime, datetime.time, datetime.timedelta"
)

# --- tags -----------------------------------------------------------------------------------
_T_NONE = ord("N")
_T_TRUE = ord("T")
_T_FALSE = ord("F")
_T_INT = ord("i")
_T_BIGINT = ord("I")
_T_FLOAT = ord("f")
_T_COMPLEX = ord("c")
_T_STR = ord("s")
_T_BYTES = ord("b")
_T_LIST = ord("l")
_T_TUPLE = ord("t")
_T_DICT = ord("d")
_T_SET = ord("S")
_T_FROZENSET = ord("z")
_T_ARRAY = ord("A")
_T_OBJARRAY = ord("O")
_T_NPSCALAR = ord("n")
_T_DECIMAL = ord("D")
_T_UUID = ord("u")
_T_DATE = ord("a")
_T_DATETIME = ord("w")
_T_TIME = ord("h")
_T_TIMEDELTA = ord("e")

_B_NONE = bytes([_T_NONE])
_B_TRUE = bytes([_T_TRUE])
_B_FALSE = bytes([_T_FALSE])
_ORDER_C = ord("C")
_ORDER_F = ord("F")

# --- precompiled structs --------------------------------------------------------------------
_TAG_I64 = struct.Struct("<Bq")
_TAG_F64 = struct.Struct("<Bd")
_TAG_C128 = struct.Struct("<Bdd")
_TAG_LEN = struct.Struct("<BI")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_U32 = struct.Struct("<I")
_U8U8 = struct.Struct("<BB")
_DATE = struct.Struct("<HBB")
_DATETIME = struct.Struct("<HBBBBBIBB")  # y, m, d, H, M, S, us, fold, has_tz
_TIME = struct.Struct("<BBBIBB")  # H, M, S, us, fold, has_tz
_TIMEDELTA = struct.Struct("<iII")  # days, seconds, microseconds
# order, ndim, dims -- one struct per ndim so a header is a single pack/unpack call
_ARR_HDR = tuple(struct.Struct("<BB" + "Q" * n) for n in range(_MAX_NDIM + 1))
_DIMS = tuple(struct.Struct("<" + "Q" * n) for n in range(_MAX_NDIM + 1))

_Buffer = bytes | memoryview

_PREFIX_CACHE_MAX = 4096  # entries of the pack prefix / unpack layout caches
