"""Reliability: "all or nothing" under SIGKILL, terminated connections and concurrency, and no
transaction or lock held while ``make`` computes. Real PostgreSQL (SQLite where it applies),
real processes, loopback only; every loop is bounded in count and time.

Figures (trials, kills by phase, faults injected, rows checked, partial results found) are
recorded in each test's ``user_properties`` and printed (``pytest -s`` shows them); with
``MP_RELIABILITY_REPORT=path`` they are also appended to that file as JSON lines.

``MP_RELIABILITY_TRIALS`` sets the number of SIGKILL trials on PostgreSQL (default 30; SQLite
runs a fifth of them); ``MP_RELIABILITY_TRIALS=100`` runs the issue's 100+ trials.
``MP_RELIABILITY_DAGSTER_TRIALS`` (default 1) repeats the killed Dagster run; ``MP_RELIABILITY_SEED``
changes the random kill moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg
import pytest
from conftest import unique_schema_name
from reliability_pipeline import declare, declare_downstream, n_parts, payload, tag

import mp_dagster as mp
from mp_dagster.dagster import build_definitions
from mp_dagster.dagster.partitions import def_name
from mp_dagster.errors import ConnectionError as MPConnectionError

HERE = Path(__file__).parent
WORKER = HERE / "reliability_worker.py"
DAGSTER_RUN = HERE / "reliability_dagster_run.py"

TRIALS = int(os.environ.get("MP_RELIABILITY_TRIALS", "30"))
SEED = int(os.environ.get("MP_RELIABILITY_SEED", "20261124"))
CHUNK_KB = 256  # 24..40 parts of 256 KiB: a write takes ~0.1 s, long enough to be killed mid-COPY
COMPUTE_S = 0.1  # make's "compute" phase per key
KEYS = 6
TRIAL_TIMEOUT_S = 30.0


# -- helpers ------------------------------------------------------------------------------------


def with_app(url: str, app: str) -> str:
    """The URL with an application_name, so the test can find the worker's backend."""
    return f"{url}{'&' if '?' in url else '?'}application_name={app}"


def report(request, name: str, figures: dict) -> None:
    request.node.user_properties.append((name, figures))
    text = json.dumps(figures, sort_keys=True, default=str)
    print(f"\n[{name}] {text}")
    path = os.environ.get("MP_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": request.node.name, "name": name, **figures}, default=str) + "\n")


