"""One Dagster run of ``Result``'s asset job over a partition range, as a real subprocess.

``python reliability_dagster_run.py URL SCHEMA DAGSTER_HOME FIRST LAST [--chunk-kb K] [--compute S]
[--barrier DIR --parties N]``

The partitions must already exist in the instance at ``DAGSTER_HOME`` (the test adds them).
Prints one JSON line: success, entries written/skipped by this run, and the failure messages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dagster as dg  # noqa: E402
from reliability_pipeline import declare  # noqa: E402

import mp_dagster as mp  # noqa: E402
from mp_dagster.dagster import build_definitions  # noqa: E402

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("home")
    parser.add_argument("first")
    parser.add_argument("last")
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--compute", type=float, default=0.0)
    parser.add_argument("--barrier", default=None, help="a directory: start the run together with ...")
    parser.add_argument("--parties", type=int, default=1, help="... this many processes (waits 120 s at most)")
    args = parser.parse_args()
    started = time.monotonic()
    schema = mp.Schema(args.schema, database_url=args.url)
    _, result_cls = declare(schema, chunk_kb=args.chunk_kb, compute_s=args.compute)
    defs = build_definitions(schema, sensors=False, checks=False)
    job = defs.resolve_job_def(f"{schema.name}__{result_cls.table_name}_job")
    tags = {"dagster/asset_partition_range_start": args.first, "dagster/asset_partition_range_end": args.last}
    if args.barrier:
        barrier = Path(args.barrier)
        (barrier / f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(barrier.glob("ready-*"))) < args.parties and time.monotonic() < deadline:
            time.sleep(0.01)
    with dg.DagsterInstance.local_temp(args.home, overrides={"telemetry": {"enabled": False}}) as instance:
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    written = skipped = None
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            md = event.event_specific_data.materialization.metadata
            if "mp_dagster/entries_written_in_run" in md:
                written = md["mp_dagster/entries_written_in_run"].value
                skipped = md["mp_dagster/entries_skipped_in_run"].value
    failures = [e.event_specific_data.error.to_string()[-2000:] for e in result.all_events
                if e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error is not None]
    print(json.dumps({"success": result.success, "written": written, "skipped": skipped,
                      "failures": failures, "run_id": result.run_id,
                      "seconds": round(time.monotonic() - started, 3)}), flush=True)


if __name__ == "__main__":
    main()
