"""A real distributed engine: dagster-celery workers on a Redis broker run the steps of
multi-run backfills launched as the UI launches them (GraphQL ``launchPartitionBackfill`` to a
real dagster-webserver; dagster-daemon turns the backfill into runs). Real redis-server (the
test's own, on 127.0.0.1), real celery workers, real PostgreSQL; the rows are checked in the
database afterwards. tests/celery_cluster.py starts the processes, tests/celery_pipeline.py is
the code location every process loads.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import psycopg
import psycopg.sql
import pytest
from celery_cluster import celery_run_launcher, cluster, require_celery
from celery_pipeline import declare
from conftest import postgres_url, unique_schema_name
from test_reliability import check_entries, drop
from throwaway_postgres import throwaway_postgres

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


def materializations_per_partition(env: dict[str, str], asset: dg.AssetKey) -> dict[str, int]:
    """ASSET_MATERIALIZATION events of ``asset`` per partition in the instance's database (the
    source table's observation sensor materializes the Source partitions too)."""
    url = (f"postgresql://{env['DAGSTER_PG_USERNAME']}:{env['DAGSTER_PG_PASSWORD']}@{env['DAGSTER_PG_HOST']}:"
           f"{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}")
    with psycopg.connect(url, connect_timeout=10) as conn:
        return dict(conn.execute("SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = "
                                 "'ASSET_MATERIALIZATION' AND asset_key = %s GROUP BY partition",
                                 (asset.to_string(),)).fetchall())


