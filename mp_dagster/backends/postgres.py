"""PostgreSQL through psycopg 3: each Schema is a PostgreSQL schema, blobs are ``bytea``,
bulk part rows go in with binary COPY, and writers of one key meet at an advisory lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from ..errors import ConnectionError as MPConnectionError
from ..heading import Attribute
from .base import Backend

_COLUMN_TYPES = {
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "uint8": "smallint",
    "uint16": "integer",
    "uint32": "bigint",
    "uint64": "numeric(20,0)",
    "float32": "real",
    "float64": "double precision",
    "bool": "boolean",
    "date": "date",
    "datetime": "timestamp",
    "uuid": "uuid",
    "json": "jsonb",
    "blob": "bytea",
    "bytes": "bytea",
    "text": "text",
    "enum": "text",
}

# binary COPY type names, for the column types whose Python values psycopg dumps unambiguously
_COPY_TYPES = {
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "uuid": "uuid",
    "bytea": "bytea",
    "text": "text",
}

COPY_MIN_ROWS = 8  # below this a pipelined executemany is as fast and simpler


class PostgresBackend(Backend):
    name = "postgres"
    errors_abort_transaction = True

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise MPConnectionError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        return conn

    def _is_closed(self, conn: psycopg.Connection) -> bool:
        return conn.closed or conn.broken

    def _begin(self, conn: psycopg.Connection) -> None:
        self.execute(sql.SQL("BEGIN"))

    def _commit(self, conn: psycopg.Connection) -> None:
        self.execute(sql.SQL("COMMIT"))

    def _rollback(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.broken:
            self.reset()
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self.reset()

    def _lost(self, exc: BaseException) -> MPConnectionError:
        self.reset()
        return MPConnectionError(f"lost the connection to PostgreSQL: {str(exc).strip()}")

    def execute(self, query: sql.Composable, params: Any = None) -> list[tuple]:
        conn = self.conn
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError as exc:
            if self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def execute_many(self, query: sql.Composable, rows: Sequence[Sequence[Any]]) -> None:
        conn = self.conn
        try:
            with conn.cursor() as cur:
                cur.executemany(query, rows)
        except psycopg.OperationalError as exc:
            if self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def table_ident(self, schema: str, table: str) -> sql.Composable:
        return sql.Identifier(schema, table)

    def column_type(self, attr: Attribute) -> sql.Composable:
        t = attr.type
        if t.name in ("varchar", "char"):
            return sql.SQL("varchar({})").format(sql.Literal(int(t.length or 0)))
        if t.name == "decimal":
            return sql.SQL("numeric({}, {})").format(sql.Literal(int(t.precision or 0)), sql.Literal(int(t.scale or 0)))
        return sql.SQL(_COLUMN_TYPES[t.name])

    def create_schema(self, schema: str) -> None:
        self.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def drop_schema(self, schema: str) -> None:
        self.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    def list_tables(self, schema: str) -> set[str]:
        rows = self.execute(
            sql.SQL("SELECT table_name FROM information_schema.tables WHERE table_schema = {}").format(
                sql.Placeholder("s")
            ),
            {"s": schema},
        )
        return {r[0] for r in rows}

    def insert_rows(
        self,
        schema: str,
        table: str,
        attrs: Sequence[Attribute],
        rows: Sequence[Sequence[Any]],
        skip_duplicates: bool = False,
    ) -> None:
        copy_types = [_COPY_TYPES.get(self.column_type(a).as_string(None)) for a in attrs]
        if skip_duplicates or len(rows) < COPY_MIN_ROWS or None in copy_types:
            super().insert_rows(schema, table, attrs, rows, skip_duplicates)
            return
        query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.table_ident(schema, table), sql.SQL(", ").join(sql.Identifier(a.name) for a in attrs)
        )
        conn = self.conn
        try:
            with conn.cursor() as cur, cur.copy(query) as copy:
                copy.set_types(copy_types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        except psycopg.OperationalError as exc:
            if self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def lock_key(self, full_name: str, key: Sequence[Any]) -> None:
        self.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Placeholder("k")),
                     {"k": self.key_hash(full_name, key)})

    def integrity_kind(self, exc: BaseException) -> str | None:
        if isinstance(exc, pg_errors.UniqueViolation):
            return "duplicate"
        if isinstance(exc, pg_errors.ForeignKeyViolation):
            return "foreign_key"
        if isinstance(exc, pg_errors.NotNullViolation):
            return "not_null"
        if isinstance(exc, (pg_errors.CheckViolation, pg_errors.DataError)):
            return "check"
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        if isinstance(exc, MPConnectionError):
            return True
        if isinstance(exc, (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)):
            return True
        conn = getattr(self._local, "conn", None)
        return isinstance(exc, psycopg.OperationalError) and (conn is None or conn.closed or conn.broken)
