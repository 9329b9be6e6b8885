"""The tiers users subclass: Manual, Lookup, Imported, Computed, and Part (nested in a master)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from .autopopulate import AutoPopulate
from .table import Table


class Manual(Table):
    """Rows entered by people or acquisition systems (``insert``)."""

    tier = "manual"


class Lookup(Table):
    """Small reference tables; ``contents`` is inserted (skipping duplicates) when declared."""

    tier = "lookup"
    contents: ClassVar[Iterable[Any]] = ()


class Imported(AutoPopulate, Table):
    """Auto-populated from data outside the database: ``populate()`` calls ``make(key)``."""

    tier = "imported"


class Computed(AutoPopulate, Table):
    """Auto-populated from other tables: ``populate()`` calls ``make(key)`` per pending key."""

    tier = "computed"


class Part(Table):
    """A part of its enclosing master: declare it as a nested class and do not decorate it."""

    tier = "part"
