"""mp_dagster benchmark: the floor (raw psycopg 3), mp_dagster and the peer (DataJoint 2.x), side by
side in ONE run on the same PostgreSQL, plus Dagster overhead, a sensor tick and the blob codec.

Usage (from the repository root, with the ``bench`` extra installed)::

    pip install -e '.[bench]'
    python bench/run.py [--quick] [--json bench/results/latest.json]

Options: ``--quick`` shrinks every workload ~10x (a smoke run); ``--url`` picks the PostgreSQL
database (default ``$MP_DAGSTER_TEST_DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``);
``--repeat N`` repeats each system's workload N times and keeps the fastest (default 3, quick: 1);
``--workloads a,b,c``; ``--skip-peer``, ``--skip-dagster``, ``--skip-sensor``, ``--skip-codec``.

The pipeline is the seeds' one: ``Image(image_id: int; image: longblob)`` ->
``Segmentation`` with part ``ROI(roi: smallint; roi_pixels, roi_weights: longblob)``. ``make``
computes nothing: it inserts the master row and the key's ROIs from arrays generated once up
front (64-element int64 pixels, float64 weights), so what is timed is the write path.

Systems, over the same rows:

* floor: raw psycopg 3 on tables declared exactly as mp_dagster declares them (same column
  types, including ``bytea COMPRESSION lz4`` for blobs where the server has lz4). Images: one
  ``COPY ... (FORMAT BINARY)`` in one transaction. Populate: one query for the pending keys,
  then per key one transaction with an ``INSERT`` of the master row and a binary ``COPY`` of its
  part rows; blobs are ``mp_dagster.blob.pack`` bytes (packing is timed: it is the same work for
  every system). Fetch: one plain ``SELECT`` (binary results) and ``blob.unpack`` per value.
  The floor does not re-check that a key is still pending nor lock it: mp_dagster does both
  (one more query before ``make`` and a lock + check inside the transaction).
* mp_dagster: ``Image.insert``, ``Segmentation.populate()``,
  ``Segmentation.ROI.fetch("roi_pixels", "roi_weights")`` and ``Image.fetch("image")``.
* DataJoint 2.x (``<blob>``, its packed blob type) on the same PostgreSQL, in its own schema:
  ``Image.insert``, ``Segmentation.populate()``, ``to_arrays(...)``.

Every system gets fresh tables for every repetition; a ``CHECKPOINT`` (untimed) runs before
each system so that one system's dirty pages are not flushed on another's clock. Everything
this script creates (schemas, a temporary Dagster home) is removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

import mp_dagster as mp
from mp_dagster import blob

# deploy/'s settings are read the way the tests read them (one parser for deploy/dagster.env)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dagster_dev_util import deploy_env  # noqa: E402

DEFAULT_URL = os.environ.get("MP_DAGSTER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROI_LEN = 64

# name: (images, ROIs per image, image side) -- image side x side float64
WORKLOADS = {
    "a": dict(images=200, rois=100, side=64, what="200 images x 100 ROIs (64-element arrays)"),
    "b": dict(images=20, rois=1000, side=64, what="20 images x 1000 ROIs"),
    "c": dict(images=100, rois=10, side=512, what="100 images of 512x512 float64 (2 MB) x 10 ROIs"),
}
QUICK_IMAGES = {"a": 20, "b": 2, "c": 10}
DAGSTER_ROIS = 100  # ROIs per key in the Dagster backfill: workload (a)'s shape

SYSTEMS = ("floor", "mp_dagster", "datajoint")
MEASURES = ("insert_images", "populate", "fetch_parts", "fetch_images")
FETCHES = ("fetch_parts", "fetch_images")


# --------------------------------------------------------------------------------------------
# data


class Data:
    """The rows every system writes: images and the per-ROI arrays (the same for every key)."""

    def __init__(self, images: int, rois: int, side: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ids = list(range(images))
        self.images = [rng.random((side, side)) for _ in self.ids]
        self.pixels = [np.arange(i, i + ROI_LEN, dtype=np.int64) for i in range(rois)]
        self.weights = [rng.random(ROI_LEN) for _ in range(rois)]
        self.rois = rois
        self.image_bytes = sum(im.nbytes for im in self.images)

    @property
    def parts(self) -> int:
        return len(self.ids) * self.rois


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


FETCH_CALLS = 3  # each fetch is timed this many times in a row: the best is the steady state


def timed_fetch(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(best, first, result) of ``FETCH_CALLS`` consecutive calls: the first call also pays
    one-time costs (a new table's catalog entries, query rendering) that a repeated fetch
    does not; every system is timed the same way. The heap is collected once before the
    series, not before each call: in this process (Dagster and DataJoint imported) a full
    collection right before a 1 ms fetch evicts the CPU caches and added 0.5 ms to it."""
    gc.collect()
    times: list[float] = []
    out = None
    for _ in range(FETCH_CALLS):
        out = None  # the previous result is freed before the clock starts
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), times[0], out


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error:  # not a superuser: the runs are just a bit noisier
            pass


