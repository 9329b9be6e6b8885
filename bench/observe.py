"""Observation sensors of source tables (mp_dagster/dagster/observe.py) at 100,000 rows.

For each backend (PostgreSQL at ``MP_DAGSTER_TEST_DATABASE_URL``, an SQLite file), an Image
table of 100,000 rows, and a Dagster instance with SQLite storage in a temporary directory:

* ``fingerprint``: ``keyset.fingerprint`` (row count + key checksum), best of 5;
* ``first tick``: the first tick of ``<schema>__image_observe`` (no cursor): reads the keys,
  compares them with Dagster (nothing present yet), adds 100,000 partitions, reports 1,000 rows;
* ``unchanged tick``: a tick whose fingerprint equals the cursor's, best of 5;
* ``changed tick``: a tick after one insert (the keys read and compared again), best of 3;
* ``event``: what Dagster's storage takes to write one reported row (``report_runless_asset_event``
  on this instance), averaged over 200.

Run: ``.venv/bin/python bench/observe.py`` (prints a table and one JSON line).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
import warnings

import dagster as dg
import numpy as np

import mp_dagster as mp
from mp_dagster import keyset
from mp_dagster.dagster import build_definitions

warnings.filterwarnings("ignore", category=dg.BetaWarning)
ROWS = 100_000


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(url: str) -> dict[str, float]:
    schema = mp.Schema(f"bench_obs_{uuid.uuid4().hex[:8]}", database_url=url)

    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        """

    try:
        Image.insert([dict(image_id=i, image=np.zeros(1)) for i in range(ROWS)])
        out = {"fingerprint": best(lambda: keyset.fingerprint(Image), 5)}
        defs = build_definitions(schema, sensors=False, checks=False)
        sensor = defs.resolve_sensor_def(f"{schema.name}__image_observe")
        with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(
                home, overrides={"telemetry": {"enabled": False}}) as instance:
            def tick(cursor=None):
                return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                                    cursor=cursor))
            started = time.perf_counter()
            first = tick()
            out["first tick"] = time.perf_counter() - started
            assert len(first.asset_events) == 1_000
            # as if every row had been reported: the cursor of a tick that reported them all
            cursor = json.dumps({"fingerprint": keyset.fingerprint(Image).token(), "at": time.time()})
            out["unchanged tick"] = best(lambda: tick(cursor), 5)
            Image.insert1(dict(image_id=-1, image=np.zeros(1)))
            out["changed tick"] = best(lambda: tick(cursor), 3)
            events = first.asset_events[:200]
            started = time.perf_counter()
            for event in events:
                instance.report_runless_asset_event(event)
            out["event"] = (time.perf_counter() - started) / len(events)
        return out
    finally:
        schema.drop(force=True)


def main() -> None:
    pg = os.environ.get("MP_DAGSTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as tmp:
        results = {"postgres": measure(pg), "sqlite": measure(f"sqlite:///{tmp}/bench.db")}
    print(f"{'':16}" + "".join(f"{b:>12}" for b in results))
    for name in results["postgres"]:
        print(f"{name:16}" + "".join(f"{results[b][name] * 1000:>10.1f}ms" for b in results))
    print(json.dumps({"rows": ROWS, "seconds": results, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
