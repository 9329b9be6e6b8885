"""Deletes: through the master only, cascading to parts and downstream, in one transaction.

``cascade_plan`` works out, before anything is removed, which rows of which tables a delete
takes (counts per table for the preview) and enforces the part rule: part rows never go
without their master entry.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import dependencies
from .errors import MPError, PartIntegrityError
from .expression import KeyProjection, QueryExpression

if TYPE_CHECKING:
    from .table import Table

PART_INTEGRITY = ("enforce", "cascade", "ignore")
DELETE_BATCH = 1000
DELETE_ATTEMPTS = 5  # a delete racing with writers of dependent rows is retried this often


@dataclass
class CascadePlan:
    """Restricted expressions per table, leaves first (the order rows are deleted in)."""

    target: type[Table]
    steps: list[tuple[type[Table], QueryExpression]]

    def counts(self) -> list[tuple[type[Table], QueryExpression, int]]:
        return [(t, e, len(e)) for t, e in self.steps]

    def preview(self) -> str:
        lines = [f"delete from {self.target.full_name} would remove:"]
        for t, _, n in self.counts():
            lines.append(f"  {n:>8}  {t.full_name}" + ("  (part)" if t.master is not None else ""))
        return "\n".join(lines)


def cascade_plan(expr: Table, part_integrity: str = "enforce") -> CascadePlan:
    """What deleting ``expr`` (a restricted table) takes with it.

    ``part_integrity``: ``"enforce"`` refuses a delete that would remove part rows without
    their master entry (including a delete from a part); ``"cascade"`` takes those master entries
    too (and what depends on them); ``"ignore"`` deletes the part rows alone.
    """
    if part_integrity not in PART_INTEGRITY:
        raise MPError(f"part_integrity must be one of {PART_INTEGRITY}, not {part_integrity!r}")
    target = type(expr)
    seeds: dict[str, list[QueryExpression]] = {target.full_name: [expr]}
    classes: dict[str, type[Table]] = {target.full_name: target}
    if target.master is not None and part_integrity == "enforce":
        raise PartIntegrityError(
            f"{target.full_name} is a part of {target.master.full_name}: delete from the master "
            f"({target.master.__qualname__} & key).delete(), or pass part_integrity='cascade' to "
            "delete the whole master entries"
        )
    for _ in range(100):  # each round adds master entries; the graph is finite
        steps = _propagate(seeds, classes)
        if part_integrity == "ignore":
            break
        added = False
        by_name = {t.full_name: e for t, e in steps}
        for t, e in steps:
            master = t.master
            if master is None:
                continue
            pk = master._definition.heading.primary_key
            # compared on the master's primary key only: a part and its master may share
            # secondary attributes (both ``-> L``) whose values differ
            orphans = KeyProjection(e, pk)
            if master.full_name in by_name:
                orphans = orphans - KeyProjection(by_name[master.full_name], pk)
            if not orphans:
                continue
            if part_integrity == "enforce":
                raise PartIntegrityError(
                    f"deleting from {target.full_name} would remove rows of part {t.full_name} without "
                    f"their master {master.full_name}; delete from the master or pass "
                    "part_integrity='cascade'"
                )
            seeds.setdefault(master.full_name, []).append(master() & KeyProjection(orphans, pk))
            classes[master.full_name] = master
            added = True
        if not added:
            break
    return CascadePlan(target=target, steps=steps)


def _propagate(
    seeds: dict[str, list[QueryExpression]], classes: dict[str, type[Table]]
) -> list[tuple[type[Table], QueryExpression]]:
    """Restrict every descendant of the seeds by its parents' restricted rows; leaves first."""
    tables: dict[str, type[Table]] = dict(classes)
    frontier = list(classes.values())
    while frontier:
        t = frontier.pop()
        for child, _ in dependencies.children(t):
            if child.full_name not in tables:
                tables[child.full_name] = child
                frontier.append(child)
    restricted: dict[str, QueryExpression] = {}
    for t in dependencies.topological(tables.values()):
        conditions: list[Any] = list(seeds.get(t.full_name, []))
        for fk in t._definition.foreign_keys:
            parent = restricted.get(fk.parent.full_name)
            if parent is not None:
                conditions.append(KeyProjection(parent, fk.attributes))
        if not conditions:
            continue
        restricted[t.full_name] = conditions[0] if len(conditions) == 1 and isinstance(
            conditions[0], QueryExpression) and type(conditions[0]) is t else t() & conditions
    order = dependencies.topological(tables[n] for n in restricted)
    return [(t, restricted[t.full_name]) for t in reversed(order)]


def delete(
    expr: Table,
    prompt: bool | None = None,
    part_integrity: str = "enforce",
    confirm: Callable[[str], bool] | None = None,
) -> int:
    """Delete ``expr``'s rows and everything depending on them in ONE transaction, leaves first.

    ``prompt=None`` asks for confirmation only when stdin is a terminal; ``prompt=False`` never
    asks; ``prompt=True`` asks, and refuses to wait when stdin is not a terminal. Returns the
    number of rows deleted from ``expr``'s own table.
    """
    target = type(expr)
    backend = target.schema.backend
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if prompt is None:
        prompt = interactive
    if prompt:
        # the preview is planned only to be shown; the delete plans again inside its transaction
        plan = cascade_plan(expr, part_integrity)
        if confirm is None:
            if not interactive:
                raise MPError(
                    f"delete from {target.full_name} asks for confirmation but stdin is not a terminal: "
                    "pass prompt=False"
                )
            confirm = _ask
        if not confirm(plan.preview()):
            return 0
    for attempt in range(DELETE_ATTEMPTS):
        deleted = 0
        try:
            with backend.transaction():
                # keys first, all of them, before any row goes: later restrictions read earlier tables
                keysets = [(t, e.fetch("KEY")) for t, e in cascade_plan(expr, part_integrity).steps]
                for t, keys in keysets:
                    _delete_keys(t, keys)
                    if t is target:
                        deleted = len(keys)
        except Exception as exc:
            if backend.integrity_kind(exc) != "foreign_key":
                raise
            if attempt + 1 < DELETE_ATTEMPTS and not backend.in_transaction:
                # a writer (populate) committed rows referencing ours after the keys were read:
                # nothing was deleted; read the keys again, with those rows, and retry
                time.sleep(0.005 * (attempt + 1))
                continue
            raise MPError(
                f"delete from {target.full_name} was refused by the database (nothing was deleted): rows of "
                f"a table that is not declared in this process reference them ({exc})"
            ) from None
        return deleted
    raise AssertionError("unreachable")  # pragma: no cover


def _delete_keys(table: type[Table], keys: list[dict[str, Any]]) -> None:
    if not keys:
        return
    backend = table.schema.backend
    pk = table._definition.heading.primary_key
    query = sql.SQL("DELETE FROM {} WHERE {}").format(
        backend.table_ident(table.schema.name, table.table_name),
        sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in pk),
    )
    rows = [[k[a] for a in pk] for k in keys]
    heading = table._definition.heading
    if backend.needs_adapt([heading[a] for a in pk]):
        rows = [backend.adapt_row([heading[a] for a in pk], r, table.full_name) for r in rows]
    backend.execute_many(query, rows)


def _ask(preview: str) -> bool:
    print(preview)
    return input("Proceed? [yes/No]: ").strip().lower() in ("y", "yes")
