"""Table classes: the tiers users subclass, and inserting rows.

As in DataJoint, a table class is usable directly: ``Image & key``, ``Image.fetch1()``,
``Segmentation.populate()``. Inside ``make`` inserts are collected, not written (see
:mod:`mp_dagster.autopopulate`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from psycopg import sql

from . import dependencies
from .declare import TableDefinition
from .errors import (
    DataError,
    DeclarationError,
    DirectInsertError,
    DuplicateError,
    MakeError,
    MissingParentError,
    QueryError,
)
from .expression import QueryExpression, RenderContext
from .heading import Attribute, Heading
from .values import default_sql_value, to_sql_value

if TYPE_CHECKING:
    from .backends import Backend
    from .schema import Schema

# names that, used on the class, act on an instance (``Image.fetch1()`` == ``Image().fetch1()``)
CLASS_LEVEL = frozenset(
    {
        "fetch", "fetch1", "insert", "insert1", "delete", "delete_preview", "populate", "key_source",
        "pending_keys", "proj", "keys", "restrict", "join", "progress", "describe", "drop",
        "aggr", "update1", "head", "tail",
    }
)


class TableMeta(type):
    """Lets the class stand for its table: ``Image & key``, ``len(Image)``, ``Image.fetch()``."""

    def __getattribute__(cls, name: str) -> Any:
        if name in CLASS_LEVEL and (type.__getattribute__(cls, "_declared_name") is not None
                                    or type.__getattribute__(cls, "_dropped_name") is not None):
            return getattr(cls(), name)
        return type.__getattribute__(cls, name)

    def __and__(cls, condition: Any) -> QueryExpression:
        return cls() & condition

    def __sub__(cls, condition: Any) -> QueryExpression:
        return cls() - condition

    def __mul__(cls, other: Any) -> QueryExpression:
        return cls() * other

    def __len__(cls) -> int:
        return len(cls())

    def __bool__(cls) -> bool:
        return True  # a class is always truthy; ``bool(Image())`` asks whether the table has rows

    def __iter__(cls):
        return iter(cls())

    @property
    def full_name(cls) -> str:
        """``schema.table``."""
        return cls._full_name()

    @property
    def heading(cls) -> Heading:
        cls._full_name()
        return cls._definition.heading

    @property
    def primary_key(cls) -> list[str]:
        return cls.heading.primary_key

    def __repr__(cls) -> str:
        name = type.__getattribute__(cls, "_declared_name")
        return f"<table class {cls.__qualname__}{' ' + name if name else ' (not declared)'}>"


class Table(QueryExpression, metaclass=TableMeta):
    """A declared table. Subclass a tier (:class:`Manual`, :class:`Lookup`, :class:`Imported`,
    :class:`Computed`) or, nested in a master, :class:`Part`."""

    definition: ClassVar[str]
    tier: ClassVar[str] = ""
    schema: ClassVar[Schema]
    table_name: ClassVar[str]
    master: ClassVar[type[Table] | None] = None
    parts: ClassVar[list[type[Table]]] = []
    _definition: ClassVar[TableDefinition]
    _declared_name: ClassVar[str | None] = None  # "schema.table" once declared
    _dropped_name: ClassVar[str | None] = None  # "schema.table" after drop()

    # -- identity --------------------------------------------------------------------------
    @classmethod
    def _full_name(cls) -> str:
        if cls._declared_name is None:
            if cls._dropped_name is not None:
                raise QueryError(f"{cls._dropped_name} ({cls.__qualname__}) was dropped: declare it again to use it")
            raise DeclarationError(f"{cls.__qualname__} is not declared: decorate it with a Schema")
        return cls._declared_name

    @property
    def full_name(self) -> str:
        return self._full_name()

    @property
    def name(self) -> str:
        return self._full_name()

    @property
    def heading(self) -> Heading:
        return type(self)._definition.heading

    @property
    def backend(self) -> Backend:
        return type(self).schema.backend

    @property
    def is_auto_populated(self) -> bool:
        return dependencies.master_of(type(self)).tier in ("imported", "computed")

    def _from(self, ctx: RenderContext) -> sql.Composable:
        cls = type(self)
        if cls._declared_name is None:
            cls._full_name()  # raises: not declared, or dropped
        return self.backend.table_ident(cls.schema.name, cls.table_name)

    def describe(self) -> str:
        """The definition as declared (normalised): parsed again, it declares the same table."""
        d = type(self)._definition
        lines = [f"# {d.comment}"] if d.comment else []
        fk_attrs = {a for fk in d.foreign_keys for a in fk.attributes}

        def fk_line(fk: Any) -> str:
            opts = [o for o, on in (("nullable", fk.nullable), ("unique", fk.unique)) if on]
            proj = ", ".join(f"{a}={p!r}" for a, p in fk.renames.items())
            p = fk.parent  # named as a definition names it: ``Table`` or ``Master.Part``
            ref = f"{p.master.__name__}.{p.__name__}" if p.master is not None else p.__name__
            return f"-> {'[' + ', '.join(opts) + '] ' if opts else ''}{ref}" + (f".proj({proj})" if proj else "")

        for section in (True, False):
            fks = [fk for fk in d.foreign_keys if fk.in_key == section]
            attrs = [a for a in d.heading if a.in_key == section]
            if not section and (attrs or fks):
                lines.append("---")
            # a foreign key goes where its first attribute of this section is (declaration order);
            # one whose attributes all came with earlier lines goes first
            placed = {id(fk) for fk in fks if not any(a.name in fk.attributes for a in attrs)}
            lines.extend(fk_line(fk) for fk in fks if id(fk) in placed)
            for a in attrs:
                for fk in fks:
                    if id(fk) not in placed and a.name in fk.attributes:
                        placed.add(id(fk))
                        lines.append(fk_line(fk))
                if a.name not in fk_attrs:
                    default = f" = {_default_text(a.default)}" if a.has_default else ""
                    comment = f"  # {a.comment}" if a.comment else ""
                    lines.append(f"{a.name}{default} : {a.type}{comment}")
        for ix in d.indexes:
            lines.append(f"{'unique ' if ix.unique else ''}index ({', '.join(ix.attributes)})")
        return "\n".join(lines)

    # -- inserting -------------------------------------------------------------------------
    def insert1(self, row: Any, **kwargs: Any) -> None:
        """Insert one row (a dict, a sequence in attribute order, or a numpy record)."""
        self.insert([row], **kwargs)

    def insert(
        self,
        rows: Any,
        skip_duplicates: bool = False,
        ignore_extra_fields: bool = False,
        allow_direct_insert: bool = False,
    ) -> None:
        """Insert rows; all or none are written.

        Inside ``make`` the rows are collected and written with the master entry after ``make``
        returns. Outside ``make``, auto-populated masters and parts refuse direct inserts unless
        ``allow_direct_insert=True``.
        """
        from .autopopulate import current_entry

        cls = type(self)
        entry = current_entry()
        if entry is not None and (cls is entry.master or cls.master is entry.master):
            prepared = self.prepare_rows(rows, ignore_extra_fields, skip_duplicates)
            entry.collect(cls, prepared)
            return
        if entry is not None and not allow_direct_insert:
            raise MakeError(
                f"inside {entry.master.full_name}.make only {entry.master.full_name} and its parts can be "
                f"inserted; {cls.full_name} is another table"
            )
        if not allow_direct_insert and self.is_auto_populated:
            what = "a part of an auto-populated master" if cls.master is not None else f"a {cls.tier} table"
            raise DirectInsertError(
                f"{cls.full_name} is {what}: its rows are written by "
                f"{dependencies.master_of(cls).__qualname__}.populate() (make). "
                "Pass allow_direct_insert=True to insert directly."
            )
        prepared = self.prepare_rows(rows, ignore_extra_fields, skip_duplicates)
        if not prepared:
            return
        write_tables([(cls, prepared)], skip_duplicates=skip_duplicates)

    def prepare_rows(
        self, rows: Any, ignore_extra_fields: bool = False, skip_duplicates: bool = False
    ) -> list[tuple]:
        """Validate rows and convert them to SQL parameters in heading order.

        Raises :class:`DataError` naming the table and attribute for the first bad value, so
        nothing is written for a batch with one bad row.
        """
        cls = type(self)
        table = cls.full_name
        heading = self.heading
        attrs = list(heading)
        names = heading.names
        name_set = set(names)
        pk_idx = [i for i, a in enumerate(attrs) if a.in_key]
        if isinstance(rows, QueryExpression) or (isinstance(rows, type) and issubclass(rows, QueryExpression)):
            rows = (rows if isinstance(rows, QueryExpression) else rows()).fetch(as_dict=True)
        elif isinstance(rows, Mapping) or isinstance(rows, np.void):
            raise DataError(f"{table}: insert expects a list of rows; use insert1 for one row")

        def row_values(row: Any, n: int) -> list[Any]:
            """One row's SQL parameters in heading order (the general path of :meth:`prepare_rows`)."""
            if isinstance(row, np.void):
                row = dict(zip(row.dtype.names, row.tolist()))
            if isinstance(row, Mapping):
                extra = [k for k in row if k not in name_set]
                if extra and not ignore_extra_fields:
                    raise DataError(
                        f"{table}: unknown attribute {extra[0]!r} in row {n}; attributes are {names}"
                    )
                values = []
                for a in attrs:
                    if a.name in row:
                        values.append(to_sql_value(table, a, row[a.name]))
                    elif a.in_key:
                        raise DataError(f"{table}: row {n} is missing primary key attribute {a.name!r}")
                    else:
                        values.append(default_sql_value(table, a))
            elif isinstance(row, (Sequence, np.ndarray)) and not isinstance(row, (str, bytes)):
                if len(row) != len(attrs):
                    raise DataError(
                        f"{table}: row {n} has {len(row)} values for {len(attrs)} attributes {names}"
                    )
                values = [to_sql_value(table, a, v) for a, v in zip(attrs, row)]
            else:
                raise DataError(f"{table}: row {n} is a {type(row).__name__}; expected a dict or a sequence")
            return values

        nattrs = len(attrs)
        # (not with store attributes: a redo would write their objects twice)
        if type(rows) is list and len(rows) >= 16 and nattrs and all(a.type.store is None for a in attrs):
            # fastest path, for batches: column by column (C-level extraction, one converter
            # call per value or none at all); on any doubt -- other row kinds, a bad value, a
            # duplicate key -- the rows are redone one by one below, which words the error
            try:
                if all(map(operator.eq, map(dict.keys, rows), itertools.repeat(name_set))):
                    getter = operator.itemgetter(*names)
                    columns = list(zip(*map(getter, rows))) if nattrs > 1 else [list(map(getter, rows))]
                else:
                    columns = None
            except TypeError:  # not all plain dicts
                columns = None
            if columns is None and all(
                (type(r) is tuple or type(r) is list) and len(r) == nattrs for r in rows
            ):
                columns = list(zip(*rows))
            if columns is not None:
                try:
                    converted = [
                        convert(column) for convert, column in zip(heading.column_converters(table), columns)
                    ]
                except Exception:  # noqa: BLE001 - redone row by row below, which raises it in order
                    converted = None
                if converted is not None:
                    keys = list(zip(*(converted[i] for i in pk_idx))) if pk_idx else []
                    if pk_idx and len(set(keys)) == len(keys):
                        return list(zip(*converted))
        out: list[tuple] = []
        seen: dict[tuple, int] = {}
        # fast path (same values, same errors): a dict with exactly the heading's attributes, or
        # a tuple/list of the right length, converted by per-attribute converters built once
        converters = heading.sql_converters(table)
        pairs = list(zip(names, converters))
        single_key = pk_idx[0] if len(pk_idx) == 1 else None
        for n, row in enumerate(rows):
            kind = type(row)
            if kind is dict and row.keys() == name_set:
                values = [convert(row[name]) for name, convert in pairs]
            elif (kind is tuple or kind is list) and len(row) == nattrs:
                values = [convert(v) for convert, v in zip(converters, row)]
            else:
                values = row_values(row, n)
            key = (values[single_key],) if single_key is not None else tuple(values[i] for i in pk_idx)
            if key in seen:
                if skip_duplicates:
                    continue
                raise DuplicateError(
                    f"{table}: duplicate primary key {self._key_text(key)} in rows {seen[key]} and {n}"
                )
            seen[key] = n
            out.append(tuple(values))
        return out

    def update1(self, row: Mapping[str, Any], allow_direct_update: bool = False) -> None:
        """Change secondary attributes of one existing row: ``row`` names its whole primary key
        and the attributes to set (see :func:`mp_dagster.update.update1`)."""
        from .update import update1

        update1(self, row, allow_direct_update=allow_direct_update)

    def _key_text(self, key: Sequence[Any]) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in zip(self.heading.primary_key, key)) + "}"

    # -- deleting / populating: see delete.py and autopopulate.py -------------------------
    def delete(self, prompt: bool | None = None, part_integrity: str = "enforce") -> int:
        """Delete the restricted rows of this table with everything that depends on them, in one
        transaction (see :func:`mp_dagster.delete.delete`). Returns the number of rows deleted
        from this table."""
        from .delete import delete

        return delete(self, prompt=prompt, part_integrity=part_integrity)

    def delete_preview(self, part_integrity: str = "enforce") -> dict[str, int]:
        """Rows that ``delete`` would remove, per table (``schema.table`` -> count), leaves first."""
        from .delete import cascade_plan

        return {t.full_name: n for t, n in cascade_plan(self, part_integrity=part_integrity).counts()}

    def drop(self) -> None:
        """Drop this table (and its parts). Refused while other tables reference it."""
        type(self).schema.drop_table(type(self))


def _default_text(value: Any) -> str:
    """A default as the definition grammar reads it back (``describe``)."""
    if value is None:
        return "null"
    if value == "CURRENT_TIMESTAMP" or isinstance(value, bool):
        return str(value).lower() if isinstance(value, bool) else value
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def write_tables(batches: Sequence[tuple[type[Table], list[tuple]]], skip_duplicates: bool = False,
                 lock_key: tuple[type[Table], tuple] | None = None,
                 still_pending: Any = None) -> bool:
    """Write prepared rows of several tables in ONE transaction, in the order given.

    ``lock_key``: take the (table, key) advisory lock first; ``still_pending()`` is then checked
    under the lock and, if it returns False, nothing is written and False is returned.
    Database integrity errors are translated into errors naming the table (nothing is written).
    """
    if not batches:
        return False
    backend = batches[0][0].schema.backend
    # PostgreSQL: small INSERTs may travel with the next statement or the COMMIT -- only in a
    # transaction of our own, whose COMMIT is inside the error translation below
    defer = None if backend.in_transaction else getattr(backend, "defer_inserts", None)
    try:
        with backend.transaction():
            if defer is not None:
                defer()
            if lock_key is not None:
                backend.lock_key(lock_key[0].full_name, lock_key[1])
                if still_pending is not None and not still_pending():
                    return False
            for cls, rows in batches:
                if rows:
                    backend.insert_rows(cls.schema.name, cls.table_name, list(cls._definition.heading), rows,
                                        skip_duplicates=skip_duplicates)
    except Exception as exc:  # noqa: BLE001 - translated below, or re-raised as is
        kind = backend.integrity_kind(exc)
        if kind is None:
            raise
        if backend.in_transaction and backend.errors_abort_transaction:  # cannot be queried now
            raise _driver_error(kind, exc, batches) from None
        raise _explain(kind, exc, batches) from None
    return True


