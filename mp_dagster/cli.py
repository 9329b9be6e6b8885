"""``mp-dagster``: operations a lab needs, without writing Python.

Usage::

    mp-dagster [--database-url URL] [--module MODULE_OR_FILE]... COMMAND ...

    mp-dagster status [--json]
        per master table: rows, parts with their rows, pending keys, failed keys
    mp-dagster diagram [--dot]
        the table graph: text (masters, their parts indented, then parent -> child edges),
        or Graphviz dot (parts in a cluster of their master; one edge per foreign key)
    mp-dagster delete TABLE [attr=value ...] [--all] [--part-integrity MODE] [--yes | --dry-run]
        preview the cascade (rows per table), ask "Proceed? [yes/No]", then delete in ONE
        transaction
    mp-dagster declare
        import the module(s), which declares (creates) their tables, and list them
    mp-dagster gc [--store NAME] [--grace DURATION] [--yes | --dry-run]
        object stores: preview the objects no row references any more (count, bytes), ask,
        then remove those older than the grace period (default 1d)
    mp-dagster demo-data [--images N] [--recordings N]
        add synthetic images and/or recordings to the demo tables (the sensors pick them up);
        without options 3 images and 1 recording
    mp-dagster files TABLE [--register | --reregister PATH... [--yes | --dry-run]]
        a table fed by files: what a scan finds, register new files, re-register changed ones

``status`` and ``diagram`` open the database read-only (``MP_DAGSTER_READ_ONLY=1``): they never
create a database file, schema or table; a database that does not exist is an error (exit 1).

Tables come from importing ``--module`` (repeatable): a dotted module name (``mp_dagster.demo``)
or a Python file (``definitions.py``; its directory is put on ``sys.path``). Without
``--module``, ``definitions.py`` in the working directory is imported if present. Every table
the import declares is used. ``--database-url`` sets ``MP_DAGSTER_DATABASE_URL`` before the
import; without it the module decides (the library default is ``MP_DAGSTER_DATABASE_URL``, else
``mp_dagster.db`` in the working directory).

``delete``: TABLE is ``schema.table``, a class name (``Segmentation``, ``Segmentation.ROI``) or
a table name (``segmentation``); the ``attr=value`` items form ONE restriction (values are
converted to the attributes' types). Without ``--yes`` it asks on the terminal; when stdin is
not a terminal it refuses (exit code 2) rather than wait. ``--all`` (instead of key items)
deletes every row.

``status``: pending keys are ``len(key_source - table)`` of Imported/Computed masters. Failed
keys live in Dagster: when ``DAGSTER_HOME`` holds an instance, the pending keys whose latest
materialization failed are counted (asset key ``[schema, table]``); otherwise they show ``-``.

Exit codes:
    0  success (including "nothing to delete" and --dry-run)
    1  the library or the database refused or failed (an mp_dagster error, e.g. a declaration
       the database contradicts or a refused delete; a database error)
    2  usage error: bad arguments; no module, or one that cannot be imported (not found, syntax
       error, an exception raised by its code); unknown table; malformed KEY; unknown attribute
       or bad value; delete needing a confirmation stdin cannot give
    3  delete (or gc) not confirmed: the answer was not "yes"; nothing was deleted
    130 interrupted (Ctrl-C)

Errors are one line on stderr (``mp-dagster: error: ...``); ``--traceback`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import textwrap
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn

from . import dependencies
from .cli_files import add_files_command
from .diagram import class_name, diagram_dot, diagram_text, masters_of, parts_of, tier_of
from .errors import ConnectionError as MPConnectionError
from .errors import DeclarationError, MPError, PartIntegrityError

PROG = "mp-dagster"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DECLINED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_MODULE_FILE = "definitions.py"
DATABASE_URL_ENV = "MP_DAGSTER_DATABASE_URL"  # == mp_dagster.backends.DATABASE_URL_ENV
PART_INTEGRITY = ("enforce", "cascade", "ignore")  # == mp_dagster.delete.PART_INTEGRITY
DEMO_IMAGES, DEMO_RECORDINGS = 3, 1  # demo-data without options

EXIT_CODES = """exit codes:
  0    success (also: nothing to delete, --dry-run)
  1    the library or the database failed or refused (an mp_dagster error, e.g. a
       declaration the database contradicts or a refused delete; a database error)
  2    usage error (bad arguments; no module, or one that cannot be imported: not found,
       syntax error, exception raised by its code, e.g. an insert it makes; unknown table;
       malformed KEY; unknown attribute; bad value; confirmation needed but stdin is not a
       terminal)
  3    delete or gc not confirmed: nothing was deleted
  130  interrupted"""


class UsageError(Exception):
    """Bad usage found after parsing (unknown table, malformed key...): exit code 2."""


class Declined(Exception):
    """The user did not confirm: exit code 3."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mp-dagster: error: delete: ...`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog[len(PROG):].strip()
        where = f"{sub}: " if sub else ""
        hint = f" (see {self.prog} --help)"
        print(f"{PROG}: error: {where}{message}{hint}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


# -- loading the tables -------------------------------------------------------------------------


def _check_url(url: str) -> str:
    if not url.startswith(("postgresql://", "postgres://", "sqlite://")):
        raise UsageError(
            f"--database-url {url!r}: use postgresql://user@host:port/db or sqlite:///path/file.db"
        )
    return url


def load_modules(modules: list[str], required: bool = True) -> list[Any]:
    """Import ``modules`` (or ``definitions.py`` in the working directory); return every declared
    table. ``required=False``: importing nothing is fine (``demo-data``)."""
    if not modules:
        if Path(DEFAULT_MODULE_FILE).is_file():
            modules = [DEFAULT_MODULE_FILE]
        elif required:
            raise UsageError(f"no tables: pass --module (no {DEFAULT_MODULE_FILE} in {os.getcwd()})")
    with warnings.catch_warnings():
        # a definitions file building Dagster definitions: no beta/preview chatter on stderr
        warnings.filterwarnings("ignore", module=r"dagster(\.|$)")
        for spec in modules:
            _import(spec)
    tables = dependencies.all_tables()
    if required and not tables:
        raise UsageError(f"no tables: importing {', '.join(modules)} declared none")
    return tables


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec or Path(spec).is_file()


def _import(spec: str) -> None:
    try:
        if _is_file(spec):
            _import_file(spec)
        else:
            importlib.import_module(spec)
    except (MPConnectionError, DeclarationError, UsageError):
        raise  # the database cannot be opened, or contradicts a declaration: exit 1, not the module's fault
    except SyntaxError as exc:
        raise UsageError(f"cannot import {spec}: SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})") from exc
    except ModuleNotFoundError as exc:
        if exc.name and spec.split(".")[: len(exc.name.split("."))] == exc.name.split("."):
            raise UsageError(f"cannot import {spec}: no module named {exc.name!r}") from exc
        raise UsageError(f"cannot import {spec}: {one_line(exc)}{_where(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed (an MPError too): say where, in one line
        raise UsageError(f"cannot import {spec}: {type(exc).__name__}: {one_line(exc)}{_where(exc)}") from exc


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""


def _import_file(spec: str) -> None:
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"cannot import {spec}: no such file")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem if path.suffix == ".py" else path.name.replace(".", "_")
    if name in sys.modules:
        name = f"_mp_dagster_cli_{name}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {spec}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def databases(tables: list[Any]) -> list[str]:
    from .backends import redact

    return list(dict.fromkeys(redact(t.schema.backend.url) for t in tables))


def find_table(tables: list[Any], name: str) -> Any:
    """A table by ``schema.table``, class name (``Segmentation.ROI``) or table name."""
    for match in (
        lambda t: t.full_name == name,
        lambda t: class_name(t) == name or t.__qualname__ == name,
        lambda t: t.__name__ == name or t.table_name == name,
    ):
        found = list({t.full_name: t for t in tables if match(t)}.values())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"table {name!r} is ambiguous: {', '.join(t.full_name for t in found)}")
    raise UsageError(f"unknown table {name!r}; tables: {', '.join(t.full_name for t in tables)}")


