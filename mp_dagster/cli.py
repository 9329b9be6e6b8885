"""``mp-dagster``: operations without writing Python.

    mp-dagster demo-data [--images N] [--recordings N]   add demo rows (the sensors pick them up)
"""

from __future__ import annotations

import argparse
import sys

from .errors import MPError


def _demo_data(args: argparse.Namespace) -> int:
    from . import demo

    images, arrays = demo.add_demo_data(args.images, args.recordings)
    print(f"added images {images} and recordings {arrays} to {demo.imaging.backend.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mp-dagster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo-data", help="add synthetic images and recordings to the demo tables")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--recordings", type=int, default=1)
    p.set_defaults(func=_demo_data)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MPError as exc:
        print(f"mp-dagster: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
