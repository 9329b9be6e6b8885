"""Concurrent workers (issue 11): duplicate ``make`` calls and speed-up of parallel populate, in
ONE run on PostgreSQL, beside the sensor-to-written time under ``dagster dev``.

Usage (from the repository root)::

    python bench/workers.py [--quick] [--json out.json] [--url postgresql://...]
                            [--keys 200] [--compute-ms 50] [--repeat 3]
                            [--skip-sensor] [--sensor-images 40,400] [--sensor-timeout 300]

The pipeline: ``Source(key)`` -> ``Work`` with part ``Work.Item(item; value, data)``. ``make``
spends ``--compute-ms`` of CPU (a busy loop on the thread's CPU clock, not a sleep), then
inserts the master row and ``PARTS`` part rows. Every ``make`` call appends one line, ``key
pid``, to a call log opened with ``O_APPEND`` (one ``write`` per line), so duplicate calls are
counted exactly: calls minus distinct keys.

Measured, each on fresh tables:

* duplicate ``make`` calls with 2 and 4 concurrent workers: (a) independent ``populate()``
  processes started together (subprocesses behind a barrier), (b) ``populate(processes=N)``,
  (c) overlapping Dagster runs: N subprocesses each ``execute_in_process`` the table's asset job
  over an overlapping partition range, on one ``DAGSTER_HOME`` (as
  ``tests/test_reliability.py::test_four_dagster_runs_with_overlapping_ranges``);
* wall time of ``populate(processes=2)`` against ``processes=1`` and of two independent
  ``populate()`` processes against one (best of ``--repeat``; the subprocesses are timed from the
  barrier's release to the last one's end, so Python's start-up is not on the clock);
* beside them, ``bench/sensor_runs.py``'s measure: new images under ``dagster dev`` (demo
  project, SQLite instance, ``keys_per_run="auto"``: the defaults) until every segmentation is
  written, with the wait bounded by ``--sensor-timeout`` (what was written by then is reported).

Targets: 0 duplicates everywhere; both speed-ups >= 1.8x. A missed target prints MISSED; the
exit status is non-zero only on a crash. ``--quick`` (40 keys, 10 ms, one repetition, 4 and 8
images) is a smoke run: its figures are not the targets. The URL is
``$MP_DAGSTER_BENCH_DATABASE_URL``, else ``$MP_DAGSTER_TEST_DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``. Schemas are ``mpbench_<random>_*``, dropped at the
end, with the temporary call logs and Dagster homes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import mp_dagster as mp

BENCH = Path(__file__).resolve().parent
DEFAULT_URL = (os.environ.get("MP_DAGSTER_BENCH_DATABASE_URL") or os.environ.get("MP_DAGSTER_TEST_DATABASE_URL")
               or "postgresql://postgres@127.0.0.1:5432/test")
PARTS = 4  # part rows per key
SPEEDUP_TARGET = 1.8
BARRIER_TIMEOUT = 120.0  # seconds the workers may take to start
CHILD_TIMEOUT = 900.0  # seconds a worker subprocess may run


# --------------------------------------------------------------------------------------------
# the pipeline (declared alike in this process and in every worker subprocess)


def burn_cpu(seconds: float) -> None:
    """``seconds`` of this thread's CPU time in a pure-Python loop (no sleep, no I/O)."""
    deadline = time.thread_time() + seconds
    x = 0
    while time.thread_time() < deadline:
        for i in range(200):
            x += i * i


