"""Deletes: through the master only, cascading to parts and downstream, in one transaction.

``cascade_plan`` works out, before anything is removed, which rows of which tables a delete
takes (counts per table for the preview) and enforces the part rule: part rows never go
without their master entry.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from . import dependencies
from .errors import MPError, PartIntegrityError
from .expression import RenderContext

if TYPE_CHECKING:
    from .table import Table

PART_INTEGRITY = ("enforce", "cascade", "ignore")
DELETE_ATTEMPTS = 5  # a delete racing with writers of dependent rows is retried this often


@dataclass
class CascadePlan:
    """Rows per table that a delete takes, leaves first (the order rows are deleted in)."""

    target: type[Table]
    steps: list[tuple[type[Table], int]]

    def counts(self) -> list[tuple[type[Table], int]]:
        return list(self.steps)

    def preview(self) -> str:
        lines = [f"delete from {self.target.full_name} would remove:"]
        for t, n in self.steps:
            lines.append(f"  {n:>8}  {t.full_name}" + ("  (part)" if t.master is not None else ""))
        return "\n".join(lines)


class KeySet:
    """The primary keys of one table's rows to delete, materialized in a temporary table.

    Key sets only grow while a plan is worked out; each statement that grows one reads other
    key sets (never nested subqueries of subqueries), so the SQL has a bounded size whatever
    the depth of the graph or the number of rounds."""

    def __init__(self, table: type[Table], name: str) -> None:
        self.table = table
        self.pk = table._definition.heading.primary_key
        self.ident = sql.Identifier(name)
        self.index = sql.Identifier(name + "_k")
        self.count = 0
        # how the keys came: through foreign keys (fk, parent key set), or otherwise (the
        # delete's own restriction, master entries pulled in by the part rule)
        self.edges: dict[int, tuple[Any, KeySet]] = {}
        self.other_sources = False
        self.filled = False  # any keys added yet (an empty set needs no check for known keys)

    def via_one_edge(self) -> tuple[Any, KeySet] | None:
        """(fk, parent key set) when every key came through that one foreign key: the rows are
        then exactly those referencing the parent's keys, and are deleted through them (the
        parent's keys select ranges of the primary key: fewer probes than one per row)."""
        if self.other_sources or len(self.edges) != 1:
            return None
        return next(iter(self.edges.values()))

    def columns(self, alias: sql.Composable | None = None) -> sql.Composable:
        return sql.SQL(", ").join(_col(alias, a) for a in self.pk)

    def create(self, backend: Any) -> None:
        t = self.table
        temp = sql.SQL(" ON COMMIT DROP") if backend.name == "postgres" else sql.SQL("")
        backend.execute(sql.SQL("CREATE TEMPORARY TABLE {}{} AS SELECT {} FROM {} WHERE 1 = 0").format(
            self.ident, temp, self.columns(), backend.table_ident(t.schema.name, t.table_name)))
        backend.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(self.index, self.ident, self.columns()))

    def add(self, backend: Any, source: sql.Composable, params: Any = None, unique: bool = False) -> None:
        """Add the keys ``source`` selects (the primary key's columns, in order) that are new;
        ``unique``: ``source`` gives each key once (rows of one table), no DISTINCT needed."""
        s, d = sql.Identifier("s"), sql.Identifier("d")
        backend.execute(sql.SQL("INSERT INTO {k} ({cols}) SELECT {distinct}{scols} FROM ({source}) AS s{new}").format(
            k=self.ident, cols=self.columns(), scols=self.columns(s), source=source,
            distinct=sql.SQL("" if unique else "DISTINCT "),
            new=sql.SQL(" WHERE NOT EXISTS (SELECT 1 FROM {} AS d WHERE {})").format(
                self.ident, _match(d, self.pk, s, self.pk)) if self.filled else sql.SQL("")), params)
        self.filled = True

    def recount(self, backend: Any) -> int:
        count = int(backend.execute(sql.SQL("SELECT count(*) FROM {}").format(self.ident))[0][0])
        if count != self.count and backend.name == "postgres":
            # statistics for the planner: a temporary table has none (autovacuum skips them),
            # and with the default guess it hashes whole tables instead of probing their keys
            backend.execute(sql.SQL("ANALYZE {}").format(self.ident))
        self.count = count
        return self.count

    def drop(self, backend: Any) -> None:
        backend.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))


