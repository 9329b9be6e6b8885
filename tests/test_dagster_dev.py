"""End to end: ``dagster dev`` on the demo project, sensors -> runs -> master + part rows.

The demo tables live on the test PostgreSQL under unique schema names
(``MP_DAGSTER_DEMO_PREFIX``); Dagster's own storage is a temporary ``DAGSTER_HOME``, or the
production configuration of deploy/ on a database of its own. Demo
rows are inserted by subprocesses, so this process never imports ``mp_dagster.demo``
(importing it declares the demo tables). ``dagster dev`` runs in its own process group and is
always shut down (SIGINT, then SIGKILL) before the temporary directory goes away. The
helpers are shared with the browser test in ``dagster_dev_util``.
"""

from __future__ import annotations

import json
import subprocess
import time

import dagster as dg
import pytest
from conftest import postgres_url
from dagster_dev_util import (
    add_demo_data,
    database_state,
    demo_env,
    deploy_instance,
    drop_schemas,
    free_port,
    log_tail,
    run_partitions,
    run_python,
    sensor_runs,
    start_dagster_dev,
    stop_group,
    unique_prefix,
    wait_ready,
)

IMAGES_BEFORE, IMAGES_AFTER, RECORDINGS = 2, 3, 1
DONE_TIMEOUT = 120.0

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


@pytest.fixture(params=["sqlite-home", "deploy-postgres"])
def dagster_home(request, tmp_path, monkeypatch):
    """``DAGSTER_HOME`` and its environment: Dagster's default SQLite storage in the home, or
    deploy/'s production configuration (pooled dagster-postgres storage, queued runs, event
    batching) on a database of its own."""
    prefix = unique_prefix()
    home = tmp_path / "dagster_home"
    env = demo_env(home, postgres_url(), prefix, sensor_interval=5)
    if request.param == "sqlite-home":
        yield home, env, prefix
        return
    with deploy_instance(home, env, postgres_url()) as pg:
        for name, value in pg.items():  # for this process's view of the instance
            monkeypatch.setenv(name, value)
        yield home, env, prefix


def test_dagster_dev_sensors_populate_master_and_parts(dagster_home, tmp_path, monkeypatch):
    url = postgres_url()
    home, env, prefix = dagster_home
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
        proc = start_dagster_dev(env, port, log)
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

        # every key in exactly one run (single keys or ranges, as keys_per_run="auto" groups them)
        for sensor, keys in ((seg_sensor, image_ids), (ephys_sensor, array_ids)):
            all_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor}))
            requested = [k for r in all_runs for k in run_partitions(r)]
            assert sorted(requested) == sorted(keys), [(r.run_id, r.status, r.tags) for r in all_runs]
        seg_key = dg.AssetKey([f"{prefix}imaging", "segmentation"])
        ephys_key = dg.AssetKey([f"{prefix}ephys", "array_response"])
        assert instance.get_materialized_partitions(seg_key) == image_ids
        assert instance.get_materialized_partitions(ephys_key) == array_ids
        # the sensors reported the new rows of the Manual tables as their partitions
        image_key = dg.AssetKey([f"{prefix}imaging", "image"])
        assert instance.get_materialized_partitions(image_key) == image_ids
    finally:
        if instance is not None:
            instance.dispose()
        try:
            if proc is not None:
                print(f"dagster dev stopped: {stop_group(proc)}")
        finally:
            drop_schemas(url, prefix)
