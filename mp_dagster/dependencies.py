"""The foreign-key graph between declared tables: parents, children, topological order.

Every table class registers here when its schema declares it, so deletes can cascade and the
Dagster layer can draw lineage without asking the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_registry: dict[str, Any] = {}  # full name -> table class (the latest declaration wins)


def register(table: Any) -> None:
    _registry[table.full_name] = table


def unregister(full_name: str) -> None:
    _registry.pop(full_name, None)


def lookup(full_name: str) -> Any | None:
    return _registry.get(full_name)


def all_tables() -> list[Any]:
    return list(_registry.values())


def parents(table: Any) -> list[Any]:
    """Tables ``table`` references, in declaration order."""
    return [fk.parent for fk in table._definition.foreign_keys]


def children(table: Any) -> list[tuple[Any, Any]]:
    """(child table, its foreign key to ``table``) for every loaded table referencing ``table``."""
    out = []
    for t in _registry.values():
        for fk in t._definition.foreign_keys:
            if fk.parent.full_name == table.full_name and t.full_name != table.full_name:
                out.append((t, fk))
    return out


def descendants(table: Any) -> list[Any]:
    """``table`` and every loaded table that depends on it, directly or not (parts included),
    parents before children."""
    seen: dict[str, Any] = {table.full_name: table}
    frontier = [table]
    while frontier:
        for child, _ in children(frontier.pop()):
            if child.full_name not in seen:
                seen[child.full_name] = child
                frontier.append(child)
    return topological(seen.values())


def ancestors(table: Any) -> list[Any]:
    """``table`` and every table it depends on, directly or not, parents before children."""
    seen: dict[str, Any] = {table.full_name: table}
    frontier = [table]
    while frontier:
        for parent in parents(frontier.pop()):
            if parent.full_name not in seen:
                seen[parent.full_name] = parent
                frontier.append(parent)
    return topological(seen.values())


def topological(tables: Iterable[Any]) -> list[Any]:
    """Parents before children (stable: otherwise declaration order)."""
    tables = list(dict.fromkeys(tables))
    names = {t.full_name for t in tables}
    done: set[str] = set()
    out: list[Any] = []

    def visit(t: Any, stack: tuple[str, ...]) -> None:
        if t.full_name in done:
            return
        for p in parents(t):
            if p.full_name in names and p.full_name not in stack:
                visit(p, (*stack, t.full_name))
        done.add(t.full_name)
        out.append(t)

    for t in tables:
        visit(t, ())
    return out


def master_of(table: Any) -> Any:
    """The master of a part, or the table itself."""
    master = getattr(table, "master", None)
    return master if master is not None else table  # not `or`: a table class is falsy when empty


def part_restriction(part: Any, key: dict[str, Any]) -> dict[str, Any]:
    """``key`` (the master's primary key) in the names of ``part``'s columns that hold it (they
    differ when the part reaches its master through a renamed reference)."""
    master = part.master
    pk = master._definition.heading.primary_key
    cols = part._definition.master_key or tuple(pk)
    return {c: key[k] for k, c in zip(pk, cols) if k in key}


def upstream_masters(master: Any) -> list[Any]:
    """Masters of every table that ``master`` or any of its parts references (lineage)."""
    out: dict[str, Any] = {}
    for t in (master, *master.parts):
        for p in parents(t):
            m = master_of(p)
            if m.full_name != master.full_name:
                out[m.full_name] = m
    return list(out.values())


def edges(tables: Iterable[Any] | None = None) -> list[tuple[Any, Any]]:
    """``(parent, child)`` for every foreign key between ``tables`` (default: every declared
    table), one edge per pair, children in topological order, parents in declaration order."""
    tables = list(_registry.values()) if tables is None else list(tables)
    names = {t.full_name for t in tables}
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for child in topological(tables):
        for p in parents(child):
            if p.full_name in names and p.full_name != child.full_name:
                out.setdefault((p.full_name, child.full_name), (p, child))
    return list(out.values())
