"""Fixtures: every relational test runs on BOTH backends, a real PostgreSQL and a real SQLite file.

PostgreSQL comes from ``MP_DAGSTER_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it cannot be reached the PostgreSQL cases
skip locally, and FAIL when ``MP_DAGSTER_REQUIRE_POSTGRES=1`` (CI sets it).
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

import mp_dagster as mp

PG_URL = os.environ.get("MP_DAGSTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("MP_DAGSTER_REQUIRE_POSTGRES") == "1"

_pg_error: str | None = None
try:
    with psycopg.connect(PG_URL, connect_timeout=5) as _c:
        _c.execute("SELECT 1")
except psycopg.Error as exc:  # pragma: no cover - depends on the machine
    _pg_error = str(exc).strip()


def postgres_url() -> str:
    """The test PostgreSQL URL; skips (or fails in CI) when it is unreachable."""
    if _pg_error is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (MP_DAGSTER_REQUIRE_POSTGRES=1) but unreachable: {_pg_error}")
        pytest.skip(f"PostgreSQL unreachable: {_pg_error}")
    return PG_URL


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request, tmp_path) -> str:
    """A database URL: the test PostgreSQL, or a fresh SQLite file."""
    if request.param == "postgres":
        return postgres_url()
    return f"sqlite:///{tmp_path / 'mp.db'}"


@pytest.fixture
def pg_url() -> str:
    return postgres_url()


def unique_schema_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def schema(db_url):
    """A fresh, empty schema on the parametrised backend; dropped afterwards."""
    s = mp.Schema(unique_schema_name(), database_url=db_url)
    yield s
    s.drop(force=True)


@pytest.fixture
def make_schema(db_url):
    """Factory for more schemas on the same database (cross-schema references)."""
    made: list[mp.Schema] = []

    def factory(prefix: str = "t") -> mp.Schema:
        s = mp.Schema(unique_schema_name(prefix), database_url=db_url)
        made.append(s)
        return s

    yield factory
    for s in reversed(made):
        s.drop(force=True)


@pytest.fixture
def instance(tmp_path):
    """A Dagster instance of its own (SQLite storage in a temporary DAGSTER_HOME)."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst
