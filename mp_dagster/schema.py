"""``Schema``: a namespace of tables in one database, and the decorator that declares them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import dependencies
from .backends import Backend, get_backend, redact
from .declare import check_identifier, describe_difference, parse_definition, to_snake_case
from .errors import DeclarationError, MPError
from .table import Table
from .tiers import Computed, Imported, Lookup, Manual, Part

if TYPE_CHECKING:
    from .store_gc import GCReport

_TIERS = (Manual, Lookup, Imported, Computed)


class Schema:
    """A PostgreSQL schema (or a name prefix in the SQLite file) holding declared tables.

    ``schema = Schema("imaging")`` connects to ``MP_DAGSTER_DATABASE_URL`` (an SQLite file in
    the working directory when unset); ``@schema`` on a table class declares it.
    """

    def __init__(self, name: str, database_url: str | None = None, context: Mapping[str, Any] | None = None,
                 create_tables: bool | None = None) -> None:
        check_identifier(name, "schema")
        if "__" in name or name.startswith("pg_"):
            raise DeclarationError(f"invalid schema name {name!r}: no '__' and no 'pg_' prefix")
        self.name = name
        self.backend: Backend = get_backend(database_url)
        self.context = dict(context) if context is not None else None
        # a read-only database (MP_DAGSTER_READ_ONLY=1) checks the declarations, creates nothing
        self.create_tables = not self.backend.read_only if create_tables is None else create_tables
        self.tables: list[type[Table]] = []  # masters, in declaration order
        if self.create_tables:
            self.backend.create_schema(name)

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, {redact(self.backend.url)!r})"

    @property
    def database_url(self) -> str:
        return self.backend.url

    @contextmanager
    def transaction(self):
        """Group writes (e.g. a Manual master with its parts) into one transaction."""
        with self.backend.transaction():
            yield

    # -- declaring ----------------------------------------------------------------------------
    def __call__(self, cls: type[Table]) -> type[Table]:
        if not (isinstance(cls, type) and issubclass(cls, Table)):
            raise DeclarationError(f"@{self.name} decorates table classes; got {cls!r}")
        if issubclass(cls, Part):
            raise DeclarationError(
                f"{cls.__qualname__} is a Part: do not decorate it; nest it in its master class "
                "and decorate the master"
            )
        if not issubclass(cls, _TIERS):
            raise DeclarationError(
                f"{cls.__qualname__} must subclass one of Manual, Lookup, Imported, Computed"
            )
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        context: dict[str, Any] = {}
        if self.context is not None:
            context.update(self.context)
        elif caller is not None:
            context.update(caller.f_globals)
            context.update(caller.f_locals)
        del frame, caller
        self._declare(cls, context)
        return cls

    def _declare(self, cls: type[Table], context: dict[str, Any]) -> None:
        table_name = check_identifier(to_snake_case(cls.__name__), "table")
        parts = [
            v for k, v in vars(cls).items()
            if isinstance(v, type) and issubclass(v, Table) and not k.startswith("_")
        ]
        for p in parts:
            if not issubclass(p, Part):
                raise DeclarationError(
                    f"{cls.__qualname__}.{p.__name__}: a class nested in a master must subclass Part"
                )
            if getattr(p, "_declared_name", None) is not None and p.master is not None and p.master is not cls:
                raise DeclarationError(f"{p.__qualname__} already belongs to another master")
        if issubclass(cls, Part):
            raise DeclarationError("a part cannot be a master")
        context = {**context, cls.__name__: cls}
        declared: list[type[Table]] = []
        meta = self.backend.read_meta(self.name)
        existing = self.backend.list_tables(self.name)
        with self.backend.transaction():
            if self.create_tables:
                self.backend.ensure_meta(self.name)
            self._declare_one(cls, table_name, cls.tier, None, context, meta, existing)
            declared.append(cls)
            pending = {p.__name__: p for p in parts}
            in_progress: set[str] = set()

            def declare_part(part: type[Table]) -> None:
                name = part.__name__
                in_progress.add(name)
                if any(isinstance(v, type) and issubclass(v, Table) and k != "master"
                       for k, v in vars(part).items()):
                    raise DeclarationError(
                        f"{part.__qualname__}: a part cannot have parts of its own (parts are not nested)"
                    )
                # as in DataJoint a bare name is looked up in the declaring scope first (a part
                # ``Type`` with ``-> Type`` references the table Type, not itself), then among the
                # sibling parts; ``master`` (and the master's class name) is the master
                part_ctx = {**context, "master": cls}
                for p in parts:
                    outer = context.get(p.__name__)
                    if not (isinstance(outer, type) and issubclass(outer, Table)):
                        part_ctx[p.__name__] = p
                part.master = cls
                part_table = check_identifier(f"{table_name}__{to_snake_case(name)}", "table")

                def resolve_part_ref(ref: str) -> Any:
                    head, *rest = ref.split(".")
                    target: Any = part_ctx.get(head)
                    for attr in rest:
                        target = getattr(target, attr, None)
                    if isinstance(target, type) and target in parts and target is not part \
                            and target.__name__ in pending:
                        if target.__name__ in in_progress:
                            raise DeclarationError(f"{part.__qualname__}: circular reference among parts")
                        declare_part(target)
                    return target

                self._declare_one(part, part_table, "part", cls, part_ctx, meta, existing, resolve_part_ref)
                pending.pop(name, None)
                declared.append(part)

            for p in parts:
                if p.__name__ in pending:
                    declare_part(p)
            cls.parts = [p for p in declared if p is not cls]
            if issubclass(cls, Lookup) and cls.contents and self.create_tables:
                rows = cls().prepare_rows(list(cls.contents), skip_duplicates=True)
                self.backend.insert_rows(self.name, table_name, list(cls._definition.heading), rows,
                                         skip_duplicates=True)
        for t in declared:
            dependencies.register(t)
        self.tables = [t for t in self.tables if t.__name__ != cls.__name__] + [cls]

    def _declare_one(
        self,
        cls: type[Table],
        table_name: str,
        tier: str,
        master: type[Table] | None,
        context: Mapping[str, Any],
        meta: Mapping[str, Any],
        existing: set[str],
        pre_resolve: Any = None,
    ) -> None:
        full_name = f"{self.name}.{table_name}"
        if not isinstance(getattr(cls, "definition", None), str):
            raise DeclarationError(f"{full_name}: {cls.__qualname__} needs a `definition` string")

        def resolve(ref: str) -> Any:
            if pre_resolve is not None:
                pre_resolve(ref)
            head, *rest = ref.split(".")
            target: Any = context.get(head)
            for attr in rest:
                target = getattr(target, attr, None)
            if target is None:
                raise DeclarationError(f"{full_name}: foreign key -> {ref}: no table named {ref!r} in scope")
            if not (isinstance(target, type) and issubclass(target, Table)):
                raise DeclarationError(f"{full_name}: -> {ref} is not a table class")
            if target is cls:
                raise DeclarationError(f"{full_name}: a table cannot reference itself")
            if target._declared_name is None:
                raise DeclarationError(f"{full_name}: -> {ref}: {target.__qualname__} is not declared yet")
            if target.schema.backend is not self.backend:
                raise DeclarationError(f"{full_name}: -> {ref} lives in another database")
            return target

        definition = parse_definition(full_name, cls.definition, resolve)
        if master is not None:
            master_key = _master_key(definition, master)
            if master_key is None:
                raise DeclarationError(
                    f"{full_name}: a part must carry its master's primary key "
                    f"({', '.join(master._definition.heading.primary_key)}): start the definition with "
                    "'-> master' (or put '-> master' below '---', or reference a sibling part that does)"
                )
            definition.master_key = master_key
        spec = definition.spec()
        known = meta.get(table_name)
        if known is not None:
            known_tier, known_spec, _ = known
            if known_tier != tier:
                raise DeclarationError(
                    f"{full_name}: declared as {tier} but the database has it as {known_tier}"
                )
            if known_spec != spec:
                raise DeclarationError(describe_difference(full_name, known_spec, spec))
            if table_name not in existing:
                raise DeclarationError(f"{full_name}: recorded in the schema but the table is missing")
        elif table_name in existing:
            raise DeclarationError(
                f"{full_name}: a table of that name exists but was not declared by mp_dagster; "
                "refusing to adopt it"
            )
        cls.schema = self
        cls.table_name = table_name
        cls._definition = definition
        if "Table definition:" not in (cls.__doc__ or ""):  # help(Table) shows it, as in DataJoint
            cls.__doc__ = (cls.__doc__ or "") + "\nTable definition:\n\n" + cls.definition
        cls._declared_name = full_name
        cls._dropped_name = None
        if known is None:
            if not self.create_tables:
                why = "the database is open read-only" if self.backend.read_only else "create_tables=False"
                raise DeclarationError(f"{full_name}: the table does not exist, and {why}: nothing is created")
            self.backend.create_table(self.name, table_name, definition)
            self.backend.write_meta(self.name, table_name, tier, spec, definition.comment)

    # -- dropping ----------------------------------------------------------------------------
    def drop_table(self, cls: type[Table]) -> None:
        if cls.master is not None:  # as DataJoint (#374): a part goes with its master only
            raise MPError(
                f"cannot drop {cls.full_name}: it is a part of {cls.master.full_name}; drop the master "
                f"({cls.master.__qualname__}.drop()) to drop it with its parts"
            )
        for child, _ in dependencies.children(cls):
            if dependencies.master_of(child) is not cls:
                raise MPError(f"cannot drop {cls.full_name}: {child.full_name} references it")
        with self.backend.transaction():
            for t in reversed([cls, *dependencies.topological(cls.parts)]):
                self.backend.drop_table(self.name, t.table_name)
                self.backend.delete_meta(self.name, t.table_name)
        for t in [cls, *cls.parts]:
            dependencies.unregister(t.full_name)
            t._dropped_name, t._declared_name = t._declared_name, None
        self.tables = [t for t in self.tables if t is not cls]

    def drop(self, force: bool = False) -> None:
        """Drop the whole schema with all its tables (``force=True`` is required: no prompt)."""
        if not force:
            raise MPError(f"Schema({self.name!r}).drop() deletes every table: pass force=True")
        self.backend.drop_schema(self.name)
        for t in list(dependencies.all_tables()):
            if t.schema is self or t.full_name.startswith(self.name + "."):
                dependencies.unregister(t.full_name)
                t._dropped_name, t._declared_name = t._declared_name, None
        self.tables = []

    def gc(self, store: str | None = None, *, dry_run: bool = True,
           grace: timedelta | None = None) -> dict[str, GCReport]:
        """Garbage-collect object stores: remove the objects no committed row references any
        more (deleted entries, failed or killed writes) that are older than ``grace`` (default
        one day); with ``dry_run`` (the default) only report them. ``store``: one store's name,
        or None for every store an attribute of this database uses.

        The references are read from every mp_dagster schema of this schema's database, so a
        store shared by several schemas is collected safely; a store must not be shared by
        several databases. Returns ``{store: GCReport}`` (``unreferenced``, ``unreferenced_bytes``,
        ``deleted``...; see :mod:`mp_dagster.store_references`)."""
        from .store_references import collect
        from .stores import DEFAULT_GRACE

        return collect(self.backend, store, grace=DEFAULT_GRACE if grace is None else grace, dry_run=dry_run)

    def list_tables(self) -> list[str]:
        """Table names in the database for this schema (without the bookkeeping table)."""
        return sorted(t for t in self.backend.list_tables(self.name) if not t.startswith("_"))


def _master_key(definition: Any, master: type[Table]) -> tuple[str, ...] | None:
    """The part's columns that hold its master's primary key, in the master's key order.

    Found through a non-nullable foreign key: to the master (``-> master``, in the primary key
    or, as DataJoint accepts, below ``---``), else to a sibling part whose master key it
    references (``-> Master.PartA.proj(src_master='master_id', src_part='part_a_id')``), else
    the master's key names in the part's primary key. ``None``: the part has no master key."""
    mpk = master._definition.heading.primary_key
    for fk in definition.foreign_keys:
        if fk.parent is master and not fk.nullable:
            theirs = dict(zip(fk.referenced, fk.attributes))
            return tuple(theirs[k] for k in mpk)
    for fk in definition.foreign_keys:
        sibling = fk.parent
        if fk.nullable or sibling.master is not master or not sibling._definition.master_key:
            continue
        theirs = dict(zip(fk.referenced, fk.attributes))
        if all(c in theirs for c in sibling._definition.master_key):
            return tuple(theirs[c] for c in sibling._definition.master_key)
    if all(k in definition.heading.primary_key for k in mpk):
        return tuple(mpk)
    return None