# -- status -------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr)


def _dagster_home() -> Path | None:
    """``DAGSTER_HOME`` when it holds an instance (a dagster.yaml or local run history)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return None
    path = Path(home)
    if (path / "dagster.yaml").is_file() or (path / "history").is_dir():
        return path
    return None


def failed_counts(pending: dict[str, list[dict[str, Any]]], masters: list[Any]) -> dict[str, int] | None:
    """Per auto-populated master: its pending keys whose latest Dagster materialization failed;
    None without a Dagster instance."""
    if _dagster_home() is None:
        return None
    if os.environ.get("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "").lower() in ("1", "true"):
        # then Dagster records no per-partition failures: a count would read 0, not unknown
        _warn("failed keys unavailable: DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS is set, so Dagster "
              "does not mark failed partitions (deploy/dagster.env)")
        return None
    try:
        import dagster as dg

        from .dagster import table_bindings

        schemas = list({id(m.schema): m.schema for m in masters}.values())
        bindings = {b.table.full_name: b for b in table_bindings(schemas).values()}
        dagster_log = logging.getLogger("dagster")
        level = dagster_log.level
        dagster_log.setLevel(logging.ERROR)  # no "no dagster.yaml" chatter
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                instance = dg.DagsterInstance.get()
        finally:
            dagster_log.setLevel(level)
        out: dict[str, int] = {}
        with instance:
            for name, keys in pending.items():
                binding = bindings.get(name)
                if binding is None:
                    continue
                if not keys:
                    out[name] = 0
                    continue
                encoded = [binding.scheme.encode(k) for k in keys]
                statuses = instance.get_status_by_partition(
                    binding.asset_key, encoded, binding.scheme.partitions_def
                ) or {}
                out[name] = sum(1 for s in statuses.values() if s == dg.AssetPartitionStatus.FAILED)
        return out
    except Exception as exc:  # noqa: BLE001 - status still shows the database side
        _warn(f"failed keys unavailable from Dagster ({type(exc).__name__}: {exc})")
        return None


def status_rows(tables: list[Any]) -> list[dict[str, Any]]:
    masters = masters_of(tables)
    rows: list[dict[str, Any]] = []
    pending_keys: dict[str, list[dict[str, Any]]] = {}
    use_dagster = _dagster_home() is not None
    for m in masters:
        row: dict[str, Any] = {
            "table": m.full_name,
            "class": class_name(m),
            "tier": m.tier,
            "rows": len(m),
            "parts": [{"table": p.full_name, "class": class_name(p), "rows": len(p)} for p in parts_of(m)],
            "pending": None,
            "keys": None,
            "failed": None,
        }
        if m.tier in ("imported", "computed"):
            try:
                row["pending"], row["keys"] = m.progress()
                if use_dagster:
                    pending_keys[m.full_name] = m.pending_keys()
            except MPError as exc:
                _warn(f"{m.full_name}: pending keys unavailable: {exc}")
        rows.append(row)
    failed = failed_counts(pending_keys, masters) if pending_keys else None
    if failed is not None:
        for row in rows:
            row["failed"] = failed.get(row["table"])
    return rows


def _render_table(header: list[str], body: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def confirm(asking: str, declined: str, without_asking: str = "") -> None:
    """Ask "Proceed? [yes/No]" on the terminal; UsageError when stdin is not one (``asking``
    names the command, as in "delete asks for confirmation"), Declined(``declined``) unless the
    answer is yes. The commands that change things (delete, gc, files) all ask this way."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"{asking} asks for confirmation but stdin is not a terminal: pass --yes{without_asking}")
    try:
        answer = input("Proceed? [yes/No]: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Declined(declined)


def open_read_only() -> None:
    """``status`` and ``diagram`` look, they never create: no database file, schema or table."""
    from .backends import READ_ONLY_ENV

    os.environ[READ_ONLY_ENV] = "1"


def cmd_status(args: argparse.Namespace) -> int:
    open_read_only()
    tables = load_modules(args.modules)
    rows = status_rows(tables)
    if args.json:
        print(json.dumps({"databases": databases(tables), "tables": rows}, indent=2))
        return EXIT_OK

    def show(value: Any) -> str:
        return "-" if value is None else str(value)

    body: list[list[str]] = []
    for r in rows:
        body.append([r["table"], r["tier"], str(r["rows"]), show(r["pending"]), show(r["failed"])])
        for p in r["parts"]:
            body.append(["  " + p["table"], "part", str(p["rows"]), "", ""])
    print(f"database: {', '.join(databases(tables))}")
    print(_render_table(["TABLE", "TIER", "ROWS", "PENDING", "FAILED"], body, right={2, 3, 4}))
    if any(r["pending"] is not None and r["failed"] is None for r in rows):
        print("FAILED (pending keys whose latest Dagster run failed) is read from the Dagster instance in "
              "$DAGSTER_HOME: " + ("none is set" if not os.environ.get("DAGSTER_HOME") else
                                   f"none found in {os.environ['DAGSTER_HOME']}")
              + "; set DAGSTER_HOME to the instance's directory to count them")
    return EXIT_OK


# -- diagram ------------------------------------------------------------------------------------


def cmd_diagram(args: argparse.Namespace) -> int:
    open_read_only()
    tables = load_modules(args.modules)
    print(diagram_dot(tables) if args.dot else diagram_text(tables))
    return EXIT_OK


# -- delete -------------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "yes", "1", "t", "y"), ("false", "no", "0", "f", "n")


def text_to_value(table: Any, attr: Any, text: str) -> Any:
    """The typed value of ``attr=text`` (validated like an inserted value)."""
    from .heading import INT_RANGES
    from .values import to_sql_value

    name = attr.type.name
    if name in ("blob", "bytes", "json"):
        raise UsageError(f"{table.full_name}.{attr.name} is a {attr.type} attribute: it cannot be part of a KEY")
    value: Any = text
    try:
        if name in INT_RANGES:
            value = int(text)
        elif name in ("float32", "float64"):
            value = float(text)
        elif name == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            value = text.lower() in _TRUE
    except ValueError:
        raise UsageError(f"{table.full_name}.{attr.name}: {text!r} is not a valid {attr.type}") from None
    try:
        to_sql_value(table.full_name, attr, value)
    except MPError as exc:
        raise UsageError(str(exc)) from None
    return value


def parse_key(table: Any, items: list[str]) -> dict[str, Any]:
    """``["attr=value", ...]`` -> one restriction dict with typed values."""
    heading = table._definition.heading
    key: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"malformed KEY {item!r}: write attr=value (e.g. {heading.primary_key[0] if heading.primary_key else 'attr'}=1)")
        if name not in heading:
            raise UsageError(
                f"{table.full_name} has no attribute {name!r}; attributes: {', '.join(heading.names)}"
            )
        if name in key:
            raise UsageError(f"KEY attribute {name!r} given twice")
        key[name] = text_to_value(table, heading[name], text)
    return key


