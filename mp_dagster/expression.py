"""Query expressions: restriction ``&``, antijoin ``-``, ``proj``, join ``*`` and fetch.

Expressions are lazy: nothing touches the database until ``fetch``, ``len`` or iteration.
Every restriction value is converted by its attribute's type and sent as a parameter.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from .errors import DataError, MPError, QueryError
from .heading import Attribute, Heading, from_sql_value, numpy_dtype, to_sql_value

if TYPE_CHECKING:
    from .backends import Backend


class Not:
    """The negation of a restriction (what ``-`` adds)."""

    def __init__(self, condition: Any) -> None:
        self.condition = condition


class RenderContext:
    """Collects parameters and hands out fresh aliases while one statement is composed."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._aliases = itertools.count()
        self._params = itertools.count()

    def alias(self) -> sql.Identifier:
        return sql.Identifier(f"q{next(self._aliases)}")

    def param(self, value: Any) -> sql.Placeholder:
        name = f"p{next(self._params)}"
        self.params[name] = value
        return sql.Placeholder(name)


def _col(alias: sql.Identifier, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(alias, sql.Identifier(name))


class QueryExpression:
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
        out = copy.copy(self)
        out._restrictions = (*self._restrictions, condition)
        return out

    def __and__(self, condition: Any) -> QueryExpression:
        self._check_condition(condition)
        return self._restricted(condition)

    def __sub__(self, condition: Any) -> QueryExpression:
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

    @property
    def primary_key(self) -> list[str]:
        return self.heading.primary_key

    def _check_condition(self, condition: Any) -> None:
        """Fail early, with the table's name, on restrictions we cannot evaluate."""
        if isinstance(condition, Not):
            self._check_condition(condition.condition)
        elif isinstance(condition, (Mapping, np.void)):
            names = _condition_names(condition)
            if names and not any(n in self.heading for n in names):
                raise QueryError(
                    f"{self.name}: restriction names no attribute of the table: {sorted(names)}; "
                    f"attributes are {self.heading.names}"
                )
            for n in names:
                if n in self.heading and self.heading[n].type.name in ("blob", "bytes"):
                    raise QueryError(f"{self.name}.{n}: cannot restrict by a blob attribute")
        elif isinstance(condition, str):
            raise QueryError(
                f"{self.name}: SQL text restrictions are not supported (values must be parameters); "
                "restrict with a dict, a list of dicts or another table"
            )
        elif isinstance(condition, (list, tuple)):
            for c in condition:
                self._check_condition(c)
        elif isinstance(condition, (bool, np.bool_)) or _is_expression(condition):
            return
        else:
            raise QueryError(f"{self.name}: cannot restrict by {type(condition).__name__}")

    # -- SQL -------------------------------------------------------------------------------
    def _condition(self, ctx: RenderContext, alias: sql.Identifier, condition: Any) -> sql.Composable:
        heading = self.heading
        if isinstance(condition, Not):
            return sql.SQL("NOT ({})").format(self._condition(ctx, alias, condition.condition))
        if isinstance(condition, (bool, np.bool_)):
            return sql.SQL("TRUE" if condition else "FALSE") if self.backend.name == "postgres" else sql.SQL(
                "1" if condition else "0"
            )
        if isinstance(condition, np.void):
            condition = dict(zip(condition.dtype.names, condition.tolist()))
        if isinstance(condition, Mapping):
            terms = []
            for name, value in condition.items():
                if name not in heading:
                    continue  # DataJoint: attributes the table lacks do not restrict it
                attr = heading[name]
                if value is None:
                    terms.append(sql.SQL("{} IS NULL").format(_col(alias, name)))
                    continue
                try:
                    param = to_sql_value(self.name, attr, value)
                except DataError as exc:
                    raise QueryError(f"invalid restriction: {exc}") from None
                terms.append(sql.SQL("{} = {}").format(_col(alias, name), ctx.param(param)))
            return sql.SQL("({})").format(sql.SQL(" AND ").join(terms)) if terms else sql.SQL(
                self._true()
            )
        if isinstance(condition, (list, tuple)):
            if not condition:
                return sql.SQL(self._false())
            return sql.SQL("({})").format(
                sql.SQL(" OR ").join(self._condition(ctx, alias, c) for c in condition)
            )
        other = as_expression(condition)
        common = [n for n in other.heading.names if n in heading]
        sub = ctx.alias()
        on = [sql.SQL("{} = {}").format(_col(sub, n), _col(alias, n)) for n in common]
        return sql.SQL("EXISTS (SELECT 1 FROM ({}) AS {}{})").format(
            other._select(ctx, common or other.heading.primary_key[:1]),
            sub,
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(on) if on else sql.SQL(""),
        )

    def _true(self) -> str:
        return "TRUE" if self.backend.name == "postgres" else "1"

    def _false(self) -> str:
        return "FALSE" if self.backend.name == "postgres" else "0"

    def _select(
        self,
        ctx: RenderContext,
        attributes: Sequence[str] | None = None,
        renames: Mapping[str, str] | None = None,
        order_by: Sequence[str] | None = None,
        limit: int | None = None,
        distinct: bool = False,
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
        return query

    # -- fetching ---------------------------------------------------------------------------
    def _fetch_rows(
        self, attributes: Sequence[str], order_by: Sequence[str] | None = None, limit: int | None = None
    ) -> list[tuple]:
        ctx = RenderContext()
        query = self._select(ctx, attributes, order_by=order_by, limit=limit)
        rows = self.backend.execute(query, ctx.params)
        attrs = [self.heading[n] for n in attributes]
        if all(a.type.name in _PASSTHROUGH for a in attrs):
            return rows
        try:
            return [tuple(from_sql_value(a, v) for a, v in zip(attrs, row)) for row in rows]
        except MPError as exc:
            raise type(exc)(f"{self.name}: {exc}") from None

    def fetch(
        self,
        *attributes: str,
        as_dict: bool = False,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        format: str | None = None,  # noqa: A002 - DataJoint's keyword
    ) -> Any:
        """Rows of the expression.

        * ``fetch()``: a numpy structured array (blobs and strings as objects);
        * ``fetch(as_dict=True)``: a list of dicts;
        * ``fetch("a")``: a numpy array of ``a``'s values; ``fetch("a", "b")``: a tuple of arrays;
        * ``fetch("KEY")``: the primary keys as a list of dicts.

        Rows come ordered by primary key unless ``order_by`` says otherwise.
        """
        order = _order_list(order_by) or self.heading.primary_key
        if format not in (None, "array", "dict"):
            raise QueryError(f"{self.name}: fetch format must be 'array' or 'dict'")
        as_dict = as_dict or format == "dict"
        if attributes:
            names = []
            for a in attributes:
                if a == "KEY":
                    continue
                if a not in self.heading:
                    raise QueryError(f"{self.name}: unknown attribute {a!r}; attributes are {self.heading.names}")
                names.append(a)
            wanted = list(dict.fromkeys(names + (self.heading.primary_key if "KEY" in attributes else [])))
            rows = self._fetch_rows(wanted, order, limit)
            pk = self.heading.primary_key
            if as_dict:
                return [dict(zip(wanted, r)) for r in rows]
            out = []
            for a in attributes:
                if a == "KEY":
                    idx = [wanted.index(k) for k in pk]
                    out.append([{k: r[i] for k, i in zip(pk, idx)} for r in rows])
                else:
                    out.append(_column_array(self.heading[a], [r[wanted.index(a)] for r in rows]))
            return out[0] if len(out) == 1 else tuple(out)
        names = self.heading.names
        rows = self._fetch_rows(names, order, limit)
        if as_dict:
            return [dict(zip(names, r)) for r in rows]
        dtype = [(n, numpy_dtype(self.heading[n])) for n in names]
        out_arr = np.empty(len(rows), dtype=dtype)
        for i, r in enumerate(rows):
            out_arr[i] = tuple(r)
        return out_arr

    def fetch1(self, *attributes: str) -> Any:
        """The single row as a dict, or its attribute(s) (a tuple for several)."""
        names = [a for a in attributes if a != "KEY"] or (self.heading.names if not attributes else [])
        for a in names:
            if a not in self.heading:
                raise QueryError(f"{self.name}: unknown attribute {a!r}; attributes are {self.heading.names}")
        wanted = list(dict.fromkeys(names + (self.heading.primary_key if "KEY" in attributes else [])))
        rows = self._fetch_rows(wanted, None, 2)
        if len(rows) != 1:
            raise QueryError(
                f"{self.name}: fetch1 expects exactly one row, the restriction gives "
                f"{'none' if not rows else 'more than one'}"
            )
        row = dict(zip(wanted, rows[0]))
        if not attributes:
            return row
        out = [{k: row[k] for k in self.heading.primary_key} if a == "KEY" else row[a] for a in attributes]
        return out[0] if len(out) == 1 else tuple(out)

    def keys(self) -> list[dict[str, Any]]:
        """The primary keys, as dicts."""
        return self.fetch("KEY")

    def __len__(self) -> int:
        ctx = RenderContext()
        query = sql.SQL("SELECT count(*) FROM ({}) AS {}").format(
            self._select(ctx, self.heading.primary_key or None), ctx.alias()
        )
        return int(self.backend.execute(query, ctx.params)[0][0])

    def __bool__(self) -> bool:
        ctx = RenderContext()
        query = sql.SQL("SELECT EXISTS ({})").format(self._select(ctx, self.heading.primary_key[:1]))
        return bool(self.backend.execute(query, ctx.params)[0][0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.fetch(as_dict=True))

    def __repr__(self) -> str:
        try:
            n = len(self)
        except Exception as exc:  # noqa: BLE001 - repr must not raise
            return f"<{self.name}: {exc}>"
        return f"<{self.name}: {n} rows; key {self.heading.primary_key}; attributes {self.heading.names}>"


_PASSTHROUGH = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "varchar", "char", "text", "enum"}


def _column_array(attr: Attribute, values: list[Any]) -> np.ndarray:
    dtype = numpy_dtype(attr)
    if dtype is object:
        out = np.empty(len(values), dtype=object)
        out[:] = values if values and not isinstance(values[0], np.ndarray) else [None] * len(values)
        if values and isinstance(values[0], np.ndarray):
            for i, v in enumerate(values):
                out[i] = v
        return out
    return np.array(values, dtype=dtype)


def _order_list(order_by: str | Sequence[str] | None) -> list[str]:
    if order_by is None:
        return []
    return [order_by] if isinstance(order_by, str) else list(order_by)


def _order_term(alias: sql.Identifier, heading: Heading, term: str) -> sql.Composable:
    parts = term.split()
    name = parts[0]
    direction = parts[1].upper() if len(parts) > 1 else "ASC"
    if name not in heading or direction not in ("ASC", "DESC") or len(parts) > 2:
        raise QueryError(f"invalid order_by term {term!r}: use 'attribute [ASC|DESC]'")
    return sql.SQL("{} {}").format(_col(alias, name), sql.SQL(direction))


def _condition_names(condition: Any) -> list[str]:
    if isinstance(condition, np.void):
        return list(condition.dtype.names or ())
    return list(condition.keys())


def _is_expression(obj: Any) -> bool:
    return isinstance(obj, QueryExpression) or (isinstance(obj, type) and issubclass(obj, QueryExpression))


def as_expression(obj: Any) -> QueryExpression:
    """A table class or an expression, as an expression."""
    if isinstance(obj, QueryExpression):
        return obj
    if isinstance(obj, type) and issubclass(obj, QueryExpression):
        return obj()
    raise QueryError(f"expected a table or query expression, got {type(obj).__name__}")


class Projection(QueryExpression):
    """``expr.proj(*attributes, **renames)``: the primary key plus the named attributes."""

    def __init__(self, source: QueryExpression, attributes: Sequence[str], renames: Mapping[str, str]) -> None:
        self.source = source
        heading = source.heading
        keep = list(heading.primary_key)
        for a in attributes:
            if a == "*":
                keep += heading.secondary
            elif a not in heading:
                raise QueryError(f"{source.name}: cannot project unknown attribute {a!r}")
            else:
                keep.append(a)
        keep = list(dict.fromkeys(keep))
        self._renames: dict[str, str] = {}
        attrs: dict[str, Attribute] = {}
        renamed_sources = set(renames.values())
        for old in renames.values():
            if old not in heading:
                raise QueryError(f"{source.name}: cannot rename unknown attribute {old!r}")
        for n in keep:
            if n in renamed_sources:
                continue
            attrs[n] = heading[n]
        for new, old in renames.items():
            a = heading[old]
            attrs[new] = Attribute(new, a.type, a.in_key, a.nullable, a.default, a.has_default, a.comment)
            self._renames[new] = old
        # key attributes first, as everywhere else
        self._heading = Heading(
            {n: attrs[n] for n in attrs if attrs[n].in_key} | {n: attrs[n] for n in attrs if not attrs[n].in_key}
        )

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
                n: Attribute(n, source.heading[n].type, True, False, None, False, "")
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
        self._heading = Heading(
            {n: attrs[n] for n in attrs if attrs[n].in_key} | {n: attrs[n] for n in attrs if not attrs[n].in_key}
        )

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
