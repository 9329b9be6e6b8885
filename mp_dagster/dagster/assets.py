"""One asset per master table: Manual/Lookup tables as external assets (the data's origin),
auto-populated masters as partitioned assets whose materialization runs ``make``."""


import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field

from .. import dependencies
from ..errors import ConnectionError as MPConnectionError
from ..table import Table
from ..workers import KeyOutcome, populate_key, run_keys
from .io_manager import (
    ROWS_WRITTEN,
    MasterPartIOManager,
    TableBinding,
    entry_rows,
    table_rows_metadata,
)
from .translator import MasterPartTranslator, column_schema


def entry_metadata(binding: TableBinding, counts: dict[str, int], table_total: dict[str, Any] | None = None,
                   store_bytes: dict[str, int] | None = None) -> dict[str, Any]:
    """Per-partition materialization metadata: the rows this partition wrote per table (master and
    each part, labelled "rows written (this partition)"), the table's total rows
    (``table_rows_metadata``, counted unless given), table name and column schema, and the bytes
    ``make`` wrote to each object store (``store/raw bytes written``)."""
    table = binding.table
    metadata: dict[str, Any] = {ROWS_WRITTEN.format(name): n for name, n in counts.items()}
    metadata.update(table_total if table_total is not None else table_rows_metadata(table))
    metadata["dagster/table_name"] = table.full_name
    metadata["dagster/column_schema"] = column_schema(table)
    for store, n in sorted((store_bytes or {}).items()):
        metadata[f"store/{store} bytes written"] = n
    return metadata


BACKFILL_POLICY_BETA = r"Parameter `backfill_policy` of function `asset` is currently in beta"
DETAILED_RUN_KEYS = 20  # runs up to this many keys get per-key metadata, pictures and log lines


def key_tuple(key: dict[str, Any]) -> tuple:
    return tuple(key.values())


def matching_keys(expression: Any, keys: list[dict[str, Any]], chunk: int = 500) -> set[tuple]:
    """The keys (as tuples, in key order) among ``keys`` that ``expression`` contains."""
    found: set[tuple] = set()
    for start in range(0, len(keys), chunk):
        batch = keys[start : start + chunk]
        names = list(batch[0]) if batch else []
        found.update(tuple(k[n] for n in names) for k in (expression & batch).fetch("KEY"))
    return found


PROGRESS_MIN_SECONDS = 5.0  # a backfill logs every 5 % of its keys, but not more often than this


