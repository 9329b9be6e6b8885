"""psycopg plumbing of the PostgreSQL backend: one round trip for several statements, which
statements may be sent again on a new connection, and jsonb read back as its text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format


def is_read(query: Any) -> bool:
    """A SELECT: safe to send again on a new connection (it changed nothing)."""
    if isinstance(query, sql.Composable):
        text = query.as_string(None)
    elif isinstance(query, (bytes, bytearray)):
        text = bytes(query).decode(errors="replace")
    else:
        text = str(query)
    return text.lstrip().upper().startswith("SELECT")


def pipelined(conn: psycopg.Connection, send: Callable[[], Any]) -> Any:
    """``send()``'s statements in one pipeline (one round trip); the first error is raised.

    Statements in a pipeline are never prepared: when one of them fails, the server skips the
    rest, yet psycopg would count a skipped statement it chose to prepare as prepared, and
    every later use of it on this connection would fail ("prepared statement ... does not
    exist"). And an error raised inside the block is caught there, so that psycopg does not
    log a second one ("error ignored terminating ... pipeline aborted") while closing it."""
    first: psycopg.Error | None = None
    result = None
    try:
        with conn.pipeline():
            try:
                result = send()
            except psycopg.Error as exc:
                first = exc
    except psycopg.Error as exc:
        raise (first or exc) from None
    if first is not None:
        raise first
    return result


class JsonbBinaryTextLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> str:
        return bytes(data)[1:].decode()  # binary jsonb is a version byte (1) and the text
