"""Attributes and their types: what a column is (how a Python value becomes a SQL parameter,
and back, is in :mod:`mp_dagster.values`).

Types are normalised to one canonical name (DataJoint 2's core names) whatever spelling the
definition used, so ``int``, ``int32`` and ``integer`` compare equal when a definition is checked
against the table already in the database.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codecs

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
        from .values import fast_converter  # values builds on this module's types

        return self._per_table("_sql_converters", table, lambda attrs: [fast_converter(table, a) for a in attrs])

    def column_converters(self, table: str) -> list[Callable[[Sequence[Any]], list[Any]]]:
        """Per attribute, a function converting a whole column of values (see
        :func:`column_converter`); built once per heading and table name."""
        from .values import column_converter

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
        from .values import fast_loader

        loaders = [fast_loader(a) for a in attrs]
        if len(cache) < 256:
            cache[key] = (attrs, loaders)
        return loaders