def _key_text(key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in key.items())


def cmd_delete(args: argparse.Namespace) -> int:
    if args.yes and args.dry_run:
        raise UsageError("--yes and --dry-run exclude each other")
    if args.all and args.key:
        raise UsageError("--all deletes every row: give either KEY items or --all")
    if not args.all and not args.key:
        raise UsageError("give the rows to delete as KEY items (attr=value ...), or --all for every row")
    tables = load_modules(args.modules)
    table = find_table(tables, args.table)
    key = parse_key(table, args.key)
    expr = table & key if key else table()
    try:
        preview = expr.delete_preview(part_integrity=args.part_integrity)
    except PartIntegrityError as exc:  # the library's advice, in this command's terms
        raise PartIntegrityError(cli_advice(str(exc), table, key)) from exc
    where = f" where {_key_text(key)}" if key else " (every row)"
    if not sum(preview.values()):
        print(f"nothing to delete: no rows of {table.full_name}{where}")
        return EXIT_OK
    by_name = {t.full_name: t for t in dependencies.all_tables()}
    print(f"delete from {table.full_name}{where} would remove:")
    for name, n in reversed(list(preview.items())):  # the target first, then what depends on it
        t = by_name.get(name)
        print(f"  {n:>8}  {name}" + ("  (part)" if t is not None and t.master is not None else ""))
    sys.stdout.flush()
    if args.dry_run:
        return EXIT_OK
    if not args.yes:
        confirm("delete", "nothing deleted", " to delete without asking")
    deleted = expr.delete(prompt=False, part_integrity=args.part_integrity)
    print(f"deleted {deleted} row(s) from {table.full_name}, with their parts and dependent rows")
    return EXIT_OK


