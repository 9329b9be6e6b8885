"""Composing one SQL statement: fresh aliases, collected parameters, qualified columns.

Every value is a parameter (:meth:`RenderContext.param`); every name an identifier.
"""

from __future__ import annotations

import itertools
from typing import Any

from psycopg import sql


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


def col(alias: sql.Identifier, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(alias, sql.Identifier(name))
