"""Values: how a Python value becomes a SQL parameter for an attribute, and how a stored value
comes back (one converter per canonical type, specialised per attribute for the write and fetch
hot paths; codec attributes go through their codec chain)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import codecs
from .errors import DataError, MPError
from .heading import INT_RANGES, Attribute, SQLType

# --------------------------------------------------------------------------------------------
# Python value -> SQL parameter.  One function per canonical type; each raises ValueError with
# the reason, which the caller turns into a DataError naming table and attribute.


def _to_int(attr: Attribute, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        out = int(value)  # True/False are stored as 1/0, as DataJoint stores them
    elif isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        out = int(value)
    else:
        raise ValueError(f"expected an integer, got {type(value).__name__} {value!r:.60}")
    lo, hi = INT_RANGES[attr.type.name]
    if not lo <= out <= hi:
        raise ValueError(f"{out} is out of range for {attr.type} [{lo}, {hi}]")
    return out


def _to_float(attr: Attribute, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating, decimal.Decimal)
    ):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r:.60}")
    out = float(value)
    if attr.type.name == "float32" and math.isfinite(out) and abs(out) > 3.4028234663852886e38:
        raise ValueError(f"{out} is out of range for float32")
    if math.isnan(out) and attr.in_key:
        raise ValueError("NaN cannot be part of a primary key")
    return out


def _to_decimal(attr: Attribute, value: Any) -> decimal.Decimal:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected a number, got bool {value!r}")
    try:
        out = decimal.Decimal(str(value)) if not isinstance(value, decimal.Decimal) else value
    except decimal.InvalidOperation:
        raise ValueError(f"expected a decimal number, got {value!r:.60}") from None
    if not out.is_finite():
        raise ValueError(f"{out} is not a finite decimal")
    precision, scale = attr.type.precision or 0, attr.type.scale or 0
    if not out.is_zero() and out.adjusted() >= precision - scale:  # too many integer digits
        raise ValueError(f"{out} does not fit decimal({precision},{scale})")
    with decimal.localcontext() as context:
        context.prec = max(precision + 2, 28)
        quantized = out.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_EVEN)
    if len(quantized.as_tuple().digits) > precision and quantized != 0:
        raise ValueError(f"{out} does not fit decimal({precision},{scale})")
    if quantized.is_zero():  # -0 and 0 are one value (one key) on every backend
        quantized = abs(quantized)
    return quantized


def _to_text(attr: Attribute, value: Any) -> str:
    if isinstance(value, np.str_):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r:.60}")
    if "\x00" in value:
        raise ValueError("strings cannot contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: not text any database can store
            raise ValueError(f"{value!r:.60} is not valid Unicode text ({exc.reason})") from None
    t = attr.type
    if t.length is not None and len(value) > t.length:
        raise ValueError(f"string of length {len(value)} exceeds {t}")
    if t.name == "enum" and value not in t.values:
        raise ValueError(f"{value!r:.60} is not one of {list(t.values)}")
    return value


def _to_bool(attr: Attribute, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected a bool, got {type(value).__name__} {value!r:.60}")


def _to_date(attr: Attribute, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a date, got datetime {value!r}")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r:.60} is not an ISO date") from None
    raise ValueError(f"expected a date, got {type(value).__name__} {value!r:.60}")


def _to_datetime(attr: Attribute, value: Any) -> dt.datetime:
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    if isinstance(value, dt.datetime):
        out = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            out = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r:.60} is not an ISO datetime") from None
    else:
        raise ValueError(f"expected a datetime, got {type(value).__name__} {value!r:.60}")
    if out.tzinfo is not None:  # stored naive in UTC, as DataJoint's datetime
        out = out.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return out


def _to_uuid(attr: Attribute, value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ValueError(f"{value!r:.60} is not a UUID") from None
    raise ValueError(f"expected a UUID, got {type(value).__name__} {value!r:.60}")


def _to_json(attr: Attribute, value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _to_blob(attr: Attribute, value: Any) -> bytes:
    return codecs.get_codec("blob").encoder()(value)


def _to_bytes(attr: Attribute, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueError(f"expected bytes, got {type(value).__name__}")


_CONVERTERS = {
    **{name: _to_int for name in INT_RANGES},
    "float32": _to_float,
    "float64": _to_float,
    "decimal": _to_decimal,
    "varchar": _to_text,
    "char": _to_text,
    "text": _to_text,
    "enum": _to_text,
    "bool": _to_bool,
    "date": _to_date,
    "datetime": _to_datetime,
    "uuid": _to_uuid,
    "json": _to_json,
    "blob": _to_blob,
    "bytes": _to_bytes,
}


def to_sql_value(table: str, attr: Attribute, value: Any) -> Any:
    """Validate ``value`` for ``attr`` and return the parameter to send to the database.

    Raises :class:`DataError` naming ``table`` and the attribute.
    """
    if value is None:
        if attr.nullable:
            return None
        raise DataError(f"{table}.{attr.name}: NULL is not allowed (the attribute is not nullable)")
    if attr.type.is_user_codec:
        return codec_converter(table, attr)(value)
    try:
        return _CONVERTERS[attr.type.name](attr, value)
    except DataError as exc:  # keeps its kind (BlobError)
        raise type(exc)(f"{table}.{attr.name}: {exc}") from None
    except ValueError as exc:
        raise DataError(f"{table}.{attr.name}: {exc}") from None


def fast_converter(table: str, attr: Attribute) -> Callable[[Any], Any]:
    """``to_sql_value(table, attr, value)`` for one attribute, with the common exact Python types
    checked inline (arrays for blobs, ``int`` in range, finite ``float``, short ASCII ``str``);
    everything else goes through :func:`to_sql_value`, so values and errors are the same."""
    name = attr.type.name

    def general(value: Any) -> Any:
        return to_sql_value(table, attr, value)

    if attr.type.is_user_codec:
        return codec_converter(table, attr)
    if name == "blob":
        pack = codecs.get_codec("blob").encoder()

        def to_blob(value: Any) -> Any:
            if value is None:
                return to_sql_value(table, attr, value)
            try:
                return pack(value)
            except (DataError, ValueError) as exc:  # as to_sql_value words them
                error = type(exc) if isinstance(exc, DataError) else DataError
                raise error(f"{table}.{attr.name}: {exc}") from None

        return to_blob
    if name in INT_RANGES:
        lo, hi = INT_RANGES[name]

        def to_int(value: Any) -> Any:
            if type(value) is int and lo <= value <= hi:
                return value
            return to_sql_value(table, attr, value)

        return to_int
    if name == "float64":
        in_key = attr.in_key

        def to_float(value: Any) -> Any:
            if type(value) is float and (not in_key or value == value):
                return value
            return to_sql_value(table, attr, value)

        return to_float
    if name in ("varchar", "char", "text", "enum"):
        length = attr.type.length
        values = frozenset(attr.type.values) if name == "enum" else None

        def to_text(value: Any) -> Any:
            if (
                type(value) is str
                and value.isascii()
                and "\x00" not in value
                and (length is None or len(value) <= length)
                and (values is None or value in values)
            ):
                return value
            return to_sql_value(table, attr, value)

        return to_text
    return general


def column_converter(
    table: str, attr: Attribute, convert: Callable[[Any], Any]
) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """Convert a column of values of ``attr`` (``convert`` is its :func:`fast_converter`).

    The values are those ``convert`` would give, but a bad value may be reported out of row
    order: callers that need the first bad row redo the rows one by one on error."""
    name = attr.type.name
    if name in INT_RANGES:
        lo, hi = INT_RANGES[name]

        def ints(column: Sequence[Any]) -> Sequence[Any]:
            if column and set(map(type, column)) == {int} and lo <= min(column) and max(column) <= hi:
                return column
            return list(map(convert, column))

        return ints
    if name == "blob" and not attr.type.is_user_codec:
        pack = codecs.get_codec("blob").encoder()

        def blobs(column: Sequence[Any]) -> Sequence[Any]:
            if type(None) in set(map(type, column)):
                return list(map(convert, column))
            return list(map(pack, column))

        return blobs

    def values(column: Sequence[Any]) -> Sequence[Any]:
        return list(map(convert, column))

    return values


def default_sql_value(table: str, attr: Attribute) -> Any:
    """The parameter for an attribute left out of an inserted row."""
    if attr.has_default:
        if attr.default is None:
            return None
        if attr.default == "CURRENT_TIMESTAMP" and attr.type.name == "datetime":
            return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        return to_sql_value(table, attr, attr.default)
    if attr.nullable:
        return None
    raise DataError(f"{table}: missing value for attribute {attr.name!r} (no default, not nullable)")


def from_sql_value(attr: Attribute, value: Any) -> Any:
    """Turn what the driver returned into the attribute's Python value (both backends agree)."""
    if value is None:
        return None
    name = attr.type.name
    if attr.type.is_user_codec:
        return codec_loader(attr)(value)
    if name == "blob":
        return codecs.get_codec("blob").decoder()(value)
    if name == "bytes":
        return bytes(value)
    if name == "bool":
        return bool(value)
    if name == "json":
        return json.loads(value)  # both backends hand over the JSON text
    if name == "uuid":
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    if name == "decimal":
        return value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
    if name == "date":
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
    if name == "datetime":
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    if name in ("float32", "float64"):
        return float(value)
    if name in INT_RANGES:  # PostgreSQL's numeric(20,0) for uint64 comes back as a Decimal
        return int(value)
    return value


