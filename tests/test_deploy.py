"""deploy/dagster.yaml: a Dagster instance on PostgreSQL (dagster-postgres), credentials from the
environment, running a real materialization whose tables are on PostgreSQL too."""

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


@pytest.fixture
def instance_database():
    url = postgres_url()
    name = f"mp_dagster_instance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    yield urlparse(url), name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def test_deploy_yaml_runs_dagster_on_postgres(instance_database, tmp_path, monkeypatch):
    parsed, database = instance_database
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
        Image.insert([dict(image_id=i, image=np.zeros((4, 4))) for i in range(2)])
        defs = build_definitions(schema)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions(f"{schema.name}__image", ["0", "1"])
            job = defs.resolve_job_def(f"{schema.name}__segmentation_job")
            tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": "1"}
            assert job.execute_in_process(instance=instance, tags=tags).success
            key = dg.AssetKey([schema.name, "segmentation"])
            assert instance.get_materialized_partitions(key) == {"0", "1"}
        assert len(Segmentation.ROI) == 8
        with psycopg.connect(postgres_url().rsplit("/", 1)[0] + f"/{database}") as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert runs == 1  # the run history lives in the instance database
    finally:
        schema.drop(force=True)
