"""Populating keys one at a time: reserve the key, run ``make``, write the entry, release; in
this process or in a pool of worker processes. ``populate()`` and the Dagster assets both run
their keys through :func:`run_keys`, so a notebook, a SLURM job and a Dagster run behave alike.

A pool worker is a forked process with a database connection of its own (connections are per
process); it ignores SIGINT, so Ctrl-C reaches only the parent, which terminates the pool: a
worker ended mid-write leaves no partial entry (the transaction is never committed) and no
reservation (it ends with the worker's connection or process).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .autopopulate import Entry, compute_entry, write_entry
from .errors import MakeError
from .reservation import Claim, claim, release

if TYPE_CHECKING:
    from .table import Table

ORDERS = ("original", "reverse", "random")


@dataclass
class KeyOutcome:
    """What became of one key.

    ``status``: ``written`` (by this worker), ``done`` (another worker wrote it first),
    ``busy`` (another worker holds its reservation: skipped) or ``failed`` (``error`` says why,
    ``stage`` is ``make`` or ``write``; nothing of the entry was written)."""

    key: dict[str, Any]
    status: str
    counts: dict[str, int] | None = None  # rows per table of the entry written
    rows: dict[str, list[dict[str, Any]]] | None = None  # the entry's rows, when asked for
    error: BaseException | None = None
    stage: str = ""
    traceback: str = ""


def populate_key(
    master: type[Table], key: dict[str, Any], reserve: bool = True, wait: float = 0.0,
    keep_rows: bool = False, write: Callable[[Entry], bool] = write_entry,
) -> KeyOutcome:
    """Reserve ``key`` (waiting up to ``wait`` seconds for another worker's reservation), run
    ``make`` and ``write`` the entry in one transaction (``write_entry``, or an IO manager's
    ``write`` that calls it). Exceptions of ``make`` and of the write are returned in the
    outcome; KeyboardInterrupt and the like propagate."""
    if not reserve:
        return _compute_and_write(master, key, keep_rows, write)
    try:
        outcome = claim(master, key, wait)
    except Exception as exc:  # noqa: BLE001 - e.g. the connection was lost: this key fails
        return KeyOutcome(key, "failed", error=exc, stage="reserve", traceback=traceback.format_exc())
    if outcome is Claim.BUSY:
        return KeyOutcome(key, "busy")
    if outcome is Claim.DONE:
        return KeyOutcome(key, "done")
    try:
        return _compute_and_write(master, key, keep_rows, write)
    finally:
        release(master, key)


def _compute_and_write(
    master: type[Table], key: dict[str, Any], keep_rows: bool, write: Callable[[Entry], bool]
) -> KeyOutcome:
    stage = "make"
    try:
        entry = compute_entry(master, key)
        stage = "write"
        written = write(entry)
    except Exception as exc:  # noqa: BLE001 - reported per key by the caller
        return KeyOutcome(key, "failed", error=exc, stage=stage, traceback=traceback.format_exc())
    return KeyOutcome(key, "written" if written else "done", counts=entry.row_counts(),
                      rows=entry.rows_by_table() if keep_rows and written else None)


def ordered(keys: list[dict[str, Any]], order: str) -> list[dict[str, Any]]:
    """``original`` (key order), ``reverse`` or ``random``, as DataJoint's ``populate(order=)``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if order == "reverse":
        return keys[::-1]
    if order == "random":
        keys = list(keys)
        random.shuffle(keys)
    return keys


def run_keys(
    master: type[Table], keys: list[dict[str, Any]], processes: int = 1, reserve: bool = True,
    wait: float = 0.0, keep_rows: bool = False, write: Callable[[Entry], bool] = write_entry,
) -> Iterator[KeyOutcome]:
    """Outcomes of :func:`populate_key` for ``keys``: in order in this process
    (``processes=1``), or as they complete in a pool of ``processes`` worker processes. Closing
    the iterator early (an error, Ctrl-C) terminates the pool."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    processes = min(processes, len(keys))
    if processes <= 1:
        for key in keys:
            yield populate_key(master, key, reserve, wait, keep_rows, write)
        return
    # fork: the pool sees the parent's table classes, also those of a notebook or a script
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    with context.Pool(processes, initializer=_start_worker, initargs=(master, reserve, wait, keep_rows, write)) as pool:
        yield from pool.imap_unordered(_pool_populate_key, keys, chunksize=1)
        pool.close()
        pool.join()


_worker_state: tuple[Any, ...] | None = None


def _start_worker(*state: Any) -> None:
    global _worker_state
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # connections are per process (backends/base.py): this one opens its own on first use
    _worker_state = state


def _pool_populate_key(key: dict[str, Any]) -> KeyOutcome:
    assert _worker_state is not None
    outcome = populate_key(_worker_state[0], key, *_worker_state[1:])
    if outcome.error is not None:
        outcome.error = _portable(outcome.error)
    return outcome


def _portable(error: BaseException) -> BaseException:
    """The error itself if it can travel back to the parent, else a MakeError describing it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: describe it instead
        return MakeError(f"{type(error).__name__}: {error} (in worker process {os.getpid()})")
    return error