def fast_loader(attr: Attribute) -> Callable[[Any], Any] | None:
    """``from_sql_value(attr, .)`` for one attribute, or None where what the driver returns is
    already the value (integers but uint64, strings)."""
    name = attr.type.name
    if attr.type.is_user_codec:
        decode = codec_loader(attr)
        if not attr.nullable:
            return decode
        return lambda value: None if value is None else decode(value)
    if name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "varchar", "char", "text", "enum"):
        return None
    if name == "blob":
        unpack = codecs.get_codec("blob").decoder()
        if not attr.nullable:
            return unpack

        def load_blob(value: Any) -> Any:
            return None if value is None else unpack(value)

        return load_blob

    def load(value: Any) -> Any:
        return from_sql_value(attr, value)

    return load


def numpy_dtype(attr: Attribute) -> Any:
    """The dtype of an attribute's column in a fetched structured array (DataJoint's ``fetch()``)."""
    name = attr.type.name
    if attr.type.is_user_codec:
        return object
    if attr.nullable:
        return object if name not in ("float32", "float64") else np.float64
    if name in INT_RANGES:
        return np.dtype(name)
    if name in ("float32", "float64"):
        return np.dtype(name)
    if name == "bool":
        return np.dtype(bool)
    return object


# --------------------------------------------------------------------------------------------
# User codecs (``<name>``): the codec chain, then the core storage type's own conversion.


