"""SQLite (stdlib): the embedded default. One file holds every schema; a table is named
``"<schema>.<table>"`` (one quoted identifier), so names stay readable and foreign keys work
across schemas. WAL, ``foreign_keys=ON``, a busy timeout, and ``BEGIN IMMEDIATE`` for writes:
SQLite's single write lock serializes writers of the same key."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import fcntl
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql

from ..errors import ConnectionError as MPConnectionError
from ..errors import DataError
from ..heading import Attribute
from .base import META_TABLE, Backend

BUSY_TIMEOUT_S = 60.0
_NAMED = re.compile(r"%\((\w+)\)s")

_COLUMN_TYPES = {
    "float32": "REAL",
    "float64": "REAL",
    "decimal": "TEXT",
    "varchar": "TEXT",
    "char": "TEXT",
    "text": "TEXT",
    "enum": "TEXT",
    "bool": "INTEGER",
    "date": "TEXT",
    "datetime": "TEXT",
    "uuid": "TEXT",
    "json": "TEXT",
    "blob": "BLOB",
    "bytes": "BLOB",
}
_ADAPTED = {"decimal", "date", "datetime", "uuid", "uint64", "float32", "float64"}


def _adapt(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "NaN"  # SQLite stores a NaN REAL as NULL; the text survives and reads back as nan
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise OverflowError(f"{value} does not fit SQLite's 64-bit integers")
    return value


def render(query: sql.Composable) -> str:
    """psycopg.sql -> SQLite text: same quoting of identifiers, ``?`` and ``:name`` parameters.

    Safe because identifiers are validated (no ``%`` can occur in them) and values never
    appear in the text."""
    text = query.as_string(None)
    return _NAMED.sub(r":\1", text).replace("%s", "?")


class KeyLocks:
    """Exclusive, non-blocking locks by number: ``flock`` on ``<directory>/<number>.lock``, one
    file per key, removed on unlock. ``flock`` belongs to the open file, so two workers conflict
    whether they are processes or threads, and a dead process's locks vanish with it. Without a
    directory (an in-memory database, one process) a set does."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.held: dict[int, int | None] = {}  # lock number -> file descriptor
        self.mutex = threading.Lock()

    def try_lock(self, number: int) -> bool:
        with self.mutex:
            if number in self.held:
                return False
            if self.directory is None:
                self.held[number] = None
                return True
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{number & 0xFFFFFFFFFFFFFFFF:016x}.lock"
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return False
                try:  # the holder before us may have removed the file after we opened it
                    if os.fstat(fd).st_ino == os.stat(path).st_ino:
                        self.held[number] = fd
                        return True
                except FileNotFoundError:
                    pass
                os.close(fd)

    def unlock(self, number: int) -> None:
        with self.mutex:
            fd = self.held.pop(number, "absent")
            if fd == "absent" or fd is None:
                return
            assert self.directory is not None
            # remove while still locked, so that nobody locks a file that is about to vanish
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{number & 0xFFFFFFFFFFFFFFFF:016x}.lock")
            os.close(fd)


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
        self.path = path or ":memory:"
        self._reservations = KeyLocks(None if self.path == ":memory:" else Path(self.path + ".reservations"))

    def _connect(self) -> sqlite3.Connection:
        target: str = self.path
        if self.read_only and self.path != ":memory:":
            if not Path(self.path).is_file():
                raise MPConnectionError(f"SQLite database {self.path!r} does not exist (opened read-only: "
                                        "nothing is created)")
            target = Path(self.path).resolve().as_uri() + "?mode=ro"
        elif self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(target, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                   check_same_thread=False, uri=target != self.path)
            conn.execute("PRAGMA foreign_keys=ON")
            if not self.read_only:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except sqlite3.Error as exc:
            raise MPConnectionError(f"cannot open SQLite database {self.path!r}: {exc}") from None
        return conn

    def _is_closed(self, conn: sqlite3.Connection) -> bool:
        try:
            conn.total_changes  # noqa: B018 - raises ProgrammingError on a closed connection
        except sqlite3.ProgrammingError:
            return True
        return False

    def _begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")  # read-only: no write lock

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _text(self, query: sql.Composable) -> str:
        return render(query)

    def execute(self, query: sql.Composable, params: Any = None) -> list[tuple]:
        if params is None:
            params = ()
        elif isinstance(params, dict):
            params = {k: _adapt(v) for k, v in params.items()}
        else:
            params = [_adapt(v) for v in params]
        cur = self.conn.execute(self._text(query), params)
        return cur.fetchall() if cur.description is not None else []

    def execute_many(self, query: sql.Composable, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(self._text(query), rows)

    def table_ident(self, schema: str, table: str) -> sql.Composable:
        return sql.Identifier(f"{schema}.{table}")

    def column_type(self, attr: Attribute) -> sql.Composable:
        return sql.SQL(_COLUMN_TYPES.get(attr.type.name, "INTEGER"))

    def create_schema(self, schema: str) -> None:
        """Schemas are name prefixes in one file: nothing to create."""

    def drop_schema(self, schema: str) -> None:
        tables = self.list_tables(schema)
        self.conn.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.transaction():
                for table in tables:
                    self.drop_table(schema, table)
        finally:
            self.conn.execute("PRAGMA foreign_keys=ON")

    def list_schemas(self) -> list[str]:
        """The schemas (name prefixes) holding mp_dagster's meta table, sorted."""
        suffix = "." + META_TABLE
        rows = self.execute(sql.SQL("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return sorted(r[0][: -len(suffix)] for r in rows if r[0].endswith(suffix))

    def list_tables(self, schema: str) -> set[str]:
        rows = self.execute(
            sql.SQL("SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, {}) = {}").format(
                sql.Placeholder("n"), sql.Placeholder("p")
            ),
            {"n": len(schema) + 1, "p": schema + "."},
        )
        return {r[0][len(schema) + 1 :] for r in rows}

    def needs_adapt(self, attrs: Sequence[Attribute]) -> bool:
        return any(a.type.name in _ADAPTED for a in attrs)

    def adapt_row(self, attrs: Sequence[Attribute], row: Sequence[Any], table: str = "") -> Sequence[Any]:
        try:
            return [_adapt(v) for v in row]
        except OverflowError:
            for a, v in zip(attrs, row):
                try:
                    _adapt(v)
                except OverflowError as exc:
                    raise DataError(f"{table}.{a.name}: {exc}") from None
            raise

    def lock_key(self, full_name: str, key: Sequence[Any]) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""

    def try_reserve(self, lock_id: int, written: tuple[Any, Any]) -> tuple[bool, bool]:
        """An exclusive ``flock`` on a lock file per key beside the database: it works across
        processes, and the operating system drops it when the worker's process ends."""
        reserved = self._reservations.try_lock(lock_id)
        try:
            exists = bool(self.execute(written[0], written[1])[0][0])
        except BaseException:
            if reserved:
                self._reservations.unlock(lock_id)
            raise
        return reserved, exists

    def release(self, lock_id: int, later: bool = False) -> None:
        self._reservations.unlock(lock_id)  # a local file: nothing to save by waiting

    def integrity_kind(self, exc: BaseException) -> str | None:
        if not isinstance(exc, sqlite3.IntegrityError):
            return None
        msg = str(exc)
        if "UNIQUE" in msg or "PRIMARY KEY" in msg:
            return "duplicate"
        if "FOREIGN KEY" in msg:
            return "foreign_key"
        if "NOT NULL" in msg:
            return "not_null"
        return "check"

    def is_connection_error(self, exc: BaseException) -> bool:
        return isinstance(exc, MPConnectionError)
