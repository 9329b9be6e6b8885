"""Many workers: reservations, ``populate(processes=N)``, concurrent populate processes, Dagster
runs with a process pool, and Ctrl-C. Real processes on real PostgreSQL and SQLite; every
``make`` call is logged (``MP_TEST_CALL_LOG``), so "no key computed twice" is counted exactly."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from conftest import unique_schema_name
from dagster_dev_util import deploy_instance
from reliability_pipeline import declare
from test_reliability import WORKER, check_entries, drop, finish, spawn

import mp_dagster as mp
from mp_dagster import reservation
from mp_dagster.dagster import build_definitions
from mp_dagster.reservation import Claim

HERE = Path(__file__).parent


@pytest.fixture
def call_log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "calls.log"
    path.touch()
    monkeypatch.setenv("MP_TEST_CALL_LOG", str(path))
    return path


def calls(path: Path) -> list[tuple[int, int]]:
    """(key, pid) of every make call so far."""
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()]


@pytest.fixture
def pipeline(db_url):
    schema = mp.Schema(unique_schema_name("wk"), database_url=db_url)
    yield schema, *declare(schema, chunk_kb=1, compute_s=0.05)
    drop(schema)


CLAIM_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import mp_dagster as mp
    from mp_dagster import reservation
    from reliability_pipeline import declare
    schema = mp.Schema({schema!r}, database_url={url!r})
    _, Result = declare(schema, chunk_kb=1)
    outcome = reservation.claim(Result, {{"key": 1}})
    print(outcome.value, flush=True)
    time.sleep(float(sys.argv[1]))  # holding it (bounded)
""")


