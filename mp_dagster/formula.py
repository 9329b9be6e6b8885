"""The expression language of ``aggr``: ``n="count(*)"``, ``mean_area="avg(area)"``,
``spread="max(x) - min(x)"``.

An expression string is parsed here into a small tree; it never reaches the database as text.
Attribute names are checked against the heading and quoted as identifiers, number and string
literals become SQL parameters, and only the functions in :data:`AGGREGATES` and the operators
``+ - * /`` (and parentheses, unary minus) are allowed. Anything else is a :class:`QueryError`
naming the expression.

Types: ``count`` gives ``int64``; ``avg`` ``float64``; ``sum`` ``int64`` over integers, else
``float64``; ``min``/``max`` keep their argument's type; ``+ - *`` give ``int64`` when both
sides are integers, else ``float64``; ``/`` always divides as floats, and dividing by zero gives
NULL on both backends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from .errors import QueryError
from .heading import INT_RANGES, Attribute, SQLType
from .rendering import RenderContext

#: the functions ``aggr`` expressions may call (``count(*)``, ``count(distinct x)`` included).
#: ``stddev``/``variance`` are not here: SQLite has no such functions.
AGGREGATES = ("count", "sum", "avg", "min", "max")

INT64 = SQLType("int64")
FLOAT64 = SQLType("float64")
TEXT = SQLType("text")
_NUMERIC = {*INT_RANGES, "float32", "float64", "decimal"}
_UNORDERED = {"blob", "bytes", "json"}
_NO_ORDER = {"bool", "uuid"}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>[-+*/(),])
    )""",
    re.VERBOSE,
)


# -- the tree -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal:
    value: int | float | str


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Call:
    function: str
    argument: Any  # a node, or None for count(*)
    distinct: bool = False


@dataclass(frozen=True)
class Unary:
    operand: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