def cli_advice(message: str, table: Any, key: dict[str, Any]) -> str:
    """The library's advice (Python calls) as the commands to run instead."""
    master = table.master
    if master is not None:
        master_key = {k: v for k, v in key.items() if k in master.primary_key}
        command = f"{PROG} delete {master.full_name} " + (_key_text(master_key) or "--all")
        message = message.replace(f"({master.__qualname__} & key).delete()", f"(`{command}`)")
    return message.replace("pass part_integrity='cascade'", "pass --part-integrity cascade")


# -- declare, demo-data -------------------------------------------------------------------------


def cmd_declare(args: argparse.Namespace) -> int:
    tables = load_modules(args.modules)
    ordered = [t for m in masters_of(tables) for t in (m, *parts_of(m))]
    schemas = list(dict.fromkeys(t.schema.name for t in ordered))
    print(f"declared {len(ordered)} tables in {len(schemas)} schema(s) ({', '.join(schemas)}) "
          f"on {', '.join(databases(tables))}:")
    body = [[("  " if t.master is not None else "") + t.full_name, tier_of(t), class_name(t)] for t in ordered]
    print(_render_table(["TABLE", "TIER", "CLASS"], body, right=set()))
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    load_modules(args.modules, required=False)
    from . import demo

    if args.images is None and args.recordings is None:
        args.images, args.recordings = DEMO_IMAGES, DEMO_RECORDINGS
    images, arrays = demo.add_demo_data(args.images or 0, args.recordings or 0)
    print(f"added images {images} and recordings {arrays} to {demo.imaging.backend.name}")
    return EXIT_OK


