"""What every backend provides: connections, transactions, DDL, bulk writes and error translation.

SQL is composed with :mod:`psycopg.sql` on both backends: identifiers are validated by the
grammar and quoted by ``sql.Identifier``; every value is a named or positional parameter.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg import sql

from ..declare import TableDefinition
from ..heading import Attribute

META_TABLE = "_mp_tables"  # per schema: tier and structural spec of every declared table


def skip_primary_key_duplicates(attrs: Sequence[Attribute]) -> sql.Composable:
    """``ON CONFLICT (primary key) DO NOTHING``: only rows whose primary key exists are skipped; a
    new key that violates a unique index is still an error (DataJoint #1049)."""
    return sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(
        sql.SQL(", ").join(sql.Identifier(a.name) for a in attrs if a.in_key))


class Backend(ABC):
    """One database connection per (process, thread); reconnects after the connection is lost."""

    name: str  # "postgres" or "sqlite": also the Dagster kind
    errors_abort_transaction = False  # PostgreSQL: after an error only ROLLBACK is accepted
    # A second INSERT of a committed or in-flight primary key waits for the first transaction
    # and then fails as a duplicate (row-level locking): the master row alone can serialize the
    # writers of one key. SQLite serializes all writers with BEGIN IMMEDIATE instead.
    primary_key_serializes_writers = False

    def __init__(self, url: str) -> None:
        from . import read_only

        self.url = url
        self.read_only = read_only()  # opened read-only: nothing is created or written
        self._local = threading.local()

    # -- connections -----------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any: ...

    @property
    def conn(self) -> Any:
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid or local.conn is None or self._is_closed(local.conn):
            local.conn = self._connect()
            local.pid = pid
            local.depth = 0
            local.unlocks = []  # a forked child holds none of its parent's reservations
        return local.conn

    def reset(self) -> None:
        """Forget the connection (after it was lost); the next use opens a new one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.depth = 0
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is already broken; closing is best effort
                pass

    @abstractmethod
    def _is_closed(self, conn: Any) -> bool: ...

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "depth", 0) > 0 and getattr(self._local, "pid", None) == os.getpid()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one (all or nothing)."""
        conn = self.conn
        if self._local.depth > 0:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self._begin(conn)
        self._local.depth = 1
        try:
            yield
        except BaseException:
            self._local.depth = 0
            self._rollback(conn)
            raise
        self._local.depth = 0
        self._commit(conn)

    @abstractmethod
    def _begin(self, conn: Any) -> None: ...

    @abstractmethod
    def _commit(self, conn: Any) -> None: ...

    @abstractmethod
    def _rollback(self, conn: Any) -> None: ...

    # -- statements ------------------------------------------------------------------------
    @abstractmethod
    def execute(self, query: sql.Composable, params: Any = None) -> list[tuple]:
        """Run one statement; return its rows (empty for statements without a result)."""

    @abstractmethod
    def execute_many(self, query: sql.Composable, rows: Sequence[Sequence[Any]]) -> None: ...

    # -- naming ----------------------------------------------------------------------------
    @abstractmethod
    def table_ident(self, schema: str, table: str) -> sql.Composable: ...

    # -- DDL -------------------------------------------------------------------------------
    @abstractmethod
    def column_type(self, attr: Attribute) -> sql.Composable: ...

    @abstractmethod
    def create_schema(self, schema: str) -> None: ...

    @abstractmethod
    def drop_schema(self, schema: str) -> None: ...

    @abstractmethod
    def list_schemas(self) -> list[str]:
        """The schemas of this database declared by mp_dagster (holding its meta table)."""

    @abstractmethod
    def list_tables(self, schema: str) -> set[str]: ...

    def create_table(self, schema: str, table: str, definition: TableDefinition) -> None:
        """CREATE TABLE with primary key, foreign keys (ON UPDATE CASCADE ON DELETE RESTRICT)
        and indexes, in the caller's transaction."""
        heading = definition.heading
        items: list[sql.Composable] = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(a.name),
                self.column_type(a),
                sql.SQL("") if a.nullable else sql.SQL(" NOT NULL"),
            )
            for a in heading
        ]
        items.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, heading.primary_key)))
        )
        for fk in definition.foreign_keys:
            parent = fk.parent
            items.append(
                sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({}) ON UPDATE CASCADE ON DELETE RESTRICT").format(
                    sql.SQL(", ").join(map(sql.Identifier, fk.attributes)),
                    self.table_ident(parent.schema.name, parent.table_name),
                    sql.SQL(", ").join(map(sql.Identifier, fk.referenced)),
                )
            )
            if fk.unique:
                items.append(sql.SQL("UNIQUE ({})").format(sql.SQL(", ").join(map(sql.Identifier, fk.attributes))))
        for ix in definition.indexes:
            if ix.unique:
                items.append(
                    sql.SQL("UNIQUE ({})").format(sql.SQL(", ").join(map(sql.Identifier, ix.attributes)))
                )
        self.execute(
            sql.SQL("CREATE TABLE {} (\n  {}\n)").format(
                self.table_ident(schema, table), sql.SQL(",\n  ").join(items)
            )
        )
        # an index per foreign key (PostgreSQL does not add one) keeps cascades and joins fast
        wanted = [ix.attributes for ix in definition.indexes if not ix.unique]
        wanted += [
            fk.attributes
            for fk in definition.foreign_keys
            if tuple(heading.primary_key[: len(fk.attributes)]) != fk.attributes
        ]
        for n, attrs in enumerate(dict.fromkeys(wanted)):
            self.execute(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    sql.Identifier(self.index_name(schema, table, n)),
                    self.table_ident(schema, table),
                    sql.SQL(", ").join(map(sql.Identifier, attrs)),
                )
            )

    @staticmethod
    def index_name(schema: str, table: str, n: int) -> str:
        """Unique per database whatever the table name's length (names are cut at 63 chars)."""
        digest = hashlib.blake2b(f"{schema}.{table}".encode(), digest_size=6).hexdigest()
        return f"{table[:40]}_ix{n}_{digest}"

    def drop_table(self, schema: str, table: str) -> None:
        self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table_ident(schema, table)))

    # -- the meta table: tier and spec of every table we declared -------------------------
    def ensure_meta(self, schema: str) -> None:
        self.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name varchar(255) PRIMARY KEY, "
                "tier varchar(16) NOT NULL, spec text NOT NULL, comment text NOT NULL)"
            ).format(self.table_ident(schema, META_TABLE))
        )

    def read_meta(self, schema: str) -> dict[str, tuple[str, dict, str]]:
        if META_TABLE not in self.list_tables(schema):
            return {}
        rows = self.execute(
            sql.SQL("SELECT table_name, tier, spec, comment FROM {}").format(self.table_ident(schema, META_TABLE))
        )
        return {name: (tier, json.loads(spec), comment) for name, tier, spec, comment in rows}

    def write_meta(self, schema: str, table: str, tier: str, spec: dict, comment: str) -> None:
        self.execute(
            sql.SQL("INSERT INTO {} (table_name, tier, spec, comment) VALUES ({}, {}, {}, {})").format(
                self.table_ident(schema, META_TABLE),
                sql.Placeholder("t"),
                sql.Placeholder("tier"),
                sql.Placeholder("spec"),
                sql.Placeholder("c"),
            ),
            {"t": table, "tier": tier, "spec": json.dumps(spec, sort_keys=True), "c": comment},
        )

    def delete_meta(self, schema: str, table: str) -> None:
        self.execute(
            sql.SQL("DELETE FROM {} WHERE table_name = {}").format(
                self.table_ident(schema, META_TABLE), sql.Placeholder("t")
            ),
            {"t": table},
        )

    # -- writes ----------------------------------------------------------------------------
    def insert_rows(
        self,
        schema: str,
        table: str,
        attrs: Sequence[Attribute],
        rows: Sequence[Sequence[Any]],
        skip_duplicates: bool = False,
    ) -> None:
        """Insert already-validated rows (values in ``attrs`` order) in one round trip."""
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}){}").format(
            self.table_ident(schema, table),
            sql.SQL(", ").join(sql.Identifier(a.name) for a in attrs),
            sql.SQL(", ").join(sql.Placeholder() * len(attrs)),
            skip_primary_key_duplicates(attrs) if skip_duplicates else sql.SQL(""),
        )
        if self.needs_adapt(attrs):
            rows = [self.adapt_row(attrs, r, f"{schema}.{table}") for r in rows]
        self.execute_many(query, rows)

    def needs_adapt(self, attrs: Sequence[Attribute]) -> bool:
        return False

    def adapt_row(self, attrs: Sequence[Attribute], row: Sequence[Any], table: str = "") -> Sequence[Any]:
        """Backend-specific parameter values (raises DataError naming ``table`` and attribute)."""
        return row

    @abstractmethod
    def lock_key(self, full_name: str, key: Sequence[Any]) -> None:
        """Serialize writers of one (table, key) until the end of the current transaction."""

    # -- reservations (mp_dagster/reservation.py): a worker claims a key before computing it --
    @abstractmethod
    def try_reserve(self, lock_id: int, written: tuple[Any, Any]) -> tuple[bool, bool]:
        """Try to take the reservation ``lock_id`` without waiting and without a transaction;
        then run the ``SELECT EXISTS`` query ``written`` (query, params). Returns (reserved,
        exists). The reservation is held until :meth:`release` or until this connection (or
        process) ends, whichever comes first."""

    @abstractmethod
    def release(self, lock_id: int, later: bool = False) -> None:
        """Give up a reservation taken by :meth:`try_reserve` (nothing if it is already gone);
        ``later``: with this thread's next reservation or :meth:`flush_releases`, if the backend
        can save a round trip that way."""

    def flush_releases(self) -> None:  # noqa: B027 - a no-op where releases are never deferred
        """Give up the reservations released ``later`` that are still held."""

    @staticmethod
    def key_hash(full_name: str, key: Sequence[Any]) -> int:
        digest = hashlib.blake2b(repr((full_name, tuple(key))).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    # -- errors ----------------------------------------------------------------------------
    @abstractmethod
    def integrity_kind(self, exc: BaseException) -> str | None:
        """'duplicate', 'foreign_key', 'not_null', 'check' or None when not an integrity error."""

    @abstractmethod
    def is_connection_error(self, exc: BaseException) -> bool: ...
