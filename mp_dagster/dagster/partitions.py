"""Partitions: a table's primary keys as Dagster dynamic partition keys, and back.

Every master table gets a partitions definition, chosen from the foreign-key graph:

* ``shared``: the table's key IS one partitioned parent's key (``Segmentation`` -> ``Image``):
  it uses that parent's ``DynamicPartitionsDefinition`` and Dagster maps partitions one to one.
* ``multi``: the key is exactly the union of two parents' keys (``-> Image, -> Param``): a
  two-dimension ``MultiPartitionsDefinition`` of the parents' definitions (dimension = parent
  table name), and Dagster maps each dimension to its parent.
* ``own``: anything else gets its own ``DynamicPartitionsDefinition`` named ``schema__table``.

Key encoding (documented in the README): a one-attribute key is its value as text; a composite
key is ``attr=value`` pairs joined by ``,`` in primary-key order. In values, ``%``, ``|``,
``,``, ``=``, control characters and every ``.`` next to another ``.`` (Dagster reserves
``...``) are written ``%XX``; an empty string is ``%00``... decoded exactly back. Decoding
converts the text back to the attribute's type, so ``decode(encode(key)) == key``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from .. import dependencies
from ..errors import MPError
from ..heading import INT_RANGES, Attribute
from ..table import Table

_ESCAPE = re.compile(r"[%|,=\x00-\x1f\x7f]|(?<=\.)\.|\.(?=\.)")
_UNESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
EMPTY = "%00"  # an empty string (a NUL cannot occur in stored text, so this is unambiguous)


def escape(text: str) -> str:
    """Escape a value for use in a partition key (see the module docstring)."""
    if text == "":
        return EMPTY
    return _ESCAPE.sub(lambda m: f"%{ord(m.group(0)):02X}", text)


def unescape(text: str) -> str:
    if text == EMPTY:
        return ""
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def value_to_text(attr: Attribute, value: Any) -> str:
    name = attr.type.name
    if name in INT_RANGES:
        return str(int(value))
    if name in ("float32", "float64"):
        return repr(float(value))
    if name == "bool":
        return "true" if value else "false"
    if name == "datetime" and isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def text_to_value(attr: Attribute, text: str) -> Any:
    name = attr.type.name
    try:
        if name in INT_RANGES:
            return int(text)
        if name in ("float32", "float64"):
            return float(text)
        if name == "bool":
            return {"true": True, "false": False}[text]
        if name == "date":
            return dt.date.fromisoformat(text)
        if name == "datetime":
            return dt.datetime.fromisoformat(text)
        if name == "uuid":
            return uuid.UUID(text)
        if name == "decimal":
            return decimal.Decimal(text)
    except (ValueError, KeyError, decimal.InvalidOperation):
        raise MPError(f"partition key value {text!r} is not a valid {attr.type} for {attr.name!r}") from None
    return text


def encode_key(table: type[Table], key: dict[str, Any]) -> str:
    """The partition key (text) of a row's primary key."""
    heading = table._definition.heading
    pk = heading.primary_key
    if len(pk) == 1:
        return escape(value_to_text(heading[pk[0]], key[pk[0]]))
    return ",".join(f"{k}={escape(value_to_text(heading[k], key[k]))}" for k in pk)


def key_encoder(table: type[Table]) -> Callable[[dict[str, Any]], str]:
    """``encode_key`` for many keys of ``table``: the heading is looked up once, not per key
    (an observation tick encodes every key of a table: 100,000 in a third of the time)."""
    heading = table._definition.heading
    attrs = [heading[name] for name in heading.primary_key]
    if len(attrs) == 1:
        attr, name = attrs[0], attrs[0].name
        return lambda key: escape(value_to_text(attr, key[name]))
    return lambda key: ",".join(f"{a.name}={escape(value_to_text(a, key[a.name]))}" for a in attrs)


def decode_key(table: type[Table], partition_key: str) -> dict[str, Any]:
    """The primary key (typed values) that ``partition_key`` stands for."""
    heading = table._definition.heading
    pk = heading.primary_key
    if len(pk) == 1:
        return {pk[0]: text_to_value(heading[pk[0]], unescape(partition_key))}
    out: dict[str, Any] = {}
    for item in partition_key.split(","):
        name, sep, text = item.partition("=")
        if not sep or name not in pk or name in out:
            raise MPError(f"{table.full_name}: malformed partition key {partition_key!r}")
        out[name] = text_to_value(heading[name], unescape(text))
    if list(out) != pk:
        raise MPError(f"{table.full_name}: partition key {partition_key!r} does not name {pk}")
    return out


