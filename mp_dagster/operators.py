"""Derived expressions: projection (``proj``) and natural join (``*``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from psycopg import sql

from .errors import QueryError
from .expression import QueryExpression
from .heading import Attribute, Heading
from .rendering import RenderContext
from .rendering import col as _col

if TYPE_CHECKING:
    from .backends import Backend


class Projection(QueryExpression):
    """``expr.proj(*attributes, **renames)``: the primary key plus the named attributes."""

    def __init__(self, source: QueryExpression, attributes: Sequence[str], renames: Mapping[str, str]) -> None:
        self.source = source
        heading = source.heading
        for old in renames.values():
            if old not in heading:
                raise QueryError(f"{source.name}: cannot rename unknown attribute {old!r}")
        renamed: dict[str, list[str]] = {}
        for new, old in renames.items():
            renamed.setdefault(old, []).append(new)
        keep = list(heading.primary_key)
        excluded = []
        for a in attributes:
            if a is Ellipsis or a == "*":  # DataJoint's proj(...): every attribute
                keep += heading.secondary
            elif isinstance(a, str) and a.startswith("-"):  # proj(..., "-attr"): all but attr
                name = a[1:].strip()
                if name not in heading:
                    raise QueryError(f"{source.name}: cannot exclude unknown attribute {name!r}")
                if heading[name].in_key:
                    raise QueryError(f"{source.name}: cannot exclude primary key attribute {name!r}")
                excluded.append(name)
            elif not isinstance(a, str) or a not in heading:
                raise QueryError(f"{source.name}: cannot project unknown attribute {a!r}")
            else:
                keep.append(a)
        keep = [n for n in dict.fromkeys(keep + [old for old in renamed if old not in keep]) if n not in excluded]
        self._renames: dict[str, str] = {}
        attrs: dict[str, Attribute] = {}
        for n in keep:  # a renamed attribute keeps its place (in the primary key too)
            for new in renamed.get(n, [n]):
                a = heading[n]
                attrs[new] = a if new == n else Attribute(
                    new, a.type, a.in_key, a.nullable, a.default, a.has_default, a.comment)
                if new != n:
                    self._renames[new] = n
        self._heading = Heading.key_first(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    @property
    def backend(self) -> Backend:
        return self.source.backend

    @property
    def name(self) -> str:
        return self.source.name

    def _from(self, ctx: RenderContext) -> sql.Composable:
        return sql.SQL("({})").format(self.source._select(ctx, self._heading.names, self._renames))


class KeyProjection(Projection):
    """Only the named attributes, which become the key (for semijoins on a foreign key)."""

    def __init__(self, source: QueryExpression, names: Sequence[str]) -> None:
        self.source = source
        self._renames = {}
        self._heading = Heading(
            {
                n: Attribute(n, source.heading[n].type, True, source.heading[n].nullable)
                for n in names
            }
        )

    def _from(self, ctx: RenderContext) -> sql.Composable:
        return sql.SQL("({})").format(self.source._select(ctx, self._heading.names, distinct=True))


class Join(QueryExpression):
    """Natural join on the attributes both sides share."""

    def __init__(self, left: QueryExpression, right: QueryExpression) -> None:
        self.left, self.right = left, right
        attrs = dict(left.heading.attributes)
        for n, a in right.heading.attributes.items():
            if n in attrs:
                if attrs[n].type != a.type:
                    raise QueryError(f"cannot join {left.name} and {right.name}: {n!r} has different types")
                if a.in_key and not attrs[n].in_key:
                    attrs[n] = a
            else:
                attrs[n] = a
        self._heading = Heading.key_first(attrs)

    @property
    def heading(self) -> Heading:
        return self._heading

    @property
    def backend(self) -> Backend:
        return self.left.backend

    @property
    def name(self) -> str:
        return f"({self.left.name} * {self.right.name})"

    def _from(self, ctx: RenderContext) -> sql.Composable:
        la, ra = ctx.alias(), ctx.alias()
        common = [n for n in self.left.heading.names if n in self.right.heading]
        cols = [_col(la, n) for n in self.left.heading.names] + [
            _col(ra, n) for n in self.right.heading.names if n not in self.left.heading
        ]
        on = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_col(la, n), _col(ra, n)) for n in common)
        return sql.SQL("(SELECT {} FROM ({}) AS {} {} ({}) AS {}{})").format(
            sql.SQL(", ").join(cols),
            self.left._select(ctx),
            la,
            sql.SQL("JOIN") if common else sql.SQL("CROSS JOIN"),
            self.right._select(ctx),
            ra,
            sql.SQL(" ON ") + on if common else sql.SQL(""),
        )
