"""Attributes and their types: what a column is, and how a Python value becomes a SQL parameter.

Types are normalised to one canonical name (DataJoint 2's core names) whatever spelling the
definition used, so ``int``, ``int32`` and ``integer`` compare equal when a definition is checked
against the table already in the database.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import codecs
from .errors import DataError

# canonical type -> (min, max) for integers
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}

# every spelling a definition may use -> canonical name (parametrised types handled apart)
TYPE_ALIASES: dict[str, str] = {
    "tinyint": "int8",
    "smallint": "int16",
    "mediumint": "int32",
    "int": "int32",
    "integer": "int32",
    "bigint": "int64",
    "tinyint unsigned": "uint8",
    "smallint unsigned": "uint16",
    "mediumint unsigned": "uint32",
    "int unsigned": "uint32",
    "integer unsigned": "uint32",
    "bigint unsigned": "uint64",
    "float": "float32",
    "real": "float32",
    "double": "float64",
    "double precision": "float64",
    "bool": "bool",
    "boolean": "bool",
    "date": "date",
    "datetime": "datetime",
    "timestamp": "datetime",
    "uuid": "uuid",
    "json": "json",
    "blob": "blob",
    "tinyblob": "blob",
    "mediumblob": "blob",
    "longblob": "blob",
    "bytes": "bytes",
    "attach": "bytes",
    "text": "text",
    "tinytext": "text",
    "mediumtext": "text",
    "longtext": "text",
}
for _name in INT_RANGES:
    TYPE_ALIASES[_name] = _name
for _name in ("float32", "float64"):
    TYPE_ALIASES[_name] = _name

_PARAM_TYPE = re.compile(
    r"^(?P<name>varchar|char|decimal|numeric|enum|datetime|timestamp)\s*\((?P<args>.*)\)\s*(?P<unsigned>unsigned)?$",
    re.IGNORECASE | re.DOTALL,
)
_ENUM_ITEM = re.compile(r"""\s*(?:'((?:[^'\\]|\\.|'')*)'|"((?:[^"\\]|\\.|"")*)")\s*(?:,|$)""")