def _core_attribute(attr: Attribute) -> Attribute:
    """``attr`` as a plain column of the codec's core storage type."""
    t = attr.type
    return Attribute(attr.name, SQLType(t.name, t.length, t.precision, t.scale, t.values), attr.in_key, attr.nullable)


def codec_converter(table: str, attr: Attribute) -> Callable[[Any], Any]:
    """``to_sql_value`` of a ``<codec>`` attribute: validate and encode through the codec chain,
    then convert to the core storage type. Whatever ``validate`` or ``encode`` raises becomes a
    DataError (a BlobError stays one) naming the table and attribute."""
    try:
        chain, _ = codecs.resolve_codec(attr.type.codec or "", attr.type.store)
    except ValueError as exc:
        raise DataError(f"{table}.{attr.name}: {exc}") from None
    encode = codecs.chain_encoder(chain, attr.type.store, f"{table}.{attr.name}")
    core_attr = _core_attribute(attr)
    core = _CONVERTERS[core_attr.type.name]
    label = f"{table}.{attr.name}: {attr.type}"

    def convert(value: Any) -> Any:
        if value is None:
            if attr.nullable:
                return None
            raise DataError(f"{table}.{attr.name}: NULL is not allowed (the attribute is not nullable)")
        try:
            stored = encode(value)
        except MPError as exc:  # a DataError, BlobError, StoreError (unreachable store...) keeps its kind
            raise type(exc)(f"{label}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - user code: any failure is bad input, nothing written
            raise DataError(f"{label} cannot encode {type(value).__name__}: {type(exc).__name__}: {exc}") from exc
        if stored is None:
            raise DataError(f"{label}: encode() returned None")
        try:
            return core(core_attr, stored)
        except ValueError as exc:
            raise DataError(f"{label}: encode() returned a value its storage ({attr.type.name}) refuses: {exc}") from None

    return convert


def codec_loader(attr: Attribute) -> Callable[[Any], Any]:
    """``from_sql_value`` of a ``<codec>`` attribute: the core type's value, decoded through the
    codec chain innermost first; a failure is a DataError naming the attribute."""
    try:
        chain, _ = codecs.resolve_codec(attr.type.codec or "", attr.type.store)
    except ValueError as exc:
        raise DataError(f"{attr.name}: {exc}") from None
    decode = codecs.chain_decoder(chain, attr.type.store, attr.name)
    if len(chain) == 1 and getattr(chain[0], "takes_json_text", False):
        return decode  # reads the JSON text itself, lazily, and cannot fail here (``<npy@store>``)
    core = fast_loader(_core_attribute(attr))
    label = f"{attr.name}: {attr.type}"

    def load(value: Any) -> Any:
        try:
            return decode(value if core is None else core(value))
        except MPError as exc:
            raise type(exc)(f"{label}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - user code
            raise DataError(f"{label} cannot decode the stored value: {type(exc).__name__}: {exc}") from exc

    return load
