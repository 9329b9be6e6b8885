"""One tick of the file sensor over a folder of 100,000 files of which 1,000 are new (issue 12:
target under 10 s).

Usage (from the repository root; PostgreSQL as for the tests)::

    python bench/file_sensor.py [--files 100000] [--new 1000] [--backend postgres|sqlite|both]
                                [--url postgresql://...]

Setup (not timed): a directory store with ``--files`` files of 64 bytes in 100 folders; a table
fed by them (``mp.FileSource``, key derived from the file name) in which all but ``--new`` are
already registered (their rows inserted directly, with their real SHA-256), and a Dagster
instance (SQLite, temporary ``DAGSTER_HOME``) that already holds their partitions, as it would
after earlier ticks. Timed: one real evaluation of the sensor ``<schema>__raw_frame_files``
(``build_sensor_context`` with the instance): the listing, the query of registered files,
hashing and inserting the new ones, adding their partitions and reporting them. Then a second
tick with nothing new. Wall time and this process's CPU time are printed (on a shared machine
the wall time follows the load, which is printed too). The schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import dagster as dg

import mp_dagster as mp
from mp_dagster.dagster import build_definitions

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def frame_key(path: str) -> dict[str, int]:
    """``f0012/frame_0012345.npy`` -> frame 12345."""
    return {"frame": int(path.rsplit("_", 1)[-1].split(".")[0])}


def make_files(root: Path, n: int) -> list[tuple[str, int, str, float]]:
    """n files of 64 bytes; (path, size, sha256, mtime) of each."""
    out = []
    for i in range(n):
        rel = f"f{i % 100:04d}/frame_{i:07d}.npy"
        full = root / rel
        if i < 100:
            full.parent.mkdir(parents=True, exist_ok=True)
        data = i.to_bytes(8, "little") * 8
        full.write_bytes(data)
        out.append((rel, len(data), hashlib.sha256(data).hexdigest(), full.stat().st_mtime))
    return out


def measure(url: str, files: int, new: int, root: Path) -> dict[str, float]:
    os.environ["MP_DAGSTER_STORE_RAW"] = root.as_uri()
    schema = mp.Schema(f"bench_files_{uuid.uuid4().hex[:8]}", database_url=url)
    try:
        @schema
        class RawFrame(mp.Manual):
            definition = """  # a frame file
            frame    : int64
            ---
            path     : varchar(255)
            size     : int64
            checksum : char(64)
            modified : datetime(6)
            """
            files = mp.FileSource("raw", "*.npy", key=frame_key, settle_seconds=0)

        @schema
        class FrameStat(mp.Computed):
            definition = """
            -> RawFrame
            ---
            n : int64
            """

            def make(self, key):
                self.insert1(dict(key, n=len(RawFrame.files.read_bytes(key))))

        listing = sorted(make_files_cache(root, files))
        known = [f for f in listing if frame_key(f[0])["frame"] >= new]  # the first `new` are the new ones
        from mp_dagster.file_listing import _from_timestamp

        RawFrame.insert([dict(frame_key(p), path=p, size=s, checksum=c, modified=_from_timestamp(t))
                         for p, s, c, t in known])
        defs = build_definitions(schema)
        sensor = defs.resolve_sensor_def(f"{schema.name}__raw_frame_files")
        with tempfile.TemporaryDirectory(prefix="mpbench_home_") as home, \
                dg.DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}}) as instance:
            instance.add_dynamic_partitions(f"{schema.name}__raw_frame", [str(frame_key(p)["frame"]) for p, *_ in known])
            started, cpu = time.perf_counter(), time.process_time()
            context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs)
            first = sensor.evaluate_tick(context)
            tick, tick_cpu = time.perf_counter() - started, time.process_time() - cpu
            registered = len(RawFrame)
            assert registered == files, registered
            assert len([e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)]) == new
            started, cpu = time.perf_counter(), time.process_time()
            context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs,
                                              cursor=first.cursor)
            second = sensor.evaluate_tick(context)
            idle, idle_cpu = time.perf_counter() - started, time.process_time() - cpu
            assert second.skip_message and not second.asset_events
        return {"tick_new": tick, "tick_idle": idle, "tick_new_cpu": tick_cpu, "tick_idle_cpu": idle_cpu}
    finally:
        schema.drop(force=True)


_made: dict[tuple[str, int], list] = {}


def make_files_cache(root: Path, n: int) -> list:
    if (str(root), n) not in _made:
        _made[(str(root), n)] = make_files(root, n)
    return _made[(str(root), n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1_000)
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--url", default=os.environ.get("MP_DAGSTER_TEST_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpbench_files_") as tmp:
        root = Path(tmp) / "raw"
        started = time.perf_counter()
        make_files_cache(root, args.files)
        print(f"{args.files:,} files written in {time.perf_counter() - started:.1f} s", flush=True)
        urls = {"postgres": args.url, "sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        for backend in ("postgres", "sqlite") if args.backend == "both" else (args.backend,):
            times = measure(urls[backend], args.files, args.new, root)
            print(f"{backend}: sensor tick over {args.files:,} files with {args.new:,} new: "
                  f"{times['tick_new']:.2f} s (target < 10 s; CPU of this process {times['tick_new_cpu']:.2f} s); "
                  f"next tick, nothing new: {times['tick_idle']:.2f} s (CPU {times['tick_idle_cpu']:.2f} s)",
                  flush=True)
        load = os.getloadavg()[0]
        print(f"load average during the run: {load:.1f} on {os.cpu_count()} cores", flush=True)


if __name__ == "__main__":
    sys.exit(main())
