"""Auto-population: ``key_source``, pending keys, ``make`` and the master-part write path.

``compute_entry`` runs ``make(key)`` with inserts *collected* (no transaction is open while the
user's code computes); ``write_entry`` writes the master row and all part rows in ONE transaction,
parents before children, and skips the key if another writer landed it first.
``populate()`` and the Dagster IO manager both use exactly these two functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dependencies
from .codecs import recording_uploads
from .errors import DeclarationError, DuplicateError, MakeError, MPError
from .expression import QueryExpression, as_expression
from .values import from_sql_value, to_sql_value

if TYPE_CHECKING:
    from .table import Table

log = logging.getLogger("mp_dagster")

_current_entry: ContextVar[Entry | None] = ContextVar("mp_dagster_entry", default=None)


def current_entry() -> Entry | None:
    """The entry whose ``make`` is running in this context, if any."""
    return _current_entry.get()


@dataclass
class Entry:
    """The rows one ``make(key)`` produced: the master row and its parts' rows (prepared)."""

    master: type[Table]
    key: dict[str, Any]
    rows: dict[type[Table], list[tuple]] = field(default_factory=dict)
    # bytes ``make`` wrote to each object store (``<npy@raw>``...): {store: bytes}, 0 for
    # content that was already stored; the objects are written before the entry's transaction
    store_bytes: dict[str, int] = field(default_factory=dict)

    def collect(self, table: type[Table], prepared: list[tuple]) -> None:
        self.rows.setdefault(table, []).extend(prepared)

    @property
    def tables(self) -> list[type[Table]]:
        """Master first, then its parts, parents before children."""
        return [self.master, *dependencies.topological(self.master.parts)]

    def batches(self) -> list[tuple[type[Table], list[tuple]]]:
        return [(t, self.rows.get(t, [])) for t in self.tables]

    def row_counts(self) -> dict[str, int]:
        """``schema.table`` -> rows, for the master and every part (0 when none)."""
        return {t.full_name: len(self.rows.get(t, [])) for t in self.tables}

    def as_dicts(self, table: type[Table]) -> list[dict[str, Any]]:
        """Collected rows of ``table`` as dicts of Python values (blobs decoded), as fetched."""
        attrs = list(table._definition.heading)
        return [{a.name: from_sql_value(a, v) for a, v in zip(attrs, r)} for r in self.rows.get(table, [])]

    def rows_by_table(self) -> dict[str, list[dict[str, Any]]]:
        """``{table_name: rows}`` for the master and each part, like a fetch of the stored entry."""
        return {t.table_name: self.as_dicts(t) for t in self.tables}

    def check(self) -> None:
        """The master-part contract: one master row for ``key``; parts carry the master's key."""
        master = self.master
        heading = master._definition.heading
        pk = heading.primary_key
        expected = tuple(to_sql_value(master.full_name, heading[k], self.key[k]) for k in pk)
        rows = self.rows.get(master, [])
        if len(rows) != 1:
            raise MakeError(
                f"{master.full_name}.make({self.key}) inserted {len(rows)} master rows; it must insert "
                "exactly one (self.insert1(...)) together with its part rows"
            )
        if tuple(rows[0][: len(pk)]) != expected:
            raise MakeError(
                f"{master.full_name}.make({self.key}) inserted a master row for another key "
                f"{dict(zip(pk, rows[0][: len(pk)]))}"
            )
        for part, prows in self.rows.items():
            if part is master:
                continue
            names = part._definition.heading.names
            idx = [names.index(c) for c in part._definition.master_key or pk]
            for r in prows:
                if tuple(r[i] for i in idx) != expected:
                    raise MakeError(
                        f"{part.full_name}: a part row inserted by {master.full_name}.make({self.key}) "
                        f"belongs to another master key {dict(zip(pk, (r[i] for i in idx)))}"
                    )


