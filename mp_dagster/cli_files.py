"""``mp-dagster files``: a file-fed table's files (``mp.FileSource``) from the command line.

    mp-dagster files TABLE [--verify]            # what a scan finds: new, changed, refused, missing
    mp-dagster files TABLE --register            # register the new files now (as the sensor does)
    mp-dagster files TABLE --reregister PATH...  # accept changed files: their entries are deleted
                                                 # (cascade, after a preview) and they are registered anew

Part of :mod:`mp_dagster.cli` (same options, errors and exit codes).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .file_sources import file_source_of

SHOWN = 50  # files listed per kind


def add_files_command(add: Any, cli: Any) -> None:
    """Register the ``files`` subcommand with the CLI's ``add(name, func, help)``; ``cli`` is the
    CLI's module as it runs (``__main__`` under ``python -m``), whose errors and helpers are used."""
    p = add("files", cmd_files, "a table fed by files (mp.FileSource): list what a scan of its store finds "
                                "(new, changed, refused, missing files), register the new ones, or re-register "
                                "changed files (deleting what was computed from them, after a preview)")
    p.set_defaults(cli=cli)
    p.add_argument("table", metavar="TABLE", help="schema.table, class name (RawImage) or table name")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--register", action="store_true", help="register the new files now")
    what.add_argument("--reregister", metavar="PATH", nargs="+",
                      help="accept the current content of these changed files (paths as listed)")
    p.add_argument("--verify", action="store_true",
                   help="hash every registered file (finds same-size rewrites in tables without a `modified` "
                        "attribute; reads everything)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show the preview only, change nothing")


def _show(title: str, items: list[str]) -> None:
    print(f"{title}: {len(items)}")
    for item in items[:SHOWN]:
        print(f"  {item}")
    if len(items) > SHOWN:
        print(f"  ... and {len(items) - SHOWN} more")


def cmd_files(args: argparse.Namespace) -> int:
    cli = args.cli
    EXIT_OK, UsageError = cli.EXIT_OK, cli.UsageError  # noqa: N806 - the CLI's names
    table = cli.find_table(cli.load_modules(args.modules), args.table)
    source = file_source_of(table)
    if source is None:
        raise UsageError(f"{table.full_name} is not fed by files (its class has no mp.FileSource)")
    if args.reregister:
        rows = source.rows_by_path(args.reregister)
        unknown = [p for p in args.reregister if p not in rows]
        if unknown:
            raise UsageError(f"{table.full_name}: not registered: {', '.join(map(repr, unknown))}")
        pk = table.primary_key
        preview = (table & [{k: rows[p][k] for k in pk} for p in args.reregister]).delete_preview(
            part_integrity="cascade")
        print(f"re-registering {len(args.reregister)} file(s) of {table.full_name} deletes first:")
        for name, n in reversed(list(preview.items())):
            print(f"  {n:>8}  {name}")
        sys.stdout.flush()
        if args.dry_run:
            return EXIT_OK
        if not args.yes:
            cli.confirm("re-registering", "nothing changed")
        source.reregister(*args.reregister)
        print(f"re-registered {len(args.reregister)} file(s); their entries downstream are pending again: "
              "in Dagster the file sensor requests them on its next tick (if it saw the change), "
              "else populate() computes them, or materialize their partitions in the UI")
        return EXIT_OK
    scan = source.scan(deep=args.verify)
    print(f"{table.full_name}, {source.source.describe()}: {scan.summary()}")
    _show("new (not registered yet)", [r[source.source.path_attribute] for r in scan.new])
    _show("changed after registration (not recomputed; --reregister PATH accepts them)",
          [str(c) for c in scan.changed])
    _show("refused", [str(r) for r in scan.refused])
    _show("missing (registered, no longer in the store)", scan.missing)
    if args.register and scan.new:
        registered = source.register(scan).rows
        print(f"registered {len(registered)} new file(s)")
    return EXIT_OK
