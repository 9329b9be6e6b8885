"""Aggregation (``A.aggr(B, n="count(*)")``) and the universal set (``U("species")``).

``A.aggr(B, *attributes, keep_all_rows=False, **computed)``: one row per row of ``A`` (its
primary key and the named ``attributes`` of ``A``), with the ``computed`` attributes evaluated
over the rows of ``B`` matching it (natural join on the attributes they share). Rows of ``A``
with no match in ``B`` are left out unless ``keep_all_rows=True`` (then ``count(*)`` counts the
one empty match as in SQL and DataJoint: count an attribute of ``B`` to get 0).

``U("a", "b")``: every distinct value of ``(a, b)`` in the expression it is combined with.
``U("a") & Animal`` is those values (``a`` becomes the primary key); ``U("a").aggr(Animal,
n="count(*)")`` aggregates per value; ``U().aggr(Animal, n="count(*)")`` is one row over all.

Computed attributes are written in the safe expression language of :mod:`mp_dagster.formula`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from .errors import QueryError
from .expression import QueryExpression, as_expression
from .formula import compile_expression, parse
from .heading import Attribute, Heading
from .operators import KeyProjection, Projection
from .rendering import RenderContext
from .rendering import col as _col

if TYPE_CHECKING:
    from .backends import Backend

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Aggregation(QueryExpression):
    """``group.aggr(source, ...)``; ``group`` None: grouped by ``names`` of ``source`` (``U``)."""

    def __init__(self, group: QueryExpression | None, source: QueryExpression, computed: Mapping[str, str],
                 keep_all_rows: bool = False, names: Sequence[str] = ()) -> None:
        self.group, self.source, self.keep_all_rows = group, source, keep_all_rows
        self.group_names = list(group.heading.names if group is not None else names)
        label = f"{group.name if group is not None else 'U(' + ', '.join(names) + ')'}.aggr({source.name})"
        self._name = label
        if not computed:
            raise QueryError(f"{label}: name at least one computed attribute, e.g. n='count(*)'")
        grouping: dict[str, Attribute] = (
            dict(group.heading.attributes) if group is not None
            else {n: _as_key(source.heading[n]) for n in names})
        self._computed = {}
        for new, text in computed.items():
            where = f"{label} attribute {new!r}"
            if not _NAME.match(new):
                raise QueryError(f"{where}: invalid attribute name {new!r}")
            if new in grouping:
                raise QueryError(f"{where}: {new!r} is already an attribute of {label.split('.aggr(')[0]}")
            self._computed[new] = (parse(text, where), text)
        self._grouping = grouping
        self.common = [n for n in source.heading.names if n in grouping] if group is not None else []
        # types: compile once against a throwaway context (errors surface here, not at fetch)
        attrs = dict(grouping)
        for new, compiled in self._compile(RenderContext(), sql.Identifier("g"), sql.Identifier("s")).items():
            attrs[new] = Attribute(new, compiled.type, False, compiled.nullable)
        self._heading = Heading.key_first(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    @property
    def backend(self) -> Backend:
        return self.source.backend

    @property
    def name(self) -> str:
        return self._name

    def _compile(self, ctx: RenderContext, g: sql.Identifier, s: sql.Identifier) -> dict[str, Any]:
        """Each computed attribute's SQL (``g``: the group's alias, ``s``: the source's); notes
        in ``self._used`` the source attributes they read."""
        used: set[str] = set()
        out = {}
        for new, (node, text) in self._computed.items():
            where = f"{self._name} attribute {new!r}"
            resolve = self._resolver(g, s, used, where, text)
            out[new] = compile_expression(node, resolve, ctx, self.backend.name, where, text)
        self._used = used
        return out

    def _resolver(self, g: sql.Identifier, s: sql.Identifier, used: set[str], where: str, text: str) -> Any:
        """Attribute name -> (column, attribute) for one expression: inside an aggregate function
        the source's attributes (else the group's), outside it only the grouping attributes."""
        grouping, source = self._grouping, self.source.heading

        def resolve(name: str, inside: bool) -> tuple[sql.Composable, Attribute]:
            if inside and name in source:
                used.add(name)
                return _col(s, name), source[name]
            if name in grouping:
                if self.group is None:
                    used.add(name)
                    return _col(s, name), grouping[name]
                return _col(g, name), grouping[name]
            if name in source:
                raise QueryError(f"{where}: {name!r} varies within a group: use it inside an aggregate "
                                 f"function (e.g. max({name})) in {text!r}")
            raise QueryError(f"{where}: unknown attribute {name!r} in {text!r}; attributes are "
                             f"{list(dict.fromkeys([*grouping, *source.names]))}")

        return resolve

    def _from(self, ctx: RenderContext) -> sql.Composable:
        g, s = ctx.alias(), ctx.alias()
        computed = self._compile(ctx, g, s)
        group_alias = g if self.group is not None else s
        cols = [_col(group_alias, n) for n in self.group_names] + [
            sql.SQL("{} AS {}").format(c.sql, sql.Identifier(n)) for n, c in computed.items()]
        needed = list(dict.fromkeys([*self.common, *(n for n in self.group_names if self.group is None),
                                     *(n for n in self.source.heading.names if n in self._used)]))
        source = sql.SQL("({}) AS {}").format(
            self.source._select(ctx, needed or self.source.heading.primary_key[:1] or None), s)
        if self.group is None:
            from_ = source
        else:
            on = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_col(g, n), _col(s, n)) for n in self.common) \
                if self.common else sql.SQL("TRUE" if self.backend.name == "postgres" else "1")
            from_ = sql.SQL("({}) AS {} {} {} ON {}").format(
                self.group._select(ctx), g, sql.SQL("LEFT JOIN" if self.keep_all_rows else "JOIN"), source, on)
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), from_)
        if self.group_names:
            query = query + sql.SQL(" GROUP BY ") + sql.SQL(", ").join(
                _col(group_alias, n) for n in self.group_names)
        return sql.SQL("({})").format(query)


def _as_key(attr: Attribute) -> Attribute:
    return Attribute(attr.name, attr.type, True, attr.nullable)


def aggr(group: Any, source: Any, *attributes: str, keep_all_rows: bool = False, **computed: str) -> Aggregation:
    """``group.aggr(source, *attributes, keep_all_rows=False, **computed)`` (see the module)."""
    group = as_expression(group)
    kept = Projection(group, attributes, {}) if attributes else group.proj()
    return Aggregation(kept, as_expression(source), computed, keep_all_rows)


class U:
    """DataJoint's universal set: ``U("species") & Animal`` (distinct values) and
    ``U("species").aggr(Animal, n="count(*)")`` (aggregation per value)."""

    def __init__(self, *attributes: str) -> None:
        for a in attributes:
            if not isinstance(a, str) or not _NAME.match(a):
                raise QueryError(f"U: invalid attribute name {a!r}")
        self.attributes = list(dict.fromkeys(attributes))

    def __repr__(self) -> str:
        return f"U({', '.join(map(repr, self.attributes))})"

    def _check(self, expr: QueryExpression) -> None:
        for a in self.attributes:
            if a not in expr.heading:
                raise QueryError(f"{self!r}: {expr.name} has no attribute {a!r}; attributes are {expr.heading.names}")
            t = expr.heading[a].type
            if t.is_user_codec or t.name in ("blob", "bytes", "json"):
                raise QueryError(f"{self!r}: {expr.name}.{a} is a {t} attribute: it has no distinct values")

    def __and__(self, other: Any) -> QueryExpression:
        """The distinct values of this set's attributes in ``other`` (they form the key)."""
        expr = as_expression(other)
        if not self.attributes:
            raise QueryError("U() & expression: name the attributes, e.g. U('species') & Animal")
        self._check(expr)
        return KeyProjection(expr, self.attributes)

    def aggr(self, other: Any, keep_all_rows: bool = False, **computed: str) -> Aggregation:
        """``computed`` attributes per distinct value of this set's attributes in ``other``
        (one row over all of ``other`` for ``U()``)."""
        expr = as_expression(other)
        self._check(expr)
        return Aggregation(None, expr, computed, keep_all_rows, self.attributes)

    def __mul__(self, other: Any) -> QueryExpression:
        raise QueryError(f"{self!r} * expression is not supported: use {self!r} & expression")

    __rmul__ = __mul__
