"""Restrictions: what ``&`` and ``-`` accept, checked early and rendered as SQL conditions.

A restriction is a dict (attribute -> value, each value converted by its attribute's type and
sent as a parameter), a list of them (OR), another expression (semijoin), a boolean, or the
negation of one of these (:class:`Not`). SQL text is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from .errors import DataError, QueryError
from .heading import Attribute
from .rendering import RenderContext
from .rendering import col as _col
from .values import to_sql_value

if TYPE_CHECKING:
    from .backends import Backend
    from .heading import Heading


class Not:
    """The negation of a restriction (what ``-`` adds)."""

    def __init__(self, condition: Any) -> None:
        self.condition = condition


class RestrictionMixin:
    """Checking and rendering restrictions (part of :class:`~mp_dagster.expression.QueryExpression`)."""

    name: str
    heading: Heading
    backend: Backend

    def _check_condition(self, condition: Any) -> None:
        """Fail early, with the table's name, on restrictions we cannot evaluate."""
        if isinstance(condition, Not):
            self._check_condition(condition.condition)
        elif isinstance(condition, (Mapping, np.void)):
            names = _condition_names(condition)
            heading = self.heading
            if names and not any(n in heading for n in names):
                raise QueryError(
                    f"{self.name}: restriction names no attribute of the table: {sorted(names)}; "
                    f"attributes are {heading.names}"
                )
            for n in names:
                if n in heading and heading[n].type.name in ("blob", "bytes"):
                    raise QueryError(f"{self.name}.{n}: cannot restrict by a blob attribute")
                if n in heading and heading[n].type.is_user_codec:
                    raise QueryError(f"{self.name}.{n}: cannot restrict by a {heading[n].type} attribute")
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
                terms.append(sql.SQL("{} = {}").format(_col(alias, name), ctx.param(self._restriction_value(attr, value))))
            return sql.SQL("({})").format(sql.SQL(" AND ").join(terms)) if terms else sql.SQL(
                self._true()
            )
        if isinstance(condition, (list, tuple)):
            if not condition:
                return sql.SQL(self._false())
            in_list = self._in_list(ctx, alias, condition)
            if in_list is not None:
                return in_list
            return sql.SQL("({})").format(
                sql.SQL(" OR ").join(self._condition(ctx, alias, c) for c in condition)
            )
        from .expression import as_expression  # expressions are built on this module

        other = as_expression(condition)
        common = [n for n in other.heading.names if n in heading]
        sub = ctx.alias()
        on = [sql.SQL("{} = {}").format(_col(sub, n), _col(alias, n)) for n in common]
        return sql.SQL("EXISTS (SELECT 1 FROM ({}) AS {}{})").format(
            other._select(ctx, common or other.heading.primary_key[:1]),
            sub,
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(on) if on else sql.SQL(""),
        )

    def _restriction_value(self, attr: Attribute, value: Any) -> Any:
        """A restricting value as the database takes it; a value the attribute cannot hold is a
        QueryError naming the table and attribute."""
        try:
            return to_sql_value(self.name, attr, value)
        except DataError as exc:
            raise QueryError(f"invalid restriction: {exc}") from None

    def _in_list(self, ctx: RenderContext, alias: sql.Identifier, condition: Sequence[Any]) -> sql.Composable | None:
        """Dicts that all restrict one and the same attribute (``Table & [{"id": 1}, {"id": 2}]``,
        how the Dagster layer asks for a run's keys): one ``= ANY(array)`` parameter on
        PostgreSQL, an ``IN`` list on SQLite, instead of an ``OR`` of one term per dict (which
        cost 45 us per dict to compose and the server as much to parse). None for anything else."""
        first = condition[0]
        if len(condition) < 2 or type(first) is not dict:
            return None
        names = [n for n in first if n in self.heading]
        if len(names) != 1:
            return None
        name, keys = names[0], first.keys()
        attr = self.heading[name]
        values = []
        for c in condition:
            if type(c) is not dict or c.keys() != keys or c[name] is None:
                return None
            values.append(self._restriction_value(attr, c[name]))
        column = _col(alias, name)
        if self.backend.name == "postgres":
            return sql.SQL("{} = ANY({})").format(column, ctx.param(values))
        return sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(ctx.param(v) for v in values))

    def _true(self) -> str:
        return "TRUE" if self.backend.name == "postgres" else "1"

    def _false(self) -> str:
        return "FALSE" if self.backend.name == "postgres" else "0"


def _normalize(condition: Any) -> Any:
    """Restrictions DataJoint takes as an OR of their elements, as a list: a record array (what
    ``fetch()`` returns: one record per element), a set or frozenset; nested in lists too."""
    if isinstance(condition, np.ndarray) and condition.dtype.names:
        return list(condition.ravel())
    if isinstance(condition, (set, frozenset)):
        return [_normalize(c) for c in condition]
    if isinstance(condition, (list, tuple)) and any(
            isinstance(c, (np.ndarray, set, frozenset)) for c in condition):
        return [_normalize(c) for c in condition]
    return condition


def _condition_names(condition: Any) -> list[str]:
    if isinstance(condition, np.void):
        return list(condition.dtype.names or ())
    return list(condition.keys())


def _is_expression(obj: Any) -> bool:
    from .expression import QueryExpression  # expressions are built on this module

    return isinstance(obj, QueryExpression) or (isinstance(obj, type) and issubclass(obj, QueryExpression))