def compute_entry(master: type[Table], key: dict[str, Any], make_kwargs: dict[str, Any] | None = None) -> Entry:
    """Run ``master.make(key, **make_kwargs)`` with its inserts collected; nothing is written."""
    entry = Entry(master=master, key=dict(key))
    token = _current_entry.set(entry)
    try:
        with recording_uploads() as uploaded:
            master().make(dict(key), **(make_kwargs or {}))
    finally:
        _current_entry.reset(token)
    entry.store_bytes = uploaded
    entry.check()
    return entry


def write_entry(entry: Entry) -> bool:
    """Write the entry's master row and part rows in ONE transaction.

    Returns False (writing nothing) when the key was written meanwhile by someone else.
    """
    from .table import write_tables

    master = entry.master
    backend = master.schema.backend
    heading = master._definition.heading
    key_values = tuple(to_sql_value(master.full_name, heading[k], entry.key[k]) for k in heading.primary_key)
    restricted = master() & {k: entry.key[k] for k in heading.primary_key}
    if backend.primary_key_serializes_writers and not backend.in_transaction:
        # PostgreSQL: the master row goes first, so a second writer of this key waits on its
        # primary key until the first commits, then fails as a duplicate and is rolled back
        # whole. No lock and no re-check cost a round trip when nobody else writes the key.
        try:
            return write_tables(entry.batches())
        except DuplicateError:
            if restricted:  # another writer landed this key first
                return False
            raise  # a duplicate among the entry's own rows: the user's make is at fault
    # SQLite (BEGIN IMMEDIATE holds the write lock), or inside the caller's transaction (where a
    # duplicate would abort it): take the key's lock and re-check under it
    return write_tables(
        entry.batches(),
        lock_key=(master, key_values),
        still_pending=lambda: not restricted,
    )