@dataclass(frozen=True)
class SQLType:
    """A canonical attribute type: ``name`` plus its parameters (length, precision, enum values)."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    values: tuple[str, ...] = ()
    codec: str | None = None  # the registered codec (``blob`` for blob/longblob/<blob>)
    store: str | None = None  # ``<name@store>``: the store's name ("" for ``<name@>``)
    storage: str = ""  # a user codec's chain of storage types, e.g. "<blob> -> bytes"

    def __str__(self) -> str:
        if self.codec is not None and (self.codec != "blob" or self.name != "blob"):
            return f"<{self.codec}>" if self.store is None else f"<{self.codec}@{self.store}>"
        if self.name in ("varchar", "char"):
            return f"{self.name}({self.length})"
        if self.name == "decimal":
            return f"decimal({self.precision},{self.scale})"
        if self.name == "enum":
            return "enum(" + ",".join(repr(v) for v in self.values) + ")"
        return self.name

    @property
    def is_blob(self) -> bool:
        return self.name == "blob"

    @property
    def is_integer(self) -> bool:
        return self.name in INT_RANGES

    @property
    def is_user_codec(self) -> bool:
        """Declared as ``<name>`` / ``<name@store>`` with a codec other than the classic blob."""
        return self.codec is not None and (self.codec != "blob" or self.name != "blob")


def codec_type(name: str, store: str | None) -> SQLType:
    """The type of ``<name>`` / ``<name@store>``: the codec's core storage type, tagged with the
    codec; ``ValueError`` if the codec is unknown or refuses the store."""
    chain, dtype = codecs.resolve_codec(name, store)
    if store is None and [c.name for c in chain] == ["blob"]:
        return SQLType("blob", codec="blob")
    core = parse_type(dtype)
    steps = [f"<{c.name}>" for c in chain[1:]]
    if core.codec is not None:  # a core type spelled 'blob' / 'longblob': the blob codec
        core, steps = SQLType("bytes"), [*steps, "<blob>"]
    return SQLType(core.name, core.length, core.precision, core.scale, core.values, codec=name, store=store,
                   storage=" -> ".join([*steps, str(core)]))


def parse_type(text: str) -> SQLType:
    """Parse a type as written in a definition; raise ``ValueError`` with the reason if unknown."""
    spelled = " ".join(text.strip().split())
    key = spelled.lower()
    if key in TYPE_ALIASES:
        name = TYPE_ALIASES[key]
        return SQLType(name, codec="blob") if name == "blob" else SQLType(name)
    spec = codecs.parse_codec_spec(spelled)
    if spec is not None:
        return codec_type(*spec)
    m = _PARAM_TYPE.match(spelled)
    if not m:
        raise ValueError(f"unknown type {text.strip()!r}")
    name, args = m.group("name").lower(), m.group("args").strip()
    if m.group("unsigned"):  # would silently accept negative values
        raise ValueError(f"'unsigned' is not supported for {name} in {text.strip()!r}")
    if name in ("datetime", "timestamp"):  # datetime(3): fractional precision is kept by both backends
        if not args.isdigit():
            raise ValueError(f"bad precision in {text.strip()!r}")
        return SQLType("datetime")
    if name in ("varchar", "char"):
        if not args.isdigit() or not 0 < int(args) <= 65535:
            raise ValueError(f"bad length in {text.strip()!r}")
        return SQLType(name, length=int(args))
    if name in ("decimal", "numeric"):
        parts = [p.strip() for p in args.split(",")]
        if not (1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)):
            raise ValueError(f"bad precision in {text.strip()!r}")
        precision, scale = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
        if not (0 < precision <= 1000 and scale <= precision):
            raise ValueError(f"bad precision in {text.strip()!r}")
        return SQLType("decimal", precision=precision, scale=scale)
    # enum
    values: list[str] = []
    pos = 0
    while pos < len(args):
        em = _ENUM_ITEM.match(args, pos)
        if not em or em.end() == pos:
            raise ValueError(f"bad enum values in {text.strip()!r}")
        raw = em.group(1) if em.group(1) is not None else em.group(2)
        values.append(raw.replace("''", "'").replace('""', '"'))
        pos = em.end()
    if not values or len(set(values)) != len(values):
        raise ValueError(f"enum needs distinct values in {text.strip()!r}")
    return SQLType("enum", values=tuple(values))


@dataclass(frozen=True)
class Attribute:
    """One column: name, type, whether it is in the primary key, nullable, default, comment."""

    name: str
    type: SQLType
    in_key: bool
    nullable: bool = False
    default: Any = None  # already converted to the attribute's Python value; None = no default
    has_default: bool = False
    comment: str = ""
    from_parent: str | None = None  # full name of the referenced table, if declared by ``->``

    def spec(self) -> dict[str, Any]:
        """What must not drift between the class and the database (comments may)."""
        return {
            "name": self.name,
            "type": str(self.type),
            "in_key": self.in_key,
            "nullable": self.nullable,
            "default": _jsonable(self.default) if self.has_default else "<none>",
        } | ({"storage": self.type.storage} if self.type.is_user_codec else {})


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):  # nan != nan: compare as text
        return repr(value)
    return value


@dataclass
class Heading:
    """The ordered attributes of a table or query result."""

    attributes: dict[str, Attribute] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.attributes)

    @property
    def primary_key(self) -> list[str]:
        return [a.name for a in self.attributes.values() if a.in_key]

    @property
    def secondary(self) -> list[str]:
        return [a.name for a in self.attributes.values() if not a.in_key]

    @property
    def blobs(self) -> list[str]:
        return [a.name for a in self.attributes.values() if a.type.is_blob]

    def __contains__(self, name: object) -> bool:
        return name in self.attributes

    def __getitem__(self, name: str) -> Attribute:
        return self.attributes[name]

    def __iter__(self):
        return iter(self.attributes.values())

    def __len__(self) -> int:
        return len(self.attributes)

    @classmethod
    def key_first(cls, attributes: dict[str, Attribute]) -> Heading:
        """A heading with the primary-key attributes first, as every table lays them out."""
        return cls({n: a for n, a in attributes.items() if a.in_key}
                   | {n: a for n, a in attributes.items() if not a.in_key})

    def project(self, names: list[str]) -> Heading:
        return Heading({n: self.attributes[n] for n in names})

    def _per_table(self, slot: str, table: str, build: Callable[[tuple[Attribute, ...]], list]) -> list:
        """``build(attributes)``, kept in ``slot`` until the table name or the heading's
        attributes (compared by identity) change."""
        attrs = tuple(self.attributes.values())
        cached = self.__dict__.get(slot)
        if cached is not None and cached[0] == table and len(cached[1]) == len(attrs) and all(
            a is b for a, b in zip(cached[1], attrs)
        ):
            return cached[2]
        built = build(attrs)
        self.__dict__[slot] = (table, attrs, built)
        return built

    def sql_converters(self, table: str) -> list[Callable[[Any], Any]]:
        """Per attribute, in order, ``to_sql_value(table, attr, .)`` specialised (see
        :func:`fast_converter`); built once per heading and table name."""
        return self._per_table("_sql_converters", table, lambda attrs: [fast_converter(table, a) for a in attrs])

    def column_converters(self, table: str) -> list[Callable[[Sequence[Any]], list[Any]]]:
        """Per attribute, a function converting a whole column of values (see
        :func:`column_converter`); built once per heading and table name."""
        return self._per_table("_column_converters", table, lambda attrs: [
            column_converter(table, a, c) for a, c in zip(attrs, self.sql_converters(table))])

    def sql_loaders(self, names: list[str]) -> list[Callable[[Any], Any] | None]:
        """Per named attribute, ``from_sql_value(attr, .)`` specialised, or None where the
        driver's value is already the attribute's value; built once per heading and names."""
        key = tuple(names)
        cache = self.__dict__.setdefault("_sql_loaders", {})
        attrs = [self.attributes[n] for n in names]
        hit = cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], attrs)):
            return hit[1]
        loaders = [fast_loader(a) for a in attrs]
        if len(cache) < 256:
            cache[key] = (attrs, loaders)
        return loaders


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
    encode = codecs.chain_encoder(chain)
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
        except DataError as exc:
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
    decode = codecs.chain_decoder(chain)
    core = fast_loader(_core_attribute(attr))
    label = f"{attr.name}: {attr.type}"

    def load(value: Any) -> Any:
        try:
            return decode(value if core is None else core(value))
        except DataError as exc:
            raise type(exc)(f"{label}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - user code
            raise DataError(f"{label} cannot decode the stored value: {type(exc).__name__}: {exc}") from exc

    return load