def declare(schema: mp.Schema, call_log: str, compute_s: float):
    """``Source`` and ``Work(Item)``; ``make`` logs its call, burns CPU, inserts PARTS parts."""

    @schema
    class Source(mp.Manual):
        definition = """
        key : int
        """

    @schema
    class Work(mp.Computed):
        definition = """  # a compute-bound result
        -> Source
        ---
        cpu_s : float
        """

        class Item(mp.Part):
            definition = """
            -> master
            item : smallint
            ---
            value : float
            data : longblob
            """

        def make(self, key):
            fd = os.open(call_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{key['key']} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
            started = time.thread_time()
            burn_cpu(compute_s)
            data = np.random.default_rng(key["key"]).random((PARTS, 16))
            self.insert1(dict(key, cpu_s=time.thread_time() - started))
            self.Item.insert(dict(key, item=i, value=float(data[i].sum()), data=data[i]) for i in range(PARTS))

    return Source, Work


def read_calls(call_log: Path) -> tuple[int, int, int, int]:
    """(calls, distinct keys, duplicate calls, distinct pids) of a call log."""
    try:
        lines = call_log.read_text().split()
    except FileNotFoundError:
        return 0, 0, 0, 0
    keys, pids = Counter(lines[0::2]), set(lines[1::2])
    calls = sum(keys.values())
    return calls, len(keys), calls - len(keys), len(pids)


# --------------------------------------------------------------------------------------------
# worker subprocesses: ``python bench/workers.py --child populate|dagster ...``


def wait_for_go(barrier: Path) -> float:
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no go after {BARRIER_TIMEOUT} s")
        time.sleep(0.002)
    return time.time()


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("populate", "dagster"))
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("call_log")
    parser.add_argument("compute_s", type=float)
    parser.add_argument("barrier", type=Path)
    parser.add_argument("--home")
    parser.add_argument("--first")
    parser.add_argument("--last")
    args = parser.parse_args(argv)
    schema = mp.Schema(args.schema, database_url=args.url)
    _, Work = declare(schema, args.call_log, args.compute_s)  # noqa: N806
    out: dict[str, Any] = {}
    if args.kind == "populate":
        len(Work())  # connect before the barrier, as the Dagster child imports before it
        out["start"] = wait_for_go(args.barrier)
        result = Work.populate()
        out["written"] = result["success_count"]
    else:
        import warnings

        import dagster as dg

        from mp_dagster.dagster import build_definitions

        for category in (dg.BetaWarning, dg.PreviewWarning):
            warnings.filterwarnings("ignore", category=category)
        defs = build_definitions(schema, sensors=False, checks=False)
        job = defs.resolve_job_def(f"{schema.name}__{Work.table_name}_job")
        tags = {"dagster/asset_partition_range_start": args.first, "dagster/asset_partition_range_end": args.last}
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        out["start"] = wait_for_go(args.barrier)
        with dg.DagsterInstance.local_temp(args.home, overrides={"telemetry": {"enabled": False}}) as instance:
            result = job.execute_in_process(instance=instance, tags=tags, run_config=quiet, raise_on_error=False)
        out["success"] = result.success
        out["failures"] = []
        for e in result.all_events:
            error = e.event_specific_data.error if e.event_type_value == "STEP_FAILURE" else None
            while error is not None:  # the message and its causes (handle_output wraps the write's)
                out["failures"].append(error.message.strip()[:1500])
                error = error.cause
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                md = event.event_specific_data.materialization.metadata
                if "mp_dagster/entries_written_in_run" in md:
                    out["written"] = md["mp_dagster/entries_written_in_run"].value
                    out["skipped"] = md["mp_dagster/entries_skipped_in_run"].value
    out["end"] = time.time()
    print(json.dumps(out), flush=True)
    return 0


