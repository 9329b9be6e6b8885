"""Populating keys one at a time: reserve the key, run ``make``, write the entry, release; in
this process or in a pool of worker processes. ``populate()`` and the Dagster assets both run
their keys through :func:`run_keys`, so a notebook, a SLURM job and a Dagster run behave alike.

A pool worker is a forked process with a database connection of its own (connections are per
process) and a pipe to the parent; it ignores SIGINT, so Ctrl-C reaches only the parent, which
terminates the workers: a worker ended mid-write leaves no partial entry (the transaction is
never committed) and no reservation (it ends with the worker's connection or process).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
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
from .reservation import Claim, claim, flush_releases, release

if TYPE_CHECKING:
    from .table import Table

ORDERS = ("original", "reverse", "random")


@dataclass
class KeyOutcome:
    """What became of one key.

    ``status``: ``written`` (by this worker), ``done`` (another worker wrote it first),
    ``busy`` (another worker holds its reservation: skipped) or ``failed`` (``error`` says why,
    ``stage`` is ``reserve``, ``make`` or ``write``, ``traceback`` where it happened, also in a
    pool worker; nothing of the entry was written)."""

    key: dict[str, Any]
    status: str
    counts: dict[str, int] | None = None  # rows per table of the entry written
    rows: dict[str, list[dict[str, Any]]] | None = None  # the entry's rows, when asked for
    error: BaseException | None = None
    stage: str = ""
    traceback: str = ""
    store_bytes: dict[str, int] | None = None  # bytes make wrote to each object store


def populate_key(
    master: type[Table], key: dict[str, Any], reserve: bool = True, wait: float = 0.0,
    keep_rows: bool = False, write: Callable[[Entry], bool] = write_entry, release_later: bool = False,
    make_kwargs: dict[str, Any] | None = None,
) -> KeyOutcome:
    """Reserve ``key`` (waiting up to ``wait`` seconds for another worker's reservation), run
    ``make`` and ``write`` the entry in one transaction (``write_entry``, or an IO manager's
    ``write`` that calls it). Exceptions of ``make`` and of the write are returned in the
    outcome; KeyboardInterrupt and the like propagate."""
    if not reserve:
        return _compute_and_write(master, key, keep_rows, write, make_kwargs)
    try:
        outcome = claim(master, key, wait)
    except Exception as exc:  # noqa: BLE001 - e.g. the connection was lost: this key fails
        return KeyOutcome(key, "failed", error=exc, stage="reserve", traceback=traceback.format_exc())
    if outcome is Claim.BUSY:
        return KeyOutcome(key, "busy")
    if outcome is Claim.DONE:
        return KeyOutcome(key, "done")
    try:
        return _compute_and_write(master, key, keep_rows, write, make_kwargs)
    finally:
        release(master, key, later=release_later)


def _compute_and_write(
    master: type[Table], key: dict[str, Any], keep_rows: bool, write: Callable[[Entry], bool],
    make_kwargs: dict[str, Any] | None = None,
) -> KeyOutcome:
    stage = "make"
    try:
        entry = compute_entry(master, key, make_kwargs)
        stage = "write"
        written = write(entry)
    except Exception as exc:  # noqa: BLE001 - reported per key by the caller
        return KeyOutcome(key, "failed", error=exc, stage=stage, traceback=traceback.format_exc())
    return KeyOutcome(key, "written" if written else "done", counts=entry.row_counts(),
                      rows=entry.rows_by_table() if keep_rows and written else None,
                      store_bytes=dict(entry.store_bytes))


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
    make_kwargs: dict[str, Any] | None = None,
) -> Iterator[KeyOutcome]:
    """Outcomes of :func:`populate_key` for ``keys``: in order in this process
    (``processes=1``), or as they complete in a pool of ``processes`` worker processes. Closing
    the iterator early (an error, Ctrl-C) terminates the pool."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    processes = min(processes, len(keys))
    if processes <= 1:
        try:  # each key's release travels with the next key's claim: one round trip per key
            for key in keys:
                yield populate_key(master, key, reserve, wait, keep_rows, write, release_later=True,
                                   make_kwargs=make_kwargs)
        finally:
            flush_releases(master)
        return
    yield from _pool(list(keys), processes, (master, reserve, wait, keep_rows, write, False, make_kwargs))


def _pool(keys: list[dict[str, Any]], processes: int, state: tuple[Any, ...]) -> Iterator[KeyOutcome]:
    """``processes`` forked workers, each with a pipe of its own to this process: a key goes to
    whichever worker is free, its outcome comes back. Nothing is shared but the pipes, so
    terminating a worker at any moment (an error, Ctrl-C) can leave no lock held that this
    process needs (``multiprocessing.Pool`` hangs in ``terminate()`` when a worker dies
    holding its result queue's lock). A worker that dies fails its key and is replaced."""
    # fork: the pool sees the parent's table classes, also those of a notebook or a script
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    todo = iter(keys)
    workers: dict[Any, tuple[Any, dict[str, Any] | None]] = {}  # pipe -> (process, its key)

    def start() -> Any:
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker_loop, args=(theirs, state), daemon=True)
        process.start()
        theirs.close()
        workers[ours] = (process, None)
        return ours

    def give(pipe: Any) -> None:
        key = next(todo, None)
        if key is None:
            pipe.send(None)  # no more keys: the worker exits
            workers.pop(pipe)[0].join()
            pipe.close()
        else:
            workers[pipe] = (workers[pipe][0], key)
            pipe.send(key)

    try:
        for _ in range(processes):
            give(start())
        while workers:
            for pipe in multiprocessing.connection.wait(list(workers)):
                process, key = workers[pipe]
                try:
                    outcome = pipe.recv()
                except EOFError:  # the worker died (killed, out of memory) while computing key
                    process.join()
                    workers.pop(pipe)
                    pipe.close()
                    assert key is not None
                    yield KeyOutcome(key, "failed", stage="make", error=MakeError(
                        f"worker process {process.pid} died (exit code {process.exitcode}) while computing {key}"))
                    give(start())
                    continue
                yield outcome
                give(pipe)
    finally:
        for process, _ in workers.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: an open transaction is never committed
        for pipe, (process, _) in workers.items():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()


_worker_state: tuple[Any, ...] | None = None


def _worker_loop(pipe: Any, state: tuple[Any, ...]) -> None:
    global _worker_state
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # terminate() means "stop now", whatever handler the parent had (Dagster installs its own)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # connections are per process (backends/base.py): this one opens its own on first use
    _worker_state = state
    while (key := pipe.recv()) is not None:
        pipe.send(_pool_populate_key(key))


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