def _explain(kind: str, exc: BaseException, batches: Sequence[tuple[type[Table], list[tuple]]]) -> Exception:
    """Name the table and attribute behind a database integrity error (after the rollback)."""
    written = {cls.full_name: rows for cls, rows in batches}
    for cls, rows in batches:
        heading = cls._definition.heading
        attrs: list[Attribute] = list(heading)
        pk = heading.primary_key
        pk_idx = [i for i, a in enumerate(attrs) if a.in_key]
        if kind == "duplicate":
            keys = [dict(zip(pk, (r[i] for i in pk_idx))) for r in rows]
            for start in range(0, len(keys), 500):
                found = (cls() & keys[start : start + 500]).fetch("KEY", limit=1)
                if found:
                    return DuplicateError(f"{cls.full_name}: duplicate primary key {found[0]} already exists")
        if kind == "foreign_key":
            for fk in cls._definition.foreign_keys:
                idx = [heading.names.index(a) for a in fk.attributes]
                wanted = {tuple(r[i] for i in idx) for r in rows if all(r[i] is not None for i in idx)}
                parent_names = fk.parent._definition.heading.names
                present = {
                    tuple(r[parent_names.index(a)] for a in fk.referenced)
                    for r in written.get(fk.parent.full_name, [])
                } if fk.parent.full_name in written else set()
                missing = wanted - present
                if not missing:
                    continue
                keys = [dict(zip(fk.referenced, k)) for k in sorted(missing, key=repr)]
                existing = {
                    tuple(k[a] for a in fk.referenced)
                    for start in range(0, len(keys), 500)
                    for k in (fk.parent() & keys[start : start + 500]).fetch("KEY")
                }
                absent = [k for k in keys if tuple(k[a] for a in fk.referenced) not in existing]
                if absent:
                    return MissingParentError(
                        f"{cls.full_name}: attribute(s) {', '.join(fk.attributes)} = "
                        f"{tuple(absent[0].values())!r} reference a row missing from {fk.parent.full_name}"
                    )
    return _driver_error(kind, exc, batches)


def _driver_error(kind: str, exc: BaseException, batches: Sequence[tuple[type[Table], list[tuple]]]) -> Exception:
    """The error from the driver's own message (when the database cannot be asked for more)."""
    detail = getattr(getattr(exc, "diag", None), "message_detail", None) or str(exc)
    names = ", ".join(cls.full_name for cls, _ in batches)
    error = {"duplicate": DuplicateError, "foreign_key": MissingParentError}.get(kind, DataError)
    return error(f"{names}: the database refused the rows ({kind}): {detail}")