def run_children(extra: list[list[str]], barrier: Path) -> tuple[float, list[dict[str, Any]]]:
    """Start one child per argument list, release them together once all are ready; returns
    (seconds from the release to the last child's end, each child's JSON line)."""
    barrier.mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in extra]
    try:
        deadline = time.monotonic() + BARRIER_TIMEOUT
        while len(list(barrier.glob("ready-*"))) < len(procs):
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker exited before the barrier ({p.returncode}): {p.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {BARRIER_TIMEOUT} s")
            time.sleep(0.01)
        go = time.time()
        (barrier / "go").touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=CHILD_TIMEOUT)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed ({p.returncode}): {err[-3000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return max(o["end"] for o in outs) - go, outs


# --------------------------------------------------------------------------------------------
# the cases


class Case:
    """Fresh tables with ``keys`` sources in schema ``mpbench_<tag>_<name>``; a call log."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx, self.name = ctx, name
        self.dir = ctx.tmp / name
        self.dir.mkdir(parents=True)
        self.call_log = self.dir / "calls.log"
        self.schema = mp.Schema(f"mpbench_{ctx.tag}_{name}", database_url=ctx.url)
        self.Source, self.Work = declare(self.schema, str(self.call_log), ctx.compute_s)
        self.Source.insert([{"key": k} for k in range(ctx.keys)])

    def child_args(self, kind: str, *extra: str) -> list[str]:
        return [kind, self.ctx.url, self.schema.name, str(self.call_log), str(self.ctx.compute_s),
                str(self.dir / "barrier"), *extra]

    def finish(self, seconds: float, workers: int, **more: Any) -> dict[str, Any]:
        calls, distinct, dups, pids = read_calls(self.call_log)
        entries, parts = len(self.Work()), len(self.Work.Item())
        try:
            self.schema.drop(force=True)
        except Exception:  # noqa: BLE001 - dropped again by the final sweep
            pass
        out = {"case": self.name, "workers": workers, "seconds": seconds, "make_calls": calls,
               "distinct_keys": distinct, "duplicates": dups, "worker_pids": pids, "entries": entries,
               "part_rows": parts, **more}
        complete = entries == self.ctx.keys and parts == self.ctx.keys * PARTS
        out["complete"] = complete
        print(f"  [{self.name}] {workers} workers: {seconds:6.2f} s, {calls} make calls for {distinct} keys "
              f"({dups} duplicates) in {pids} processes, {entries}/{self.ctx.keys} entries"
              + ("" if complete else " INCOMPLETE")
              + "".join(f", {k} {v}" for k, v in more.items() if k != "failures"), flush=True)
        for failure in more.get("failures", [])[:3]:
            print(f"    a run failed: {failure[:400]}", flush=True)
        return out


class Context:
    def __init__(self, url: str, tag: str, tmp: Path, keys: int, compute_s: float) -> None:
        self.url, self.tag, self.tmp, self.keys, self.compute_s = url, tag, tmp, keys, compute_s


def case_pool(ctx: Context, name: str, processes: int) -> dict[str, Any]:
    """``populate(processes=N)`` in this process (a forked pool)."""
    case = Case(ctx, name)
    len(case.Work())  # the connection is opened before the clock
    started = time.perf_counter()
    result = case.Work.populate(processes=processes)
    seconds = time.perf_counter() - started
    return case.finish(seconds, processes, written=result["success_count"])


def case_independent(ctx: Context, name: str, workers: int) -> dict[str, Any]:
    """``workers`` subprocesses, each its own ``populate()``, released together."""
    case = Case(ctx, name)
    seconds, outs = run_children([case.child_args("populate") for _ in range(workers)], case.dir / "barrier")
    return case.finish(seconds, workers, written_per_worker=[o["written"] for o in outs])


def overlapping_ranges(keys: int, runs: int) -> list[tuple[int, int]]:
    """Ranges of half the keys each (the last one 3/4), overlapping, covering every key."""
    if runs == 2:
        return [(0, keys * 5 // 8 - 1), (keys * 3 // 8, keys - 1)]
    half = keys // 2
    return [(0, half - 1), (keys // 4, keys // 4 + half - 1), (half, keys - 1), (keys // 8, keys // 8 + keys * 3 // 4 - 1)]


def case_dagster(ctx: Context, name: str, runs: int) -> dict[str, Any]:
    """``runs`` Dagster runs of the asset job over overlapping partition ranges, in
    subprocesses on one DAGSTER_HOME (SQLite instance), released together."""
    import dagster as dg

    from mp_dagster.dagster.partitions import def_name

    case = Case(ctx, name)
    home = case.dir / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as instance:
        instance.add_dynamic_partitions(def_name(case.Source), [str(k) for k in range(ctx.keys)])
    ranges = overlapping_ranges(ctx.keys, runs)
    seconds, outs = run_children(
        [case.child_args("dagster", "--home", str(home), "--first", str(a), "--last", str(b)) for a, b in ranges],
        case.dir / "barrier")
    return case.finish(seconds, runs, ranges=[f"{a}-{b}" for a, b in ranges],
                       runs_succeeded=sum(bool(o.get("success")) for o in outs),
                       written_per_run=[o.get("written") for o in outs],
                       skipped_per_run=[o.get("skipped") for o in outs],
                       failures=[f for o in outs for f in o.get("failures", [])])


def run_compute(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    from run import checkpoint  # bench/run.py

    out: dict[str, Any] = {"keys": ctx.keys, "compute_ms": ctx.compute_s * 1e3, "parts_per_key": PARTS,
                           "repeat": args.repeat, "cases": []}
    timings: dict[str, list[float]] = {}
    duplicates: dict[str, list[int]] = {}

    def record(label: str, got: dict[str, Any]) -> None:
        out["cases"].append(dict(got, label=label))
        timings.setdefault(label, []).append(got["seconds"])
        duplicates.setdefault(label, []).append(got["duplicates"])

    # wall time, interleaved repetitions: pool 1 vs 2, one independent process vs two
    for rep in range(args.repeat):
        for label, fn, n in (("pool1", case_pool, 1), ("pool2", case_pool, 2),
                             ("indep1", case_independent, 1), ("indep2", case_independent, 2)):
            checkpoint(ctx.url)
            record(label, fn(ctx, f"{label}_r{rep}", n))
    # 4 workers (once each), and overlapping Dagster runs
    for label, fn, n in (("pool4", case_pool, 4), ("indep4", case_independent, 4),
                         ("dagster2", case_dagster, 2), ("dagster4", case_dagster, 4)):
        checkpoint(ctx.url)
        record(label, fn(ctx, label, n))
    out["best_seconds"] = {k: min(v) for k, v in timings.items()}
    out["duplicates"] = {k: sum(v) for k, v in duplicates.items()}
    out["samples"] = {k: len(v) for k, v in timings.items()}
    out["incomplete"] = [c["case"] for c in out["cases"] if not c["complete"]]
    b = out["best_seconds"]
    out["speedup_pool"] = b["pool1"] / b["pool2"]
    out["speedup_independent"] = b["indep1"] / b["indep2"]
    return out


# --------------------------------------------------------------------------------------------
# sensor-to-written under dagster dev (bench/sensor_runs.py's measure)


def run_sensor(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sensor_runs import measure  # bench/sensor_runs.py

    results = []
    for images in args.sensor_images:
        print(f"  [sensor] dagster dev, {images} new images, keys_per_run=auto, sqlite instance, "
              f"wait bounded at {args.sensor_timeout:g} s ...", flush=True)
        r = measure(args.url, images, "auto", args.sensor_timeout, "sqlite", partial=True)
        results.append(r)
        print(f"  [sensor] {r['written']}/{images} written after {r['seconds']:.1f} s, {r['runs']} runs launched"
              + (" (bound reached)" if r["timed_out"] else ""), flush=True)
    return results


# --------------------------------------------------------------------------------------------
# report


def verdict(ok: bool) -> str:
    return "target held" if ok else "MISSED"


def fmt_table(report: dict[str, Any]) -> str:
    c = report["compute"]
    b, d, n = c["best_seconds"], c["duplicates"], c["samples"]
    pids = {}
    for case in c["cases"]:
        pids[case["label"]] = max(pids.get(case["label"], 0), case["worker_pids"])
    rows: list[tuple[str, str, str, str]] = []  # measure, value, ratio/target, verdict

    def dup_row(what: str, label: str, workers: int) -> None:
        runs = f" ({n[label]} runs)" if n[label] > 1 else ""
        if label.startswith("dagster"):
            case = next(x for x in c["cases"] if x["label"] == label)
            note = f"{case['runs_succeeded']}/{workers} runs succeeded, {case['entries']}/{c['keys']} entries"
        else:
            note = f"{pids[label]} make pids"
        rows.append((f"duplicate make calls, {what}, {workers} workers{runs}", f"{d[label]}",
                     f"target 0; {note}".rstrip("; "), verdict(d[label] == 0)))

    dup_row("independent populate() processes", "indep2", 2)
    dup_row("independent populate() processes", "indep4", 4)
    dup_row("populate(processes=N)", "pool2", 2)
    dup_row("populate(processes=N)", "pool4", 4)
    dup_row("overlapping Dagster runs", "dagster2", 2)
    dup_row("overlapping Dagster runs", "dagster4", 4)
    rows.append(("wall, populate(processes=1)", f"{b['pool1']:.2f} s", "", ""))
    rows.append(("wall, populate(processes=2)", f"{b['pool2']:.2f} s",
                 f"{c['speedup_pool']:.2f}x faster (target >= {SPEEDUP_TARGET}x)",
                 verdict(c["speedup_pool"] >= SPEEDUP_TARGET)))
    rows.append(("wall, one populate() process", f"{b['indep1']:.2f} s", "", ""))
    rows.append(("wall, two populate() processes", f"{b['indep2']:.2f} s",
                 f"{c['speedup_independent']:.2f}x faster (target >= {SPEEDUP_TARGET}x)",
                 verdict(c["speedup_independent"] >= SPEEDUP_TARGET)))
    rows.append(("wall, populate(processes=4)", f"{b['pool4']:.2f} s", f"{b['pool1'] / b['pool4']:.2f}x processes=1", ""))
    rows.append(("wall, four populate() processes", f"{b['indep4']:.2f} s", f"{b['indep1'] / b['indep4']:.2f}x one", ""))
    rows.append(("wall, 2 overlapping Dagster runs", f"{b['dagster2']:.2f} s", "", ""))
    rows.append(("wall, 4 overlapping Dagster runs", f"{b['dagster4']:.2f} s", "", ""))
    for r in report.get("sensor", []):
        per = r["seconds"] / max(r["written"], 1)
        if r["timed_out"]:
            value = f"{r['written']}/{r['images']} after {r['seconds']:.0f} s"
            note = (f"bound reached; {per:.2f} s per image written, {r['runs']} runs launched; "
                    f"~{per * r['images']:.0f} s for all at that rate")
        else:
            value = f"{r['seconds']:.1f} s"
            note = f"{per:.2f} s per image, {r['runs']} runs"
        rows.append((f"sensor-to-written, {r['images']} new images (dagster dev defaults)", value, note, ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("measure", "value", "ratio / target / note", "verdict")
    w = [max(w[i], len(head[i])) for i in range(4)]
    lines = [f"{head[0]:{w[0]}s}  {head[1]:>{w[1]}s}  {head[2]:{w[2]}s}  {head[3]}",
             "-" * (sum(w) + 6 + len(head[3]))]
    lines += [f"{m:{w[0]}s}  {v:>{w[1]}s}  {t:{w[2]}s}  {k}".rstrip() for m, v, t, k in rows]
    return "\n".join(lines)


def drop_leftovers(url: str, tag: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"mpbench_{tag}_%",)).fetchall()]
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 keys, 10 ms, one repetition, 4 and 8 images")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (default: %(default)s)")
    parser.add_argument("--keys", type=int, help="keys (default 200; quick: 40)")
    parser.add_argument("--compute-ms", type=float, help="CPU per make in ms (default 50; quick: 10)")
    parser.add_argument("--repeat", type=int, help="repetitions of the wall-time cases, best kept (default 3)")
    parser.add_argument("--skip-sensor", action="store_true")
    parser.add_argument("--sensor-images", help="comma-separated image counts (default 40,400; quick: 4,8)")
    parser.add_argument("--sensor-timeout", type=float, help="bound on each sensor wait, s (default 300; quick: 120)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    q = args.quick
    args.keys = args.keys or (40 if q else 200)
    args.compute_ms = args.compute_ms if args.compute_ms is not None else (10.0 if q else 50.0)
    args.repeat = args.repeat or (1 if q else 3)
    args.sensor_images = [int(x) for x in (args.sensor_images or ("4,8" if q else "40,400")).split(",") if x]
    args.sensor_timeout = args.sensor_timeout or (120.0 if q else 300.0)

    sys.path.insert(0, str(BENCH))
    from run import machine, quiet_dagster  # bench/run.py

    quiet_dagster()
    began = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    report: dict[str, Any] = {"machine": machine(args.url), "quick": q, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "load_average_at_start": os.getloadavg()}
    print("machine:", json.dumps(report["machine"]), flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mpbench_workers_"))
    try:
        ctx = Context(args.url, tag, tmp, args.keys, args.compute_ms / 1e3)
        print(f"{args.keys} keys, {args.compute_ms:g} ms of CPU per make, {PARTS} part rows per key, "
              f"wall times best of {args.repeat}", flush=True)
        report["compute"] = run_compute(args, ctx)
        if not args.skip_sensor:
            report["sensor"] = run_sensor(args)
    finally:
        drop_leftovers(args.url, tag)
        shutil.rmtree(tmp, ignore_errors=True)
    report["seconds_total"] = time.monotonic() - began
    report["load_average_at_end"] = os.getloadavg()
    m = report["machine"]
    print()
    print(f"Workers benchmark, {report['started']}: {m['nproc']} cores ({m['cpu']}), PostgreSQL {m['postgresql']}, "
          f"{args.keys} keys x {args.compute_ms:g} ms CPU, {PARTS} parts per key"
          + (" -- QUICK RUN: a smoke test, these figures are NOT the targets" if q else ""))
    print(fmt_table(report))
    if report["compute"]["incomplete"]:
        print("INCOMPLETE cases (entries missing):", ", ".join(report["compute"]["incomplete"]))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in report['load_average_at_end'])}; "
          f"total {report['seconds_total']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
