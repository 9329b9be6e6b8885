"""End to end: ``dagster dev`` on the demo project, sensors -> runs -> master + part rows.

The demo tables live on the test PostgreSQL under unique schema names
(``MP_DAGSTER_DEMO_PREFIX``); Dagster's own storage is a temporary ``DAGSTER_HOME``. Demo
rows are inserted by subprocesses, so this process never imports ``mp_dagster.demo``
(importing it declares the demo tables). ``dagster dev`` runs in its own process group and is
always shut down (SIGINT, then SIGKILL) before the temporary directory goes away.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import psycopg
from conftest import postgres_url

REPO = Path(__file__).resolve().parents[1]
IMAGES_BEFORE, IMAGES_AFTER, RECORDINGS = 2, 3, 1
READY_TIMEOUT = 60.0
DONE_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0

# run in a subprocess with the test's env: the expected parts, computed by the demo's own code
EXPECTED_CODE = """
import json
from mp_dagster import demo
ids, images = demo.Image.fetch("image_id", "image")
arrays, signals = demo.Recording.fetch("array", "signals")
print(json.dumps({
    "rois": {str(i): sum(1 for _ in demo.segment(im)) for i, im in zip(ids, images)},
    "arrays": {str(a): [s.shape[0] // demo.CHANNELS_PER_ELECTRODE, s.shape[0]]
               for a, s in zip(arrays, signals)},
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def sensor_runs(instance: dg.DagsterInstance, sensor: str) -> dict[dg.DagsterRunStatus, set[str]]:
    """Partition keys of the runs ``sensor`` launched, by run status."""
    out: dict[dg.DagsterRunStatus, set[str]] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor})):
        out.setdefault(run.status, set()).add(run.tags.get("dagster/partition", ""))
    return out


def drop_schemas(url: str, prefix: str) -> None:
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        for name in ("imaging", "ephys"):
            conn.execute(f"DROP SCHEMA IF EXISTS {prefix}{name} CASCADE")


def test_dagster_dev_sensors_populate_master_and_parts(tmp_path, monkeypatch):
    url = postgres_url()
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MP_DAGSTER_DATABASE_URL": url,
        "MP_DAGSTER_DEMO_PREFIX": prefix,
        "MP_DAGSTER_SENSOR_INTERVAL": "5",
    }
    image_ids = {str(i) for i in range(IMAGES_BEFORE + IMAGES_AFTER)}
    array_ids = {str(a) for a in range(RECORDINGS)}
    seg_sensor = f"{prefix}imaging__segmentation_pending"
    ephys_sensor = f"{prefix}ephys__array_response_pending"
    log = tmp_path / "dagster_dev.log"
    proc: subprocess.Popen | None = None
    instance: dg.DagsterInstance | None = None
    try:
        add_demo_data(env, IMAGES_BEFORE, RECORDINGS)
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port),
                 "-h", "127.0.0.1"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_ready(proc, port, log)

        add_demo_data(env, IMAGES_AFTER, 0)
        expected = json.loads(run_python(["-c", EXPECTED_CODE], env))
        assert set(expected["rois"]) == image_ids and set(expected["arrays"]) == array_ids
        assert all(n > 0 for n in expected["rois"].values()), expected

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.get()
        success = dg.DagsterRunStatus.SUCCESS
        bad = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        state = runs = None
        deadline = time.monotonic() + DONE_TIMEOUT
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"dagster dev exited ({proc.returncode}):\n{log_tail(log)}"
            state = database_state(url, prefix)
            runs = {s: sensor_runs(instance, s) for s in (seg_sensor, ephys_sensor)}
            failed = {s: by[st] for s, by in runs.items() for st in bad if by.get(st)}
            assert not failed, f"failed runs {failed}:\n{log_tail(log)}"
            if (state == (expected["rois"], expected["arrays"])
                    and runs[seg_sensor].get(success) == image_ids
                    and runs[ephys_sensor].get(success) == array_ids):
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"not done after {DONE_TIMEOUT} s: database {state}, expected "
                f"{(expected['rois'], expected['arrays'])}; runs {runs}\n{log_tail(log)}"
            )

        # one run per key, no repeats
        for sensor, keys in ((seg_sensor, image_ids), (ephys_sensor, array_ids)):
            all_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor}))
            assert len(all_runs) == len(keys), [(r.run_id, r.status, r.tags) for r in all_runs]
        seg_key = dg.AssetKey([f"{prefix}imaging", "segmentation"])
        ephys_key = dg.AssetKey([f"{prefix}ephys", "array_response"])
        assert instance.get_materialized_partitions(seg_key) == image_ids
        assert instance.get_materialized_partitions(ephys_key) == array_ids
    finally:
        if instance is not None:
            instance.dispose()
        try:
            if proc is not None:
                print(f"dagster dev stopped: {stop_group(proc)}")
        finally:
            drop_schemas(url, prefix)
