"""A populate worker run as a real subprocess by the tests: ``python worker.py URL SCHEMA [opts]``.

Prints one JSON line with populate()'s result. Options: ``--rois N``, ``--blob-kb K`` (size
of each ROI's pixel array), ``--sleep S`` (inside make, before the write).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pipelines import declare_imaging  # noqa: E402

import mp_dagster as mp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("--rois", type=int, default=45)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--blob-kb", type=int, default=0)
    args = parser.parse_args()
    schema = mp.Schema(args.schema, database_url=args.url)
    _, seg = declare_imaging(schema, n_rois=args.rois, sleep_before_write=args.sleep, blob_kb=args.blob_kb)
    result = seg.populate(suppress_errors=True)
    print(json.dumps({"success_count": result["success_count"],
                      "errors": [str(e) for _, e in result["error_list"]]}), flush=True)


if __name__ == "__main__":
    main()
