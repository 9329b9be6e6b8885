"""A populate worker for the store kill trials, run as a real subprocess (and SIGKILLed).

``python store_kill_worker.py URL SCHEMA [--signal-dir D] [--seed N]``: declares the pipeline of
``store_kill_pipeline.py`` (store ``kill`` from ``MP_DAGSTER_STORE_KILL``) and populates
``Result`` key by key in a shuffled order; prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from store_kill_pipeline import declare  # noqa: E402

import mp_dagster as mp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("--signal-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    schema = mp.Schema(args.schema, database_url=args.url)
    _, result = declare(schema, args.signal_dir)
    keys = result().pending_keys()
    random.Random(args.seed).shuffle(keys)
    success = 0
    for key in keys:
        success += result.populate(key)["success_count"]
    print(json.dumps({"success_count": success}), flush=True)


if __name__ == "__main__":
    main()