def spawn(script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """Wait (bounded) for a subprocess and parse its JSON line; a hang fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"subprocess hung for {timeout} s (killed): {err[-2000:]}")
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def drop(schema: mp.Schema) -> None:
    """Drop a test schema, even when a failed test left its connection terminated."""
    try:
        schema.drop(force=True)
    except MPConnectionError:  # first use after a terminated connection: the next one reconnects
        schema.drop(force=True)


@contextmanager
def snapshot(schema: mp.Schema):
    """One consistent view of the database for a check made of several queries while writers
    keep going (REPEATABLE READ on PostgreSQL; SQLite's write lock, held briefly)."""
    with schema.transaction():
        if schema.backend.name == "postgres":
            schema.backend.execute(psycopg.sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        yield


class Monitor:
    """A plain psycopg connection of the test process watching (and terminating) backends."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)

    def activity(self, app: str) -> list[tuple]:
        return self.conn.execute(
            "SELECT pid, state, query, xact_start, backend_xmin, backend_xid FROM pg_stat_activity "
            "WHERE application_name = %s ORDER BY backend_start", (app,)).fetchall()

    def locks(self, pid: int) -> list[tuple]:
        return self.conn.execute(
            "SELECT locktype, mode, granted, relation::regclass::text FROM pg_locks WHERE pid = %s",
            (pid,)).fetchall()

    def terminate(self, pid: int) -> bool:
        return bool(self.conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0])

    def count(self, schema: str, table: str) -> int:
        return self.conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(schema, table))
        ).fetchone()[0]

    def wait_gone(self, app: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.activity(app):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def monitor(pg_url):
    m = Monitor(pg_url)
    yield m
    m.close()


def check_entries(result_cls, chunk_kb: int, contents: bool = True) -> dict:
    """Every ``Result`` entry holds exactly the parts its ``make`` produced (number, tags and,
    with ``contents``, every payload array); no part row exists without its master."""
    masters = result_cls.fetch(as_dict=True, order_by="key")
    attrs = ("key", "chunk", "tag", "data") if contents else ("key", "chunk", "tag")
    chunks: dict[int, list[dict]] = {}
    for row in result_cls.Chunk.fetch(*attrs, as_dict=True, order_by=("key", "chunk")):
        chunks.setdefault(row["key"], []).append(row)
    partial = []
    rows = 0
    for m in masters:
        k = m["key"]
        got = chunks.get(k, [])
        rows += 1 + len(got)
        ok = m["n_parts"] == n_parts(k) and [c["chunk"] for c in got] == list(range(n_parts(k)))
        ok = ok and all(c["tag"] == tag(k, c["chunk"]) for c in got)
        if contents:
            ok = ok and all(np.array_equal(c["data"], payload(k, c["chunk"], chunk_kb)) for c in got)
        if not ok:
            partial.append(k)
    orphans = sorted(set(chunks) - {m["key"] for m in masters})
    assert len(result_cls.Chunk - result_cls) == sum(len(chunks[k]) for k in orphans)
    return {"masters": len(masters), "rows_checked": rows, "partial": partial, "orphans": orphans}


# -- 1. SIGKILL trials -----------------------------------------------------------------------


def classify_pg(rows: list[tuple], signal_dir: Path) -> str:
    """The worker's phase from its backend's pg_stat_activity row, sampled just before the kill."""
    if not rows or not any(signal_dir.glob("computing-*")):
        return "startup"  # importing, connecting, declaring, listing keys
    _, state, query, xact_start, *_ = rows[-1]
    q = (query or "").strip().upper()
    if state == "active" and q.startswith("COPY"):
        return "copy"
    if q == "COMMIT":
        return "commit" if state == "active" else "just_committed"
    if xact_start is not None:
        return "in_transaction"  # lock taken, re-check, master row, between COPY and COMMIT
    return "compute"  # no transaction: make computing, or reading its inputs


def classify_files(signal_dir: Path) -> str:
    """SQLite: the phase from make's signal files (no pg_stat_activity to ask)."""
    computing = {p.name.split("-", 1)[1] for p in signal_dir.glob("computing-*")}
    computed = {p.name.split("-", 1)[1] for p in signal_dir.glob("computed-*")}
    if not computing:
        return "startup"
    return "compute" if computing - computed else "write_or_commit"


def _wait_for(pred, proc: subprocess.Popen, deadline: float, interval: float = 0.001):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return None


def kill_at(proc, strategy, signal_dir: Path, app: str, monitor: Monitor | None, rng: random.Random) -> str:
    """SIGKILL the worker at a moment chosen by ``strategy``; returns the phase it was in
    (``finished`` if it completed first)."""
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    if strategy == "random":  # anywhere: startup, compute, COPY, commit
        until = time.monotonic() + rng.uniform(0.2, 1.4)
        _wait_for(lambda: time.monotonic() >= until, proc, deadline)
    elif strategy == "compute":
        _wait_for(lambda: classify_files(signal_dir) == "compute", proc, deadline)
        time.sleep(rng.uniform(0, COMPUTE_S * 0.8))
    elif strategy == "write":  # SQLite: make returned, the entry is being written
        _wait_for(lambda: classify_files(signal_dir) == "write_or_commit", proc, deadline)
        time.sleep(rng.uniform(0, 0.03))
    elif strategy == "copy":
        def copying():
            return any(r[1] == "active" and r[2].startswith("COPY") for r in monitor.activity(app))
        _wait_for(copying, proc, deadline)
        time.sleep(rng.uniform(0, 0.06))
    elif strategy == "commit":  # COPY done, COMMIT sent or about to be
        def committing():
            return any((r[2] == "COMMIT" and r[1] == "active")
                       or (r[1] == "idle in transaction" and r[2].startswith("COPY"))
                       for r in monitor.activity(app))
        _wait_for(committing, proc, deadline, interval=0.0002)
    else:  # pragma: no cover
        raise ValueError(strategy)
    if proc.poll() is not None:
        return "finished"
    rows = monitor.activity(app) if monitor is not None else []
    files = classify_files(signal_dir)
    os.kill(proc.pid, signal.SIGKILL)
    if monitor is None:
        return files
    return classify_pg(rows, signal_dir)


def kill_trials(url: str, tmp_path: Path, n: int, monitor: Monitor | None) -> dict:
    schema = mp.Schema(unique_schema_name("rel"), database_url=url)
    try:
        Source, Result = declare(schema, chunk_kb=CHUNK_KB)
        Source.insert([{"key": k} for k in range(KEYS)])
        rng = random.Random(SEED)
        strategies = ("random", "compute", "copy", "commit") if monitor else ("random", "compute", "write")
        phases: Counter = Counter()
        figures = {"backend": schema.backend.name, "trials": 0, "kills": 0, "finished_before_kill": 0,
                   "complete_entries_found": 0, "rows_checked": 0, "partial_results_found": 0,
                   "orphan_parts_found": 0, "lingering_backends": 0}
        bad: list[tuple[int, dict]] = []
        started = time.monotonic()
        for trial in range(n):
            signal_dir = tmp_path / f"trial{trial}"
            signal_dir.mkdir()
            app = f"mprel_{schema.name}_{trial}"
            worker_url = with_app(url, app) if monitor is not None else url
            proc = spawn(WORKER, worker_url, schema.name, "--chunk-kb", str(CHUNK_KB), "--compute",
                         str(COMPUTE_S), "--signal-dir", str(signal_dir), "--shuffle", str(rng.randrange(10**6)))
            try:
                phase = kill_at(proc, strategies[trial % len(strategies)], signal_dir, app, monitor, rng)
            finally:
                if proc.poll() is None:  # (already SIGKILLed, or kill_at failed)
                    proc.kill()
                _, err = proc.communicate(timeout=30)
            figures["trials"] += 1
            if phase != "finished" and proc.returncode == 0:
                phase = "finished"  # it exited between the last look and the kill
            if phase == "finished":
                assert proc.returncode == 0, err[-3000:]
                figures["finished_before_kill"] += 1
            else:
                assert proc.returncode == -signal.SIGKILL, err[-3000:]
                figures["kills"] += 1
                phases[phase] += 1
            if monitor is not None and not monitor.wait_gone(app):
                figures["lingering_backends"] += 1  # a killed client's session must not stay open
            found = check_entries(Result, CHUNK_KB)
            figures["complete_entries_found"] += found["masters"] - len(found["partial"])
            figures["rows_checked"] += found["rows_checked"]
            figures["partial_results_found"] += len(found["partial"])
            figures["orphan_parts_found"] += len(found["orphans"])
            if found["partial"] or found["orphans"]:
                bad.append((trial, found))
            if found["masters"]:
                Result.delete(prompt=False)  # keys become pending again; the database stays small
        # afterwards, an undisturbed worker completes every key
        proc = spawn(WORKER, url, schema.name, "--chunk-kb", str(CHUNK_KB))
        final = finish(proc)
        assert final["errors"] == [] and final["success_count"] == KEYS, final
        found = check_entries(Result, CHUNK_KB)
        figures["rows_checked"] += found["rows_checked"]
        figures["partial_results_found"] += len(found["partial"])
        assert found["masters"] == KEYS and not found["partial"] and not found["orphans"]
        figures["kills_by_phase"] = dict(sorted(phases.items()))
        figures["seconds"] = round(time.monotonic() - started, 1)
        return figures | {"bad_trials": bad}
    finally:
        drop(schema)


def test_sigkill_trials_postgres(pg_url, monitor, tmp_path, request):
    """A worker writing entries of 24..40 parts x 256 KiB is SIGKILLed at random moments:
    in compute, mid-COPY, at COMMIT. Every master found has exactly its parts, byte for byte."""
    figures = kill_trials(pg_url, tmp_path, TRIALS, monitor)
    report(request, "sigkill_postgres", figures)
    assert figures["bad_trials"] == []
    assert figures["partial_results_found"] == 0 and figures["orphan_parts_found"] == 0
    assert figures["lingering_backends"] == 0
    assert figures["kills"] >= TRIALS * 0.8, figures
    if TRIALS >= 8:  # each phase is really hit
        assert {"compute", "copy"} <= set(figures["kills_by_phase"]), figures


def test_sigkill_trials_sqlite(tmp_path, request):
    n = max(4, TRIALS // 5)
    figures = kill_trials(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path, n, None)
    report(request, "sigkill_sqlite", figures)
    assert figures["bad_trials"] == []
    assert figures["partial_results_found"] == 0 and figures["orphan_parts_found"] == 0
    assert figures["kills"] >= n * 0.7, figures


def dagster_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}})


def add_partitions(home: Path, source_cls, keys) -> None:
    with dagster_instance(home) as instance:
        instance.add_dynamic_partitions(def_name(source_cls), [str(k) for k in keys])


def run_job(schema: mp.Schema, home: Path, first: int, last: int) -> dict:
    """Run Result's asset job over a partition range in this process; what the run wrote."""
    defs = build_definitions(schema, sensors=False, checks=False)
    job = defs.resolve_job_def(f"{schema.name}__result_job")
    tags = {"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)}
    with dagster_instance(home) as instance:
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    out = {"success": result.success, "written": None, "skipped": None}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            md = event.event_specific_data.materialization.metadata
            if "mp_dagster/entries_written_in_run" in md:
                out["written"] = md["mp_dagster/entries_written_in_run"].value
                out["skipped"] = md["mp_dagster/entries_skipped_in_run"].value
    return out


def test_dagster_run_killed_mid_materialization(pg_url, monitor, tmp_path, request):
    """SIGKILL a single-run backfill of 10 partitions while it commits its entries one by one
    (``MP_RELIABILITY_DAGSTER_TRIALS`` times, default 1): the committed entries are whole, the
    others absent; a re-run completes every key."""
    n = 10
    trials = int(os.environ.get("MP_RELIABILITY_DAGSTER_TRIALS", "1"))
    rng = random.Random(SEED)
    schema = mp.Schema(unique_schema_name("reldk"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=CHUNK_KB)
        Source.insert([{"key": k} for k in range(n)])
        home = tmp_path / "dagster_home"
        home.mkdir()
        add_partitions(home, Source, range(n))
        figures = {"trials": trials, "kills": 0, "entries_committed_before_kill": [], "rows_checked": 0,
                   "partial_results_found": 0}
        for trial in range(trials):
            if trial:
                Result.delete(prompt=False)  # each trial backfills the 10 keys from scratch
            app = f"mpreldk{trial}_{schema.name}"
            proc = spawn(DAGSTER_RUN, with_app(pg_url, app), schema.name, str(home), "0", str(n - 1),
                         "--chunk-kb", str(CHUNK_KB))
            threshold = rng.randint(1, n - 2)

            def mid_write(app=app, threshold=threshold):
                copying = any(r[1] == "active" and r[2].startswith("COPY") for r in monitor.activity(app))
                return copying and monitor.count(schema.name, "result") >= threshold

            try:
                hit = _wait_for(mid_write, proc, time.monotonic() + 120)
                if hit:  # mid-COPY, with entries already committed
                    os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                _, err = proc.communicate(timeout=30)
            assert hit, f"the run ended before it could be killed mid-write: {err[-3000:]}"
            assert proc.returncode == -signal.SIGKILL
            figures["kills"] += 1
            assert monitor.wait_gone(app)
            found = check_entries(Result, CHUNK_KB)
            figures["rows_checked"] += found["rows_checked"]
            figures["partial_results_found"] += len(found["partial"]) + len(found["orphans"])
            assert not found["partial"] and not found["orphans"], found
            assert threshold <= found["masters"] < n, "the kill came after the last commit"
            figures["entries_committed_before_kill"].append(found["masters"])
        committed = figures["entries_committed_before_kill"][-1]
        rerun = run_job(schema, home, 0, n - 1)  # here: the test process is the re-run
        assert rerun["success"], rerun
        assert (rerun["written"], rerun["skipped"]) == (n - committed, committed), rerun
        after = check_entries(Result, CHUNK_KB)
        figures["rows_checked"] += after["rows_checked"]
        assert after["masters"] == n and not after["partial"] and not after["orphans"], after
        with dagster_instance(home) as instance:
            assert instance.get_materialized_partitions(dg.AssetKey([schema.name, "result"])) == {
                str(k) for k in range(n)}
            # the killed runs stay STARTED in the instance: only run monitoring (a daemon) fails them
            figures["run_statuses"] = dict(Counter(r.status.value for r in instance.get_runs()))
        figures["entries_written_by_rerun"] = rerun["written"]
        report(request, "dagster_kill", figures)
    finally:
        drop(schema)


# -- 2. database faults: pg_terminate_backend ------------------------------------------------


def test_library_reconnects_after_its_connection_is_terminated(pg_url, monitor, request):
    app = f"mprelrc_{os.getpid()}_{time.monotonic_ns()}"
    schema = mp.Schema(unique_schema_name("relrc"), database_url=with_app(pg_url, app))
    try:
        Source, Result = declare(schema, chunk_kb=1)
        Source.insert([{"key": k} for k in range(3)])
        faults = 0
        # idle connection terminated: the next read reconnects and succeeds (nothing was lost)
        assert monitor.terminate(monitor.activity(app)[0][0])
        faults += 1
        assert len(Source) == 3
        assert monitor.terminate(monitor.activity(app)[0][0])
        faults += 1
        assert sorted(Source.fetch("key").tolist()) == [0, 1, 2]  # the streaming fetch too
        # idle connection terminated before a write: the write transaction fails clearly
        assert monitor.terminate(monitor.activity(app)[0][0])
        faults += 1
        with pytest.raises(MPConnectionError, match="lost the connection to PostgreSQL"):
            Source.insert1({"key": 9})
        assert len(Source) == 3
        # terminated inside a transaction: the transaction fails as a whole, nothing is written
        with pytest.raises(MPConnectionError, match="lost the connection to PostgreSQL"):
            with schema.transaction():
                Source.insert1({"key": 10})
                assert monitor.terminate(monitor.activity(app)[0][0])
                faults += 1
                Source.insert1({"key": 11})
        assert sorted(Source.fetch("key").tolist()) == [0, 1, 2]
        Source.insert1({"key": 12})  # and the library works again
        assert Result.populate()["success_count"] == 4
        assert check_entries(Result, 1)["masters"] == 4
        report(request, "reconnect", {"faults_injected": faults, "partial_results_found": 0})
    finally:
        drop(schema)


def test_terminated_connection_mid_populate(pg_url, monitor, tmp_path, request):
    """pg_terminate_backend hits the worker in compute, in its write transaction and mid-COPY:
    each hit fails one key with a ConnectionError, the worker reconnects and goes on, nothing
    partial is left, and a re-run completes every key."""
    n = 16
    schema = mp.Schema(unique_schema_name("relpt"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=CHUNK_KB)
        Source.insert([{"key": k} for k in range(n)])
        app = f"mprelpt_{schema.name}"
        signal_dir = tmp_path / "signals"
        signal_dir.mkdir()
        proc = spawn(WORKER, with_app(pg_url, app), schema.name, "--chunk-kb", str(CHUNK_KB),
                     "--compute", "0.05", "--signal-dir", str(signal_dir))
        targets = ["copy", "compute", "in_transaction", "copy"]
        hits: list[str] = []
        deadline = time.monotonic() + 90
        last_pid = None
        while targets and time.monotonic() < deadline and proc.poll() is None:
            rows = monitor.activity(app)
            if rows and rows[-1][0] != last_pid:
                phase = classify_pg(rows, signal_dir)
                if phase == targets[0] and monitor.terminate(rows[-1][0]):
                    hits.append(targets.pop(0))
                    last_pid = rows[-1][0]  # wait for the reconnection before the next fault
            time.sleep(0.0005)
        out = finish(proc)
        assert len(hits) >= 2 and "copy" in hits, (hits, out)
        errors = out["errors"]
        assert 1 <= len(errors) <= len(hits), out
        for e in errors:
            assert e["mp_error"] and e["type"] == "ConnectionError", e
            assert "lost the connection to PostgreSQL" in e["message"], e
        assert out["success_count"] + len(errors) == n  # reconnected after every fault
        found = check_entries(Result, CHUNK_KB)
        assert not found["partial"] and not found["orphans"], found
        done_before = found["masters"]
        assert done_before >= out["success_count"]  # (a lost COMMIT may still have committed)
        rerun = Result.populate()
        assert rerun["success_count"] == n - done_before
        after = check_entries(Result, CHUNK_KB)
        assert after["masters"] == n and not after["partial"] and not after["orphans"]
        report(request, "terminate_populate", {
            "faults_injected": len(hits), "fault_phases": hits, "keys_failed": len(errors),
            "error_types": sorted({e["type"] for e in errors}), "rerun_completed": rerun["success_count"],
            "rows_checked": found["rows_checked"] + after["rows_checked"], "partial_results_found": 0})
    finally:
        drop(schema)


def test_terminated_connection_mid_dagster_backfill(pg_url, monitor, tmp_path, request):
    """A single-run backfill of 10 partitions loses its connection while committing: the run
    fails naming the lost connection, committed entries are whole, the others absent; the
    library reconnects and a re-run of the same job completes every key."""
    n = 10
    app = f"mpreldt_{os.getpid()}_{time.monotonic_ns()}"
    schema = mp.Schema(unique_schema_name("reldt"), database_url=with_app(pg_url, app))
    try:
        Source, Result = declare(schema, chunk_kb=CHUNK_KB)
        Source.insert([{"key": k} for k in range(n)])
        defs = build_definitions(schema, sensors=False, checks=False)
        job = defs.resolve_job_def(f"{schema.name}__result_job")
        tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": str(n - 1)}
        home = tmp_path / "dagster_home"
        home.mkdir()
        hits: list[str] = []
        stop = threading.Event()
        watcher = Monitor(pg_url)

        def inject():
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                rows = watcher.activity(app)
                copying = [r for r in rows if r[1] == "active" and r[2].startswith("COPY")]
                if copying and watcher.count(schema.name, "result") >= 2:
                    if watcher.terminate(copying[0][0]):
                        hits.append("copy")
                    return
                time.sleep(0.0005)

        with dagster_instance(home) as instance:
            instance.add_dynamic_partitions(def_name(Source), [str(k) for k in range(n)])
            thread = threading.Thread(target=inject, daemon=True)
            thread.start()
            try:
                result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
            finally:
                stop.set()
                thread.join(timeout=30)
                watcher.close()
            assert hits == ["copy"], "the fault was not injected mid-write"
            assert not result.success
            messages = " ".join(e.event_specific_data.error.to_string() for e in result.all_events
                                if e.event_type_value == "STEP_FAILURE")
            assert "lost the connection to PostgreSQL" in messages, messages
            found = check_entries(Result, CHUNK_KB)  # the library reconnects on its next use
            assert not found["partial"] and not found["orphans"], found
            assert 2 <= found["masters"] < n
            rerun = job.execute_in_process(instance=instance, tags=tags)
            assert rerun.success
            after = check_entries(Result, CHUNK_KB)
            assert after["masters"] == n and not after["partial"] and not after["orphans"], after
            assert instance.get_materialized_partitions(dg.AssetKey([schema.name, "result"])) == {
                str(k) for k in range(n)}
        report(request, "terminate_dagster", {
            "faults_injected": len(hits), "entries_committed_before_fault": found["masters"],
            "rows_checked": found["rows_checked"] + after["rows_checked"], "partial_results_found": 0})
    finally:
        drop(schema)


# -- 3. concurrency ------------------------------------------------------------------------------


def test_four_processes_populate_the_same_200_keys(db_url, request, tmp_path, monkeypatch):
    n = 200
    call_log = tmp_path / "calls.log"
    monkeypatch.setenv("MP_TEST_CALL_LOG", str(call_log))
    schema = mp.Schema(unique_schema_name("relcc"), database_url=db_url)
    try:
        Source, Result = declare(schema, chunk_kb=1)
        Source.insert([{"key": k} for k in range(n)])
        started = time.monotonic()
        workers = [spawn(WORKER, db_url, schema.name, "--chunk-kb", "1",
                         *(("--shuffle", str(i)) if i % 2 else ())) for i in range(4)]
        results = [finish(w, timeout=240) for w in workers]
        seconds = time.monotonic() - started
        assert [r["errors"] for r in results] == [[]] * 4, results
        assert sum(r["success_count"] for r in results) == n  # each key written exactly once
        made = Counter(line.split()[0] for line in call_log.read_text().splitlines())
        assert len(made) == n and set(made.values()) == {1}, made.most_common(3)  # computed once
        found = check_entries(Result, 1)
        assert found["masters"] == n and not found["partial"] and not found["orphans"], found
        report(request, f"concurrency_populate_{schema.backend.name}", {
            "processes": 4, "keys": n, "writes_per_process": [r["success_count"] for r in results],
            "make_calls": sum(made.values()),
            "rows_checked": found["rows_checked"], "partial_results_found": 0, "seconds": round(seconds, 1)})
    finally:
        drop(schema)


def test_four_dagster_runs_with_overlapping_ranges(pg_url, tmp_path, request, monkeypatch):
    n = 40
    call_log = tmp_path / "calls.log"
    monkeypatch.setenv("MP_TEST_CALL_LOG", str(call_log))
    ranges = [(0, 19), (10, 29), (20, 39), (5, 34)]
    schema = mp.Schema(unique_schema_name("reldg"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=16)
        Source.insert([{"key": k} for k in range(n)])
        home = tmp_path / "dagster_home"
        home.mkdir()
        add_partitions(home, Source, range(n))
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        started = time.monotonic()
        runs = [spawn(DAGSTER_RUN, pg_url, schema.name, str(home), str(a), str(b), "--chunk-kb", "16",
                      "--barrier", str(barrier), "--parties", str(len(ranges))) for a, b in ranges]
        results = [finish(r, timeout=300) for r in runs]
        seconds = time.monotonic() - started
        assert all(r["success"] for r in results), results
        for (a, b), r in zip(ranges, results):
            assert r["written"] + r["skipped"] == b - a + 1, r
        assert sum(r["written"] for r in results) == n  # every key exactly once
        made = Counter(line.split()[0] for line in call_log.read_text().splitlines())
        assert len(made) == n and set(made.values()) == {1}, made.most_common(3)  # computed once
        found = check_entries(Result, 16)
        assert found["masters"] == n and not found["partial"] and not found["orphans"], found
        with dagster_instance(home) as instance:
            assert instance.get_materialized_partitions(dg.AssetKey([schema.name, "result"])) == {
                str(k) for k in range(n)}
            statuses = Counter(r.status.value for r in instance.get_runs())
        assert statuses == {"SUCCESS": 4}, statuses  # no run left hanging
        report(request, "concurrency_dagster", {
            "runs": 4, "keys": n, "written_per_run": [r["written"] for r in results],
            "make_calls": sum(made.values()),
            "rows_checked": found["rows_checked"], "partial_results_found": 0, "seconds": round(seconds, 1)})
    finally:
        drop(schema)


def test_deletes_race_with_populate_of_downstream_keys(db_url, tmp_path, request):
    """Two workers keep populating Result and its downstream Summary while the test deletes
    Result entries (cascading to Summary) and Source rows: no orphaned part, no master without
    all its parts, at any check and at the end."""
    n = 24
    seconds = 4.0
    schema = mp.Schema(unique_schema_name("reldl"), database_url=db_url)
    try:
        Source, Result = declare(schema, chunk_kb=1)
        Summary = declare_downstream(schema, Result)
        Source.insert([{"key": k} for k in range(n)])
        workers = [spawn(WORKER, db_url, schema.name, "--chunk-kb", "1", "--downstream", "--seconds", str(seconds),
                         *(("--shuffle", str(i)) if i else ())) for i in range(2)]
        rng = random.Random(SEED)
        deletes = Counter()
        checks = rows_checked = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            k = rng.randrange(n)
            try:
                if rng.random() < 0.25:
                    deletes["source"] += (Source & {"key": k}).delete(prompt=False)
                    Source.insert1({"key": k}, skip_duplicates=True)
                else:
                    deletes["result"] += (Result & {"key": k}).delete(prompt=False)
            except mp.MPError as exc:
                deletes[f"refused: {type(exc).__name__}"] += 1
                deletes.setdefault("first refusal", str(exc)[:300])
            if rng.random() < 0.1:
                with snapshot(schema):
                    found = check_summaries(Result, Summary, contents=False)
                checks += 1
                rows_checked += found["rows_checked"]
                assert not found["partial"] and not found["orphans"], found
            time.sleep(rng.uniform(0, 0.02))
        results = [finish(w, timeout=120) for w in workers]
        errors = Counter(e["type"] for r in results for e in r["errors"])
        # a key deleted under a make fails it cleanly: a MissingParentError at the write, or the
        # make's own refusal when its upstream parts are gone; nothing else
        assert set(errors) <= {"MissingParentError", "RuntimeError"}, [r["errors"][:5] for r in results]
        found = check_summaries(Result, Summary, contents=True)
        rows_checked += found["rows_checked"]
        assert not found["partial"] and not found["orphans"], found
        Result.populate()
        Summary.populate()
        found = check_summaries(Result, Summary, contents=True)
        rows_checked += found["rows_checked"]
        assert found["summaries"] == n and not found["partial"] and not found["orphans"], found
        report(request, f"delete_race_{schema.backend.name}", {
            "deletes": dict(deletes), "populate_writes": sum(r["success_count"] for r in results),
            "populate_errors": dict(errors), "checks_during_race": checks, "rows_checked": rows_checked,
            "partial_results_found": 0})
        refused = {k: v for k, v in deletes.items() if k.startswith("refused")}
        assert not refused, deletes
    finally:
        drop(schema)


def test_delete_retries_when_a_dependent_row_commits_under_it(pg_url, monkeypatch):
    """Deterministic version of the race above: between reading its keys and deleting, a
    ``Summary`` entry referencing the deleted ``Result`` commits (another connection). The delete
    must not be refused (it used to fail with "rows of a table that is not declared in this process
    reference them"): it reads its keys again and takes the new entry too."""
    import mp_dagster.delete as delete_module

    schema = mp.Schema(unique_schema_name("reldr"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=1)
        Summary = declare_downstream(schema, Result)
        Source.insert([{"key": 1}, {"key": 2}])
        Result.populate()
        Summary.populate({"key": 2})
        original = delete_module._delete_keys
        injected = []

        def delete_keys(table, keys):
            if not injected:  # once: a writer commits a dependent entry now
                injected.append(table.full_name)
                with psycopg.connect(pg_url, autocommit=True) as other, other.transaction():
                    other.execute(psycopg.sql.SQL("INSERT INTO {} (key, n_items) VALUES (1, 0)").format(
                        psycopg.sql.Identifier(schema.name, "summary")))
            original(table, keys)

        monkeypatch.setattr(delete_module, "_delete_keys", delete_keys)
        assert (Result & {"key": 1}).delete(prompt=False) == 1
        assert injected
        assert Result.fetch("key").tolist() == [2] and Summary.fetch("key").tolist() == [2]
        assert len(Result.Chunk - Result) == 0 and len(Summary.Item & {"key": 2}) == n_parts(2)
    finally:
        drop(schema)


def check_summaries(result_cls, summary_cls, contents: bool) -> dict:
    found = check_entries(result_cls, 1, contents=contents)
    items: dict[int, list[dict]] = {}
    for row in summary_cls.Item.fetch(as_dict=True, order_by=("key", "item")):
        items.setdefault(row["key"], []).append(row)
    summaries = summary_cls.fetch(as_dict=True)
    partial = list(found["partial"])
    for s in summaries:
        k = s["key"]
        got = items.get(k, [])
        expected = [(c, len(tag(k, c))) for c in range(n_parts(k))]
        if s["n_items"] != n_parts(k) or [(i["item"], i["tag_length"]) for i in got] != expected:
            partial.append(("summary", k))
    orphans = list(found["orphans"]) + [("summary", k) for k in set(items) - {s["key"] for s in summaries}]
    return {"summaries": len(summaries), "partial": partial, "orphans": orphans,
            "rows_checked": found["rows_checked"] + len(summaries) + sum(map(len, items.values()))}


# -- 5. no transaction, no lock while make computes --------------------------------------------


def test_make_holds_no_transaction_or_lock_while_computing(pg_url, monitor, tmp_path, request):
    compute_s = 3.0
    schema = mp.Schema(unique_schema_name("reltx"), database_url=pg_url)
    try:
        Source, Result = declare(schema, chunk_kb=64)
        Source.insert1({"key": 1})
        app = f"mpreltx_{schema.name}"
        signal_dir = tmp_path / "signals"
        signal_dir.mkdir()
        proc = spawn(WORKER, with_app(pg_url, app), schema.name, "--chunk-kb", "64",
                     "--compute", str(compute_s), "--signal-dir", str(signal_dir))
        deadline = time.monotonic() + 60
        computing = signal_dir / "computing-1"
        computed = signal_dir / "computed-1"
        assert _wait_for(computing.exists, proc, deadline, interval=0.005), proc.communicate()
        samples: list[dict] = []
        while not computed.exists() and time.monotonic() < deadline and proc.poll() is None:
            rows = monitor.activity(app)
            assert len(rows) == 1, rows  # one connection per worker
            pid, state, query, xact_start, xmin, xid = rows[0]
            locks = monitor.locks(pid)
            if not computed.exists():  # still computing when sampled
                samples.append({"state": state, "xact_start": xact_start, "backend_xmin": xmin,
                                "backend_xid": xid, "locks": locks, "query": query[:60]})
            time.sleep(0.05)
        out = finish(proc)
        assert out == out | {"success_count": 1, "errors": []}
        assert len(samples) >= compute_s / 0.05 / 4, len(samples)
        # the key's reservation is the one lock allowed: a session-level advisory lock, which
        # blocks no reader, no writer and no vacuum (no relation, tuple or transaction lock)
        reservation = [("advisory", "ExclusiveLock", True, None)]
        holding = [s for s in samples if s["state"] != "idle" or s["xact_start"] is not None
                   or s["backend_xmin"] is not None or s["backend_xid"] is not None
                   or s["locks"] != reservation]
        assert holding == [], holding[:3]
        found = check_entries(Result, 64)
        assert found["masters"] == 1 and not found["partial"]
        report(request, "no_transaction_while_computing", {
            "compute_seconds": compute_s, "samples": len(samples), "samples_in_transaction_or_locking": 0,
            "locks_while_computing": "the key's advisory reservation only"})
    finally:
        drop(schema)
