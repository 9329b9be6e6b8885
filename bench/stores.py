"""Object-store attributes: issue 12's numbers, in ONE run on one machine.

Usage (from the repository root)::

    python bench/stores.py [--count 8] [--mb 128] [--refs 10000] [--dir /data/bench] [--url URL]
                           [--repeat 3] [--skip-inrow] [--skip-peer] [--json out.json]

* ``<npy@store>`` on a file store (``--dir``, a temporary folder by default) vs ``np.save`` of
  the same arrays to the same disk (plain, and followed by ``fsync`` as the store does before
  the row can commit): ``--count`` arrays of ``--mb`` MB each (default 8 x 128 MB = 1 GB).
  Loading: ``ref.load(mmap=False)`` (read into memory) vs ``np.load``; ``ref.load()`` (the
  memory map, pages touched by a sum) beside them. Peak extra memory of one insert and one
  load, measured with tracemalloc (numpy reports its allocations to it), as a fraction of one
  array.
* Fetching ``--refs`` lazy references (metadata only) vs a plain fetch of the same rows
  without the store attribute.
* The same arrays through an in-row ``longblob`` on PostgreSQL (``--skip-inrow`` to skip).
* DataJoint 2.3.5's ``<blob@store>`` on the same disk, when it is installed (``bench`` extra).

The tables live on PostgreSQL (``--url``, default ``$MP_DAGSTER_TEST_DATABASE_URL`` or the test
database) in a schema of their own, dropped at the end with the store folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mp_dagster as mp  # noqa: E402


def timed(func):
    os.sync()  # the previous phase's dirty pages are not written back on this one's clock
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def peak_of(func) -> tuple[int, object]:
    tracemalloc.start()
    try:
        value = func()
        return tracemalloc.get_traced_memory()[1], value
    finally:
        tracemalloc.stop()


def save_fsync(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--refs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the insert/save and load cases (best kept)")
    parser.add_argument("--dir", default=None, help="where the store and np.save's files go")
    parser.add_argument("--url", default=os.environ.get("MP_DAGSTER_TEST_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip-inrow", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mp-bench-stores-", dir=args.dir))
    os.environ["MP_DAGSTER_STORE_BENCH"] = (work / "store").as_uri()
    plain = work / "plain"
    plain.mkdir()
    rng = np.random.default_rng(0)
    n = args.mb * 2**20 // 8
    arrays = [rng.random(n) for _ in range(args.count)]
    total = sum(a.nbytes for a in arrays)
    schema = mp.Schema(f"bench_stores_{uuid.uuid4().hex[:8]}", database_url=args.url)
    results: dict[str, object] = {"arrays": args.count, "mb_each": args.mb, "refs": args.refs}
    try:
        @schema
        class Movie(mp.Manual):
            definition = """
            movie : int
            ---
            frames : <npy@bench>
            """

        @schema
        class Trace(mp.Manual):
            definition = """
            trace : int
            ---
            label : varchar(32)
            data : <npy@bench>
            """

        # -- 1. insert: <npy@store> vs np.save (+ fsync); rounds interleaved, the best kept ----
        t_save = t_save_sync = t_insert = float("inf")
        for r in range(args.repeat):
            # new files every round, as the store writes new objects (overwriting is cheaper)
            t_save = min(t_save, timed(lambda r=r: [np.save(plain / f"{r}_{i}.npy", a)
                                                    for i, a in enumerate(arrays)])[0])
            t_save_sync = min(t_save_sync, timed(
                lambda r=r: [save_fsync(plain / f"s{r}_{i}.npy", a) for i, a in enumerate(arrays)])[0])
            t_insert = min(t_insert, timed(lambda r=r: [Movie.insert1(dict(movie=r * len(arrays) + i, frames=a))
                                                        for i, a in enumerate(arrays)])[0])
        # -- 2. load: ref.load(mmap=False) vs np.load; the memory map touched by a sum --------
        refs = (Movie & [{"movie": i} for i in range(args.count)]).fetch("frames", order_by="movie")
        t_npload = t_load = float("inf")
        for _ in range(args.repeat):
            t_npload = min(t_npload, timed(lambda: [np.load(plain / f"0_{i}.npy") for i in range(args.count)])[0])
            t_load = min(t_load, timed(lambda: [r.load(mmap=False) for r in refs])[0])
        t_mmap_sum, _ = timed(lambda: [float(r.load().sum()) for r in refs])
        t_npload_sum, _ = timed(lambda: [float(np.load(plain / f"0_{i}.npy").sum()) for i in range(args.count)])
        # -- 3. peak extra memory of one insert and one load ----------------------------------
        peak_insert, _ = peak_of(lambda: Movie.insert1(dict(movie=-1, frames=arrays[0])))
        peak_load, _ = peak_of(lambda: refs[0].load(mmap=False))
        peak_mmap, _ = peak_of(lambda: float(refs[0].load().sum()))
        results["npy"] = {
            "insert_s": t_insert, "np_save_s": t_save, "np_save_fsync_s": t_save_sync,
            "insert_vs_np_save": t_insert / t_save, "insert_vs_np_save_fsync": t_insert / t_save_sync,
            "load_s": t_load, "np_load_s": t_npload, "load_vs_np_load": t_load / t_npload,
            "mmap_sum_s": t_mmap_sum, "np_load_sum_s": t_npload_sum,
            "insert_MBps": total / t_insert / 2**20,
            "peak_extra_insert_per_array": peak_insert / arrays[0].nbytes,
            "peak_extra_load_per_array": peak_load / arrays[0].nbytes,
            "peak_extra_mmap_sum_per_array": peak_mmap / arrays[0].nbytes,
        }
        # -- 4. lazy references: metadata only -------------------------------------------------
        t_small, _ = timed(lambda: Trace.insert([dict(trace=i, label=f"t{i}", data=np.arange(100.0) + i)
                                                 for i in range(args.refs)]))
        results["small_npy_insert_per_row_ms"] = t_small / args.refs * 1e3
        best_plain = best_refs = float("inf")
        for _ in range(7):
            best_plain = min(best_plain, timed(lambda: Trace.fetch("trace", "label"))[0])
            best_refs = min(best_refs, timed(lambda: Trace.fetch("trace", "label", "data"))[0])
        results["lazy_refs"] = {"plain_fetch_s": best_plain, "refs_fetch_s": best_refs,
                                "ratio": best_refs / best_plain}
        # -- 5. the same arrays in-row (longblob) on PostgreSQL ------------------------------
        if not args.skip_inrow:
            @schema
            class InRow(mp.Manual):
                definition = """
                movie : int
                ---
                frames : longblob
                """

            t_in, _ = timed(lambda: [InRow.insert1(dict(movie=i, frames=a)) for i, a in enumerate(arrays)])
            t_out, _ = timed(lambda: [(InRow & {"movie": i}).fetch1("frames") for i in range(args.count)])
            results["inrow_longblob_pg"] = {"insert_s": t_in, "fetch_s": t_out,
                                            "insert_vs_npy": t_in / t_insert, "fetch_vs_npy_load": t_out / t_load}
        # -- 6. DataJoint 2.3.5's <blob@store> -----------------------------------------------
        if not args.skip_peer:
            results["datajoint_blob_store"] = datajoint_peer(args, arrays, work)
    finally:
        schema.drop(force=True)
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2, default=lambda v: round(v, 4) if isinstance(v, float) else str(v))
    print(text)
    if args.json:
        Path(args.json).write_text(text)


def datajoint_peer(args: argparse.Namespace, arrays: list[np.ndarray], work: Path) -> dict[str, object]:
    """DataJoint 2.x's ``<blob@store>`` on a file store in the same folder, if it is installed:
    insert and fetch of the same arrays (its tables on the same PostgreSQL)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from run import import_datajoint

        dj = import_datajoint(args.url)
    except ImportError as exc:
        return {"skipped": f"datajoint is not installed ({exc}); pip install -e '.[bench]'"}
    (work / "dj").mkdir()
    dj.config["stores"] = {"default": "bench", "bench": {"protocol": "file", "location": str(work / "dj")}}
    schema = dj.Schema(f"bench_dj_stores_{uuid.uuid4().hex[:8]}")
    try:
        @schema
        class Movie(dj.Manual):
            definition = """
            movie : int
            ---
            frames : <blob@bench>
            """

        t_in, _ = timed(lambda: [Movie.insert1(dict(movie=i, frames=a)) for i, a in enumerate(arrays)])
        t_out, _ = timed(lambda: [(Movie & {"movie": i}).fetch1("frames") for i in range(len(arrays))])
        peak, _ = peak_of(lambda: Movie.insert1(dict(movie=len(arrays), frames=arrays[0])))
        return {"version": dj.__version__, "insert_s": t_in, "fetch_s": t_out,
                "peak_extra_insert_per_array": peak / arrays[0].nbytes}
    except Exception as exc:  # noqa: BLE001 - the peer's failure is a result, not a crash
        return {"failed": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        try:
            schema.drop(prompt=False)
        except Exception:  # noqa: BLE001, S110 - best effort
            pass


if __name__ == "__main__":
    main()
