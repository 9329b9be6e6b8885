"""The rows side of garbage collection: which objects committed rows reference, in every
mp_dagster schema of a database, and ``schema.gc()`` / ``mp-dagster gc`` built on it.

A store attribute's column holds a JSON record with the object's ``address``
(:mod:`mp_dagster.codecs.store_codec`). The references of a store are the addresses found in
every column, of every table, of every schema recorded in the database (each schema's meta
table says which attributes are ``<codec@store>``), not only the tables a program declared:
a store shared by several schemas of one database is collected safely from any of them. A store
must not be shared by several *databases*: the collector cannot see the other database's rows.

The store's collector (:mod:`mp_dagster.store_gc`) lists the objects first and asks for the
references afterwards, only considers the areas attributes write (``sha256/``, ``objects/``),
and keeps what is younger than the grace period: the objects of writes in flight, and objects
that a new row references again (writing the same content, or inserting a fetched reference,
makes the object young again).

This module is the relational layer's: it imports nothing from Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from psycopg import sql

from . import codecs
from .backends import Backend, redact
from .store_addresses import MANAGED_PREFIXES, StoreError
from .store_gc import GCReport
from .stores import DEFAULT_GRACE, configured_stores, get_store
from .stores import store_variable as variable


@dataclass(frozen=True)
class StoreAttribute:
    """An attribute kept in a store: ``schema.table.attribute``, its codec and store."""

    schema: str
    table: str
    attribute: str
    codec: str
    store: str

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}.{self.attribute}"


def store_attributes(backend: Backend) -> Iterator[StoreAttribute]:
    """Every attribute of every mp_dagster schema in the database whose values are records of
    objects in a store (``<codec@store>`` stored as JSON), from the schemas' meta tables."""
    for schema in backend.list_schemas():
        for table, (_, spec, _) in sorted(backend.read_meta(schema).items()):
            for attr in spec.get("attributes", []):
                try:
                    parsed = codecs.parse_codec_spec(str(attr.get("type", "")))
                except ValueError:
                    continue
                if parsed is None or parsed[1] is None or not str(attr.get("storage", "")).endswith("json"):
                    continue
                yield StoreAttribute(schema, table, attr["name"], parsed[0], codecs.store_of(parsed[1]) or "")


def _addresses(value: object) -> Iterator[str]:
    record = json.loads(value) if isinstance(value, (str, bytes)) else value
    if isinstance(record, dict) and isinstance(record.get("address"), str):
        yield record["address"]


def referenced_addresses(backend: Backend, store: str) -> set[str]:
    """The addresses in ``store`` that committed rows reference (all schemas of the database)."""
    found: set[str] = set()
    for attr in store_attributes(backend):
        if attr.store != store:
            continue
        column = sql.Identifier(attr.attribute)
        try:
            rows = backend.execute(sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                column, backend.table_ident(attr.schema, attr.table), column))
        except Exception:
            if attr.table not in backend.list_tables(attr.schema):
                continue  # dropped meanwhile: it references nothing any more
            raise
        for (value,) in rows:
            found.update(_addresses(value))
    return found


def collect(backend: Backend, store: str | None = None, *, grace: timedelta = DEFAULT_GRACE,
            dry_run: bool = True) -> dict[str, GCReport]:
    """Collect the unreferenced objects of ``store`` (None: every store configured here that
    an attribute of the database uses; see :func:`unconfigured_stores` for the others) older
    than ``grace``; with ``dry_run`` (the default) only report them. Returns ``{store: GCReport}``."""
    used = used_stores(backend)
    if store is not None and store not in used:
        # collecting a store no attribute of this database uses would remove everything in it
        raise StoreError(f"no attribute of this database ({redact(backend.url)}) uses store {store!r}: "
                         "refusing to collect it (is it the right database?); stores in use: "
                         + (", ".join(sorted(used)) or "none"))
    names = sorted(used & set(configured_stores())) if store is None else [store]
    reports: dict[str, GCReport] = {}
    for name in names:
        target = get_store(name)  # a StoreError naming the variable when not configured
        report = target.collect_garbage(lambda name=name: referenced_addresses(backend, name),
                                        grace=grace, dry_run=dry_run, prefixes=MANAGED_PREFIXES)
        # a row committed while the store was listed references an object the listing missed
        report.missing = [a for a in report.missing if not target.exists(a)]
        reports[name] = report
    return reports


def used_stores(backend: Backend) -> set[str]:
    """The stores the database's attributes use."""
    return {a.store for a in store_attributes(backend)}


def unconfigured_stores(backend: Backend) -> list[str]:
    """Stores the database's attributes use that this process has no configuration for
    (``collect(store=None)`` skips them)."""
    return sorted(used_stores(backend) - set(configured_stores()))


def describe(reports: dict[str, GCReport]) -> str:
    """A few lines per store: what was (or would be) removed, and what was kept."""
    lines = []
    for name, r in reports.items():
        verb = "would remove" if r.dry_run else "removed"
        count = len(r.unreferenced) if r.dry_run else len(r.deleted)
        lines.append(f"store {name!r}: {verb} {count} unreferenced object(s), {r.unreferenced_bytes} bytes "
                     f"(older than {r.grace}); kept {r.referenced} referenced and {r.recent} recent "
                     f"of {r.scanned} scanned")
        if r.missing:
            lines.append(f"  WARNING: {len(r.missing)} referenced object(s) missing, e.g. {r.missing[0]!r}")
    return "\n".join(lines) if lines else "no store attributes in this database: nothing to collect"


__all__ = ["StoreAttribute", "StoreError", "collect", "describe", "referenced_addresses", "store_attributes",
           "unconfigured_stores", "used_stores", "variable"]
