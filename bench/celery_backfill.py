"""A 200-partition backfill launched as the UI launches it (GraphQL ``launchPartitionBackfill``),
its runs' steps executed by dagster-celery workers of one process each: 2 workers against 1.

Usage (from the repository root; PostgreSQL as for the tests; needs ``pip install -e '.[celery]'``
and redis-server)::

    python bench/celery_backfill.py [--keys 200] [--per-run 25] [--compute-ms 50] [--repeat 1]
                                    [--url postgresql://...] [--json out.json]

Each configuration gets a fresh schema, a fresh Dagster instance (deploy/dagster.yaml on a
database of its own, runs queued, at most 4 at once) and its own redis-server, through the
helpers of tests/test_celery.py (tests/celery_cluster.py, tests/celery_pipeline.py). ``make``
burns ``--compute-ms`` of CPU per key. The clock runs from the first run's launch to the last
run's end (Dagster's run stats): the daemon's pickup of the backfill and process start-up are
not in it. The ratio is the 1-worker time over the 2-worker time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from celery_cluster import celery_run_launcher, cluster  # noqa: E402
from celery_pipeline import declare  # noqa: E402

import mp_dagster as mp  # noqa: E402
from mp_dagster.dagster.partitions import def_name  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


_E = dg.DagsterEventType
# (event type, message prefix) marks of a run's life, in order; the phases are the gaps
MARKS = ((_E.RUN_ENQUEUED.value, ""), (_E.RUN_STARTING.value, ""), (_E.RUN_START.value, ""),
         (_E.ENGINE_EVENT.value, "Submitting celery task"), (_E.ENGINE_EVENT.value, "Executing steps"),
         (_E.STEP_START.value, ""), (_E.STEP_SUCCESS.value, ""), (_E.RUN_SUCCESS.value, ""))
PHASES = ("queued", "run process start", "run to step submitted", "celery pickup (+ queue wait)",
          "worker loads instance, job and plan", "step (make + writes)", "run end")


def run_phases(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds between the marks of a run's life (the first event of each), from its event log."""
    seen: dict[int, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        for i, (kind, prefix) in enumerate(MARKS):
            if i not in seen and event.event_type_value == kind and (record.user_message or "").startswith(prefix):
                seen[i] = record.timestamp
                break
    return {PHASES[i]: round(seen[i + 1] - seen[i], 2) for i in range(len(PHASES)) if i in seen and i + 1 in seen}


def mean_phases(phases: list[dict[str, float]]) -> dict[str, float]:
    names = {n for p in phases for n in p}
    return {n: round(sum(p.get(n, 0) for p in phases) / len(phases), 2) for n in sorted(names)}


def measure(url: str, workers: int, keys: int, per_run: int, compute_ms: int, timeout: float,
            launcher: str = "default") -> dict:
    schema = mp.Schema(f"bench_celery_{uuid.uuid4().hex[:8]}", database_url=url)
    try:
        Source, Result = declare(schema, compute_ms=0)
        Source.insert([{"key": k} for k in range(keys)])
        names = tuple(f"w{i + 1}" for i in range(workers))
        instance_config = {"run_coordinator": {"config": {"max_concurrent_runs": 4, "dequeue_interval_seconds": 1}}}
        settings = {}
        if launcher == "celery":  # whole runs on the workers, in-process executor
            instance_config.update(celery_run_launcher())
            settings["MP_CELERY_RUNS_ON_WORKERS"] = "1"
        with tempfile.TemporaryDirectory(prefix="mpbench_celery_") as tmp, \
                cluster(Path(tmp), url, url, schema.name, instance_config, MP_CELERY_COMPUTE_MS=str(compute_ms),
                        MP_CELERY_PARTITIONS_PER_RUN=str(per_run), **settings) as c:
            for name in ("DAGSTER_HOME", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST",
                         "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):  # to read the runs back
                os.environ[name] = c.env[name]
            with dg.DagsterInstance.get() as instance:
                instance.add_dynamic_partitions(def_name(Source), [str(k) for k in range(keys)])
                backfill_id = c.start_backfill(dg.AssetKey([schema.name, "result"]), [str(k) for k in range(keys)],
                                               workers=names)
                n_runs = -(-keys // per_run)
                deadline = time.monotonic() + timeout
                while True:
                    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                    if len(runs) >= n_runs and all(r.status in FINISHED for r in runs):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"not done after {timeout} s: {Counter(r.status.value for r in runs)}\n"
                                         + c.logs())
                    time.sleep(0.5)
                stats = [instance.get_run_stats(r.run_id) for r in runs]
                phases = [run_phases(instance, r.run_id) for r in runs]
                statuses = Counter(r.status.value for r in runs)
        assert statuses == {"SUCCESS": n_runs}, statuses
        assert len(Result) == keys
        seconds = max(s.end_time for s in stats) - min(s.launch_time for s in stats)
        return {"launcher": launcher, "workers": workers, "runs": n_runs, "seconds": round(seconds, 2),
                "keys_per_s": round(keys / seconds, 1), "phases": mean_phases(phases), "per_run": phases, "keys_per_worker": dict(Counter(Result.fetch("worker")))}
    finally:
        schema.drop(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--per-run", type=int, default=25)
    parser.add_argument("--compute-ms", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="best of N per configuration")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", default=None)
    parser.add_argument("--launcher", choices=("default", "celery"), default="default",
                        help="default: a run process per run (Dagster's DefaultRunLauncher), steps sent "
                        "to the workers by dagster-celery's executor; celery: dagster-celery's run "
                        "launcher sends whole runs to the workers (deploy/celery_run_launcher.yaml)")
    args = parser.parse_args()
    best = {}
    for _ in range(args.repeat):
        for workers in (1, 2):
            result = measure(args.url, workers, args.keys, args.per_run, args.compute_ms, args.timeout,
                             args.launcher)
            print(json.dumps(result), flush=True)
            if workers not in best or result["seconds"] < best[workers]["seconds"]:
                best[workers] = result
    ratio = best[1]["seconds"] / best[2]["seconds"]
    summary = {"launcher": args.launcher, "keys": args.keys, "per_run": args.per_run, "compute_ms": args.compute_ms,
               "one_worker_s": best[1]["seconds"], "two_workers_s": best[2]["seconds"], "ratio": round(ratio, 2)}
    print(f"{args.launcher} launcher, {args.keys} partitions, runs of {args.per_run}, make = {args.compute_ms} ms CPU: 1 worker "
          f"{best[1]['seconds']:.1f} s, 2 workers {best[2]['seconds']:.1f} s: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
