"""``mp-dagster gc``: garbage collection of object stores from the command line (see
:mod:`mp_dagster.cli` for the conventions: one-line errors, exit codes, confirmation)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from .cli import DEFAULT_MODULE_FILE, EXIT_OK, UsageError, confirm, load_modules, open_read_only

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` -> a timedelta; UsageError otherwise."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "s"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UsageError(f"--grace {text!r}: a duration such as 3600, 30m, 1h or 2d (not negative)")
    return timedelta(seconds=value * _UNITS[unit])


def cmd_gc(args: argparse.Namespace) -> int:
    if args.yes and args.dry_run:
        raise UsageError("--yes and --dry-run exclude each other")
    from .store_references import collect, describe, unconfigured_stores, variable
    from .stores import DEFAULT_GRACE

    grace = DEFAULT_GRACE if args.grace is None else parse_duration(args.grace)
    open_read_only()  # gc reads rows, it never writes the database
    imports = bool(args.modules) or Path(DEFAULT_MODULE_FILE).is_file()
    tables = load_modules(args.modules, required=False)
    from .backends import get_backend, redact

    # the databases of the modules' tables; importing nothing, the one --database-url names (not
    # tables some earlier code declared in this process)
    backends = list({id(t.schema.backend): t.schema.backend for t in tables}.values()) if imports else []
    backends = backends or [get_backend()]
    confirmed = args.yes
    for backend in backends:
        print(f"database: {redact(backend.url)}")
        preview = collect(backend, args.store, grace=grace, dry_run=True)
        print(describe(preview))
        if args.store is None:
            for name in unconfigured_stores(backend):
                print(f"store {name!r}: not configured here ({variable(name)} is not set): skipped")
        sys.stdout.flush()
        if args.dry_run or not any(r.unreferenced for r in preview.values()):
            continue
        if not confirmed:
            confirm("gc", "nothing removed", " to remove without asking")
            confirmed = True
        print(describe(collect(backend, args.store, grace=grace, dry_run=False)))
    return EXIT_OK


