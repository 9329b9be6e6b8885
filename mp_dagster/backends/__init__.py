"""Database backends, selected by URL: ``postgresql://...`` or ``sqlite:///path.db``."""

from __future__ import annotations

import os
import re

from ..errors import MPError
from .base import Backend

DATABASE_URL_ENV = "MP_DAGSTER_DATABASE_URL"
DEFAULT_SQLITE_FILE = "mp_dagster.db"

_backends: dict[str, Backend] = {}


REQUIRE_URL_ENV = "MP_DAGSTER_REQUIRE_DATABASE_URL"


def default_url() -> str:
    """``MP_DAGSTER_DATABASE_URL``, or an SQLite file in the working directory, except in a
    deployment (see :func:`deployment_without_url`), where a missing URL is an error."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    path = os.path.abspath(DEFAULT_SQLITE_FILE)
    reason = deployment_without_url()
    if reason:
        raise MPError(
            f"{DATABASE_URL_ENV} is not set, and {reason}: refusing to keep the tables in a local "
            f"SQLite file ({path}) that no other worker would see. Set {DATABASE_URL_ENV} "
            "(e.g. postgresql://user@host:5432/lab) for every webserver, daemon and worker")
    return f"sqlite:///{path}"


def deployment_without_url() -> str | None:
    """Why this process belongs to a deployment (so the embedded SQLite default is wrong), or
    None: ``MP_DAGSTER_REQUIRE_DATABASE_URL=1`` (deploy/dagster.env sets it), or a Dagster
    instance (``$DAGSTER_HOME/dagster.yaml``) whose storage is on a database server."""
    if os.environ.get(REQUIRE_URL_ENV, "") not in ("", "0"):
        return f"{REQUIRE_URL_ENV} is set"
    home = os.environ.get("DAGSTER_HOME")
    config = os.path.join(home, "dagster.yaml") if home else None
    if not config or not os.path.isfile(config):
        return None
    import yaml  # Dagster's dependency; only its configuration file is read here

    try:
        with open(config) as f:
            settings = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None  # Dagster itself reports an unreadable instance configuration
    if _names_a_server(settings):
        return f"the Dagster instance in {config} keeps its storage on a database server"
    return None


def _names_a_server(settings: object) -> bool:
    if isinstance(settings, dict):
        return any(k in _SERVER_STORAGE_KEYS or _names_a_server(v) for k, v in settings.items())
    if isinstance(settings, list):
        return any(_names_a_server(v) for v in settings)
    return False


_SERVER_STORAGE_KEYS = {"postgres_db", "postgres_url", "mysql_db", "mysql_url"}


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and metadata."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


READ_ONLY_ENV = "MP_DAGSTER_READ_ONLY"


def read_only() -> bool:
    """``MP_DAGSTER_READ_ONLY=1``: open databases read-only and create nothing (no file, no
    schema, no table; ``mp-dagster status`` and ``diagram`` set it)."""
    return os.environ.get(READ_ONLY_ENV, "") not in ("", "0")


def get_backend(url: str | None = None) -> Backend:
    """The shared backend for ``url`` (one per URL and mode per process; connections per thread)."""
    url = url or default_url()
    backend = _backends.get(url + "#ro" if read_only() else url)
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
        _backends[url + "#ro" if backend.read_only else url] = backend
    return backend


__all__ = ["Backend", "DATABASE_URL_ENV", "READ_ONLY_ENV", "REQUIRE_URL_ENV", "default_url", "get_backend",
           "read_only", "redact"]