# -- parsing --------------------------------------------------------------------------------------
def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].strip()[:20]
            raise QueryError(f"{where}: cannot parse {text!r} at {bad!r} (allowed: attribute names, numbers, "
                             f"'strings', + - * / ( ), and the functions {', '.join(AGGREGATES)})")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse(text: str, where: str) -> Any:
    """``text`` as a tree; ``where`` (e.g. ``"imaging.segmentation.aggr n"``) names it in errors."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError(f"{where}: expected an expression string such as 'count(*)', got {text!r}")
    tokens = _tokens(text, where)
    pos = 0

    def fail(why: str) -> QueryError:
        return QueryError(f"{where}: {why} in {text!r}")

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(value: str | None = None) -> tuple[str, str]:
        nonlocal pos
        tok = peek()
        if tok is None or (value is not None and tok[1].lower() != value):
            raise fail(f"expected {value!r}" if value else "unexpected end")
        pos += 1
        return tok

    def expression() -> Any:
        node = term()
        while (tok := peek()) is not None and tok[1] in ("+", "-"):
            take()
            node = Binary(tok[1], node, term())
        return node

    def term() -> Any:
        node = factor()
        while (tok := peek()) is not None and tok[1] in ("*", "/"):
            take()
            node = Binary(tok[1], node, factor())
        return node

    def factor() -> Any:
        tok = peek()
        if tok is not None and tok[1] in ("-", "+"):
            take()
            operand = factor()
            return Unary(operand) if tok[1] == "-" else operand
        return primary()

    def primary() -> Any:
        kind, value = take()
        if kind == "number":
            return Literal(float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "string":
            return Literal(value[1:-1].replace(value[0] * 2, value[0]))
        if value == "(":
            node = expression()
            take(")")
            return node
        if kind != "name":
            raise fail(f"unexpected {value!r}")
        nxt = peek()
        if nxt is None or nxt[1] != "(":
            return Ref(value)
        function = value.lower()
        if function not in AGGREGATES:
            raise fail(f"function {value!r} is not allowed (allowed: {', '.join(AGGREGATES)})")
        take("(")
        if function == "count" and (tok := peek()) is not None and tok[1] == "*":
            take()
            take(")")
            return Call("count", None)
        distinct = (tok := peek()) is not None and tok[0] == "name" and tok[1].lower() == "distinct" and (
            pos + 1 < len(tokens) and tokens[pos + 1][1] not in ("(", ")", "+", "-", "*", "/"))
        if distinct:
            take()
        argument = expression()
        take(")")
        return Call(function, argument, distinct)

    node = expression()
    if pos != len(tokens):
        raise fail(f"unexpected {tokens[pos][1]!r}")
    return node


# -- compiling ------------------------------------------------------------------------------------
#: resolve(name, inside_aggregate) -> (column, attribute); raises QueryError for names it refuses
Resolver = Callable[[str, bool], tuple[sql.Composable, Attribute]]


@dataclass
class Compiled:
    """An expression as SQL (parameters collected in the context) and its result type."""

    sql: sql.Composable
    type: SQLType
    nullable: bool
    aggregate: bool  # contains an aggregate function


def compile_expression(node: Any, resolve: Resolver, ctx: RenderContext, backend: str, where: str,
                       text: str) -> Compiled:
    """The SQL of a parsed expression, cast to its result type (see the module's docstring)."""
    out = _compile(node, resolve, ctx, backend, where, text, inside=False)
    if out.type in (INT64, FLOAT64):
        out.sql = _cast(out.sql, out.type, backend)
    return out


def _cast(expr: sql.Composable, type_: SQLType, backend: str) -> sql.Composable:
    names = {"postgres": {"int64": "BIGINT", "float64": "DOUBLE PRECISION"},
             "sqlite": {"int64": "INTEGER", "float64": "REAL"}}
    return sql.SQL("CAST({} AS {})").format(expr, sql.SQL(names[backend][type_.name]))


def _compile(node: Any, resolve: Resolver, ctx: RenderContext, backend: str, where: str, text: str,
             inside: bool) -> Compiled:
    def fail(why: str) -> QueryError:
        return QueryError(f"{where}: {why} in {text!r}")

    def numeric(c: Compiled, what: str) -> None:
        if c.type.name not in _NUMERIC:
            raise fail(f"{what} needs numbers, not {c.type}")

    if isinstance(node, Literal):
        if isinstance(node.value, str):
            return Compiled(_cast_text(ctx.param(node.value), backend), TEXT, False, False)
        return Compiled(ctx.param(node.value), INT64 if isinstance(node.value, int) else FLOAT64, False, False)
    if isinstance(node, Ref):
        column, attr = resolve(node.name, inside)
        if attr.type.is_user_codec or attr.type.name in _UNORDERED:
            raise fail(f"attribute {node.name!r} is a {attr.type} attribute: it cannot be aggregated")
        return Compiled(column, attr.type, attr.nullable, False)
    if isinstance(node, Unary):
        operand = _compile(node.operand, resolve, ctx, backend, where, text, inside)
        numeric(operand, "'-'")
        return Compiled(sql.SQL("(-{})").format(operand.sql), operand.type, operand.nullable, operand.aggregate)
    if isinstance(node, Binary):
        left = _compile(node.left, resolve, ctx, backend, where, text, inside)
        right = _compile(node.right, resolve, ctx, backend, where, text, inside)
        numeric(left, f"{node.op!r}")
        numeric(right, f"{node.op!r}")
        nullable, aggregate = left.nullable or right.nullable, left.aggregate or right.aggregate
        if node.op == "/":
            return Compiled(sql.SQL("({} / NULLIF({}, 0))").format(
                _cast(left.sql, FLOAT64, backend), _cast(right.sql, FLOAT64, backend)), FLOAT64, True, aggregate)
        both_int = left.type.name in INT_RANGES and right.type.name in INT_RANGES
        return Compiled(sql.SQL("({} {} {})").format(left.sql, sql.SQL(node.op), right.sql),
                        INT64 if both_int else FLOAT64, nullable, aggregate)
    assert isinstance(node, Call)
    if inside:
        raise fail(f"{node.function}() inside another aggregate function")
    function = sql.SQL(node.function)
    if node.argument is None:
        return Compiled(sql.SQL("count(*)"), INT64, False, True)
    arg = _compile(node.argument, resolve, ctx, backend, where, text, inside=True)
    call = sql.SQL("{}({}{})").format(function, sql.SQL("DISTINCT ") if node.distinct else sql.SQL(""), arg.sql)
    if node.function == "count":
        return Compiled(call, INT64, False, True)
    if node.function in ("min", "max"):
        if arg.type.name in _NO_ORDER:  # PostgreSQL has no min/max for these
            raise fail(f"{node.function}() cannot compare {arg.type} values")
        return Compiled(call, arg.type, True, True)
    numeric(arg, f"{node.function}()")
    if node.function == "sum" and arg.type.name in INT_RANGES:
        return Compiled(call, INT64, True, True)
    return Compiled(call, FLOAT64, True, True)


def _cast_text(expr: sql.Composable, backend: str) -> sql.Composable:
    return sql.SQL("CAST({} AS TEXT)").format(expr)
