"""deploy/dagster.yaml: a Dagster instance on PostgreSQL (dagster-postgres storage with pooled
connections, mp_dagster/dagster/instance_storage.py), credentials from the environment, running
real materializations whose tables are on PostgreSQL too; with the event settings of
deploy/dagster.env as shipped, and with its optional one."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import dagster_dev_util
import numpy as np
import psycopg
import pytest
import sqlalchemy
from conftest import postgres_url, unique_schema_name
from dagster_dev_util import deploy_env, teardown_drop
from pipelines import declare_imaging

import mp_dagster as mp
from mp_dagster.dagster import build_definitions
from mp_dagster.dagster.instance_storage import POOL_SIZE

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


@pytest.fixture
def instance_database():
    url = postgres_url()
    name = f"mp_dagster_instance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    yield name
    teardown_drop(url, psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)),
                  f"database {name}")


def test_a_teardown_waiting_for_a_lock_gives_up_with_a_message(monkeypatch):
    """Issue 14, item 6: a teardown DROP blocked by another session's lock fails after the lock
    timeout, naming what it left behind, instead of hanging the suite."""
    monkeypatch.setattr(dagster_dev_util, "TEARDOWN_LOCK_TIMEOUT_S", 1)
    url, name = postgres_url(), unique_schema_name("held")
    drop = psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(name))
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
        try:
            with holder.transaction():
                holder.execute(psycopg.sql.SQL("CREATE TABLE {}.t (x int)").format(psycopg.sql.Identifier(name)))
                holder.execute(psycopg.sql.SQL("LOCK TABLE {}.t").format(psycopg.sql.Identifier(name)))
                started = time.monotonic()
                with pytest.raises(AssertionError, match=f"teardown gave up: schema {name} waited more than 1 s"):
                    teardown_drop(url, drop, f"schema {name}")
                assert time.monotonic() - started < 10
        finally:
            teardown_drop(url, drop, f"schema {name}")  # the lock is gone: it drops


@pytest.fixture
def deploy_home(instance_database, tmp_path, monkeypatch) -> Path:
    """$DAGSTER_HOME holding deploy/dagster.yaml as shipped, its DAGSTER_PG_* variables set."""
    parsed = urlparse(postgres_url())
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parsed.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parsed.password or "")
    monkeypatch.setenv("DAGSTER_PG_HOST", parsed.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parsed.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", instance_database)
    return home


@pytest.fixture
def imaging():
    """Image -> Segmentation(ROI) on PostgreSQL with 30 images, and its definitions."""
    schema = mp.Schema(unique_schema_name("deploy"), database_url=postgres_url())
    try:
        Image, Segmentation = declare_imaging(schema, n_rois=4)
        Image.insert([dict(image_id=i, image=np.zeros((4, 4))) for i in range(30)])
        yield schema, Image, Segmentation, build_definitions(schema)
    finally:
        schema.drop(force=True)


def use_stock_storage(home: Path) -> None:
    """Rewrite ``home``'s dagster.yaml: the same postgres_db block under dagster-postgres' own
    storage (`storage: postgres`), the README's fallback."""
    import yaml

    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["storage"] = {"postgres": config["storage"]["custom"]["config"]}
    (home / "dagster.yaml").write_text(json.dumps(config))


def instance_query(database: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(postgres_url().rsplit("/", 1)[0] + f"/{database}") as conn:
        return conn.execute(query, params).fetchall()


def backends_on(database: str) -> int:
    """Server processes connected to ``database`` (other than the one asking)."""
    with psycopg.connect(postgres_url()) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (database,)).fetchone()[0]