# -- main ---------------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options, on the main parser and (so they may follow the command) on each
    subcommand; a subcommand's values land in separate names and are merged in ``main``."""
    default = argparse.SUPPRESS if suppress else None
    prefix = "sub_" if suppress else ""
    parser.add_argument(
        "--database-url", metavar="URL", dest=prefix + "database_url", default=default,
        help=f"database to use: sets {DATABASE_URL_ENV} before importing the module (default: "
             f"${DATABASE_URL_ENV}, else sqlite:///mp_dagster.db in the working directory, unless "
             "the module chooses)",
    )
    parser.add_argument(
        "--module", "-m", metavar="MODULE_OR_FILE", action="append", dest=prefix + "modules",
        default=default,
        help=f"module (dotted name) or Python file whose import declares the tables; repeatable "
             f"(default: {DEFAULT_MODULE_FILE} in the working directory)",
    )
    parser.add_argument("--traceback", action="store_true", dest=prefix + "traceback", default=default,
                        help="show the full traceback on errors (for bug reports)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Operations on mp_dagster tables: status, diagram, delete, declare, gc, demo-data.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=textwrap.fill(help_text, 78), epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _global_options(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = add("status", cmd_status, "per master table: rows, parts with their rows, pending keys, "
                                  "failed keys (failed: from $DAGSTER_HOME's Dagster instance, else -)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("diagram", cmd_diagram, "the table graph: masters with their parts, and parent -> child "
                                    "edges along foreign keys")
    p.add_argument("--dot", action="store_true", help="Graphviz dot (pipe into `dot -Tsvg`)")

    p = add("delete", cmd_delete, "delete the rows of TABLE matching KEY, with their parts and "
                                  "everything depending on them (one transaction), after a preview "
                                  "and a confirmation")
    p.add_argument("table", metavar="TABLE", help="schema.table, class name (Segmentation) or table name")
    p.add_argument("key", metavar="KEY", nargs="*",
                   help="attr=value items, together ONE restriction (e.g. image_id=3)")
    p.add_argument("--all", action="store_true", help="delete every row of TABLE (instead of KEY items)")
    p.add_argument("--part-integrity", choices=PART_INTEGRITY, default="enforce",
                   help="enforce: refuse to delete part rows without their master entry (default); "
                        "cascade: take those master entries too; ignore: delete part rows alone")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show the preview only, delete nothing")

    add("declare", cmd_declare, "import the module(s), which declares their tables (creating missing "
                                "ones), and list them; runs nothing else")

    from .cli_gc import cmd_gc  # the gc command lives in its own module

    p = add("gc", cmd_gc, "object stores: remove the objects no committed row references any more "
                          "(deleted entries, failed or killed writes) once older than the grace period, "
                          "after a preview (count, bytes) and a confirmation")
    p.add_argument("--store", metavar="NAME", help="only this store (default: every store the database's "
                                                   "attributes use)")
    p.add_argument("--grace", metavar="DURATION",
                   help="keep unreferenced objects younger than this: 3600, 30m, 1h, 2d (default 1d); it "
                        "must outlast the longest make between writing its objects and committing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show the preview only, remove nothing")

    p = add("demo-data", cmd_demo_data, "add synthetic images and recordings to the demo tables "
                                        "(mp_dagster.demo; the sensors pick them up)")
    p.add_argument("--images", type=int, metavar="N",
                   help=f"add N synthetic 128x128 images (Image); alone, adds only images "
                        f"(default with neither option: {DEMO_IMAGES} images and {DEMO_RECORDINGS} recording)")
    p.add_argument("--recordings", type=int, metavar="N",
                   help="add N synthetic 16-channel recordings (Recording); alone, adds only recordings")
    add_files_command(add, sys.modules[__name__])  # mp-dagster files TABLE [--register | --reregister PATH...] (cli_files.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.modules = (args.modules or []) + (getattr(args, "sub_modules", None) or [])
    args.database_url = getattr(args, "sub_database_url", None) or args.database_url
    args.traceback = bool(args.traceback or getattr(args, "sub_traceback", False))
    try:
        if args.database_url:
            os.environ[DATABASE_URL_ENV] = _check_url(args.database_url)
        return args.func(args)
    except Declined as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_DECLINED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `mp-dagster status --json | head`: the reader left; say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except UsageError as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - MPError, database errors, anything: one line, exit 1
        if args.traceback:
            traceback.print_exc()
        text = one_line(exc) if isinstance(exc, MPError) else f"{type(exc).__name__}: {one_line(exc)}"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
