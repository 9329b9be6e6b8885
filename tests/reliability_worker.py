"""A populate worker run as a real subprocess by the reliability tests.

``python reliability_worker.py URL SCHEMA [--chunk-kb K] [--compute S] [--signal-dir D]
[--limit N] [--shuffle SEED]``

Declares the pipeline of ``reliability_pipeline.py`` and populates ``Result`` (errors suppressed),
then prints one JSON line: successes and, per failed key, the error's type and message.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from reliability_pipeline import declare, declare_downstream  # noqa: E402

import mp_dagster as mp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--compute", type=float, default=0.0)
    parser.add_argument("--signal-dir", default=None)
    parser.add_argument("--max-calls", type=int, default=None)
    parser.add_argument("--processes", type=int, default=1, help="populate(processes=N)")
    parser.add_argument("--shuffle", type=int, default=None, help="populate keys one by one in a shuffled order")
    parser.add_argument("--downstream", action="store_true", help="also declare and populate Summary")
    parser.add_argument("--seconds", type=float, default=0.0, help="populate again and again for this long")
    args = parser.parse_args()
    started = time.monotonic()
    schema = mp.Schema(args.schema, database_url=args.url)
    _, result_cls = declare(schema, chunk_kb=args.chunk_kb, compute_s=args.compute, signal_dir=args.signal_dir)
    tables = [result_cls]
    if args.downstream:
        tables.append(declare_downstream(schema, result_cls))
    errors: list[tuple[dict, BaseException]] = []
    success = rounds = 0
    deadline = time.monotonic() + args.seconds
    while True:
        rounds += 1
        for table in tables:
            if args.shuffle is None:
                result = table.populate(suppress_errors=True, max_calls=args.max_calls,
                                        processes=args.processes)
                success += result["success_count"]
                errors += result["error_list"]
            else:
                keys = table().pending_keys()
                random.Random(args.shuffle + rounds).shuffle(keys)
                for key in keys[: args.max_calls]:
                    result = table.populate(key, suppress_errors=True)
                    success += result["success_count"]
                    errors += result["error_list"]
        if time.monotonic() >= deadline or rounds >= 10_000:  # bounded in time and count
            break
        time.sleep(0.01)
    print(json.dumps({
        "success_count": success,
        "errors": [{"key": k, "type": type(e).__name__, "mp_error": isinstance(e, mp.MPError), "message": str(e)[:300]}
                   for k, e in errors],
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 3),
    }), flush=True)


if __name__ == "__main__":
    main()
