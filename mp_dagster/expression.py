"""Query expressions: restriction ``&``, antijoin ``-``, ``proj``, join ``*`` and fetch.

Expressions are lazy: nothing touches the database until ``fetch``, ``len`` or iteration.
Every restriction value is converted by its attribute's type and sent as a parameter.

The algebra and the statement cache live here; restrictions in :mod:`.restriction`, fetching in
:mod:`.fetch`, the derived expressions (projection, join) in :mod:`.operators`, and statement
composition (aliases, parameters) in :mod:`.rendering`.
"""

from __future__ import annotations

import copy
import copyreg
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import sql

from .errors import QueryError
from .fetch import FetchMixin, _order_term
from .heading import Heading
from .rendering import RenderContext
from .rendering import col as _col
from .restriction import Not, RestrictionMixin, _normalize

if TYPE_CHECKING:
    from .backends import Backend


class QueryExpression(RestrictionMixin, FetchMixin):
    """Base of tables and derived expressions."""

    _restrictions: tuple[Any, ...] = ()

    # -- what subclasses provide -----------------------------------------------------------
    @property
    def heading(self) -> Heading:
        raise NotImplementedError

    @property
    def backend(self) -> Backend:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """A readable name for messages."""
        return type(self).__name__

    def _from(self, ctx: RenderContext) -> sql.Composable:
        raise NotImplementedError

    # -- algebra ---------------------------------------------------------------------------
    def _restricted(self, condition: Any) -> QueryExpression:
        cls = type(self)
        plain = _PLAIN_COPY.get(cls)
        if plain is None:
            plain = _PLAIN_COPY[cls] = (
                type.__getattribute__(cls, "__dictoffset__") != 0
                and type.__getattribute__(cls, "__reduce_ex__") is object.__reduce_ex__
                and getattr(type.__getattribute__(cls, "__new__"), "__self__", None) is object
                and not hasattr(cls, "__copy__") and cls not in copyreg.dispatch_table
            )
        if plain:  # what copy.copy does for a plain object, without its detour
            out = object.__new__(cls)
            out.__dict__.update(self.__dict__)
        else:
            out = copy.copy(self)
        out._restrictions = (*self._restrictions, condition)
        return out

    def __and__(self, condition: Any) -> QueryExpression:
        condition = _normalize(condition)
        self._check_condition(condition)
        return self._restricted(condition)

    def __sub__(self, condition: Any) -> QueryExpression:
        condition = _normalize(condition)
        self._check_condition(condition)
        return self._restricted(Not(condition))

    def restrict(self, condition: Any) -> QueryExpression:
        return self & condition

    def proj(self, *attributes: str, **renames: str) -> QueryExpression:
        """The primary key plus ``attributes``; ``new=\"old\"`` renames. ``proj()`` is the key."""
        return Projection(self, attributes, renames)

    def __mul__(self, other: Any) -> QueryExpression:
        return Join(self, as_expression(other))

    def join(self, other: Any) -> QueryExpression:
        return self * other

    def aggr(self, other: Any, *attributes: str, keep_all_rows: bool = False, **computed: str) -> QueryExpression:
        """One row per row of this expression (its primary key and ``attributes``) with the
        ``computed`` attributes (``n="count(*)"``, ``mean_area="avg(area)"``) evaluated over the
        matching rows of ``other``; rows without a match only with ``keep_all_rows=True``. The
        expressions are parsed, never sent as SQL text: see :mod:`mp_dagster.formula`."""
        from .aggregation import aggr

        return aggr(self, other, *attributes, keep_all_rows=keep_all_rows, **computed)

    @property
    def primary_key(self) -> list[str]:
        return self.heading.primary_key

    def _select(
        self,
        ctx: RenderContext,
        attributes: Sequence[str] | None = None,
        renames: Mapping[str, str] | None = None,
        order_by: Sequence[str] | None = None,
        limit: int | None = None,
        distinct: bool = False,
        offset: int | None = None,
    ) -> sql.Composable:
        """``SELECT`` of ``attributes`` (output name -> source name through ``renames``)."""
        alias = ctx.alias()
        names = list(attributes) if attributes is not None else self.heading.names
        renames = renames or {}
        cols = [
            sql.SQL("{} AS {}").format(_col(alias, renames[n]), sql.Identifier(n))
            if n in renames
            else _col(alias, n)
            for n in names
        ]
        query = sql.SQL("SELECT {}{} FROM {} AS {}").format(
            sql.SQL("DISTINCT ") if distinct else sql.SQL(""),
            sql.SQL(", ").join(cols) if cols else sql.SQL("1"),
            self._from(ctx),
            alias,
        )
        if self._restrictions:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
                self._condition(ctx, alias, c) for c in self._restrictions
            )
        if order_by:
            query = query + sql.SQL(" ORDER BY ") + sql.SQL(", ").join(
                _order_term(alias, self.heading, term) for term in order_by
            )
        if limit is not None:
            query = query + sql.SQL(" LIMIT {}").format(ctx.param(int(limit)))
        if offset is not None:
            if limit is None and self.backend.name != "postgres":
                query = query + sql.SQL(" LIMIT -1")  # SQLite: no OFFSET without a LIMIT
            query = query + sql.SQL(" OFFSET {}").format(ctx.param(int(offset)))
        return query

    # once (populate, write_entry and the Dagster layer ask ``Table & key`` for every key).
    def _query(
        self, kind: str, attributes: Sequence[str] | None, order_by: Sequence[str] | None,
        limit: int | None, build: Any, offset: int | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        key = self._shape(kind, attributes, order_by, limit, offset)
        if key is not None:
            hit = _RENDERED.get(key)
            if hit is not None:
                return hit, self._shape_params(limit, offset)
        ctx = RenderContext()
        query = build(ctx)
        if key is not None and len(_RENDERED) < _RENDERED_MAX:
            # PostgreSQL takes the rendered bytes as they are; SQLite renders a Composable
            _RENDERED[key] = query.as_bytes(None) if key[1] == "postgres" else sql.SQL(query.as_string(None))
        return query, ctx.params

    def _shape(
        self, kind: str, attributes: Sequence[str] | None, order_by: Sequence[str] | None, limit: int | None,
        offset: int | None = None,
    ) -> tuple | None:
        """What the rendered SQL depends on, for a declared table restricted by plain dicts
        (negated or not); None for anything else (rendered every time)."""
        if getattr(self, "_declared_name", None) is None:  # on the instance: no metaclass hook
            return None
        heading = self.heading
        shapes = []
        for condition in self._restrictions:
            negated = type(condition) is Not
            if negated:
                condition = condition.condition
            if type(condition) is not dict:
                return None
            shapes.append((negated, tuple((n, v is None) for n, v in condition.items() if n in heading)))
        return (
            kind, self.backend.name, self.name, tuple(heading.names),
            None if attributes is None else tuple(attributes),
            None if not order_by else tuple(order_by), limit is not None, offset is not None, tuple(shapes),
        )

    def _shape_params(self, limit: int | None, offset: int | None = None) -> dict[str, Any]:
        """The parameters :meth:`_select` would collect, in the same order and with the same errors."""
        heading = self.heading
        params: dict[str, Any] = {}
        for condition in self._restrictions:
            if type(condition) is Not:
                condition = condition.condition
            for name, value in condition.items():
                if value is None or name not in heading:
                    continue
                params[f"p{len(params)}"] = self._restriction_value(heading[name], value)
        if limit is not None:
            params[f"p{len(params)}"] = int(limit)
        if offset is not None:
            params[f"p{len(params)}"] = int(offset)
        return params

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.fetch(as_dict=True))

    def _repr_html_(self) -> str:
        """The notebook preview: the first rows (blobs summarised) and the row count."""
        from .preview import html_preview

        return html_preview(self)

    def __repr__(self) -> str:
        try:
            n = len(self)
        except Exception as exc:  # noqa: BLE001 - repr must not raise
            return f"<{self.name}: {exc}>"
        return f"<{self.name}: {n} rows; key {self.heading.primary_key}; attributes {self.heading.names}>"


_RENDERED: dict[tuple, Any] = {}  # see QueryExpression._query
_PLAIN_COPY: dict[type, bool] = {}  # see QueryExpression._restricted
_RENDERED_MAX = 4096


def as_expression(obj: Any) -> QueryExpression:
    """A table class or an expression, as an expression."""
    if isinstance(obj, QueryExpression):
        return obj
    if isinstance(obj, type) and issubclass(obj, QueryExpression):
        return obj()
    raise QueryError(f"expected a table or query expression, got {type(obj).__name__}")


# the derived expressions subclass QueryExpression: imported last, re-exported from here
from .operators import Join, KeyProjection, Projection  # noqa: E402

__all__ = [
    "Join", "KeyProjection", "Not", "Projection", "QueryExpression", "RenderContext", "as_expression",
]