def claim_elsewhere(schema, url, hold: float = 0.0) -> subprocess.Popen:
    script = CLAIM_SCRIPT.format(tests=str(HERE), schema=schema.name, url=url)
    return subprocess.Popen([sys.executable, "-c", script, str(hold)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_reservation_excludes_other_processes_and_dies_with_its_holder(pipeline, db_url):
    schema, Source, Result = pipeline
    Source.insert([{"key": 1}, {"key": 2}])
    assert reservation.claim(Result, {"key": 1}) is Claim.RESERVED
    try:
        other = claim_elsewhere(schema, db_url)
        out, err = other.communicate(timeout=60)
        assert out.strip() == "busy", err
        # another key is free; the same key again in this process is busy too (another thread
        # or a second claim must not compute it twice)
        assert reservation.claim(Result, {"key": 2}) is Claim.RESERVED
        reservation.release(Result, {"key": 2})
    finally:
        reservation.release(Result, {"key": 1})
    holder = claim_elsewhere(schema, db_url, hold=60)
    assert holder.stdout.readline().strip() == "reserved"
    assert reservation.claim(Result, {"key": 1}) is Claim.BUSY
    holder.send_signal(signal.SIGKILL)  # the worker dies holding the key: no stale reservation
    holder.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while reservation.claim(Result, {"key": 1}) is Claim.BUSY and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the closed session at once; allow it a moment
    reservation.release(Result, {"key": 1})
    assert reservation.claim(Result, {"key": 1}, wait=5) is Claim.RESERVED
    reservation.release(Result, {"key": 1})
    Result.populate({"key": 1})
    assert reservation.claim(Result, {"key": 1}) is Claim.DONE  # written: nothing to compute


def test_two_populate_processes_compute_each_key_once(pipeline, db_url, call_log):
    schema, Source, Result = pipeline
    n = 20
    Source.insert([{"key": k} for k in range(n)])
    workers = [spawn(WORKER, db_url, schema.name, "--chunk-kb", "1", "--compute", "0.1") for _ in range(2)]
    results = [finish(w, timeout=120) for w in workers]
    assert [r["errors"] for r in results] == [[], []], results
    made = calls(call_log)
    assert sorted(k for k, _ in made) == list(range(n)), Counter(k for k, _ in made)  # each key once
    per_process = Counter(pid for _, pid in made)
    assert len(per_process) == 2, per_process  # both processes computed: they shared the work
    assert sum(r["success_count"] for r in results) == n
    found = check_entries(Result, 1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found


def test_populate_with_a_process_pool(pipeline, call_log):
    schema, Source, Result = pipeline
    n = 12
    Source.insert([{"key": k} for k in range(n)])
    result = Result.populate(processes=2, max_calls=5)
    assert result == {"success_count": 5, "error_list": []}
    assert len(calls(call_log)) == 5  # max_calls holds across the pool
    result = Result.populate(processes=2, display_progress=True)
    assert result == {"success_count": n - 5, "error_list": []}
    made = calls(call_log)
    assert sorted(k for k, _ in made) == list(range(n))
    pids = Counter(pid for _, pid in made)
    assert os.getpid() not in pids and len(pids) >= 2, pids  # computed in the workers
    found = check_entries(Result, 1)
    assert found["masters"] == n and not found["partial"] and not found["orphans"], found


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("cannot pickle this error")


def test_pool_errors_are_collected_per_key_or_stop_the_pool(pipeline, call_log):
    schema, Source, Result = pipeline
    Source.insert([{"key": k} for k in range(8)])
    original = Result.make

    def make(self, key):
        if key["key"] == 3:
            self.insert1(dict(key, n_parts=1))
            raise ValueError("key 3 cannot be computed")
        if key["key"] == 5:
            raise Unpicklable("an error that cannot travel")
        if key["key"] == 6 and os.getpid() != parent:
            os._exit(3)  # the worker process dies (as if killed) while computing key 6
        original(self, key)

    parent = os.getpid()
    Result.make = make
    try:
        result = Result.populate(processes=2, suppress_errors=True)
        assert result["success_count"] == 5
        errors = {e[0]["key"]: e[1] for e in result["error_list"]}
        assert set(errors) == {3, 5, 6}
        assert isinstance(errors[6], mp.MakeError) and "died (exit code 3)" in str(errors[6])
        assert isinstance(errors[3], ValueError) and "key 3 cannot" in str(errors[3])
        assert isinstance(errors[5], mp.MakeError) and "Unpicklable: an error that cannot travel" in str(errors[5])
        assert not Result & {"key": 3} and not Result.Chunk & {"key": 3}  # nothing partial
        with pytest.raises((ValueError, mp.MakeError), match="key 3 cannot|cannot travel|died"):
            Result.populate(processes=2)  # without suppress_errors the first error stops the pool
        assert not Result & {"key": 3} and not Result.Chunk & {"key": 3}
    finally:
        Result.make = original
    pickle.dumps(errors[3])  # what came back is a plain exception in this process


def test_populate_order(pipeline, call_log):
    schema, Source, Result = pipeline
    Source.insert([{"key": k} for k in range(6)])
    Result.populate(order="reverse", max_calls=3)
    assert [k for k, _ in calls(call_log)] == [5, 4, 3]
    Result.populate(order="random")
    assert sorted(k for k, _ in calls(call_log)) == list(range(6))
    with pytest.raises(ValueError, match="order must be one of"):
        Result.populate(order="sideways")


CTRL_C_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import mp_dagster as mp
    from reliability_pipeline import declare
    schema = mp.Schema({schema!r}, database_url={url!r})
    _, Result = declare(schema, chunk_kb=64, compute_s=0.4)
    print("started", flush=True)
    Result.populate(processes=2)
""")


def test_ctrl_c_stops_a_pool_with_nothing_partial(pipeline, db_url, call_log):
    schema, Source, Result = pipeline
    n = 12
    Source.insert([{"key": k} for k in range(n)])
    script = CTRL_C_SCRIPT.format(tests=str(HERE), schema=schema.name, url=db_url)
    # its own process group, as a shell's foreground job: Ctrl-C signals the whole group
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(Result()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert len(Result()) >= 2, proc.stderr.read() if proc.poll() is not None else "too slow"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker outlived the pool
        os.killpg(proc.pid, 0)
    found = check_entries(Result, 64)
    assert 2 <= found["masters"] < n and not found["partial"] and not found["orphans"], found
    done = found["masters"]
    # no reservation was left behind: the next populate computes every remaining key
    assert Result.populate() == {"success_count": n - done, "error_list": []}
    assert check_entries(Result, 64)["masters"] == n


def test_a_dagster_run_with_a_process_pool_beside_a_populate_process(db_url, call_log):
    """A run's ``processes`` config computes its keys in a pool, while a ``populate()`` process
    works on the same keys: no key is computed twice, and the run reports every one of its
    partitions materialized (those the other process computed too, once it released them)."""
    schema = mp.Schema(unique_schema_name("wkdg"), database_url=db_url)
    try:
        Source, Result = declare(schema, chunk_kb=1, compute_s=0.1)
        n = 16
        Source.insert([{"key": k} for k in range(n)])
        defs = build_definitions(schema, sensors=False)
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(f"{schema.name}__source", [str(k) for k in range(n)])
        job = defs.resolve_job_def(f"{schema.name}__result_job")
        config = {"ops": {f"{schema.name}__result": {"config": {"processes": 2}}}}
        other = spawn(WORKER, db_url, schema.name, "--chunk-kb", "1", "--compute", "0.2")
        deadline = time.monotonic() + 60
        while not calls(call_log) and time.monotonic() < deadline:  # it is computing its first key
            time.sleep(0.01)
        tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": "11"}
        run = job.execute_in_process(instance=instance, tags=tags, run_config=config, raise_on_error=False)
        populated = finish(other, timeout=120)
        assert run.success and populated["errors"] == []
        made = calls(call_log)
        assert sorted(k for k, _ in made) == list(range(n)), Counter(k for k, _ in made)  # each once
        pids = {pid for _, pid in made}
        assert len(pids) >= 3 and os.getpid() not in pids  # the other process and the run's pool
        found = check_entries(Result, 1)
        assert found["masters"] == n and not found["partial"] and not found["orphans"], found
        key = dg.AssetKey([schema.name, "result"])
        assert instance.get_materialized_partitions(key) == {str(k) for k in range(12)}
    finally:
        drop(schema)


LAB_DEFINITIONS = textwrap.dedent('''
    import mp_dagster as mp
    from mp_dagster.dagster import build_definitions

    lab = mp.Schema("lab")

    @lab
    class Image(mp.Manual):
        definition = """
        image_id : int
        """

    defs = build_definitions(lab)
''')


@pytest.mark.parametrize("deployment", ["dagster_home", "require_env"])
def test_a_deployed_worker_without_a_database_url_fails_at_load(tmp_path, deployment, request):
    """A worker or code location of a deployment that lacks MP_DAGSTER_DATABASE_URL must not
    quietly create tables in an SQLite file of its own: it fails at load, saying what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MP_DAGSTER_", "DAGSTER_"))}
    with contextlib.ExitStack() as stack:
        if deployment == "dagster_home":  # a Dagster instance on PostgreSQL: deploy/dagster.yaml
            home = tmp_path / "home"
            home.mkdir()
            stack.enter_context(deploy_instance(home, env, request.getfixturevalue("pg_url")))
            env.pop("MP_DAGSTER_REQUIRE_DATABASE_URL")  # the instance alone says "deployed"
            env["DAGSTER_HOME"] = str(home)
        else:  # deploy/dagster.env's setting, without any Dagster instance
            env["MP_DAGSTER_REQUIRE_DATABASE_URL"] = "1"
        work = tmp_path / "worker"
        work.mkdir()
        (work / "lab_defs.py").write_text(LAB_DEFINITIONS)
        validate = [sys.executable, "-m", "dagster", "definitions", "validate", "-f", "lab_defs.py"]
        done = subprocess.run(validate, cwd=work, env=env, capture_output=True, text=True, timeout=180)
        output = done.stdout + done.stderr
        assert done.returncode != 0, output
        assert "MP_DAGSTER_DATABASE_URL is not set" in output and "refusing to keep the tables" in output, output
        assert not (work / "mp_dagster.db").exists()  # nothing was written
        # with the URL set, the same worker loads and declares its tables there
        env["MP_DAGSTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'lab.db'}"
        done = subprocess.run(validate, cwd=work, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "lab.db").exists()


def test_a_pool_stops_at_once_whatever_sigterm_handler_the_parent_has(pipeline, monkeypatch):
    """Dagster (and other hosts) install a SIGTERM handler that forked workers inherit; stopping
    the pool must still end them at once (not after the 10 s grace before SIGKILL)."""
    schema, Source, Result = pipeline
    Source.insert([{"key": k} for k in range(8)])
    original = Result.make

    def make(self, key):
        if key["key"] == 3:
            raise ValueError("key 3 fails")
        original(self, key)

    monkeypatch.setattr(Result, "make", make)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a handler that does not exit
    try:
        started = time.monotonic()
        with pytest.raises(ValueError, match="key 3 fails"):
            Result.populate(processes=2)
        assert time.monotonic() - started < 8, "the workers outlived the SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not Result & {"key": 3}


def test_populate_leaves_no_reservation_held(pg_url):
    """Releases travel with the next key's claim; the last ones are given back when populate
    ends, also when it ends with an error."""
    import psycopg

    schema = mp.Schema(unique_schema_name("wkrl"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=1)
        Source.insert([{"key": k} for k in range(6)])
        pid = schema.backend.execute(psycopg.sql.SQL("SELECT pg_backend_pid()"))[0][0]

        def held() -> int:
            with psycopg.connect(pg_url) as other:
                return other.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'",
                                     (pid,)).fetchone()[0]

        assert Result.populate(max_calls=3)["success_count"] == 3
        assert held() == 0
        original = Result.make
        Result.make = lambda self, key: (_ for _ in ()).throw(ValueError("no"))
        try:
            with pytest.raises(ValueError):
                Result.populate()
        finally:
            Result.make = original
        assert held() == 0
        assert Result.populate()["success_count"] == 3
    finally:
        drop(schema)