def _col(alias: sql.Composable | None, name: str) -> sql.Composable:
    return sql.Identifier(name) if alias is None else sql.SQL("{}.{}").format(alias, sql.Identifier(name))


def _match(a: sql.Composable, a_names: Any, b: sql.Composable, b_names: Any) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_col(a, x), _col(b, y)) for x, y in zip(a_names, b_names))


def cascade_plan(expr: Table, part_integrity: str = "enforce") -> CascadePlan:
    """What deleting ``expr`` (a restricted table) takes with it (runs in a transaction of its own,
    or the caller's: see :func:`_plan`)."""
    backend = type(expr).schema.backend
    with backend.transaction():
        keysets, plan = _plan(expr, part_integrity)
        _drop(backend, keysets)
    return plan


def _plan(expr: Table, part_integrity: str) -> tuple[dict[str, KeySet], CascadePlan]:
    """The key sets of every table a delete of ``expr`` reaches, and the counts (leaves first).

    ``part_integrity``: ``"enforce"`` refuses a delete that would remove part rows without
    their master entry (including a delete from a part); ``"cascade"`` takes those master entries
    too (and what depends on them); ``"ignore"`` deletes the part rows alone.

    Rounds: the key sets are propagated down the foreign keys (parents before children; an edge
    runs again only when its parent's key set grew), then parts whose master entries are not all
    taken either refuse (enforce) or add those master keys (cascade) -- a fixed point over the
    master entries the cascade pulls in; it ends because key sets only grow and are finite.
    Must run inside a transaction (the key sets are temporary tables).
    """
    if part_integrity not in PART_INTEGRITY:
        raise MPError(f"part_integrity must be one of {PART_INTEGRITY}, not {part_integrity!r}")
    target = type(expr)
    backend = target.schema.backend
    if target.master is not None and part_integrity == "enforce":
        raise PartIntegrityError(
            f"{target.full_name} is a part of {target.master.full_name}: delete from the master "
            f"({target.master.__qualname__} & key).delete(), or pass part_integrity='cascade' to "
            "delete the whole master entries"
        )
    prefix = f"mp_del_{uuid.uuid4().hex[:12]}_"
    keysets: dict[str, KeySet] = {}
    try:
        def reach(table: type[Table]) -> None:
            frontier = [table]
            while frontier:
                t = frontier.pop()
                if t.full_name in keysets:
                    continue
                keysets[t.full_name] = ks = KeySet(t, f"{prefix}{len(keysets)}")
                ks.create(backend)
                frontier.extend(child for child, _ in dependencies.children(t))

        reach(target)
        ctx = RenderContext()
        keysets[target.full_name].add(backend, expr._select(ctx, target._definition.heading.primary_key), ctx.params)
        keysets[target.full_name].other_sources = True
        edge_seen: dict[tuple[str, int], int] = {}
        while True:
            order = dependencies.topological(ks.table for ks in keysets.values())
            for t in order:
                ks = keysets[t.full_name]
                for i, fk in enumerate(t._definition.foreign_keys):
                    parent = keysets.get(fk.parent.full_name)
                    if parent is None or not parent.count or edge_seen.get((t.full_name, i)) == parent.count:
                        continue
                    edge_seen[(t.full_name, i)] = parent.count
                    ks.add(backend, _children_of(backend, t, fk, parent), unique=True)
                    ks.edges[id(fk)] = (fk, parent)
                ks.recount(backend)
            if part_integrity == "ignore":
                break
            added = False
            for t in order:
                master, ks = t.master, keysets[t.full_name]
                if master is None or not ks.count:
                    continue
                mks = keysets.get(master.full_name)
                pk = master._definition.heading.primary_key
                # compared on the master's primary key only: a part and its master may share
                # secondary attributes (both ``-> L``) whose values differ
                mk = t._definition.master_key or tuple(pk)  # the part's columns holding it
                o, d, k = sql.Identifier("o"), sql.Identifier("d"), sql.Identifier("k")
                if set(mk) <= set(ks.pk):
                    rows, where = ks.ident, []
                else:  # the master's key is secondary in this part (``-> master`` below ``---``)
                    rows = backend.table_ident(t.schema.name, t.table_name)
                    where = [sql.SQL("EXISTS (SELECT 1 FROM {} AS k WHERE {})").format(
                        ks.ident, _match(k, ks.pk, o, ks.pk))]
                if mks is not None:
                    where.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS d WHERE {})").format(
                        mks.ident, _match(d, pk, o, mk)))
                orphans = sql.SQL("SELECT {} FROM {} AS o{}").format(
                    sql.SQL(", ").join(sql.SQL("{} AS {}").format(_col(o, c), sql.Identifier(a))
                                       for c, a in zip(mk, pk)), rows,
                    sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
                if mks is not None and not backend.execute(sql.SQL("SELECT EXISTS ({})").format(orphans))[0][0]:
                    continue
                if part_integrity == "enforce":
                    raise PartIntegrityError(
                        f"deleting from {target.full_name} would remove rows of part {t.full_name} without "
                        f"their master {master.full_name}; delete from the master or pass "
                        "part_integrity='cascade'"
                    )
                if mks is None:
                    reach(master)
                    mks = keysets[master.full_name]
                mks.add(backend, orphans)
                mks.other_sources = True
                mks.recount(backend)
                added = True
            if not added:
                break
        order = dependencies.topological(ks.table for ks in keysets.values())
        plan = CascadePlan(target=target, steps=[(t, keysets[t.full_name].count) for t in reversed(order)])
    except BaseException as exc:
        if isinstance(exc, MPError) or not backend.errors_abort_transaction:
            _drop(backend, keysets)  # else the rollback takes the temporary tables
        raise
    return keysets, plan


def _children_of(backend: Any, table: type[Table], fk: Any, parent: KeySet) -> sql.Composable:
    """``SELECT`` of the primary keys of ``table``'s rows whose foreign key ``fk`` points into
    ``parent``'s key set."""
    c, p = sql.Identifier("c"), sql.Identifier("p")
    pk = table._definition.heading.primary_key
    parent_names = fk.referenced  # the parent's names: a renamed key (-> P.proj(b='a')) maps b to a
    return sql.SQL("SELECT {} FROM {} AS c WHERE EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
        sql.SQL(", ").join(_col(c, a) for a in pk),
        backend.table_ident(table.schema.name, table.table_name),
        parent.ident, _match(p, parent_names, c, fk.attributes))


def _drop(backend: Any, keysets: dict[str, KeySet]) -> None:
    for ks in keysets.values():
        ks.drop(backend)


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
                # every key set first, before any row goes: later key sets read earlier tables
                keysets, plan = _plan(expr, part_integrity)
                for t, n in plan.steps:
                    if n:
                        _delete_keys(t, keysets[t.full_name])
                deleted = keysets[target.full_name].count
                _drop(backend, keysets)
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


def _delete_keys(table: type[Table], keys: KeySet) -> None:
    """Delete ``table``'s rows whose primary key is in ``keys`` (one statement)."""
    backend = table.schema.backend
    ident = backend.table_ident(table.schema.name, table.table_name)
    d = sql.Identifier("d")
    edge = keys.via_one_edge()
    if edge is not None:  # the rows referencing the parent's keys: the same rows
        fk, parent = edge
        match = _match(d, fk.referenced, ident, fk.attributes)
        source = parent.ident
    else:
        match = _match(d, keys.pk, ident, keys.pk)
        source = keys.ident
    backend.execute(sql.SQL("DELETE FROM {} WHERE EXISTS (SELECT 1 FROM {} AS d WHERE {})").format(
        ident, source, match))


def _ask(preview: str) -> bool:
    print(preview)
    return input("Proceed? [yes/No]: ").strip().lower() in ("y", "yes")