def run_range(defs, schema, instance, first: int, last: int, succeeds: bool = True) -> None:
    job = defs.resolve_job_def(f"{schema.name}__segmentation_job")
    tags = ({"dagster/partition": str(first)} if first == last else
            {"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)})
    assert job.execute_in_process(instance=instance, tags=tags, raise_on_error=False).success is succeeds


@pytest.mark.parametrize("optional", [False, True], ids=["dagster.env", "dagster.env+optional"])
def test_deploy_yaml_runs_dagster_on_postgres(deploy_home, instance_database, imaging, monkeypatch, optional):
    settings = deploy_env(optional)
    assert "DAGSTER_EVENT_BATCH_SIZE" in settings
    assert ("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" in settings) is optional
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    schema, _, Segmentation, defs = imaging
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
        instance.add_dynamic_partitions(f"{schema.name}__image", [str(i) for i in range(30)])
        run_range(defs, schema, instance, 0, 9)  # keys 0..9 in one run
        run_range(defs, schema, instance, 29, 29)
        key = dg.AssetKey([schema.name, "segmentation"])
        assert instance.get_materialized_partitions(key) == {*map(str, range(10)), "29"}
    assert len(Segmentation) == 11 and len(Segmentation.ROI) == 44
    assert instance_query(instance_database, "SELECT count(*) FROM runs") == [(2,)]  # run history is there
    events = dict(instance_query(instance_database, "SELECT dagster_event_type, count(*) FROM event_logs "
                                                    "WHERE asset_key IS NOT NULL GROUP BY dagster_event_type"))
    # every partition's materialization is recorded, batched or not
    assert events["ASSET_MATERIALIZATION"] == 11
    # one planned event per partition, or (the optional setting) one per run
    assert events["ASSET_MATERIALIZATION_PLANNED"] == (2 if optional else 11)
    if not optional:  # the planned events of the 10-key run were written as one batch, each with its key
        planned = instance_query(instance_database, "SELECT partition FROM event_logs "
                                                    "WHERE dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'")
        assert sorted(int(p) for p, in planned) == [*range(10), 29]


def test_deploy_marks_the_partitions_of_a_failed_run_failed(deploy_home, imaging, monkeypatch):
    """With deploy/dagster.env as shipped, a run's planned events are written as one batch, yet
    every partition has its own: Dagster shows the keys a failed run did not write as failed and
    the ones it wrote as materialized."""
    for name, value in deploy_env(optional=False).items():
        monkeypatch.setenv(name, value)
    schema, Image, Segmentation, defs = imaging
    Image.insert1(dict(image_id=30, image="not an image"))  # make() fails on this key
    keys = [str(i) for i in range(31)]
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(f"{schema.name}__image", keys)
        run_range(defs, schema, instance, 0, 30, succeeds=False)
        statuses = instance.get_status_by_partition(dg.AssetKey([schema.name, "segmentation"]), keys,
                                                    dg.DynamicPartitionsDefinition(name=f"{schema.name}__image"))
    assert {k for k, s in statuses.items() if s == dg.AssetPartitionStatus.FAILED} == {"30"}
    assert {k for k, s in statuses.items() if s == dg.AssetPartitionStatus.MATERIALIZED} == set(keys[:30])
    assert len(Segmentation) == 30 and len(Segmentation.ROI) == 120


@pytest.mark.parametrize("storage", ["postgres", "deploy"], ids=["stock-dagster-postgres", "deploy-pooled"])
def test_pooled_storage_keeps_its_connections(deploy_home, instance_database, imaging, storage):
    """A 10-partition run on the stock storage connects to the server for every event write; on
    deploy/dagster.yaml's it reuses the connections it keeps, and closes them with the instance."""
    if storage == "postgres":
        use_stock_storage(deploy_home)
    schema, _, Segmentation, defs = imaging
    connects = []
    listener = lambda *_: connects.append(1)  # noqa: E731
    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", listener)
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(f"{schema.name}__image", [str(i) for i in range(10)])
            connects.clear()
            run_range(defs, schema, instance, 0, 9)
            opened = len(connects)
            if storage == "deploy":
                assert backends_on(instance_database) >= 1  # kept while the instance lives
    finally:
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "connect", listener)
    assert len(Segmentation.ROI) == 40
    if storage == "postgres":
        assert opened > 40  # at least one per event: 10 planned + 10 materialized + run and step events
    else:
        assert opened <= 2 * POOL_SIZE  # the kept connections of the run and event-log storages
        deadline = time.monotonic() + 10
        while backends_on(instance_database) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends_on(instance_database) == 0  # disposing the instance closed the pool


def test_stock_storage_reads_what_the_pooled_storage_wrote(deploy_home, imaging, monkeypatch):
    """The README's fallback: a webserver on `storage: postgres` with the same block sees the
    runs and materializations that deploy/'s storage wrote (batched events included)."""
    for name, value in deploy_env(optional=False).items():
        monkeypatch.setenv(name, value)
    schema, _, _, defs = imaging
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(f"{schema.name}__image", [str(i) for i in range(10)])
        run_range(defs, schema, instance, 0, 9)
    use_stock_storage(deploy_home)
    with dg.DagsterInstance.get() as stock:
        assert type(stock.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert len(stock.get_runs()) == 1
        key = dg.AssetKey([schema.name, "segmentation"])
        assert stock.get_materialized_partitions(key) == set(map(str, range(10)))


def test_pooled_storage_replaces_a_connection_the_server_closed(deploy_home, instance_database, imaging):
    """The server ends the kept connections between two runs (a restart, an idle timeout): the
    next run's events are written on new connections and nothing is lost."""
    schema, _, Segmentation, defs = imaging
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(f"{schema.name}__image", [str(i) for i in range(30)])
        run_range(defs, schema, instance, 0, 4)
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (instance_database,)).fetchone()[0]
        assert ended >= 1
        run_range(defs, schema, instance, 5, 9)
        key = dg.AssetKey([schema.name, "segmentation"])
        assert instance.get_materialized_partitions(key) == set(map(str, range(10)))
    assert len(Segmentation) == 10
    assert instance_query(instance_database, "SELECT count(*) FROM event_logs WHERE "
                                             "dagster_event_type = 'ASSET_MATERIALIZATION'") == [(10,)]


def test_deploy_batches_the_planned_events_of_several_assets(deploy_home, instance_database, monkeypatch):
    """A run over two assets of five partitions each: ten planned events in one batch, each with
    its asset and key; each asset's index names the run (what the UI's "latest run" reads) and
    its latest materialization, whose stored id is that event's row."""
    for name, value in deploy_env(optional=False).items():
        monkeypatch.setenv(name, value)
    partitions = dg.StaticPartitionsDefinition([f"p{i}" for i in range(5)])
    policy = dg.BackfillPolicy.single_run()

    @dg.asset(partitions_def=partitions, backfill_policy=policy)
    def first(context) -> None:
        pass

    @dg.asset(partitions_def=partitions, backfill_policy=policy, deps=[first])
    def second(context) -> None:
        pass

    job = dg.Definitions(assets=[first, second], jobs=[dg.define_asset_job("both")]).resolve_job_def("both")
    with dg.DagsterInstance.get() as instance:
        tags = {"dagster/asset_partition_range_start": "p0", "dagster/asset_partition_range_end": "p4"}
        result = job.execute_in_process(instance=instance, tags=tags)
        assert result.success
        records = {r.asset_entry.asset_key.path[0]: r.asset_entry
                   for r in instance.get_asset_records([dg.AssetKey("first"), dg.AssetKey("second")])}
        assert {name: entry.last_run_id for name, entry in records.items()} == {"first": result.run_id,
                                                                                "second": result.run_id}
        latest = {}
        for key in (dg.AssetKey("first"), dg.AssetKey("second")):
            assert instance.get_materialized_partitions(key) == set(partitions.get_partition_keys())
            record = records[key.path[0]].last_materialization_record
            latest[record.storage_id] = record.event_log_entry.dagster_event.partition
    for storage_id, partition in latest.items():  # the index points at the row of that very event
        assert instance_query(instance_database, "SELECT partition, dagster_event_type FROM event_logs WHERE id = %s",
                              (storage_id,)) == [(partition, "ASSET_MATERIALIZATION")]
    planned = instance_query(instance_database, "SELECT asset_key, partition FROM event_logs "
                                                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'")
    assert sorted(planned) == sorted((f'["{a}"]', f"p{i}") for a in ("first", "second") for i in range(5))


def test_readme_shows_the_storage_block_deploy_ships():
    import re

    import yaml

    readme = (DEPLOY.parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "PooledPostgresStorage" in b]
    assert len(blocks) == 1
    assert yaml.safe_load(blocks[0])["storage"] == yaml.safe_load(DEPLOY.read_text())["storage"]
