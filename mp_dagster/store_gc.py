"""Garbage collection of a store's unreferenced objects (the store side of ``schema.gc()``).

Rows and objects are written in this order: objects first, then the rows that reference them,
in one transaction. A write that fails or is killed in between leaves objects nobody
references; deleting rows leaves objects nobody references any more. The collector removes
them, but only once they are older than a grace period, so that the objects of a write in
flight (written, rows not yet committed) are never collected. It never removes an object a
committed row references: the caller supplies those references (the rows side, finding them in
the tables, is the schema's), preferably as a function called after the store is listed.

This module is the relational layer's: it imports nothing from Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .stores import (
    CONTENT_PREFIX,
    DEFAULT_GRACE,
    TEMP_PREFIX,
    MissingObjectError,
    Store,
    StoredObject,
    StoreError,
    check_address,
)


@dataclass
class GCReport:
    """What :func:`collect_garbage` found in one store, and removed unless ``dry_run``."""

    store: str
    dry_run: bool
    grace: timedelta
    scanned: int = 0  # objects listed under the collected prefixes (and .tmp/)
    referenced: int = 0  # of them, kept: a committed row references them
    recent: int = 0  # of them, kept: unreferenced but younger than the grace period
    unreferenced: list[StoredObject] = field(default_factory=list)  # old and unreferenced
    deleted: list[str] = field(default_factory=list)  # addresses removed (empty in a dry run)
    missing: list[str] = field(default_factory=list)  # referenced, under the prefixes, absent

    @property
    def unreferenced_bytes(self) -> int:
        """Bytes held by the old unreferenced objects (freed unless ``dry_run``)."""
        return sum(o.size for o in self.unreferenced)


def collect_garbage(store: Store, referenced: Iterable[str] | Callable[[], Iterable[str]], *,
                    grace: timedelta = DEFAULT_GRACE, dry_run: bool = True,
                    prefixes: Iterable[str] = (CONTENT_PREFIX,),
                    now: datetime | None = None) -> GCReport:
    """Remove the objects under ``prefixes`` that no committed row references and that are
    older than ``grace``; with ``dry_run`` (the default) only report them.

    ``referenced``: the addresses committed rows reference, or a function returning them,
    called *after* the store is listed (what ``schema.gc()`` should pass: a row committed
    while the store is being listed then counts). Stale temporary files of interrupted writes
    (``.tmp/``, file stores) are collected too. Each object is looked at again just before it
    is deleted, and kept if it became young (its content was written again meanwhile).

    ``grace`` must exceed the longest time between writing an object and committing the row
    that references it (a ``make`` that writes early and commits late), plus the time the
    reference scan takes and any clock difference with the store's server. Only objects under
    ``prefixes`` are considered: files users put in the store themselves (``<filepath@store>``,
    images arriving in a folder) are never collected. ``now`` replaces the local clock.

    The report's ``missing`` lists referenced addresses under ``prefixes`` that are not in the
    store: committed rows pointing at missing objects, which must never happen.
    """
    if grace < timedelta(0):
        raise StoreError(f"{store!r}: the grace period must not be negative (got {grace})")
    cutoff = (now or datetime.now(timezone.utc)) - grace
    report = GCReport(store.name, dry_run, grace)
    prefixes = [check_address(p.rstrip("/"), store.name) + "/" for p in prefixes]
    objects = [o for p in prefixes for o in store.list(p)]
    objects += store.list(TEMP_PREFIX.rstrip("/"), include_temp=True)
    refs = set(referenced() if callable(referenced) else referenced)
    report.scanned = len(objects)
    listed = {o.address for o in objects}
    report.missing = sorted(a for a in refs
                            if a not in listed and any(a.startswith(p) for p in prefixes))
    for obj in objects:
        if obj.address in refs:
            report.referenced += 1
        elif obj.modified >= cutoff:
            report.recent += 1
        else:
            report.unreferenced.append(obj)
    if not dry_run:
        for obj in report.unreferenced:
            try:
                if store.modified(obj.address) >= cutoff:  # written again since the listing
                    report.recent += 1
                    continue
            except MissingObjectError:
                continue
            if store.delete(obj.address):
                report.deleted.append(obj.address)
    return report


__all__ = ["GCReport", "collect_garbage"]
