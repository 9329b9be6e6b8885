"""PostgreSQL through psycopg 3: each Schema is a PostgreSQL schema, blobs are ``bytea``,
bulk part rows go in with binary COPY, and writers of one key meet at the master row's primary
key (an advisory lock when the write joins a caller's transaction)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.types.string import TextBinaryLoader, TextLoader

from ..errors import ConnectionError as MPConnectionError
from ..errors import MPError
from ..heading import Attribute
from .base import META_TABLE, Backend, skip_primary_key_duplicates
from .psycopg_wire import JsonbBinaryTextLoader, is_read, pipelined

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

# rows per chunk while streaming a result (libpq 17's chunked rows mode; one row at a time
# before that): 20,000 small part rows came 27% faster than row by row, 2 MB blobs no slower,
# and at most this many rows' raw bytes are held at once
STREAM_CHUNK_ROWS = 8 if psycopg.capabilities.has_stream_chunked() else 1
COPY_MIN_ROWS = 16  # below this one multi-row INSERT (one round trip) beats COPY (two)
_VALUES_CHUNK_ROWS = 1000  # rows per multi-row INSERT (skip_duplicates, or types COPY cannot take)
_MAX_PARAMS = 65535  # PostgreSQL's limit of parameters per statement

_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
_BEGIN = b"BEGIN"
_COMMIT = b"COMMIT"
_LOCK = b"SELECT pg_advisory_xact_lock(%s)"
_TRY_LOCK = b"SELECT pg_try_advisory_lock(%s)"
_UNLOCK_MANY = b"SELECT pg_advisory_unlock(x) FROM unnest(%s::bigint[]) AS x"


class PostgresBackend(Backend):
    name = "postgres"
    errors_abort_transaction = True
    primary_key_serializes_writers = True
    binary_results = True  # execute(..., binary=True): bytea comes back as raw bytes

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._copy_statements: dict[tuple, tuple[str, list[str] | None]] = {}
        self._values_statements: dict[tuple, str] = {}

    def _connect(self) -> psycopg.Connection:
        try:
            options = {"options": "-c default_transaction_read_only=on"} if self.read_only else {}
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10, **options)
        except psycopg.OperationalError as exc:
            raise MPConnectionError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        # binary COPY with set_types(["bytea"]) picks the dumper by oid: psycopg's last one
        # registered for bytea is dbapi20's Python-level Binary dumper; ours are plain bytes,
        # which the (C) bytes dumper passes through as they are
        conn.adapters.register_dumper(bytes, conn.adapters.get_dumper(bytes, PyFormat.BINARY))
        # jsonb comes back as its JSON text, decoded once by the heading as on SQLite (psycopg's
        # own loader would decode it, and a JSON string would then be decoded twice); in text
        # format that is the text loader itself, in C: a fetch of 10,000 store references
        # (JSON records) costs half what a Python-level loader does
        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("jsonb", JsonbBinaryTextLoader)
        conn.adapters.register_loader("json", TextLoader)  # store references' records
        conn.adapters.register_loader("json", TextBinaryLoader)
        return conn

    def _is_closed(self, conn: psycopg.Connection) -> bool:
        return conn.closed or conn.broken

    # -- transactions, with as few round trips as the semantics allow: BEGIN (and a writer's
    # advisory lock, when it takes one) waits for the transaction's first statement, and (in
    # write_tables, see defer_inserts) multi-row INSERTs wait for the next statement or COMMIT;
    # whatever waits is sent with that statement in one pipeline (one network round trip). A
    # transaction that ran nothing sends nothing. Errors of deferred statements surface at that
    # point, still inside the transaction's ``with`` block or its COMMIT, and roll everything
    # back as before.
    def _begin(self, conn: psycopg.Connection) -> None:
        self._local.pending = (conn, [(_BEGIN, None)])
        self._local.defer_inserts = False

    def defer_inserts(self) -> None:
        """Let :meth:`insert_rows` hold multi-row INSERTs of the current transaction until the
        next statement or COMMIT (their errors then surface there)."""
        if self.in_transaction:
            self._local.defer_inserts = True

    def _pending(self, conn: psycopg.Connection) -> list[tuple[Any, Any]] | None:
        """The statements waiting for ``conn``'s current transaction (None when there are none)."""
        pending = getattr(self._local, "pending", None)
        if pending is None or pending[0] is not conn:
            return None  # none, or left over from a connection since lost
        return pending[1]

    def _take(self, conn: psycopg.Connection) -> list[tuple[Any, Any]] | None:
        statements = self._pending(conn)
        self._local.pending = None
        return statements or None

    def _send(
        self, conn: psycopg.Connection, statements: list[tuple[Any, Any]] | None,
        query: Any = None, params: Any = None, binary: bool = False,
    ) -> psycopg.Cursor | None:
        """Send the waiting statements and then ``query`` (if any): one round trip."""
        cur = self._cursor(conn, binary) if query is not None else None
        if not statements:
            if cur is not None:
                cur.execute(query, params)
            return cur
        if cur is None and len(statements) == 1:
            conn.execute(statements[0][0], statements[0][1])
            return None
        def send_all() -> None:
            for q, p in statements:
                conn.execute(q, p, prepare=False)
            if cur is not None:
                cur.execute(query, params, prepare=False)

        pipelined(conn, send_all)
        return cur

    def _cursor(self, conn: psycopg.Connection, binary: bool) -> psycopg.Cursor:
        """A cursor of ``conn`` kept for reuse (results are always fetched at once)."""
        cursors = getattr(self._local, "cursors", None)
        if cursors is None or cursors[0] is not conn:
            cursors = self._local.cursors = (conn, {})
        cur = cursors[1].get(binary)
        if cur is None or cur.closed:
            cur = cursors[1][binary] = conn.cursor(binary=binary)
        return cur

    def _commit(self, conn: psycopg.Connection) -> None:
        statements = self._take(conn)
        self._local.defer_inserts = False
        if statements is not None and statements == [(_BEGIN, None)]:
            return  # nothing ran: nothing to send
        try:
            self._send(conn, [*(statements or []), (_COMMIT, None)])
        except BaseException as exc:
            self._abandon(conn)
            if isinstance(exc, psycopg.OperationalError) and self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def _abandon(self, conn: psycopg.Connection) -> None:
        """After a failed COMMIT pipeline: leave no transaction open behind us."""
        try:
            if not (conn.closed or conn.broken) and (
                conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            ):
                conn.execute("ROLLBACK")
        except psycopg.Error:
            self.reset()

    def _rollback(self, conn: psycopg.Connection) -> None:
        pending = self._pending(conn)
        self._local.pending = None
        self._local.defer_inserts = False
        if pending and pending[0][0] is _BEGIN:
            return  # BEGIN was never sent: there is nothing to roll back
        if conn.closed or conn.broken:
            self.reset()
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self.reset()

    def reset(self) -> None:
        self._local.unlocks = []  # the session's locks go with it
        self._local.pending = None
        self._local.cursors = None
        self._local.defer_inserts = False
        super().reset()

    def _lost(self, exc: BaseException) -> MPConnectionError:
        self.reset()
        return MPConnectionError(f"lost the connection to PostgreSQL: {str(exc).strip()}")

    def execute(self, query: sql.Composable, params: Any = None, binary: bool = False,
                _retry: bool = True) -> list[tuple]:
        """Run one statement; ``binary=True`` asks for binary results (bytea as raw bytes, no hex).

        A connection found dead outside a transaction (the server restarted, or the connection
        was terminated while idle) is replaced and the statement sent once more: nothing of it
        can have run. Inside a transaction the loss is raised: the transaction is gone."""
        in_transaction = self.in_transaction
        conn = self.conn
        try:
            cur = self._send(conn, self._take(conn), query, params, binary)
            result = cur.pgresult
            return cur.fetchall() if result is not None and result.status == _TUPLES_OK else []
        except psycopg.OperationalError as exc:
            if not self.is_connection_error(exc):
                raise
            lost = self._lost(exc)
            if _retry and not in_transaction and is_read(query):
                return self.execute(query, params, binary, _retry=False)
            raise lost from exc

    def execute_rows(
        self, query: Any, params: Any, convert: Callable[[tuple], tuple], binary: bool = False,
        _retry: bool = True,
    ) -> list[tuple]:
        """Run a query and return ``convert(row)`` for each row, converting rows as they arrive
        (``STREAM_CHUNK_ROWS`` at a time) rather than after libpq gathered the whole result in
        one growing buffer: measured 1.4-1.6x faster for 100 x 2 MB blobs. An error of
        ``convert`` is raised once the result is consumed (the connection and its transaction
        stay usable, as with a plain fetch). A dead connection outside a
        transaction is replaced and the query sent once more, as in :meth:`execute`."""
        in_transaction = self.in_transaction
        conn = self.conn
        try:
            self._send(conn, self._take(conn))
            out: list[tuple] = []
            append = out.append
            error: Exception | None = None
            for row in self._cursor(conn, binary).stream(query, params, size=STREAM_CHUNK_ROWS):
                if error is None:
                    try:
                        append(convert(row))
                    except Exception as exc:  # noqa: BLE001 - raised below, after the last row
                        error = exc
            self._local.streamed = True  # see try_reserve
            if error is not None:
                raise error
            return out
        except psycopg.OperationalError as exc:
            if not self.is_connection_error(exc):
                raise
            lost = self._lost(exc)
            if _retry and not in_transaction and is_read(query):
                return self.execute_rows(query, params, convert, binary, _retry=False)
            raise lost from exc

    def execute_many(self, query: sql.Composable, rows: Sequence[Sequence[Any]]) -> None:
        conn = self.conn
        try:
            self._send(conn, self._take(conn))
            if len(rows) == 1:  # psycopg's executemany sets up a pipeline: slower for one row
                conn.execute(query, rows[0])
                return
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
        if t.name in ("blob", "bytes"):
            return sql.SQL(self._bytea_type())
        if t.name in ("varchar", "char"):
            return sql.SQL("varchar({})").format(sql.Literal(int(t.length or 0)))
        if t.name == "decimal":
            return sql.SQL("numeric({}, {})").format(sql.Literal(int(t.precision or 0)), sql.Literal(int(t.scale or 0)))
        if t.name == "json" and t.store is not None:
            # a store attribute's reference record is written and read whole, never queried
            # inside: kept as JSON text (``json``), which the server sends back as stored, where
            # ``jsonb`` is rebuilt into text for every row (10,000 references: 14 -> 11 ms)
            return sql.SQL("json")
        return sql.SQL(_COLUMN_TYPES[t.name])

    def _bytea_type(self) -> str:
        """``bytea``, TOAST-compressed with lz4 where the server has it (PostgreSQL >= 14).

        Packed arrays rarely compress; pglz, the default, spends ~4x the time of the whole write
        finding that out for large values (measured: 2 MB float64 blobs go in at ~60 MB/s with
        pglz, ~220 MB/s with lz4); lz4 still shrinks the blobs that do compress."""
        cached = self.__dict__.get("_bytea")
        if cached is None:
            rows = self.execute(
                sql.SQL("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
            )
            lz4 = bool(rows) and rows[0][0] is not None and "lz4" in rows[0][0]
            cached = self.__dict__["_bytea"] = "bytea COMPRESSION lz4" if lz4 else "bytea"
        return cached

    def create_schema(self, schema: str) -> None:
        self.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def drop_schema(self, schema: str) -> None:
        self.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    def list_schemas(self) -> list[str]:
        """The schemas holding mp_dagster's meta table (declared by mp_dagster), sorted."""
        rows = self.execute(
            sql.SQL("SELECT table_schema FROM information_schema.tables WHERE table_name = {}").format(
                sql.Placeholder("t")),
            {"t": META_TABLE},
        )
        return sorted(r[0] for r in rows)

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
        if skip_duplicates or len(rows) < COPY_MIN_ROWS:
            self._insert_values(schema, table, attrs, rows, skip_duplicates)
            return
        key = (schema, table, tuple((a.name, a.type) for a in attrs))
        cached = self._copy_statements.get(key)
        if cached is None:
            copy_types = [
                "bytea" if a.type.name in ("blob", "bytes")
                # varchar(n): lengths are checked before any write (heading.py), as text on the wire
                else "varchar" if a.type.name in ("varchar", "char")
                else _COPY_TYPES.get(self.column_type(a).as_string(None))
                for a in attrs
            ]
            query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                self.table_ident(schema, table), sql.SQL(", ").join(sql.Identifier(a.name) for a in attrs)
            ).as_string(None)
            cached = (query, None if None in copy_types else copy_types)
            if len(self._copy_statements) < 4096:
                self._copy_statements[key] = cached
        query, copy_types = cached
        if copy_types is None:
            self._insert_values(schema, table, attrs, rows, skip_duplicates)
            return
        conn = self.conn
        try:
            self._send(conn, self._take(conn))  # COPY cannot join a pipeline: what waits goes first
            with conn.cursor() as cur, cur.copy(query) as copy:
                copy.set_types(copy_types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        except psycopg.OperationalError as exc:
            if self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def _insert_values(
        self, schema: str, table: str, attrs: Sequence[Attribute], rows: Sequence[Sequence[Any]],
        skip_duplicates: bool,
    ) -> None:
        """Multi-row ``INSERT ... VALUES (...), (...)``: one round trip per chunk of rows (psycopg's
        executemany pipelines one statement per row: slower here, and COPY takes two round trips)."""
        width = max(len(attrs), 1)
        chunk = max(1, min(_VALUES_CHUNK_ROWS, _MAX_PARAMS // width))
        names = tuple(a.name for a in attrs)
        conn = self.conn
        pending = None
        if getattr(self._local, "defer_inserts", False) and self.in_transaction:
            pending = self._pending(conn)
            if pending is None:
                pending = []
                self._local.pending = (conn, pending)
        try:
            if pending is None:
                self._send(conn, self._take(conn))
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                key = (schema, table, names, len(part), skip_duplicates)
                query = self._values_statements.get(key)
                if query is None:
                    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(attrs)))
                    query = sql.SQL("INSERT INTO {} ({}) VALUES {}{}").format(
                        self.table_ident(schema, table),
                        sql.SQL(", ").join(sql.Identifier(n) for n in names),
                        sql.SQL(", ").join([row] * len(part)),
                        skip_primary_key_duplicates(attrs) if skip_duplicates else sql.SQL(""),
                    ).as_string(None)
                    if len(self._values_statements) < 4096:
                        self._values_statements[key] = query
                values = [v for r in part for v in r]
                if pending is not None:
                    pending.append((query, values))
                else:
                    conn.execute(query, values)
        except psycopg.OperationalError as exc:
            if self.is_connection_error(exc):
                raise self._lost(exc) from exc
            raise

    def lock_key(self, full_name: str, key: Sequence[Any]) -> None:
        conn = self.conn
        lock = self.key_hash(full_name, key)
        pending = self._pending(conn)
        if pending is not None:  # BEGIN is not sent yet: the lock goes with it
            pending.append((_LOCK, (lock,)))
            return
        self.execute(_LOCK, (lock,))

    def try_reserve(self, lock_id: int, written: tuple[Any, Any]) -> tuple[bool, bool]:
        """A session-level advisory lock taken with a try (this connection is in autocommit: no
        transaction, no row lock), then the EXISTS query in its own snapshot, taken after the
        lock: a writer that released the key had committed before. One round trip, which also
        carries the releases left for later (``release(later=True)``). The server drops the
        locks when the session ends, so a killed worker leaves no reservation."""
        if self.in_transaction:
            raise MPError("a key cannot be reserved inside a transaction")
        conn = self.conn
        for attempt in (0, 1):
            unlocks = self._take_unlocks()
            try:
                self._send(conn, self._take(conn))
                if getattr(self._local, "streamed", False):
                    # psycopg 3.3 / libpq 18: the first row-returning statement of a pipeline
                    # right after a streamed result comes back in chunks, which psycopg refuses;
                    # a plain statement in between clears that, so go without the pipeline
                    self._local.streamed = False
                    if unlocks:
                        conn.execute(_UNLOCK_MANY, (unlocks,))
                    lock = conn.execute(_TRY_LOCK, (lock_id,))
                    exists = conn.execute(written[0], written[1])
                else:
                    def send(c: psycopg.Connection = conn, ids: list[int] = unlocks) -> tuple[Any, Any]:
                        if ids:
                            c.execute(_UNLOCK_MANY, (ids,), prepare=False)
                        return (c.execute(_TRY_LOCK, (lock_id,), prepare=False),
                                c.execute(written[0], written[1], prepare=False))

                    lock, exists = pipelined(conn, send)
                return bool(lock.fetchone()[0]), bool(exists.fetchone()[0])
            except psycopg.Error as exc:
                if not (isinstance(exc, psycopg.OperationalError) and self.is_connection_error(exc)):
                    self.release(lock_id)  # the query failed, not the lock: leave none behind
                    raise
                lost = self._lost(exc)  # the session and its reservations are gone
                if attempt:
                    raise lost from exc
                conn = self.conn
        raise AssertionError("unreachable")

    def release(self, lock_id: int, later: bool = False) -> None:
        """Give the lock back now, or (``later``) with this thread's next reservation or
        :meth:`flush_releases`: a key's release then costs no round trip of its own."""
        if later:
            self._local.unlocks = [*(getattr(self._local, "unlocks", None) or []), lock_id]
            return
        self._unlock([lock_id])

    def flush_releases(self) -> None:
        self._unlock(self._take_unlocks())

    def _take_unlocks(self) -> list[int]:
        unlocks = getattr(self._local, "unlocks", None) or []
        self._local.unlocks = []
        return unlocks

    def _unlock(self, lock_ids: list[int]) -> None:
        conn = getattr(self._local, "conn", None)
        if not lock_ids or conn is None or conn.closed or conn.broken:
            return  # nothing to give back, or the session, and its locks with it, is gone
        try:
            conn.execute(_UNLOCK_MANY, (lock_ids,))
        except psycopg.OperationalError as exc:
            if not self.is_connection_error(exc):
                raise
            self.reset()

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
