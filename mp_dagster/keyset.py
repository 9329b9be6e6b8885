"""A table's set of primary keys, watched cheaply: a fingerprint and a diff.

``fingerprint(Table)`` is one aggregate query: the row count and an order-independent checksum
of the keys (the sum of a hash of each key), computed by the database. It changes whenever a key
is added or removed, also when as many keys were deleted as were inserted, so a watcher that
keeps the last fingerprint reads no keys while nothing changed. ``diff(Table, known, encode)``
reads the keys (one query) and tells which are new and which of the ``known`` ones are gone,
keys compared as the text ``encode`` makes of them (the Dagster layer passes its partition-key
encoding). Nothing here imports Dagster.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from .table import Table

SQLITE_HASH = "mp_key_hash"


def _sqlite_key_hash(*values: Any) -> int:
    """32 bits of a key's hash (a sum of 2**31 of them still fits SQLite's 64-bit integers)."""
    return zlib.crc32(repr(values).encode())


@dataclass(frozen=True)
class Fingerprint:
    """Row count and key checksum of a table at one moment."""

    rows: int
    checksum: str

    def token(self) -> str:
        """A short text for a cursor: equal tokens, (almost certainly) equal key sets."""
        return f"{self.rows}:{self.checksum}"


def fingerprint(table: type[Table]) -> Fingerprint:
    """The row count and key checksum of ``table``, in one query that returns one row."""
    backend = table.schema.backend
    pk = table._definition.heading.primary_key
    source = backend.table_ident(table.schema.name, table.table_name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in pk)
    if not pk:  # a table without a key holds at most one row
        row_hash: sql.Composable = sql.SQL("0")
    elif backend.name == "postgres":
        row_hash = sql.SQL("hashtextextended(ROW({})::text, 0)").format(columns)
    else:
        backend.conn.create_function(SQLITE_HASH, -1, _sqlite_key_hash, deterministic=True)
        row_hash = sql.SQL("{}({})").format(sql.SQL(SQLITE_HASH), columns)
    query = sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {}").format(row_hash, source)
    rows, checksum = backend.execute(query)[0]
    return Fingerprint(int(rows), str(checksum))


def diff(
    table: type[Table], known: Iterable[str], encode: Callable[[dict[str, Any]], str]
) -> tuple[list[tuple[str, dict[str, Any]]], set[str]]:
    """(keys of ``table`` not in ``known``, as ``(encoded, key)`` pairs in key order; the
    ``known`` texts that are no longer keys of ``table``). One query reads the keys."""
    known = set(known)
    current: set[str] = set()
    added: list[tuple[str, dict[str, Any]]] = []
    for key in table().fetch("KEY"):
        text = encode(key)
        current.add(text)
        if text not in known:
            added.append((text, key))
    return added, known - current