def drop_schema(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# --------------------------------------------------------------------------------------------
# the floor: raw psycopg 3


def bytea_type(conn: psycopg.Connection) -> str:
    """What mp_dagster declares for blobs: bytea, TOAST-compressed with lz4 where available."""
    row = conn.execute("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'").fetchone()
    conn.commit()
    return "bytea COMPRESSION lz4" if row and row[0] and "lz4" in row[0] else "bytea"


def run_floor(url: str, schema: str, data: Data) -> dict[str, float]:
    pack, unpack = blob.pack, blob.unpack
    conn = psycopg.connect(url)
    try:
        s = f'"{schema}"'
        b = bytea_type(conn)  # the same column type mp_dagster declares
        with conn.transaction():
            conn.execute(f"CREATE SCHEMA {s}")
            conn.execute(f"CREATE TABLE {s}.image (image_id integer PRIMARY KEY, image {b} NOT NULL)")
            conn.execute(f"CREATE TABLE {s}.segmentation (image_id integer PRIMARY KEY "
                         f"REFERENCES {s}.image (image_id))")
            conn.execute(f"CREATE TABLE {s}.segmentation__roi (image_id integer NOT NULL "
                         f"REFERENCES {s}.segmentation (image_id), roi smallint NOT NULL, "
                         f"roi_pixels {b} NOT NULL, roi_weights {b} NOT NULL, PRIMARY KEY (image_id, roi))")

        def insert_images() -> None:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {s}.image (image_id, image) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int4", "bytea"])
                    for i, im in zip(data.ids, data.images):
                        copy.write_row((i, pack(im)))

        pixels, weights, nroi = data.pixels, data.weights, data.rois
        insert_master = f"INSERT INTO {s}.segmentation (image_id) VALUES (%s)"
        copy_parts = (f"COPY {s}.segmentation__roi (image_id, roi, roi_pixels, roi_weights) "
                      "FROM STDIN (FORMAT BINARY)")

        def populate() -> None:
            keys = [r[0] for r in conn.execute(
                f"SELECT image_id FROM {s}.image EXCEPT SELECT image_id FROM {s}.segmentation ORDER BY 1"
            ).fetchall()]
            conn.commit()
            for k in keys:
                with conn.transaction():
                    conn.execute(insert_master, (k,))
                    with conn.cursor() as cur, cur.copy(copy_parts) as copy:
                        copy.set_types(["int4", "int2", "bytea", "bytea"])
                        for r in range(nroi):
                            copy.write_row((k, r, pack(pixels[r]), pack(weights[r])))

        def fetch_parts() -> tuple[list, list]:
            with conn.cursor(binary=True) as cur:
                cur.execute(f"SELECT roi_pixels, roi_weights FROM {s}.segmentation__roi ORDER BY image_id, roi")
                rows = cur.fetchall()
            conn.commit()
            return [unpack(p) for p, _ in rows], [unpack(w) for _, w in rows]

        def fetch_images() -> list:
            with conn.cursor(binary=True) as cur:
                cur.execute(f"SELECT image FROM {s}.image ORDER BY image_id")
                rows = cur.fetchall()
            conn.commit()
            return [unpack(r[0]) for r in rows]

        out = {}
        out["insert_images"], _ = timed(insert_images)
        out["populate"], _ = timed(populate)
        out["fetch_parts"], out["fetch_parts_first"], (p, w) = timed_fetch(fetch_parts)
        assert len(p) == data.parts and np.array_equal(w[-1], weights[-1])
        out["fetch_images"], out["fetch_images_first"], ims = timed_fetch(fetch_images)
        assert len(ims) == len(data.ids) and np.array_equal(ims[-1], data.images[-1])
        return out
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# mp_dagster


def declare_mp(schema: mp.Schema, data: Data | None, rois: int | None = None):
    """The seeds' Image -> Segmentation(ROI); ``make`` inserts pre-generated arrays."""
    nroi = data.rois if data is not None else rois
    if data is not None:
        pixels, weights = data.pixels, data.weights
    else:
        rng = np.random.default_rng(1)
        pixels = [np.arange(i, i + ROI_LEN, dtype=np.int64) for i in range(nroi)]
        weights = [rng.random(ROI_LEN) for _ in range(nroi)]

    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        """

    @schema
    class Segmentation(mp.Computed):
        definition = """  # image segmentation
        -> Image
        """

        class ROI(mp.Part):
            definition = """  # Region of interest resulting from segmentation
            -> Segmentation
            roi  : smallint   # roi number
            ---
            roi_pixels  : longblob   #  indices of pixels
            roi_weights : longblob   #  weights of pixels
            """

        def make(self, key):
            self.insert1(key)
            self.ROI.insert([dict(key, roi=r, roi_pixels=pixels[r], roi_weights=weights[r])
                             for r in range(nroi)])

    return Image, Segmentation


def run_mp(url: str, schema_name: str, data: Data) -> dict[str, float]:
    schema = mp.Schema(schema_name, database_url=url)
    try:
        Image, Segmentation = declare_mp(schema, data)
        rows = [dict(image_id=i, image=im) for i, im in zip(data.ids, data.images)]
        out = {}
        out["insert_images"], _ = timed(lambda: Image.insert(rows))
        out["populate"], res = timed(lambda: Segmentation.populate())
        assert res["success_count"] == len(data.ids)
        out["fetch_parts"], out["fetch_parts_first"], (p, w) = timed_fetch(
            lambda: Segmentation.ROI.fetch("roi_pixels", "roi_weights"))
        assert len(p) == data.parts and np.array_equal(w[-1], data.weights[-1])
        out["fetch_images"], out["fetch_images_first"], ims = timed_fetch(lambda: Image.fetch("image"))
        assert len(ims) == len(data.ids) and np.array_equal(ims[-1], data.images[-1])
        return out
    finally:
        schema.drop(force=True)


# --------------------------------------------------------------------------------------------
# the peer: DataJoint 2.x


def import_datajoint(url: str):
    """DataJoint 2.x on PostgreSQL: its settings come from the environment, read at import."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    os.environ.update(
        DJ_BACKEND="postgresql",
        DJ_HOST=str(info.get("host", "127.0.0.1")),
        DJ_PORT=str(info.get("port", 5432)),
        DJ_USER=str(info.get("user", "postgres")),
        DJ_PASS=str(info.get("password") or "unused"),  # demanded even where PostgreSQL trusts us
        DJ_DATABASE_NAME=str(info.get("dbname", "postgres")),
        DJ_USE_TLS="false",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import datajoint as dj
    import logging

    logging.getLogger("datajoint").setLevel(logging.WARNING)
    return dj


def run_datajoint(dj: Any, schema_name: str, data: Data) -> dict[str, float]:
    schema = dj.Schema(schema_name)
    pixels, weights, nroi = data.pixels, data.weights, data.rois
    try:
        @schema
        class Image(dj.Manual):
            definition = """
            image_id : int32
            ---
            image : <blob>
            """

        @schema
        class Segmentation(dj.Computed):
            definition = """  # image segmentation
            -> Image
            """

            class ROI(dj.Part):
                definition = """  # Region of interest resulting from segmentation
                -> master
                roi : int16
                ---
                roi_pixels : <blob>
                roi_weights : <blob>
                """

            def make(self, key):
                self.insert1(key)
                self.ROI.insert([dict(key, roi=r, roi_pixels=pixels[r], roi_weights=weights[r])
                                 for r in range(nroi)])

        rows = [dict(image_id=i, image=im) for i, im in zip(data.ids, data.images)]
        out = {}
        out["insert_images"], _ = timed(lambda: Image.insert(rows))
        out["populate"], _ = timed(lambda: Segmentation.populate())
        assert len(Segmentation()) == len(data.ids)
        out["fetch_parts"], out["fetch_parts_first"], (p, w) = timed_fetch(
            lambda: Segmentation.ROI.to_arrays("roi_pixels", "roi_weights", order_by="KEY"))
        assert len(p) == data.parts and np.array_equal(w[-1], data.weights[-1])
        out["fetch_images"], out["fetch_images_first"], ims = timed_fetch(
            lambda: Image.to_arrays("image", order_by="KEY"))
        ims = ims[0] if isinstance(ims, tuple) else ims
        assert len(ims) == len(data.ids) and np.array_equal(ims[-1], data.images[-1])
        return out
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema.drop(prompt=False)


# --------------------------------------------------------------------------------------------
# the three systems over the workloads


def run_workloads(args: argparse.Namespace, tag: str, dj: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    systems = [s for s in SYSTEMS if not (s == "datajoint" and dj is None)]
    for name in args.workloads:
        spec = dict(WORKLOADS[name])
        if args.quick:
            spec["images"] = QUICK_IMAGES[name]
        data = Data(spec["images"], spec["rois"], spec["side"])
        samples: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
        for rep in range(args.repeat):
            for system in systems:
                schema = f"mpbench_{tag}_{name}{rep}_{system[:2]}"
                checkpoint(args.url)
                try:
                    if system == "floor":
                        got = run_floor(args.url, schema, data)
                    elif system == "mp_dagster":
                        got = run_mp(args.url, schema, data)
                    else:
                        got = run_datajoint(dj, schema, data)
                finally:
                    drop_schema(args.url, schema)
                for m, v in got.items():
                    samples[system].setdefault(m, []).append(v)
                print(f"  [{name} rep {rep + 1}/{args.repeat}] {system:10s} "
                      + "  ".join(f"{m} {got[m]:7.3f}s" for m in MEASURES), flush=True)
        best = {s: {m: min(v) for m, v in ms.items()} for s, ms in samples.items()}
        results[name] = {
            "what": spec["what"] if not args.quick else f"{spec['images']} images x {spec['rois']} ROIs "
                                                        f"({spec['side']}x{spec['side']} images)",
            "images": len(data.ids), "rois_per_image": data.rois, "part_rows": data.parts,
            "image_mb": data.image_bytes / 1e6,
            "seconds_best": best, "seconds_all": samples,
            "rates": {
                s: {
                    "keys_per_s": len(data.ids) / b["populate"],
                    "part_rows_per_s": data.parts / b["populate"],
                    "image_insert_mb_per_s": data.image_bytes / 1e6 / b["insert_images"],
                    "fetch_parts_s": b["fetch_parts"],
                    "fetch_images_s": b["fetch_images"],
                }
                for s, b in best.items()
            },
            "ratios": {
                "mp_over_floor": {m: best["mp_dagster"][m] / best["floor"][m] for m in MEASURES},
                **({"datajoint_over_mp": {m: best["datajoint"][m] / best["mp_dagster"][m] for m in MEASURES}}
                   if "datajoint" in best else {}),
            },
            # the first of the consecutive fetches (one-time costs included), for the record
            "first_fetch_ratios": {
                "mp_over_floor": {m: best["mp_dagster"][f"{m}_first"] / best["floor"][f"{m}_first"]
                                  for m in FETCHES},
                **({"datajoint_over_mp": {m: best["datajoint"][f"{m}_first"] / best["mp_dagster"][f"{m}_first"]
                                          for m in FETCHES}} if "datajoint" in best else {}),
            },
        }
    return results


# --------------------------------------------------------------------------------------------
# Dagster: a single-run backfill through the IO manager vs populate(); a sensor tick


def quiet_dagster() -> None:
    """No beta/preview warnings and no INFO lines from Dagster on the terminal."""
    import logging

    import dagster as dg

    for category in (getattr(dg, "BetaWarning", None), getattr(dg, "PreviewWarning", None)):
        if category is not None:
            warnings.filterwarnings("ignore", category=category)
    logging.getLogger("dagster").setLevel(logging.WARNING)


# Dagster instance configurations, compared in one run: the storage class and the environment
# variables Dagster reads when it writes events (so they can change between runs in one process)
DAGSTER_SETTINGS: dict[str, dict[str, Any]] = {
    # dagster-postgres out of the box: a new connection per statement, one event-log write per
    # planned and per materialized partition
    "stock": {"storage": "postgres", "env": {}},
    # deploy/ as shipped: pooled storage that also writes a run's planned events in one INSERT
    # (dagster.yaml), event batching on (dagster.env); Dagster's UI semantics unchanged
    "deploy": {"storage": "deploy", "env": deploy_env(optional=False)},
    # and dagster.env's optional setting: ONE planned event per run instead of one per partition;
    # the trade-off: partitions of failed or running runs no longer show as failed or in progress
    "deploy+subset": {"storage": "deploy", "env": deploy_env(optional=True)},
}
DAGSTER_TARGET_SETTING = "deploy"


@contextmanager
def dagster_settings(name: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for s in DAGSTER_SETTINGS.values() for k in s["env"]}
    for k in saved:
        os.environ.pop(k, None)
    os.environ.update(DAGSTER_SETTINGS[name]["env"])
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def dagster_instance(home: Path, url: str, storage: str) -> Iterator[Any]:
    """A fresh Dagster instance. ``deploy``: deploy/dagster.yaml's storage (dagster-postgres,
    pooled) and ``postgres`` (stock dagster-postgres), each in a database of its own on the
    benchmark's server, dropped afterwards; ``sqlite``: ``DagsterInstance.local_temp`` (what
    ``dagster dev`` uses without a dagster.yaml)."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    if storage == "sqlite":
        with dg.DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as instance:
            yield instance
        return
    info = psycopg.conninfo.conninfo_to_dict(url)
    database = f"{home.name}_{uuid.uuid4().hex[:6]}".lower()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))
    try:
        config = {"postgres_db": {"username": str(info.get("user", "postgres")),
                                  "password": str(info.get("password") or ""),
                                  "hostname": str(info.get("host", "127.0.0.1")),
                                  "port": int(info.get("port", 5432)), "db_name": database,
                                  "scheme": "postgresql+psycopg2"}}
        block = ({"custom": {"module": "mp_dagster.dagster.instance_storage", "class": "PooledPostgresStorage",
                             "config": config}} if storage == "deploy" else {"postgres": config})
        (home / "dagster.yaml").write_text(json.dumps({"storage": block, "telemetry": {"enabled": False}}))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(database)))


QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # no terminal I/O on the clock


def range_tags(keys: list[str]) -> dict[str, str]:
    """A single run over all ``keys`` (what a single-run backfill launches)."""
    return {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}


def run_dagster_noop(n: int, home: Path, url: str, storage: str) -> float:
    """Dagster's own cost: a single-run backfill of ``n`` dynamic partitions of an asset that
    computes nothing, through an IO manager that writes nothing (same instance kind)."""
    import dagster as dg

    partitions = dg.DynamicPartitionsDefinition(name="mpbench_noop_keys")

    class NoopIOManager(dg.IOManager):
        def handle_output(self, context, obj):
            pass

        def load_input(self, context):
            return None

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key="noop_io")
    def noop(context):  # no annotation: this module has postponed annotations
        return {k: None for k in context.partition_keys}

    defs = dg.Definitions(assets=[noop], jobs=[dg.define_asset_job("noop_job", selection=[noop])],
                          resources={"noop_io": dg.IOManagerDefinition.hardcoded_io_manager(NoopIOManager())})
    keys = [str(i) for i in range(n)]
    with dagster_instance(home, url, storage) as instance:
        instance.add_dynamic_partitions("mpbench_noop_keys", keys)
        job = defs.resolve_job_def("noop_job")
        elapsed, result = timed(lambda: job.execute_in_process(instance=instance, tags=range_tags(keys),
                                                               run_config=QUIET))
        assert result.success
    return elapsed


def run_dagster_overhead(args: argparse.Namespace, tag: str, tmp: Path) -> dict[str, Any]:
    """One run that backfills ``n`` partitions through the IO manager, against ``populate()`` of
    the same keys (fresh tables each), under each of Dagster's event settings; and Dagster alone."""
    import dagster as dg

    from mp_dagster.dagster import build_definitions

    n = 100 if args.quick else 1000
    rois = args.dagster_rois
    out: dict[str, Any] = {"partitions": n, "rois_per_key": rois, "storage": args.dagster_storage,
                           "settings": DAGSTER_SETTINGS, "target_setting": DAGSTER_TARGET_SETTING, "by_setting": {}}
    image = np.zeros((8, 8))
    # populate() of the same keys, fresh tables
    schema = mp.Schema(f"mpbench_{tag}_pop", database_url=args.url)
    try:
        Image, Segmentation = declare_mp(schema, None, rois)
        Image.insert([dict(image_id=i, image=image) for i in range(n)])
        checkpoint(args.url)
        out["populate_s"], res = timed(lambda: Segmentation.populate())
        assert res["success_count"] == n
    finally:
        schema.drop(force=True)
    for setting in DAGSTER_SETTINGS:
        row: dict[str, Any] = {}
        storage = "sqlite" if args.dagster_storage == "sqlite" else DAGSTER_SETTINGS[setting]["storage"]
        with dagster_settings(setting), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the asset job over all partitions in ONE run (BackfillPolicy.single_run), fresh tables
            schema = mp.Schema(f"mpbench_{tag}_dg", database_url=args.url)
            try:
                Image, Segmentation = declare_mp(schema, None, rois)
                Image.insert([dict(image_id=i, image=image) for i in range(n)])
                defs = build_definitions(schema, checks=False, keys_per_run=1)  # the keys, one request each
                with dagster_instance(tmp / f"mpbench_{tag}_backfill", args.url, storage) as instance:
                    tick, _ = sensor_tick(defs, Segmentation, instance)  # adds the partitions
                    keys = [r.partition_key or r.tags["dagster/partition"] for r in tick.run_requests]
                    assert len(keys) == n
                    job = defs.resolve_job_def(f"{schema.name}__segmentation_job")
                    checkpoint(args.url)
                    row["backfill_s"], result = timed(
                        lambda job=job, keys=keys, instance=instance: job.execute_in_process(
                            instance=instance, tags=range_tags(keys), run_config=QUIET))
                    assert result.success and len(Segmentation()) == n and len(Segmentation.ROI()) == n * rois
                    asset_key = dg.AssetKey([schema.name, "segmentation"])
                    assert len(instance.get_materialized_partitions(asset_key)) == n
            finally:
                schema.drop(force=True)
            row["dagster_noop_backfill_s"] = run_dagster_noop(n, tmp / f"mpbench_{tag}_noop", args.url, storage)
        row["ratio_backfill_over_populate"] = row["backfill_s"] / out["populate_s"]
        row["ratio_backfill_over_dagster_noop"] = row["backfill_s"] / row["dagster_noop_backfill_s"]
        row["added_ms_per_partition"] = (row["backfill_s"] - out["populate_s"]) / n * 1e3
        row["dagster_noop_ms_per_partition"] = row["dagster_noop_backfill_s"] / n * 1e3
        out["by_setting"][setting] = row
        print(f"  [dagster {setting}] backfill {row['backfill_s']:.2f} s, no-op {row['dagster_noop_backfill_s']:.2f} s,"
              f" populate {out['populate_s']:.2f} s", flush=True)
    target = out["by_setting"][DAGSTER_TARGET_SETTING]
    out["backfill_s"] = target["backfill_s"]
    out["ratio_backfill_over_populate"] = target["ratio_backfill_over_populate"]
    return out


def sensor_tick(defs: Any, table: Any, instance: Any) -> tuple[Any, float]:
    import dagster as dg

    sensor = defs.resolve_sensor_def(f"{table.schema.name}__{table.table_name}_pending")
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs)
    started = time.perf_counter()
    result = sensor.evaluate_tick(context)
    elapsed = time.perf_counter() - started
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, elapsed


def run_sensor(args: argparse.Namespace, tag: str, tmp: Path) -> dict[str, Any]:
    from mp_dagster.dagster import build_definitions

    total, new = (10_000, 1_000) if args.quick else (100_000, 10_000)
    schema = mp.Schema(f"mpbench_{tag}_sensor", database_url=args.url)
    out: dict[str, Any] = {"upstream_rows": total, "new_rows": new}
    try:
        Image, Segmentation = declare_mp(schema, None, 1)
        tiny = np.zeros(1)
        out["setup_insert_images_s"], _ = timed(
            lambda: Image.insert([dict(image_id=i, image=tiny) for i in range(total)]))
        out["setup_insert_done_s"], _ = timed(lambda: Segmentation.insert(
            [dict(image_id=i) for i in range(total - new)], allow_direct_insert=True))
        defs = build_definitions(schema, checks=False, keys_per_run=1)  # a request per key, as timed before
        storage = "sqlite" if args.dagster_storage == "sqlite" else "deploy"
        with warnings.catch_warnings(), dagster_instance(tmp / f"mpbench_{tag}_sensor", args.url, storage) as instance:
            warnings.simplefilter("ignore")
            checkpoint(args.url)
            result, out["tick_s"] = sensor_tick(defs, Segmentation, instance)
            assert len(result.run_requests) == new, len(result.run_requests)
    finally:
        schema.drop(force=True)
    return out


# --------------------------------------------------------------------------------------------
# the blob codec against ndarray.tobytes() / np.frombuffer


def best_of(fn: Callable[[], Any], repeat: int, number: int) -> float:
    """Seconds per call: the fastest of ``repeat`` batches of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def run_codec(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    big = rng.random((512, 512))
    many = [rng.random(ROI_LEN) for _ in range(2_000 if args.quick else 20_000)]
    for name, arrays, rep in (("2MB", [big], 30 if args.quick else 200), ("64-element", many, 3 if args.quick else 10)):
        packed = [blob.pack(a) for a in arrays]
        raw = [a.tobytes() for a in arrays]
        writable = [bytearray(p) for p in packed]
        dt = arrays[0].dtype
        pack_s = best_of(lambda arrays=arrays: [blob.pack(a) for a in arrays], 5, rep)
        tobytes_s = best_of(lambda arrays=arrays: [a.tobytes() for a in arrays], 5, rep)
        unpack_s = best_of(lambda packed=packed: [blob.unpack(p) for p in packed], 5, rep)
        unpack_w_s = best_of(lambda writable=writable: [blob.unpack(p) for p in writable], 5, rep)
        frombuffer_s = best_of(lambda raw=raw, dt=dt: [np.frombuffer(r, dt) for r in raw], 5, rep)
        frombuffer_copy_s = best_of(lambda raw=raw, dt=dt: [np.frombuffer(r, dt).copy() for r in raw], 5, rep)
        k = len(arrays)
        out[name] = {
            "arrays": k, "array_bytes": arrays[0].nbytes, "blob_bytes": len(packed[0]),
            "pack_us": pack_s / k * 1e6, "tobytes_us": tobytes_s / k * 1e6,
            "unpack_bytes_us": unpack_s / k * 1e6, "unpack_writable_us": unpack_w_s / k * 1e6,
            "frombuffer_us": frombuffer_s / k * 1e6, "frombuffer_copy_us": frombuffer_copy_s / k * 1e6,
            "pack_over_tobytes": pack_s / tobytes_s,
            "unpack_over_frombuffer_copy": unpack_s / frombuffer_copy_s,
            "unpack_writable_over_frombuffer": unpack_w_s / frombuffer_s,
            "pack_mb_per_s": arrays[0].nbytes * k / pack_s / 1e6,
            "unpack_mb_per_s": arrays[0].nbytes * k / unpack_s / 1e6,
        }
    return out


# --------------------------------------------------------------------------------------------
# report


def machine(url: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        settings = {k: conn.execute(f"SHOW {k}").fetchone()[0]
                    for k in ("synchronous_commit", "fsync", "shared_buffers")}
    try:
        from importlib.metadata import version

        djv = version("datajoint")
    except Exception:  # noqa: BLE001
        djv = None
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "postgresql": pg, "postgresql_settings": settings, "psycopg": psycopg.__version__,
        "numpy": np.__version__, "datajoint": djv, "platform": platform.platform(),
    }


def fmt_table(results: dict[str, Any]) -> str:
    lines = []
    head = (f"{'workload':8s} {'system':10s} {'img ins s':>9s} {'MB/s':>7s} {'populate s':>10s} "
            f"{'keys/s':>8s} {'parts/s':>9s} {'fetch parts s':>13s} {'fetch imgs s':>12s}")
    lines.append(head)
    lines.append("-" * len(head))
    for name, r in results.items():
        for s, b in r["seconds_best"].items():
            rate = r["rates"][s]
            lines.append(
                f"{name:8s} {s:10s} {b['insert_images']:9.3f} {rate['image_insert_mb_per_s']:7.1f} "
                f"{b['populate']:10.3f} {rate['keys_per_s']:8.1f} {rate['part_rows_per_s']:9.0f} "
                f"{b['fetch_parts']:13.3f} {b['fetch_images']:12.3f}"
            )
        for label, key in (("mp/floor", "mp_over_floor"), ("DJ/mp", "datajoint_over_mp")):
            if key in r["ratios"]:
                q = r["ratios"][key]
                lines.append(
                    f"{name:8s} {label:10s} {q['insert_images']:9.2f}x {'':7s} {q['populate']:9.2f}x "
                    f"{'':8s} {'':9s} {q['fetch_parts']:12.2f}x {q['fetch_images']:11.2f}x"
                )
        first = r["first_fetch_ratios"]
        lines.append(f"{name:8s} first fetch of {FETCH_CALLS} (one-time costs included): mp/floor "
                     + " / ".join(f"{first['mp_over_floor'][m]:.2f}x" for m in FETCHES)
                     + ("; DJ/mp " + " / ".join(f"{first['datajoint_over_mp'][m]:.2f}x" for m in FETCHES)
                        if "datajoint_over_mp" in first else "") + " (parts / images)")
        lines.append("")
    return "\n".join(lines)


def check_targets(report: dict[str, Any]) -> list[tuple[str, bool, str]]:
    out = []
    for name, r in report.get("workloads", {}).items():
        q = r["ratios"]["mp_over_floor"]
        for m in MEASURES:
            out.append((f"{name}: mp/floor {m} <= 1.25", q[m] <= 1.25, f"{q[m]:.2f}x"))
        if "datajoint_over_mp" in r["ratios"]:
            d = r["ratios"]["datajoint_over_mp"]
            for m in MEASURES:
                need = 5.0 if (m != "populate" or name in ("a", "b")) else 1.0
                out.append((f"{name}: DJ/mp {m} >= {need:g}", d[m] >= need, f"{d[m]:.2f}x"))
    if "dagster" in report:
        v = report["dagster"]["ratio_backfill_over_populate"]
        out.append((f"dagster backfill / populate <= 1.5 ({report['dagster']['target_setting']})", v <= 1.5,
                    f"{v:.2f}x"))
    if "sensor" in report:
        v = report["sensor"]["tick_s"]
        limit = 10.0
        out.append((f"sensor tick ({report['sensor']['upstream_rows']} rows) < {limit:g} s", v < limit, f"{v:.2f} s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every workload ~10x (smoke run)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (default: %(default)s)")
    parser.add_argument("--repeat", type=int, help="repetitions per system and workload (best kept)")
    parser.add_argument("--workloads", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--skip-peer", action="store_true", help="do not run DataJoint")
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--dagster-rois", type=int, default=DAGSTER_ROIS,
                        help="ROIs per key in the Dagster backfill (default: %(default)s, workload (a)'s shape)")
    parser.add_argument("--dagster-storage", choices=("postgres", "sqlite"), default="postgres",
                        help="Dagster instance storage: dagster-postgres on the same server (the default: stock "
                             "and deploy/dagster.yaml's pooled storage, per setting) or DagsterInstance.local_temp's "
                             "SQLite for every setting")
    parser.add_argument("--skip-sensor", action="store_true")
    parser.add_argument("--skip-codec", action="store_true")
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    tag = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {"machine": machine(args.url), "quick": args.quick, "repeat": args.repeat,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("machine:", json.dumps(report["machine"]), flush=True)
    dj = None
    if not args.skip_peer:
        try:
            dj = import_datajoint(args.url)
        except ImportError:
            print("DataJoint is not installed (pip install -e '.[bench]'): the peer is skipped", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mpbench_"))
    if not (args.skip_dagster and args.skip_sensor):
        quiet_dagster()
    try:
        if args.workloads:
            report["workloads"] = run_workloads(args, tag, dj)
            print()
            print(fmt_table(report["workloads"]))
        if not args.skip_dagster:
            report["dagster"] = run_dagster_overhead(args, tag, tmp)
            d = report["dagster"]
            print(f"Dagster single-run backfill of {d['partitions']} partitions x {d['rois_per_key']} ROIs "
                  f"({d['storage']} instance); populate() of the same keys: {d['populate_s']:.2f} s", flush=True)
            for setting, row in d["by_setting"].items():
                print(f"  {setting:15s} backfill {row['backfill_s']:6.2f} s = {row['ratio_backfill_over_populate']:5.2f}x "
                      f"populate ({row['added_ms_per_partition']:+.2f} ms per partition); Dagster alone (no-op "
                      f"asset and IO manager) {row['dagster_noop_backfill_s']:6.2f} s", flush=True)
        if not args.skip_sensor:
            report["sensor"] = run_sensor(args, tag, tmp)
            d = report["sensor"]
            print(f"Sensor tick over {d['upstream_rows']} upstream rows ({d['new_rows']} new): {d['tick_s']:.2f} s",
                  flush=True)
        if not args.skip_codec:
            report["codec"] = run_codec(args)
            for name, c in report["codec"].items():
                print(f"Codec {name}: pack {c['pack_us']:.2f} us vs tobytes {c['tobytes_us']:.2f} us "
                      f"({c['pack_over_tobytes']:.2f}x); unpack(bytes) {c['unpack_bytes_us']:.2f} us vs "
                      f"frombuffer().copy() {c['frombuffer_copy_us']:.2f} us ({c['unpack_over_frombuffer_copy']:.2f}x); "
                      f"unpack(bytearray) {c['unpack_writable_us']:.2f} us vs frombuffer {c['frombuffer_us']:.2f} us "
                      f"({c['unpack_writable_over_frombuffer']:.2f}x)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["targets"] = [{"target": t, "met": ok, "value": v} for t, ok, v in check_targets(report)]
    # a quick run is a smoke test: 10x smaller workloads and one repetition put fixed costs and
    # noise first, so its ratios say nothing about the targets, which are for the full run
    print("\nTargets (quick run: smoke test only, the targets are for the full run):" if args.quick else "\nTargets:")
    for t, ok, v in check_targets(report):
        print(f"  [{'ok' if ok else 'MISSED'}] {t}: {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