@dataclass
class PartitionScheme:
    """How one master table's keys map to its Dagster partitions."""

    table: type[Table]
    kind: str  # "own", "shared" or "multi"
    partitions_def: dg.DynamicPartitionsDefinition | dg.MultiPartitionsDefinition
    # for "shared": the table whose definition is used; for "multi": dimension -> parent table
    parents: dict[str, type[Table]]

    @property
    def dynamic_defs(self) -> list[tuple[dg.DynamicPartitionsDefinition, type[Table]]]:
        """The dynamic definitions a new key must be added to, with the table keying each."""
        if self.kind == "multi":
            assert isinstance(self.partitions_def, dg.MultiPartitionsDefinition)
            return [
                (dim.partitions_def, self.parents[dim.name])  # type: ignore[misc]
                for dim in self.partitions_def.partitions_defs
            ]
        source = self.parents.get("source", self.table)
        return [(self.partitions_def, source)]  # type: ignore[list-item]

    def encode(self, key: dict[str, Any]) -> str:
        if self.kind == "multi":
            return dg.MultiPartitionKey(
                {dim: encode_key(parent, key) for dim, parent in self.parents.items()}
            )
        return encode_key(self.parents.get("source", self.table), key)

    def encoder(self) -> Callable[[dict[str, Any]], str]:
        """``lambda key: str(self.encode(key))``, faster for many keys (``key_encoder``)."""
        if self.kind == "multi":
            return lambda key: str(self.encode(key))
        return key_encoder(self.parents.get("source", self.table))

    def decode(self, partition_key: str) -> dict[str, Any]:
        if self.kind == "multi":
            if isinstance(partition_key, dg.MultiPartitionKey):
                by_dim = partition_key.keys_by_dimension
            else:
                dims = sorted(self.parents)
                values = partition_key.split("|")
                if len(values) != len(dims):
                    raise MPError(f"{self.table.full_name}: malformed partition key {partition_key!r}")
                by_dim = dict(zip(dims, values))
            out: dict[str, Any] = {}
            for dim, parent in self.parents.items():
                out.update(decode_key(parent, by_dim[dim]))
            return {k: out[k] for k in self.table._definition.heading.primary_key}
        return decode_key(self.parents.get("source", self.table), partition_key)

    def dimension_keys(self, key: dict[str, Any]) -> list[tuple[str, str]]:
        """(dynamic definition name, key in it) pairs that must exist for ``key``."""
        return [(d.name, encode_key(t, key)) for d, t in self.dynamic_defs]  # type: ignore[misc]


def def_name(table: type[Table]) -> str:
    return f"{table.schema.name}__{table.table_name}"


def build_schemes(masters: list[type[Table]]) -> dict[str, PartitionScheme]:
    """Partition schemes for the given masters (parents first), keyed by full table name.

    Parents outside ``masters`` are treated as having their own definitions (their
    definitions are shared by name, which Dagster compares by name)."""
    schemes: dict[str, PartitionScheme] = {}

    def scheme_of(table: type[Table]) -> PartitionScheme:
        if table.full_name in schemes:
            return schemes[table.full_name]
        pk = table._definition.heading.primary_key
        key_parents = [
            dependencies.master_of(fk.parent) for fk in table._definition.foreign_keys if fk.in_key
        ]
        key_parents = [p for p in dict.fromkeys(key_parents) if p._definition.heading.primary_key]
        scheme: PartitionScheme | None = None
        for p in key_parents:
            if p._definition.heading.primary_key == pk:
                ps = scheme_of(p)
                if ps.kind != "multi":
                    source = ps.parents.get("source", p)
                    scheme = PartitionScheme(table, "shared", ps.partitions_def, {"source": source})
                    break
        if scheme is None and len(key_parents) == 2:
            a, b = key_parents
            ka, kb = a._definition.heading.primary_key, b._definition.heading.primary_key
            sa, sb = scheme_of(a), scheme_of(b)
            if (
                not set(ka) & set(kb)
                and set(ka) | set(kb) == set(pk)
                and sa.kind != "multi"
                and sb.kind != "multi"
                and a.table_name != b.table_name
            ):
                multi = dg.MultiPartitionsDefinition(
                    {a.table_name: sa.partitions_def, b.table_name: sb.partitions_def}  # type: ignore[dict-item]
                )
                scheme = PartitionScheme(table, "multi", multi, {a.table_name: a, b.table_name: b})
        if scheme is None:
            scheme = PartitionScheme(table, "own", dg.DynamicPartitionsDefinition(name=def_name(table)), {})
        schemes[table.full_name] = scheme
        return scheme

    for m in dependencies.topological(masters):
        scheme_of(m)
    return {m.full_name: schemes[m.full_name] for m in masters}
