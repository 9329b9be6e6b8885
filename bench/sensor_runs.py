"""Rows arriving under ``dagster dev``: N new images, and the time until the sensor's runs have
written every segmentation, with one run per key and with one run per range of keys.

Usage (from the repository root; PostgreSQL as for the tests)::

    python bench/sensor_runs.py [--images 40] [--keys-per-run 40] [--instance sqlite|deploy]
                                [--url postgresql://...]

Each configuration starts ``dagster dev`` on the demo project (``definitions.py``: tables on
``--url`` under a unique schema prefix, Dagster's storage in a temporary ``DAGSTER_HOME``, or
with ``--instance deploy`` deploy/'s configuration on a database of its own, sensors every 5 s), waits for the UI, inserts the images (``mp-dagster demo-data``) and polls
the database until every image has its segmentation. The clock runs from the insert to the
last entry; it includes the sensor's wait for its next tick (at most 5 s). It reuses the
helpers of the end-to-end tests (``tests/dagster_dev_util.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dagster_dev_util import (  # noqa: E402
    add_demo_data,
    database_state,
    demo_env,
    deploy_instance,
    drop_schemas,
    free_port,
    log_tail,
    start_dagster_dev,
    stop_group,
    unique_prefix,
    wait_ready,
)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def measure(url: str, images: int, keys_per_run: int | str, timeout: float, instance_kind: str,
            partial: bool = False) -> dict[str, float | int | bool]:
    """Seconds from the insert until every segmentation is written. After ``timeout`` seconds:
    an error, or with ``partial`` the figures so far (``written`` < ``images``, ``timed_out``)."""
    prefix = unique_prefix()
    with tempfile.TemporaryDirectory(prefix="mpbench_dev_") as tmp, ExitStack() as stack:
        home = Path(tmp) / "home"
        env = demo_env(home, url, prefix, sensor_interval=5)
        env["MP_DAGSTER_KEYS_PER_RUN"] = str(keys_per_run)
        if instance_kind == "deploy":
            os.environ.update(stack.enter_context(deploy_instance(home, env, url)))  # to read the runs back
        port, log = free_port(), Path(tmp) / "dagster.log"
        proc = start_dagster_dev(env, port, log)
        try:
            wait_ready(proc, port, log)
            started = time.monotonic()
            add_demo_data(env, images, 0)
            written = 0
            while written < images:
                if time.monotonic() - started > timeout:
                    if partial:
                        break
                    raise RuntimeError(f"{written}/{images} written after {timeout} s:\n{log_tail(log)}")
                time.sleep(0.5)
                written = len(database_state(url, prefix)[0])
            elapsed = time.monotonic() - started
            with dg.DagsterInstance.from_config(str(home)) as instance:
                runs = len(instance.get_runs(filters=dg.RunsFilter(
                    tags={"dagster/sensor_name": f"{prefix}imaging__segmentation_pending"})))
        finally:
            stop_group(proc)
            drop_schemas(url, prefix)
    return {"images": images, "keys_per_run": keys_per_run, "instance": instance_kind, "runs": runs, "seconds": elapsed,
            "seconds_per_image": elapsed / images, "written": written, "timed_out": written < images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--keys-per-run", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--instance", choices=("sqlite", "deploy"), default="sqlite",
                        help="Dagster's storage: SQLite in the temporary DAGSTER_HOME (dagster dev's default) "
                             "or deploy/'s production configuration on a database of its own on --url's server")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for keys_per_run in (1, "auto", args.keys_per_run):
        r = measure(args.url, args.images, keys_per_run, args.timeout, args.instance)
        results.append(r)
        print(f"{r['images']} new images, {args.instance} instance, keys_per_run={keys_per_run}: {r['runs']} runs, "
              f"all written after "
              f"{r['seconds']:.1f} s ({r['seconds_per_image']:.2f} s per image)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