class AutoPopulate:
    """Mixin of :class:`Imported` and :class:`Computed`: ``make``, ``key_source``, ``populate``."""

    def make(self, key: dict[str, Any], **make_kwargs: Any) -> None:
        """Compute the entry for ``key``: ``self.insert1(row)`` and ``self.Part.insert(rows)``.

        Or, as DataJoint's three-part make, define ``make_fetch(key, **make_kwargs)`` (returns
        a tuple), ``make_compute(key, *fetched)`` (returns a tuple) and
        ``make_insert(key, *computed)``: ``make_fetch`` runs again after ``make_insert`` and the
        entry is refused if what it reads has changed meanwhile."""
        cls = type(self)
        if not all(callable(getattr(cls, n, None)) for n in ("make_fetch", "make_compute", "make_insert")):
            raise MakeError(
                f"{cls.__qualname__} must define make(self, key), or make_fetch, make_compute and make_insert"
            )
        def returned(what: str, value: Any) -> tuple:
            if not isinstance(value, (tuple, list)):
                raise MakeError(f"{cls.full_name}.{what} must return a tuple (of the values the next step "
                                f"takes), not {type(value).__name__}")
            return tuple(value)

        fetched = returned("make_fetch", self.make_fetch(key, **make_kwargs))
        computed = returned("make_compute", self.make_compute(key, *fetched))
        self.make_insert(key, *computed)
        if not _same(fetched, returned("make_fetch", self.make_fetch(key, **make_kwargs))):
            raise MakeError(
                f"{cls.full_name}.make({key}): the data make_fetch read changed while make_compute ran; "
                "nothing is written (populate again to compute it from the new data)"
            )

    @property
    def key_source(self) -> QueryExpression:
        """Keys to populate: the join of the primary-key parents (override with an expression)."""
        cls = type(self)
        fks = [fk for fk in cls._definition.foreign_keys if fk.in_key]
        if not fks:
            raise DeclarationError(
                f"{cls.full_name} has no primary-key parents: define key_source (e.g. "
                f"key_source = Other.proj()) to say which keys to populate"
            )
        # a renamed foreign key (-> Animal.proj(subject_id='animal_id')) renames the parent's key
        parents = [as_expression(fk.parent).proj(**fk.renames) for fk in fks]
        source = parents[0]
        for p in parents[1:]:
            source = source * p
        return source

    def _key_source(self) -> QueryExpression:
        source = as_expression(type(self)().key_source)
        missing = [k for k in self.heading.primary_key if k not in source.heading]
        if missing:
            raise DeclarationError(f"{type(self).full_name}: key_source lacks primary key attribute(s) {missing}")
        return source.proj()

    def pending_keys(self, *restrictions: Any, limit: int | None = None) -> list[dict[str, Any]]:
        """Keys of ``key_source`` (restricted) that have no entry yet, in key order."""
        source = self._key_source()
        for r in restrictions:
            source = source & r
        pending = source - type(self)().proj()
        return pending.fetch("KEY", limit=limit) if limit is not None else pending.fetch("KEY")

    def progress(self, *restrictions: Any) -> tuple[int, int]:
        """(remaining, total) keys of the restricted key_source."""
        source = self._key_source()
        for r in restrictions:
            source = source & r
        total = len(source)
        return len(source - type(self)().proj()), total

    def populate(
        self,
        *restrictions: Any,
        suppress_errors: bool = False,
        reserve_jobs: bool = True,
        order: str = "original",
        max_calls: int | None = None,
        display_progress: bool = False,
        processes: int = 1,
        make_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``make`` for every pending key; each entry is written in its own transaction.

        Each key is reserved first (``reserve_jobs``, see :mod:`mp_dagster.reservation`): keys
        another worker is computing are skipped, so concurrent ``populate()`` calls, in any
        processes or machines, never compute a key twice. ``order``: ``"original"`` (key
        order), ``"reverse"`` or ``"random"``. ``max_calls``: at most this many ``make`` calls
        in all. ``processes`` > 1 computes in a pool of that many worker processes (at most one
        per key and per core), each with its own connection. ``make_kwargs``: keyword arguments
        of every ``make`` call (of ``make_fetch`` for a three-part make), as in DataJoint.

        Returns ``{"success_count": n, "error_list": [(key, exception), ...]}``; errors are
        raised at once (the pool stopped) unless ``suppress_errors``.
        """
        from .workers import ordered, run_keys  # workers builds on this module

        cls = type(self)
        keys = ordered(self.pending_keys(*restrictions), order)
        if max_calls is not None:
            keys = keys[:max_calls]
        if processes > 1:  # as DataJoint: no more workers than cores
            processes = min(processes, os.cpu_count() or 1)
        errors: list[tuple[dict[str, Any], BaseException]] = []
        success = 0
        bar = _progress_bar(len(keys), cls.__qualname__) if display_progress else None
        started = time.monotonic()
        with contextlib.closing(run_keys(cls, keys, processes=processes, reserve=reserve_jobs,
                                            make_kwargs=make_kwargs)) as outcomes:
            for outcome in outcomes:
                if outcome.status == "written":
                    success += 1
                elif outcome.status == "failed":
                    assert outcome.error is not None
                    if not suppress_errors:
                        raise outcome.error
                    log.warning("%s.make(%s) failed: %s", cls.full_name, outcome.key, outcome.error)
                    errors.append((outcome.key, outcome.error))
                if bar is not None:
                    elapsed = max(time.monotonic() - started, 1e-9)
                    bar.update(1)
                    bar.set_postfix(done=success, failed=len(errors), rate=f"{success / elapsed:.1f}/s")
        if bar is not None:
            bar.close()
        return {"success_count": success, "error_list": errors}


def _same(a: Any, b: Any) -> bool:
    """Deep equality of fetched values (numpy arrays compared by value, NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.names or a.dtype == object:
            return all(_same(x, y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist()))
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(type(a) is type(b) and a == b)


def _progress_bar(total: int, name: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - tqdm is a dependency
        raise MPError("display_progress needs tqdm") from exc
    return tqdm(total=total, desc=f"{name}.populate", unit="key")
