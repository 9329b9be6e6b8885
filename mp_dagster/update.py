"""``update1``: change secondary attributes of one existing row, as DataJoint's ``update1``.

The row names the whole primary key (which row) and the secondary attributes to change; values
are converted as ``insert`` converts them (codecs included). Primary-key attributes cannot be
changed, and auto-populated tables (Imported/Computed masters and their parts, whose rows
``make`` writes) refuse updates unless ``allow_direct_update=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql

from . import dependencies
from .errors import DataError, DirectInsertError, DuplicateError, MissingParentError, MPError

if TYPE_CHECKING:
    from .table import Table


def update1(table: Table, row: Any, allow_direct_update: bool = False) -> None:
    """Set the secondary attributes ``row`` names on the row with ``row``'s primary key.

    Raises :class:`DataError` naming the table and attribute for an unknown attribute, a
    missing key attribute, a bad value, a row that does not exist or a restricted ``table``;
    :class:`DirectInsertError` for an auto-populated table without ``allow_direct_update``.
    Nothing is written when it raises.
    """
    cls = type(table)
    name = cls.full_name
    heading = cls._definition.heading
    if table._restrictions:
        raise DataError(f"{name}: update1 works on the table, not on a restriction of it; name the key in the row")
    if isinstance(row, np.void):
        row = dict(zip(row.dtype.names, row.tolist()))
    if not isinstance(row, Mapping):
        raise DataError(f"{name}: update1 expects one row as a dict, got {type(row).__name__}")
    if not allow_direct_update and table.is_auto_populated:
        what = "a part of an auto-populated master" if cls.master is not None else f"a {cls.tier} table"
        raise DirectInsertError(
            f"{name} is {what}: its rows are written by {dependencies.master_of(cls).__qualname__}.populate() "
            "(make). Pass allow_direct_update=True to update it directly.")
    for attr in row:
        if attr not in heading:
            raise DataError(f"{name}: unknown attribute {attr!r}; attributes are {heading.names}")
    missing = [a for a in heading.primary_key if a not in row]
    if missing:
        raise DataError(f"{name}: update1 needs the whole primary key to find the row; missing {missing}")
    changed = [heading[a] for a in row if not heading[a].in_key]
    if not changed:
        raise DataError(f"{name}: update1 names no secondary attribute to change "
                        f"(primary-key attributes {heading.primary_key} cannot be updated)")
    from .values import to_sql_value

    key = {a: row[a] for a in heading.primary_key}
    keyed = [heading[a] for a in heading.primary_key]
    values = [to_sql_value(name, a, row[a.name]) for a in changed]
    key_values = [to_sql_value(name, a, row[a.name]) for a in keyed]
    backend = cls.schema.backend
    params = [*values, *key_values]
    if backend.needs_adapt([*changed, *keyed]):
        params = list(backend.adapt_row([*changed, *keyed], params, name))
    query = sql.SQL("UPDATE {} SET {} WHERE {} RETURNING 1").format(
        backend.table_ident(cls.schema.name, cls.table_name),
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(a.name), sql.Placeholder()) for a in changed),
        sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(a.name), sql.Placeholder()) for a in keyed),
    )
    try:
        with backend.transaction():
            updated = backend.execute(query, params)
            if len(updated) != 1:
                raise DataError(f"{name}: update1 found no row with primary key {key}")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated below, or re-raised as is
        kind = backend.integrity_kind(exc)
        if kind is None:
            raise
        if kind == "foreign_key" and not (backend.in_transaction and backend.errors_abort_transaction):
            full = {**key, **{a: row[a] for a in row}}
            for fk in cls._definition.foreign_keys:
                values = {a: full.get(a) for a in fk.attributes}
                # the parent's names for them (they differ for a renamed reference, ``-> P.proj(a='b')``)
                referenced = getattr(fk, "referenced", None) or fk.attributes
                if any(a in row and not heading[a].in_key for a in fk.attributes) and None not in values.values() \
                        and not _parent_has(fk.parent, dict(zip(referenced, values.values()))):
                    raise MissingParentError(
                        f"{name}: update1 at {key}: attribute(s) {', '.join(fk.attributes)} = "
                        f"{tuple(values.values())!r} reference a row missing from {fk.parent.full_name}") from None
        error = {"duplicate": DuplicateError, "foreign_key": MissingParentError}.get(kind, DataError)
        attrs = ", ".join(a.name for a in changed)
        detail = getattr(getattr(exc, "diag", None), "message_detail", None) or str(exc)
        raise error(f"{name}: update1 of {attrs} at {key} refused by the database ({kind}): {detail}") from None


def _parent_has(parent: Any, values: dict[str, Any]) -> bool:
    """Whether ``parent`` has the row ``values`` refer to (True when that cannot be asked, e.g.
    attribute names that differ from the parent's: the database's own message is used then)."""
    try:
        return bool(parent() & values)
    except MPError:
        return True
