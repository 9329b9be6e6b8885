"""Helpers for the end-to-end tests that run ``dagster dev`` on the demo project, and for
Dagster instances configured as deploy/ ships them (also used by bench/).

The demo tables live on the test PostgreSQL under unique schema names
(``MP_DAGSTER_DEMO_PREFIX``); Dagster's own storage is a temporary ``DAGSTER_HOME``. Demo
rows are inserted by subprocesses, so the test process never imports ``mp_dagster.demo``
(importing it declares the demo tables). ``dagster dev`` runs in its own process group and is
always shut down (SIGINT, then SIGKILL) before the temporary directory goes away.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import psycopg

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_prefix() -> str:
    """A fresh ``MP_DAGSTER_DEMO_PREFIX``: the demo's schema names are unique to one test."""
    return f"t{uuid.uuid4().hex[:10]}_"


def demo_env(home: Path, url: str, prefix: str, sensor_interval: int = 5) -> dict[str, str]:
    """Create the ``DAGSTER_HOME`` ``home`` (telemetry off) and return the environment that runs
    the demo on ``url`` with schema prefix ``prefix``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MP_DAGSTER_DATABASE_URL": url,
        "MP_DAGSTER_DEMO_PREFIX": prefix,
        "MP_DAGSTER_SENSOR_INTERVAL": str(sensor_interval),
    }


def run_python(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def add_demo_data(env: dict[str, str], images: int, recordings: int) -> None:
    run_python(["-m", "mp_dagster.cli", "demo-data", "--images", str(images),
                "--recordings", str(recordings)], env)


def log_tail(log: Path, lines: int = 80) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no dagster log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def start_dagster_dev(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """``dagster dev -w workspace.yaml`` on 127.0.0.1:``port`` in its own process group, output
    to ``log``; stop it with :func:`stop_group`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port),
             "-h", "127.0.0.1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def group_alive(pgid: int) -> bool:
    """Does process group ``pgid`` still have a live (non-zombie) member?"""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(proc: subprocess.Popen) -> str:
    """SIGINT to dagster dev's process group, SIGKILL after ``STOP_TIMEOUT``; returns how it went."""
    pgid = proc.pid
    how = "SIGINT"

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    signal_group(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        how = "SIGKILL"
        signal_group(signal.SIGKILL)
        proc.wait(timeout=10)
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        how = "SIGKILL"
        signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return f"{how}, rc={proc.returncode}"


def wait_ready(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited ({proc.returncode}):\n{log_tail(log)}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"dagster dev not ready after {READY_TIMEOUT} s:\n{log_tail(log)}")


def database_state(url: str, prefix: str) -> tuple[dict[str, int], dict[str, list[int]]]:
    """ROIs per Segmentation row, and [electrodes, channels] per ArrayResponse row."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        rois = conn.execute(
            f"SELECT s.image_id, count(r.roi) FROM {prefix}imaging.segmentation s "
            f"LEFT JOIN {prefix}imaging.segmentation__roi r USING (image_id) GROUP BY s.image_id"
        ).fetchall()
        arrays = conn.execute(
            f'SELECT a."array", '
            f'(SELECT count(*) FROM {prefix}ephys.array_response__electrode_response e WHERE e."array" = a."array"), '
            f'(SELECT count(*) FROM {prefix}ephys.array_response__channel_response c WHERE c."array" = a."array") '
            f"FROM {prefix}ephys.array_response a"
        ).fetchall()
    return {str(i): n for i, n in rois}, {str(a): [e, c] for a, e, c in arrays}


def run_partitions(run: dg.DagsterRun) -> list[str]:
    """The partition keys of a run the demo's sensors launched: its partition, or every key of
    its range (the demo's keys are integers, neighbours in their partitions definition)."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    first, last = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
    return [str(k) for k in range(int(first), int(last) + 1)]


def sensor_runs(instance: dg.DagsterInstance, sensor: str) -> dict[dg.DagsterRunStatus, set[str]]:
    """Partition keys of the runs ``sensor`` launched, by run status."""
    out: dict[dg.DagsterRunStatus, set[str]] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor})):
        out.setdefault(run.status, set()).update(run_partitions(run))
    return out


TEARDOWN_LOCK_TIMEOUT_S = 30  # a teardown waits this long for a lock, then gives up saying so
TEARDOWN_STATEMENT_TIMEOUT_S = 60


def teardown_drop(url: str, statement: psycopg.sql.Composable, what: str) -> None:
    """Run a teardown ``DROP`` that may wait for a lock another session holds (a ``dagster dev``
    process not yet gone, a stuck ``DROP DATABASE ... WITH (FORCE)``): it gives up after
    ``TEARDOWN_LOCK_TIMEOUT_S`` (the whole statement after ``TEARDOWN_STATEMENT_TIMEOUT_S``)
    with a message naming what is left behind, instead of hanging the suite."""
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = '{TEARDOWN_LOCK_TIMEOUT_S}s'")
        conn.execute(f"SET statement_timeout = '{TEARDOWN_STATEMENT_TIMEOUT_S}s'")
        try:
            conn.execute(statement)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            raise AssertionError(
                f"teardown gave up: {what} waited more than {TEARDOWN_LOCK_TIMEOUT_S} s for a lock "
                f"(another session holds it: {exc}); it is left behind, drop it by hand") from exc


def drop_schemas(url: str, prefix: str) -> None:
    for name in ("imaging", "ephys"):
        schema = f"{prefix}{name}"
        teardown_drop(url, psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)),
                      f"schema {schema}")


def deploy_env(optional: bool = False) -> dict[str, str]:
    """The settings deploy/dagster.env ships (``optional``: its commented-out ones too)."""
    out = {}
    for line in (DEPLOY / "dagster.env").read_text().splitlines():
        line = line.strip()
        if optional and line.startswith("# ") and "=" in line and line[2:].split("=")[0].isupper():
            line = line[2:]
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            out[name] = value
    return out


@contextmanager
def deploy_instance(home: Path, env: dict[str, str], url: str) -> Iterator[dict[str, str]]:
    """Turn ``home`` into the production Dagster instance of deploy/: its dagster.yaml (pooled
    dagster-postgres storage, queued runs) on a database of its own on ``url``'s server, and
    deploy/dagster.env's settings exported in ``env``. Yields the ``DAGSTER_PG_*`` variables
    (to open the instance from this process too); drops the database afterwards."""
    database = f"mp_dagster_instance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
    try:
        (home / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
        env.update(deploy_env())  # exported, as the README's first option
        parsed = urlparse(url)
        pg = {"DAGSTER_PG_USERNAME": parsed.username or "postgres", "DAGSTER_PG_PASSWORD": parsed.password or "",
              "DAGSTER_PG_HOST": parsed.hostname or "127.0.0.1", "DAGSTER_PG_PORT": str(parsed.port or 5432),
              "DAGSTER_PG_DB": database}
        env.update(pg)
        yield pg
    finally:
        teardown_drop(url, psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(database)), f"database {database}")
