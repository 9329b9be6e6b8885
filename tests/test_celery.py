"""A real distributed engine: dagster-celery workers on a Redis broker run the steps of
multi-run backfills launched as the UI launches them (GraphQL ``launchPartitionBackfill`` to a
real dagster-webserver; dagster-daemon turns the backfill into runs). Real redis-server (the
test's own, on 127.0.0.1), real celery workers, real PostgreSQL; the rows are checked in the
database afterwards. tests/celery_cluster.py starts the processes, tests/celery_pipeline.py is
the code location every process loads.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from celery_cluster import cluster, patch_instance, require_celery
from celery_pipeline import declare
from conftest import postgres_url, unique_schema_name
from test_reliability import check_entries, drop

import mp_dagster as mp
from mp_dagster.dagster.partitions import def_name

RUNS_TIMEOUT = 120.0
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def run_partitions(run: dg.DagsterRun) -> tuple[str, str]:
    return run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]


def step_workers(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The celery workers that executed the run's steps, from dagster-celery's engine events."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        md = record.dagster_event.engine_event_data.metadata if record.dagster_event else {}
        if "Celery worker" in md:
            out.append(md["Celery worker"].value)
    return out


def print_timeline(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], by_run: dict[str, list[str]]) -> None:
    """Each run's partitions, the worker of its step, and its launch, start and end (seconds after
    the first launch)."""
    stats = {r.run_id: instance.get_run_stats(r.run_id) for r in runs}
    t0 = min(s.launch_time or 0 for s in stats.values())
    print()
    for r in sorted(runs, key=lambda r: int(run_partitions(r)[0])):
        s = stats[r.run_id]
        times = " ".join(f"{(t or t0) - t0:5.1f}" for t in (s.launch_time, s.start_time, s.end_time))
        print(f"  run {r.run_id[:8]} keys {'..'.join(run_partitions(r)):>9} {r.status.value:8} on "
              f"{','.join(by_run.get(r.run_id, [])) or '-':12} launched/started/ended {times} s")


def wait_for_runs(c, instance, backfill_id: str, n_runs: int, timeout: float = RUNS_TIMEOUT) -> list[dg.DagsterRun]:
    """Until the backfill has ``n_runs`` runs and all of them finished."""
    deadline = time.monotonic() + timeout
    runs: list[dg.DagsterRun] = []
    while time.monotonic() < deadline:
        for name, proc in c.procs.items():
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{c.logs()}"
        runs = backfill_runs(instance, backfill_id)
        if len(runs) >= n_runs and all(r.status in FINISHED for r in runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"backfill {backfill_id}: {Counter(r.status.value for r in runs)} of {n_runs} runs "
                         f"after {timeout} s\n{c.logs()}")


def materializations_per_partition(env: dict[str, str]) -> dict[str, int]:
    """ASSET_MATERIALIZATION events per partition in the instance's database."""
    url = (f"postgresql://{env['DAGSTER_PG_USERNAME']}:{env['DAGSTER_PG_PASSWORD']}@{env['DAGSTER_PG_HOST']}:"
           f"{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}")
    with psycopg.connect(url, connect_timeout=10) as conn:
        return dict(conn.execute("SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = "
                                 "'ASSET_MATERIALIZATION' GROUP BY partition").fetchall())


@pytest.fixture
def tables():
    """Source (200 keys) -> Result(Chunk) in a fresh schema on the test PostgreSQL."""
    require_celery()
    schema = mp.Schema(unique_schema_name("celery"), database_url=postgres_url())
    try:
        yield schema, *declare(schema, compute_ms=0)
    finally:
        drop(schema)


def test_two_celery_workers_run_a_200_partition_backfill(tables, tmp_path, monkeypatch):
    """200 partitions, runs of 20 (``max_partitions_per_run``), two celery workers of one
    process each: both workers compute keys, every entry is written exactly once and whole, no
    run fails, Dagster has all 200 partitions materialized."""
    schema, Source, Result = tables
    n, per_run = 200, 20
    keys = [str(k) for k in range(n)]
    Source.insert([{"key": k} for k in range(n)])
    started = time.monotonic()
    with cluster(tmp_path, postgres_url(), postgres_url(), schema.name, MP_CELERY_COMPUTE_MS="30",
                 MP_CELERY_PARTITIONS_PER_RUN=str(per_run)) as c:
        patch_instance(Path(c.env["DAGSTER_HOME"]), run_coordinator={"config": {"max_concurrent_runs": 4, "dequeue_interval_seconds": 1}})
        for name in ("DAGSTER_HOME", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST",
                     "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):
            monkeypatch.setenv(name, c.env[name])
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(def_name(Source), keys)  # what the pending-key sensor does
            c.worker("w1")
            c.worker("w2")
            c.webserver()
            asset = dg.AssetKey([schema.name, "result"])
            backfill_id = c.launch_backfill(asset, keys)
            c.daemon()  # its first backfill iteration picks the backfill up
            c.wait_workers("w1", "w2")
            ready = time.monotonic() - started
            runs = wait_for_runs(c, instance, backfill_id, n // per_run)
            elapsed = time.monotonic() - started
            statuses = Counter(r.status.value for r in runs)
            assert statuses == {"SUCCESS": n // per_run}, f"{statuses}\n{c.logs()}"
            ranges = sorted((int(a), int(b)) for a, b in map(run_partitions, runs))
            assert ranges == [(k, k + per_run - 1) for k in range(0, n, per_run)]
            by_run = {r.run_id: step_workers(instance, r.run_id) for r in runs}
            assert all(len(w) == 1 for w in by_run.values()), by_run  # one step a run, on one worker
            assert instance.get_materialized_partitions(asset) == set(keys)
            print_timeline(instance, runs, by_run)
            materialized = materializations_per_partition(c.env)
            assert materialized == dict.fromkeys(keys, 1), "a partition materialized twice or never"
    found = check_entries(Result, chunk_kb=1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found
    assert len(Result.Chunk) == found["rows_checked"] - n
    split = Counter(Result.fetch("worker"))
    runs_per_worker = Counter(w[0].split("@")[0] for w in by_run.values())
    print(f"\nkeys per worker {dict(split)}, runs per worker {dict(runs_per_worker)}, "
          f"{len(runs)} runs, processes ready after {ready:.1f} s, backfill done after {elapsed:.1f} s")
    assert set(split) == {"w1", "w2"}, split
    # each run's keys were computed by the worker Dagster says ran its step
    for run in runs:
        first, last = map(int, run_partitions(run))
        worker = by_run[run.run_id][0].split("@")[0]
        assert set((Result & [{"key": k} for k in range(first, last + 1)]).fetch("worker")) == {worker}