class ProgressLog:
    """Per-key log lines for small runs; for backfills one line per 5 % of the keys, at most one
    per ``PROGRESS_MIN_SECONDS``, and the last (each line is an event in Dagster's storage)."""

    def __init__(self, context: dg.AssetExecutionContext, table: str, total: int, detailed: bool) -> None:
        self.context, self.table, self.total, self.detailed = context, table, total, detailed
        self.done = self.failed = 0
        self.started = self.logged = time.monotonic()
        self.every = max(1, total // 20)

    def step(self, partition_key: str, what: str, error: bool = False,
             detail: Callable[[], Any] | None = None) -> None:
        """One key done; ``detail()`` (only called when the key gets a line) follows ``what``."""
        self.done += 1
        self.failed += error
        if self.detailed or error:
            log = self.context.log.error if error else self.context.log.info
            log(f"[{self.done}/{self.total}] {partition_key}: {what}" + (f" {detail()}" if detail else ""))
        if self.detailed:
            return
        now = time.monotonic()
        if self.done == self.total or (self.done % self.every == 0 and now - self.logged >= PROGRESS_MIN_SECONDS):
            self.logged = now
            rate = self.done / max(now - self.started, 1e-9)
            self.context.log.info(
                f"{self.table}: {self.done}/{self.total} keys done, {self.failed} failed, {rate:.1f} keys/s"
            )


def stored_counts(table: type[Table], key: dict[str, Any]) -> dict[str, int]:
    return {table.full_name: len(table() & key)} | {
        t.full_name: len(t() & dependencies.part_restriction(t, key)) for t in table.parts}


def build_source_asset(binding: TableBinding, translator: MasterPartTranslator, io_manager_key: str) -> dg.AssetSpec:
    """A Manual or Lookup table: an external, partitioned asset (its rows arrive from outside)."""
    table = binding.table
    return dg.AssetSpec(
        key=binding.asset_key,
        deps=translator.get_deps(table),
        description=translator.get_description(table),
        group_name=translator.get_group_name(table),
        metadata=translator.get_metadata(table),
        tags=translator.get_tags(table),
        kinds=translator.get_kinds(table),
        owners=translator.get_owners(table),
        partitions_def=binding.scheme.partitions_def,
    ).with_io_manager_key(io_manager_key)


class PopulateConfig(dg.Config):
    """Run configuration of a master's materialization (the launchpad's ``config``)."""

    processes: int = Field(
        default=1, ge=1,
        description="Worker processes computing this run's keys, each with its own database "
        "connection: up to the cores of the machine or pod that runs the step.")
    reserved_wait_seconds: float = Field(
        default=3600.0, ge=0,
        description="How long to wait for a key that another worker has reserved (it is then "
        "written by that worker, or computed here if the other worker failed).")


def backfill_policy(max_partitions_per_run: int | None) -> dg.BackfillPolicy:
    """A backfill as ONE run (``None``), or as runs of at most ``max_partitions_per_run`` keys
    that the run queue, run launchers and executors spread over workers."""
    if max_partitions_per_run is None:
        return dg.BackfillPolicy.single_run()
    if max_partitions_per_run < 1:
        raise ValueError(f"max_partitions_per_run must be at least 1, not {max_partitions_per_run}")
    return dg.BackfillPolicy.multi_run(max_partitions_per_run)


def build_master_asset(
    binding: TableBinding, translator: MasterPartTranslator, io_manager_key: str,
    max_partitions_per_run: int | None = None,
) -> dg.AssetsDefinition:
    """An auto-populated master: materializing partition ``k`` runs ``make(decode(k))``.

    A run over many partitions (a backfill: one run, or runs of at most ``max_partitions_per_run``
    keys, unless the translator picks the policy) computes each key in turn and
    the IO manager commits each key in its own transaction: a run of up to
    ``DETAILED_RUN_KEYS`` keys when it handles the output, a longer one (a backfill) as soon as
    each key is computed, so that the run holds one entry in memory at a time. Keys already in
    the table are not recomputed. If some keys fail, the others are still written and the run
    fails naming the failed keys, which Dagster marks failed.
    """
    table, scheme = binding.table, binding.scheme
    metadata = translator.get_metadata(table)

    def _master_asset(context: dg.AssetExecutionContext, config: PopulateConfig) -> dict[str, Any]:
        io_manager: MasterPartIOManager = getattr(context.resources, io_manager_key)
        # in key order (image 2 before image 10), as populate() goes, not in partition-key text order
        decoded = dict(sorted(((pk, scheme.decode(pk)) for pk in context.partition_keys),
                              key=lambda item: key_tuple(item[1])))
        keys = list(decoded)
        partition_of = {key_tuple(k): pk for pk, k in decoded.items()}
        # two queries for the whole run, not two per key
        written = matching_keys(table(), list(decoded.values()))
        eligible = matching_keys(table()._key_source(), [k for k in decoded.values() if key_tuple(k) not in written])
        # Dagster validates every per-partition metadata call against all partitions and stores
        # every log line as an event: detailed per key for small runs, sampled for backfills
        detailed = len(keys) <= DETAILED_RUN_KEYS
        progress = ProgressLog(context, table.full_name, len(keys), detailed)
        entries: dict[str, bool | None] = {}  # True: written here; False: by another worker; None: before
        written_counts: dict[str, dict[str, int]] = {}  # rows per table of the entries written here
        written_bytes: dict[str, dict[str, int]] = {}  # bytes per object store of those entries
        failures: dict[str, BaseException] = {}

        def add_metadata(partition_key: str, key: dict[str, Any], rows: dict[str, list[dict[str, Any]]],
                         store_bytes: dict[str, int] | None = None) -> None:
            counts = {t.full_name: len(rows[t.table_name]) for t in (table, *table.parts)}
            metadata = entry_metadata(binding, counts, store_bytes=store_bytes)
            metadata.update(translator.get_materialization_metadata(table, key, rows))
            context.add_asset_metadata(metadata, partition_key=partition_key)

        def record(outcome: KeyOutcome) -> None:
            partition_key, key = partition_of[key_tuple(outcome.key)], outcome.key
            if outcome.status == "failed":
                if isinstance(outcome.error, MPConnectionError):
                    raise outcome.error  # the database is gone: the remaining keys would fail alike
                failures[partition_key] = outcome.error or dg.Failure(f"{key} failed")
                progress.step(partition_key, f"{outcome.stage} failed: {outcome.error!r}", error=True,
                              detail=lambda: f"\n{outcome.traceback}" if outcome.traceback else "")
                return
            if outcome.status == "busy":
                failures[partition_key] = dg.Failure(
                    f"{table.full_name}: key {key} is still reserved by another worker after "
                    f"{config.reserved_wait_seconds:.0f} s")
                progress.step(partition_key, "still reserved by another worker", error=True)
                return
            entries[partition_key] = outcome.status == "written"
            if outcome.status == "written":
                written_counts[partition_key] = outcome.counts or {}
                written_bytes[partition_key] = outcome.store_bytes or {}
                progress.step(partition_key, "computed", detail=lambda: outcome.counts)
            else:
                progress.step(partition_key, "written meanwhile by another worker")
            if detailed:
                add_metadata(partition_key, key, outcome.rows or entry_rows(table, key),
                             written_bytes.get(partition_key))

        todo = []
        for partition_key, key in decoded.items():
            if key_tuple(key) in written:
                entries[partition_key] = None
                progress.step(partition_key, "already written, skipped")
                if detailed:
                    add_metadata(partition_key, key, entry_rows(table, key))
            elif key_tuple(key) not in eligible:
                failures[partition_key] = dg.Failure(
                    f"{table.full_name}: key {key} is not in the key source (its upstream rows are missing)"
                )
                progress.step(partition_key, "not in the key source", error=True)
            else:
                todo.append(key)
        # each key is reserved, computed and written through the IO manager (one transaction)
        # by this process or a pool of config.processes workers; keys another worker holds are
        # taken last, once that worker has released them (written by it, or left for us)
        busy = []
        with contextlib.closing(run_keys(table, todo, processes=config.processes, keep_rows=detailed,
                                         write=io_manager.write)) as outcomes:
            for outcome in outcomes:
                if outcome.status == "busy":
                    busy.append(outcome.key)
                else:
                    record(outcome)
        for key in busy:
            record(populate_key(table, key, wait=config.reserved_wait_seconds, keep_rows=detailed,
                                write=io_manager.write))
        if not failures:
            return entries
        if len(keys) == 1:
            raise next(iter(failures.values()))
        # some keys failed: the others are written; record them, then fail the run
        table_total = table_rows_metadata(table)
        for partition_key in entries:
            # rows of keys written elsewhere are counted in the database (two queries a key)
            counts = written_counts.get(partition_key) or stored_counts(table, decoded[partition_key])
            md = entry_metadata(binding, counts, table_total, written_bytes.get(partition_key))
            context.log_event(
                dg.AssetMaterialization(asset_key=binding.asset_key, partition=partition_key, metadata=md)
            )
        raise dg.Failure(
            description=f"{table.full_name}: {len(failures)} of {len(keys)} keys failed: "
            + "; ".join(f"{k}: {e!r}" for k, e in list(failures.items())[:20]),
            metadata={"failed partitions": dg.MetadataValue.json(sorted(failures))},
        )

    # backfill_policy is a beta parameter of dg.asset in Dagster 1.13: its BetaWarning is ours
    # to silence (a warning on every code load), here only, not the user's own assets
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=BACKFILL_POLICY_BETA, category=dg.BetaWarning)
        return dg.asset(
            key=binding.asset_key,
            deps=translator.get_deps(table),
            partitions_def=scheme.partitions_def,
            io_manager_key=io_manager_key,
            backfill_policy=translator.get_backfill_policy(table) or backfill_policy(max_partitions_per_run),
            group_name=translator.get_group_name(table),
            description=translator.get_description(table),
            metadata=metadata,
            tags=translator.get_tags(table),
            kinds=translator.get_kinds(table),
            owners=translator.get_owners(table),
            automation_condition=translator.get_automation_condition(table),
            required_resource_keys={io_manager_key},
        )(_master_asset)