def open_instance(c, monkeypatch) -> dg.DagsterInstance:
    """The cluster's Dagster instance, opened in this process too."""
    for name in ("DAGSTER_HOME", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST",
                 "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, c.env[name])
    return dg.DagsterInstance.get()


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def worker_of(by_run: dict[str, list[str]], run_id: str) -> str:
    """The name (``w1``) of the one celery worker that ran the run's step."""
    assert len(by_run[run_id]) == 1, by_run
    return by_run[run_id][0].split("@")[0]


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
    instance_config = {"run_coordinator": {"config": {"max_concurrent_runs": 4, "dequeue_interval_seconds": 1}}}
    with cluster(tmp_path, postgres_url(), postgres_url(), schema.name, instance_config,
                 MP_CELERY_COMPUTE_MS="30", MP_CELERY_PARTITIONS_PER_RUN=str(per_run)) as c:
        with open_instance(c, monkeypatch) as instance:
            instance.add_dynamic_partitions(def_name(Source), keys)  # what the pending-key sensor does
            asset = dg.AssetKey([schema.name, "result"])
            backfill_id = c.start_backfill(asset, keys)
            ready = time.monotonic() - started
            runs = wait_for_runs(c, instance, backfill_id, n // per_run)
            elapsed = time.monotonic() - started
            by_run = {r.run_id: step_workers(instance, r.run_id) for r in runs}
            print_timeline(instance, runs, by_run)
            statuses = Counter(r.status.value for r in runs)
            assert statuses == {"SUCCESS": n // per_run}, f"{statuses}\n{c.logs()}"
            ranges = sorted((int(a), int(b)) for a, b in map(run_partitions, runs))
            assert ranges == [(k, k + per_run - 1) for k in range(0, n, per_run)]
            workers = {r.run_id: worker_of(by_run, r.run_id) for r in runs}  # one step a run, one worker
            assert instance.get_materialized_partitions(asset) == set(keys)
            assert materializations_per_partition(c.env, asset) == dict.fromkeys(keys, 1)
    found = check_entries(Result, chunk_kb=1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found
    assert len(Result.Chunk) == found["rows_checked"] - n
    split = Counter(Result.fetch("worker"))
    print(f"keys per worker {dict(split)}, runs per worker {dict(Counter(workers.values()))}, {len(runs)} runs; "
          f"processes up after {ready:.1f} s, backfill done after {elapsed:.1f} s")
    assert set(split) == {"w1", "w2"}, split
    for run in runs:  # each run's keys were computed by the worker Dagster says ran its step
        first, last = map(int, run_partitions(run))
        assert set((Result & [{"key": k} for k in range(first, last + 1)]).fetch("worker")) == {workers[run.run_id]}



def test_celery_run_launcher_sends_whole_runs_to_both_workers(tables, tmp_path, monkeypatch):
    """deploy/celery_run_launcher.yaml: dagster-celery's run launcher sends each run of a
    UI-launched backfill to a celery worker whole (no run process of its own; in-process
    executor). 100 partitions in runs of 20 on two workers: both run some, each run's keys are
    computed by one worker, every entry is written exactly once and whole."""
    schema, Source, Result = tables
    n, per_run = 100, 20
    keys = [str(k) for k in range(n)]
    Source.insert([{"key": k} for k in range(n)])
    instance_config = {"run_coordinator": {"config": {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1}},
                       **celery_run_launcher()}
    with cluster(tmp_path, postgres_url(), postgres_url(), schema.name, instance_config,
                 MP_CELERY_COMPUTE_MS="30", MP_CELERY_PARTITIONS_PER_RUN=str(per_run),
                 MP_CELERY_RUNS_ON_WORKERS="1") as c:
        with open_instance(c, monkeypatch) as instance:
            instance.add_dynamic_partitions(def_name(Source), keys)
            asset = dg.AssetKey([schema.name, "result"])
            backfill_id = c.start_backfill(asset, keys)
            runs = wait_for_runs(c, instance, backfill_id, n // per_run)
            statuses = Counter(r.status.value for r in runs)
            assert statuses == {"SUCCESS": n // per_run}, f"{statuses}\n{c.logs()}"
            # each run went to the broker as one celery task (the launcher's tag), not to a process
            assert all(r.tags.get("dagster-celery/task_id") for r in runs), [r.tags for r in runs]
            assert instance.get_materialized_partitions(asset) == set(keys)
            assert materializations_per_partition(c.env, asset) == dict.fromkeys(keys, 1)
    found = check_entries(Result, chunk_kb=1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found
    by_run = {}
    for run in runs:
        first, last = map(int, run_partitions(run))
        by_run[run.run_id] = set((Result & [{"key": k} for k in range(first, last + 1)]).fetch("worker"))
        assert len(by_run[run.run_id]) == 1, by_run  # a whole run on one worker
    runs_per_worker = Counter(w for ws in by_run.values() for w in ws)
    print(f"runs per worker {dict(runs_per_worker)}")
    assert set(runs_per_worker) == {"w1", "w2"}, runs_per_worker


def test_sigkill_celery_worker_mid_step(tables, tmp_path, monkeypatch):
    """Two runs of 25 partitions on two workers; the whole worker w1 (dagster-celery command,
    celery main process, pool process) is SIGKILLed while its step writes its keys. Its task is
    lost: celery acknowledged it when the step started and nothing tells the run worker, which
    would wait for the result forever. Dagster's run monitoring ends the run: the backfill's
    ``dagster/max_runtime`` tag (typed in the UI's backfill dialog) fails it after 20 s, and the
    instance's ``run_retries`` re-executes it from failure on the live worker, which skips the
    keys w1 committed and writes the others: every entry once and whole."""
    schema, Source, Result = tables
    n, per_run, max_runtime = 50, 25, 20
    keys = [str(k) for k in range(n)]
    Source.insert([{"key": k} for k in range(n)])
    signals = tmp_path / "signals"
    signals.mkdir()
    instance_config = {
        # as many runs at once as worker processes: a started run's step never waits in the
        # celery queue, so max_runtime measures the step (and the run worker's start-up)
        "run_coordinator": {"config": {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1}},
        "run_monitoring": {"enabled": True, "poll_interval_seconds": 1},
        "run_retries": {"enabled": True, "max_retries": 1},
    }
    with cluster(tmp_path, postgres_url(), postgres_url(), schema.name, instance_config, MP_CELERY_COMPUTE_MS="100",
                 MP_CELERY_PARTITIONS_PER_RUN=str(per_run), MP_CELERY_SIGNAL_DIR=str(signals)) as c:
        with open_instance(c, monkeypatch) as instance:
            instance.add_dynamic_partitions(def_name(Source), keys)
            asset = dg.AssetKey([schema.name, "result"])
            backfill_id = c.start_backfill(asset, keys, tags={"dagster/max_runtime": str(max_runtime)})
            deadline = time.monotonic() + 60
            while len(list(signals.glob("computing-w1-*"))) < 5:  # w1 committed 4 keys, computes the 5th
                assert time.monotonic() < deadline, f"w1 computed no step in 60 s\n{c.logs()}"
                time.sleep(0.02)
            victim = c.procs.pop("w1")
            os.killpg(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait(timeout=10)
            committed_by_w1 = len(Result & {"worker": "w1"})
            # the two runs of the backfill, then the retry of the killed one
            runs = wait_for_runs(c, instance, backfill_id, n // per_run + 1, timeout=max_runtime + 60)
            recovered = time.monotonic() - killed_at
            by_run = {r.run_id: step_workers(instance, r.run_id) for r in runs}
            print_timeline(instance, runs, by_run)
            killed = [r for r in runs if by_run[r.run_id] and worker_of(by_run, r.run_id) == "w1"]
            assert len(killed) == 1, by_run
            killed = killed[0]
            assert killed.status == dg.DagsterRunStatus.FAILURE
            failure = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert [e.message for e in failure] == [f"Exceeded maximum runtime of {max_runtime} seconds."]
            retry = [r for r in runs if r.tags.get("dagster/parent_run_id") == killed.run_id]
            assert len(retry) == 1 and retry[0].status == dg.DagsterRunStatus.SUCCESS, runs
            assert run_partitions(retry[0]) == run_partitions(killed) and worker_of(by_run, retry[0].run_id) == "w2"
            others = [r for r in runs if r.run_id not in (killed.run_id, retry[0].run_id)]
            assert [r.status for r in others] == [dg.DagsterRunStatus.SUCCESS]
            # the killed run's run worker was told to stop, saw its task revoked, and exited
            deadline = time.monotonic() + 30
            while processes_naming(killed.run_id) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not processes_naming(killed.run_id), "the killed run's run worker is still running"
            assert instance.get_materialized_partitions(asset) == set(keys)
            assert materializations_per_partition(c.env, asset) == dict.fromkeys(keys, 1)
    found = check_entries(Result, chunk_kb=1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found
    first, last = map(int, run_partitions(killed))
    in_killed = Counter((Result & [{"key": k} for k in range(first, last + 1)]).fetch("worker"))
    print(f"killed w1 after it committed {committed_by_w1} keys; killed run's keys: {dict(in_killed)}; "
          f"all done {recovered:.1f} s after the kill")
    assert committed_by_w1 >= 4 and in_killed == {"w1": committed_by_w1, "w2": per_run - committed_by_w1}


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.dagster_event.event_specific_data.error.to_string()
            for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]


def connection_error(message: str) -> str:
    """The ``mp_dagster.errors.ConnectionError: ...`` line of a step failure."""
    return next((line.strip()[:140] for line in message.splitlines() if "ConnectionError:" in line), message[:140])


def test_postgres_restart_during_a_multi_run_backfill(tmp_path, monkeypatch):
    """The tables' PostgreSQL (a server of the test's own) restarts (``pg_ctl restart -m fast``)
    while two celery workers run a backfill of 4 runs of 25 partitions: the runs that were
    writing fail naming the lost connection, every entry that landed is whole, the other runs
    succeed; re-executing the failed runs from failure (the run page's button, through GraphQL)
    completes every key, and Dagster has all of them materialized."""
    require_celery()
    n, per_run = 100, 25
    keys = [str(k) for k in range(n)]
    signals = tmp_path / "signals"
    signals.mkdir()
    instance_config = {"run_coordinator": {"config": {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1}}}
    with throwaway_postgres() as pg:
        schema = mp.Schema(unique_schema_name("celpg"), database_url=pg.url)
        Source, Result = declare(schema, compute_ms=0)
        Source.insert([{"key": k} for k in range(n)])
        with cluster(tmp_path, postgres_url(), pg.url, schema.name, instance_config, MP_CELERY_COMPUTE_MS="60",
                     MP_CELERY_PARTITIONS_PER_RUN=str(per_run), MP_CELERY_SIGNAL_DIR=str(signals)) as c:
            with open_instance(c, monkeypatch) as instance, psycopg.connect(pg.url, autocommit=True) as watch:
                instance.add_dynamic_partitions(def_name(Source), keys)
                asset = dg.AssetKey([schema.name, "result"])
                backfill_id = c.start_backfill(asset, keys)
                table = psycopg.sql.Identifier(schema.name, "result")
                deadline = time.monotonic() + 90
                while True:  # entries have landed and a key is being computed right now: restart
                    assert time.monotonic() < deadline, f"no restart point in 90 s\n{c.logs()}"
                    written = watch.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
                    fresh = [p for p in signals.iterdir() if time.time() - p.stat().st_mtime < 0.3]
                    if per_run + 2 <= written < n - per_run and fresh:
                        break
                    time.sleep(0.02)
            restart_started = time.monotonic()
            pg.restart()
            downtime = time.monotonic() - restart_started
            with open_instance(c, monkeypatch) as instance:
                runs = wait_for_runs(c, instance, backfill_id, n // per_run)
                by_run = {r.run_id: step_workers(instance, r.run_id) for r in runs}
                print_timeline(instance, runs, by_run)
                failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
                assert failed and len(failed) < len(runs), Counter(r.status.value for r in runs)
                assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs if r not in failed)
                errors = {r.run_id: step_failures(instance, r.run_id) for r in failed}
                for messages in errors.values():  # one failed step each, naming the database
                    assert len(messages) == 1 and "mp_dagster.errors.ConnectionError" in messages[0], messages
                    assert ("lost the connection to PostgreSQL" in messages[0]
                            or "cannot connect to PostgreSQL" in messages[0]), messages[0]
                assert any("lost the connection to PostgreSQL" in m[0] for m in errors.values())
                found = check_entries(Result, chunk_kb=1)  # the library reconnects on its next read
                assert not found["partial"] and not found["orphans"], found
                landed = found["masters"]
                assert per_run <= landed < n
                assert instance.get_materialized_partitions(asset) <= {str(k) for k in Result.fetch("key")}
                retries = [c.reexecute(r.run_id) for r in failed]
                deadline = time.monotonic() + RUNS_TIMEOUT
                while not all(instance.get_run_by_id(r).status in FINISHED for r in retries):
                    assert time.monotonic() < deadline, f"re-executions not done\n{c.logs()}"
                    time.sleep(0.5)
                assert [instance.get_run_by_id(r).status for r in retries] == [dg.DagsterRunStatus.SUCCESS] * len(failed)
                assert instance.get_materialized_partitions(asset) == set(keys)
        after = check_entries(Result, chunk_kb=1)
        assert after["masters"] == n and not after["partial"] and not after["orphans"], after
        print(f"restart took {downtime:.1f} s; {len(failed)} of {len(runs)} runs failed "
              f"({'; '.join(connection_error(m[0]) for m in errors.values())}); {landed} entries had landed, "
              f"re-executions wrote {n - landed}; {after['rows_checked']} rows checked, 0 partial")
