"""The table diagram: masters with their parts drawn inside them, one edge per foreign key.

:class:`Diagram` is what a notebook shows (``mp.Diagram(schema)`` renders as SVG through
Graphviz: ``pip install "mp_dagster[notebook]"`` and Graphviz's ``dot`` program, e.g. Debian's
``graphviz`` package); ``mp-dagster diagram`` prints :func:`diagram_text` or :func:`diagram_dot`.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

from . import dependencies
from .errors import MPError


def masters_of(tables: list[Any]) -> list[Any]:
    return dependencies.topological(t for t in tables if t.master is None)


def parts_of(master: Any) -> list[Any]:
    return dependencies.topological(master.parts)


def class_name(table: Any) -> str:
    return table.__qualname__ if table.master is None else f"{table.master.__name__}.{table.__name__}"


def tier_of(table: Any) -> str:
    return "part" if table.master is not None else table.tier


_DOT_STYLE = {
    "manual": 'shape=box, style="rounded,filled", fillcolor="#d9f2d9"',
    "lookup": 'shape=plaintext, style=filled, fillcolor="#e6e6e6"',
    "imported": 'shape=ellipse, style=filled, fillcolor="#d9e6f7"',
    "computed": 'shape=ellipse, style=filled, fillcolor="#f7dada"',
    "part": 'shape=box, style=filled, fillcolor="#ffffff", fontsize=10',
}


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def diagram_text(tables: list[Any]) -> str:
    lines = ["tables:"]
    for m in masters_of(tables):
        lines.append(f"  {m.full_name}  ({class_name(m)}, {m.tier})")
        for p in parts_of(m):
            lines.append(f"      {p.full_name}  ({class_name(p)}, part)")
    edges = dependencies.edges(tables)
    lines.append("")
    lines.append("foreign keys (parent -> child):")
    lines.extend(f"  {p.full_name} -> {c.full_name}" for p, c in edges)
    if not edges:
        lines.append("  (none)")
    return "\n".join(lines)


def diagram_dot(tables: list[Any]) -> str:
    lines = [
        "digraph mp_dagster {",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555"];',
    ]

    def node(t: Any, indent: str) -> str:
        label = f"{class_name(t)}\\n{t.full_name}"
        return f'{indent}{_dot_id(t.full_name)} [label="{label}", {_DOT_STYLE.get(tier_of(t), "")}];'

    for m in masters_of(tables):
        parts = parts_of(m)
        if not parts:
            lines.append(node(m, "  "))
            continue
        lines.append(f"  subgraph {_dot_id('cluster_' + m.full_name)} {{")
        lines.append(f"    label={_dot_id(class_name(m))};")
        lines.append('    style="rounded,dashed"; color="#888888";')
        lines.append(node(m, "    "))
        lines.extend(node(p, "    ") for p in parts)
        lines.append("  }")
    for p, c in dependencies.edges(tables):
        lines.append(f"  {_dot_id(p.full_name)} -> {_dot_id(c.full_name)};")
    lines.append("}")
    return "\n".join(lines)


class Diagram:
    """The tables of schemas, modules or table classes (default: every declared table), drawn
    as in ``mp-dagster diagram``. A table brings its master and the master's parts (an entry is
    drawn whole). Notebooks show it as SVG (:meth:`svg`); ``+`` joins two diagrams."""

    def __init__(self, *sources: Any) -> None:
        found: list[Any] = []
        for source in sources:
            found.extend(_tables_of(source))
        if not sources:
            found = dependencies.all_tables()
        tables: dict[str, Any] = {}
        for t in found:
            master = dependencies.master_of(t)
            for u in (master, *master.parts):
                tables.setdefault(u.full_name, u)
        self.tables: list[Any] = list(tables.values())

    def __add__(self, other: Diagram) -> Diagram:
        out = Diagram.__new__(Diagram)
        out.tables = list({t.full_name: t for t in (*self.tables, *other.tables)}.values())
        return out

    def text(self) -> str:
        """Masters, their parts indented, then the foreign keys (parent -> child)."""
        return diagram_text(self.tables)

    def dot(self) -> str:
        """Graphviz dot source (parts in a cluster of their master)."""
        return diagram_dot(self.tables)

    def svg(self) -> str:
        """The diagram as SVG, laid out by Graphviz's ``dot``."""
        try:
            import graphviz
        except ImportError:
            raise MPError('drawing a Diagram needs the graphviz package: pip install "mp_dagster[notebook]"') from None
        try:
            return graphviz.Source(self.dot()).pipe(format="svg", encoding="utf-8")
        except graphviz.ExecutableNotFound:
            raise MPError("drawing a Diagram needs Graphviz's dot program (Debian/Ubuntu: apt-get install "
                          "graphviz; conda: conda install graphviz)") from None

    def _repr_svg_(self) -> str:
        return self.svg()

    def __repr__(self) -> str:
        return self.text()


def _tables_of(source: Any) -> Iterable[Any]:
    """The table classes a Diagram source stands for."""
    from .schema import Schema
    from .table import Table

    if isinstance(source, Schema):
        return list(source.tables)
    if isinstance(source, type) and issubclass(source, Table):
        source._full_name()  # raises for a class that is not declared
        return [source]
    if isinstance(source, types.ModuleType):
        return [v for v in vars(source).values() if isinstance(v, type) and issubclass(v, Table)
                and type.__getattribute__(v, "_declared_name") is not None]
    raise MPError(f"Diagram takes schemas, table classes or modules, not {type(source).__name__}")
