"""Dagster instance storage on PostgreSQL that keeps its connections and batches a run's events.

dagster-postgres opens a new database connection for every statement its run and event-log
storages send, except inside dagster-webserver (SQLAlchemy's ``NullPool``; the webserver
switches to a pool itself). A run worker that backfills 1,000 partitions writes thousands of
events, each on two fresh connections; on the benchmark's machine that is most of Dagster's cost
per partition (bench/README.md has the profile). ``PooledPostgresStorage`` is dagster-postgres'
storage with a pool of kept connections for runs and for event logs, in every process:
the daemon, run workers and step processes, as well as the webserver. Its event-log storage
also writes the batches Dagster hands it (``DAGSTER_EVENT_BATCH_SIZE``) as one statement each,
a new run's "materialization planned" events included (see ``store_event_batch``). The tables,
rows and Dagster's view of them are those of dagster-postgres.

Configure it in ``dagster.yaml`` with the same fields as ``storage: postgres``
(deploy/dagster.yaml does)::

    storage:
      custom:
        module: mp_dagster.dagster.instance_storage
        class: PooledPostgresStorage
        config:
          postgres_db: {...}

Each pooled connection is checked with a ping when it is taken from the pool, so a connection
the server closed (a restart, ``pg_terminate_backend``, an idle timeout) is replaced before it is
used, as a fresh connection would have been. Disposing the Dagster instance closes the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage, PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

if TYPE_CHECKING:
    from dagster_postgres.auth import PgTokenProvider
    from sqlalchemy.engine import Engine

# Two connections kept per storage: Dagster checks out a second one while it holds the first
# (writing an asset event, it asks whether a table exists on another connection), and with one
# kept connection that second one would be opened and closed for every event. More are opened
# (and closed on return) only when threads of one process write at the same moment. Recycled
# hourly like the webserver's pool.
POOL_SIZE = 2
POOL_MAX_OVERFLOW = 20
POOL_RECYCLE_SECONDS = 3600

# the event kinds written as one statement per batch (dagster-postgres: materializations and
# observations; here planned materializations too)
BATCHED_EVENT_TYPES = frozenset({
    DagsterEventType.ASSET_MATERIALIZATION,
    DagsterEventType.ASSET_OBSERVATION,
    DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
})


def pooled_engine(postgres_url: str, token_provider: PgTokenProvider | None) -> Engine:
    """A SQLAlchemy engine that keeps ``POOL_SIZE`` connections and pings each before use."""
    return create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",  # what dagster-postgres' own engines use
        pool_size=POOL_SIZE,
        max_overflow=POOL_MAX_OVERFLOW,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_pre_ping=True,
    )


class KeptConnections:
    """Mixin for a dagster-postgres storage class: its engine keeps connections (see the module
    docstring) until the storage is disposed or the webserver installs its own pool."""

    _engine: Engine

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None,
                 token_provider: PgTokenProvider | None = None) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)  # type: ignore[call-arg]
        # the parent's engine is a NullPool: replacing it leaves no connection behind
        self._engine = pooled_engine(postgres_url, token_provider)

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        self._engine.dispose()  # the webserver brings its own pool
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class PooledPostgresRunStorage(KeptConnections, PostgresRunStorage):
    """dagster-postgres' run storage on kept connections."""


class PooledPostgresEventLogStorage(KeptConnections, PostgresEventLogStorage):
    """dagster-postgres' event-log storage on kept connections, which also writes a batch of
    "materialization planned" events in one statement."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """As dagster-postgres, with two differences that change no stored row:

        * Consecutive "materialization planned" events go in one INSERT. With
          ``DAGSTER_EVENT_BATCH_SIZE`` set, Dagster hands a new run's planned events (one per
          partition) to this method as one batch, but dagster-postgres batches only
          materializations and observations and writes each planned event on its own: three
          commits per partition, the largest cost left per partition in a single-run backfill.
        * Batches are sent as one statement with the rows as parameters rather than one
          statement holding every row's values, which SQLAlchemy compiles anew for each batch
          (80 ms for 1,000 rows against 30 ms, measured).
        """
        for event_type, run in groupby(events, key=lambda e: e.get_dagster_event().event_type):
            run = list(run)
            if event_type in BATCHED_EVENT_TYPES and len(run) > 1:
                self._store_asset_event_batch(run)
            else:  # one event, or a kind dagster-postgres stores its own way (it drops
                super().store_event_batch(run)  # failed-to-materialize events from batches)

    def _store_asset_event_batch(self, events: list[EventLogEntry]) -> None:
        # the rows dagster-postgres writes one by one (partition included), in one statement;
        # ids come back in the order of the events
        statement = SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id,
                                                               sort_by_parameter_order=True)
        with self._connect() as conn:
            event_ids = [int(row[0]) for row in conn.execute(statement, [self._event_to_row(e) for e in events])]
        # each event of an asset overwrites its index entry (last run, last event): storing the
        # last event of each asset leaves the index as storing them all in order would
        last_of_asset = {e.get_dagster_event().asset_key: (e, i) for e, i in zip(events, event_ids)}
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            for event, event_id in last_of_asset.values():
                self._store_asset_event(conn, event, event_id)


class PooledPostgresStorage(DagsterPostgresStorage):
    """``storage: postgres`` with pooled run and event-log storages. Schedule storage (sensor
    and schedule ticks, a few statements per tick) stays on dagster-postgres' own: Dagster does
    not dispose it with the instance, so a pool there would outlive the instance."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None,
                 token_provider: PgTokenProvider | None = None) -> None:
        # DagsterPostgresStorage.__init__ would build the unpooled storages first (and inspect
        # the database for each); set the same attributes with the pooled ones instead
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PooledPostgresRunStorage(postgres_url, should_autocreate_tables,
                                                     token_provider=token_provider)
        self._event_log_storage = PooledPostgresEventLogStorage(postgres_url, should_autocreate_tables,
                                                                token_provider=token_provider)
        self._schedule_storage = PostgresScheduleStorage(postgres_url, should_autocreate_tables,
                                                         token_provider=token_provider)
        DagsterStorage.__init__(self)

    @classmethod  # config_type: the parent's, the fields of `storage: postgres`
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Any) -> PooledPostgresStorage:
        return cls(
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
