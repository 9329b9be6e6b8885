"""Reservations: a worker claims a key before it computes it, so that concurrent workers
(``populate()`` processes, SLURM array jobs, Dagster runs) never compute the same key twice.

A reservation is not a row: on PostgreSQL it is a session-level advisory lock taken with
``pg_try_advisory_lock`` on a 64-bit hash of (table, key); on SQLite an ``flock`` on a lock file
per key beside the database. Either vanishes with its worker (the server ends the session, the
operating system closes the file), so a killed worker never leaves a stale reservation, and
neither holds a transaction or a row lock while ``make`` computes. Claiming also checks, after
the lock is taken, whether the key was written meanwhile: a worker that released a key had
committed its entry before, so a claimed key is a key to compute.

The write path's own exactly-once check (``write_entry``) stays the last line of defence: a
worker whose connection was lost while it computed has lost its reservation with it.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Any

from .values import to_sql_value

if TYPE_CHECKING:
    from .table import Table

POLL_SECONDS = 0.1  # how often a waiting claim tries again


class Claim(enum.Enum):
    """What claiming a key found."""

    RESERVED = "reserved"  # ours now: compute it, then release
    BUSY = "busy"  # another worker holds the key
    DONE = "done"  # the entry is already written


def lock_id(master: type[Table], key: dict[str, Any]) -> int:
    """The reservation's number: the same for every process that claims this (table, key)."""
    heading = master._definition.heading
    values = tuple(to_sql_value(master.full_name, heading[k], key[k]) for k in heading.primary_key)
    return master.schema.backend.key_hash("reserve:" + master.full_name, values)


def claim(master: type[Table], key: dict[str, Any], wait: float = 0.0) -> Claim:
    """Try to reserve ``key`` of ``master``; with ``wait`` > 0 keep trying that many seconds
    while another worker holds it (BUSY is returned when the time is up)."""
    backend = master.schema.backend
    number = lock_id(master, key)
    written = (master() & {k: key[k] for k in master._definition.heading.primary_key}).exists_query()
    deadline = time.monotonic() + wait
    while True:
        reserved, exists = backend.try_reserve(number, written)
        if reserved and exists:
            backend.release(number)
        if exists:
            return Claim.DONE
        if reserved:
            return Claim.RESERVED
        if time.monotonic() >= deadline:
            return Claim.BUSY
        time.sleep(POLL_SECONDS)


def release(master: type[Table], key: dict[str, Any], later: bool = False) -> None:
    """Give the reservation of ``key`` back (after its entry was written or failed). ``later``:
    with this thread's next claim (one round trip for both) or ``flush_releases``; the entry
    is written or failed by then, so holding its lock a moment longer changes nothing."""
    master.schema.backend.release(lock_id(master, key), later)


def flush_releases(master: type[Table]) -> None:
    """Give back the reservations released ``later`` that are still held."""
    master.schema.backend.flush_releases()
