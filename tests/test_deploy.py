"""deploy/dagster.yaml: a Dagster instance on PostgreSQL (dagster-postgres), credentials from the
environment, running a real materialization whose tables are on PostgreSQL too; with the event
settings of deploy/dagster.env as shipped, and with its optional one."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import numpy as np
import psycopg
import pytest
from conftest import postgres_url, unique_schema_name
from pipelines import declare_imaging

import mp_dagster as mp
from mp_dagster.dagster import build_definitions

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
DEPLOY_ENV = DEPLOY.with_name("dagster.env")


def deploy_env(optional: bool) -> dict[str, str]:
    """The settings of deploy/dagster.env (``optional``: its commented-out ones too)."""
    out = {}
    for line in DEPLOY_ENV.read_text().splitlines():
        line = line.strip()
        if optional and line.startswith("# ") and "=" in line and line[2:].split("=")[0].isupper():
            line = line[2:]
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            out[name] = value
    return out


@pytest.fixture
def instance_database():
    url = postgres_url()
    name = f"mp_dagster_instance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    yield urlparse(url), name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


@pytest.mark.parametrize("optional", [False, True], ids=["dagster.env", "dagster.env+optional"])
def test_deploy_yaml_runs_dagster_on_postgres(instance_database, tmp_path, monkeypatch, optional):
    parsed, database = instance_database
    settings = deploy_env(optional)
    assert "DAGSTER_EVENT_BATCH_SIZE" in settings
    assert ("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" in settings) is optional
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", parsed.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", parsed.password or "")
    monkeypatch.setenv("DAGSTER_PG_HOST", parsed.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parsed.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", database)

    schema = mp.Schema(unique_schema_name("deploy"), database_url=postgres_url())
    try:
        Image, Segmentation = declare_imaging(schema, n_rois=4)
        keys = [str(i) for i in range(30)]
        Image.insert([dict(image_id=i, image=np.zeros((4, 4))) for i in range(len(keys))])
        defs = build_definitions(schema)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions(f"{schema.name}__image", keys)
            job = defs.resolve_job_def(f"{schema.name}__segmentation_job")
            tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": "9"}
            assert job.execute_in_process(instance=instance, tags=tags).success  # keys 0..9 in one run
            tags = {"dagster/partition": "29"}
            assert job.execute_in_process(instance=instance, tags=tags).success
            key = dg.AssetKey([schema.name, "segmentation"])
            assert instance.get_materialized_partitions(key) == {*map(str, range(10)), "29"}
        assert len(Segmentation) == 11 and len(Segmentation.ROI) == 44
        with psycopg.connect(postgres_url().rsplit("/", 1)[0] + f"/{database}") as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            events = dict(conn.execute(
                "SELECT dagster_event_type, count(*) FROM event_logs WHERE asset_key IS NOT NULL "
                "GROUP BY dagster_event_type").fetchall())
        assert runs == 2  # the run history lives in the instance database
        # every partition's materialization is recorded, batched or not
        assert events["ASSET_MATERIALIZATION"] == 11
        # one planned event per partition, or (the optional setting) one per run
        assert events["ASSET_MATERIALIZATION_PLANNED"] == (2 if optional else 11)
    finally:
        schema.drop(force=True)
