"""Database backends, selected by URL: ``postgresql://...`` or ``sqlite:///path.db``."""

from __future__ import annotations

import os
import re

from ..errors import MPError
from .base import Backend

DATABASE_URL_ENV = "MP_DAGSTER_DATABASE_URL"
DEFAULT_SQLITE_FILE = "mp_dagster.db"

_backends: dict[str, Backend] = {}


def default_url() -> str:
    """``MP_DAGSTER_DATABASE_URL``, or an SQLite file in the working directory."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{os.path.abspath(DEFAULT_SQLITE_FILE)}"


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and metadata."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def get_backend(url: str | None = None) -> Backend:
    """The shared backend for ``url`` (one per URL per process; connections per thread)."""
    url = url or default_url()
    backend = _backends.get(url)
    if backend is None:
        if url.startswith(("postgresql://", "postgres://")):
            from .postgres import PostgresBackend

            backend = PostgresBackend(url)
        elif url.startswith("sqlite://"):
            from .sqlite import SQLiteBackend

            backend = SQLiteBackend(url)
        else:
            raise MPError(
                f"unsupported database URL {redact(url)!r}: use postgresql://user@host:port/db "
                "or sqlite:///path/file.db"
            )
        _backends[url] = backend
    return backend


__all__ = ["Backend", "DATABASE_URL_ENV", "default_url", "get_backend", "redact"]
