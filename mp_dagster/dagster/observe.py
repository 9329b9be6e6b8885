"""Observation sensors: Manual and Lookup tables report their rows to Dagster on their own.

A source table's rows arrive from outside Dagster (``insert``, a notebook, ``mp-dagster
demo-data``). One sensor per Manual/Lookup master (``<schema>__<table>_observe``) makes every
row a partition that shows as present in the UI, whatever the downstream sensors do:

* each tick asks the database for the table's fingerprint (row count and key checksum, one
  aggregate query: ``mp_dagster.keyset``); when it equals the cursor's, the tick ends there;
* otherwise the keys are read (one query) and compared with the partitions Dagster shows as
  present (materialized and still in the partitions definition): a new row's partition is added
  to its dynamic partitions definition and reported as a runless ``AssetMaterialization``
  ("row present in the database"), at most ``batch_size`` per tick; a deleted row's partition
  is deleted from the table's own dynamic definition, so it is no longer shown (nor the
  partitions of downstream assets that share it: their rows went with it);
* every ``reconcile_seconds`` the comparison runs even if the fingerprint did not change (to
  repair what was changed in Dagster meanwhile, e.g. a wiped asset).

Rows are never reported twice: a tick reports only keys Dagster does not show as present.
Deleting a row of a source table whose partitions belong to another table's definition (a
Manual table keyed by its parent's key, or a two-dimension key) cannot be shown: Dagster's
open-source storage cannot wipe single partitions; the sensor logs those keys.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg

from .. import keyset
from .io_manager import TableBinding

MAX_OBSERVED_PER_TICK = 1_000  # each reported row is one event the daemon writes (ms apiece)
RECONCILE_SECONDS = 600.0
OBSERVED = "row present in the database"


def encode_cursor(token: str | None, reconciled_at: float) -> str:
    """``{"fingerprint": the table's fingerprint once fully reported, "at": last comparison}``."""
    return json.dumps({"fingerprint": token, "at": reconciled_at})


def decode_cursor(cursor: str | None) -> tuple[str | None, float]:
    try:
        payload = json.loads(cursor or "{}")
        return payload.get("fingerprint"), float(payload.get("at", 0.0))
    except (ValueError, TypeError, AttributeError):
        return None, 0.0  # an unreadable cursor only means one full comparison


def present_partitions(binding: TableBinding, instance: dg.DagsterInstance) -> set[str]:
    """The partitions of ``binding``'s asset that Dagster shows as present: materialized and,
    for a one-dimension definition, still one of its partitions."""
    materialized = {str(k) for k in instance.get_materialized_partitions(binding.asset_key)}
    partitions_def = binding.scheme.partitions_def
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        materialized &= set(instance.get_dynamic_partitions(partitions_def.name))
    return materialized


def add_partitions(binding: TableBinding, instance: dg.DagsterInstance, keys: list[dict[str, Any]]) -> None:
    """Add the dynamic partitions (of each dimension) that ``keys`` need and do not have."""
    scheme = binding.scheme
    for dyn, _source in scheme.dynamic_defs:
        existing = set(instance.get_dynamic_partitions(dyn.name))
        missing = list(dict.fromkeys(
            dim_key for key in keys for name, dim_key in scheme.dimension_keys(key)
            if name == dyn.name and dim_key not in existing))
        if missing:
            instance.add_dynamic_partitions(dyn.name, missing)


def owns_definition(binding: TableBinding) -> bool:
    """The table's partitions are its own definition's (deleting one affects no other table's rows
    that still exist: they reference it)."""
    return binding.scheme.kind == "own"


def build_observation_sensor(
    binding: TableBinding,
    minimum_interval_seconds: int = 30,
    batch_size: int = MAX_OBSERVED_PER_TICK,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    reconcile_seconds: float = RECONCILE_SECONDS,
) -> dg.SensorDefinition:
    """The sensor reporting the rows of one Manual or Lookup master (see the module)."""
    if batch_size < 1:
        raise ValueError(f"observe batch_size must be at least 1, not {batch_size!r}")
    table, scheme, asset_key = binding.table, binding.scheme, binding.asset_key
    name = f"{table.schema.name}__{table.table_name}_observe"

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Reports the rows of {table.full_name} as present partitions (new rows added, "
        "deleted rows removed); reads only a fingerprint while nothing changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        token, reconciled_at = decode_cursor(context.cursor)
        now = time.time()
        current = keyset.fingerprint(table).token()
        if token == current and now - reconciled_at < reconcile_seconds:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"{table.full_name} unchanged ({current})"),
                                   cursor=context.cursor)
        instance = context.instance
        added, gone = keyset.diff(table, present_partitions(binding, instance), scheme.encoder())
        batch = added[:batch_size]
        add_partitions(binding, instance, [key for _, key in batch])
        metadata = {"observed by": name, "dagster/table_name": table.full_name}
        events = [dg.AssetMaterialization(asset_key=asset_key, partition=pk, description=OBSERVED,
                                          metadata=metadata) for pk, _ in batch]
        if gone and owns_definition(binding):
            for pk in sorted(gone):
                instance.delete_dynamic_partition(scheme.partitions_def.name, pk)  # type: ignore[union-attr]
            context.log.info(f"{table.full_name}: {len(gone)} deleted rows, their partitions removed: "
                             f"{sorted(gone)[:20]}")
        elif gone:
            context.log.warning(
                f"{table.full_name}: {len(gone)} deleted rows still show as materialized (their partitions "
                f"belong to another table's definition; Dagster cannot wipe single partitions): "
                f"{sorted(gone)[:20]}")
        if batch:
            context.log.info(f"{table.full_name}: {len(batch)} rows reported"
                             + (f", {len(added) - len(batch)} left for the next ticks" if len(added) > len(batch)
                                else ""))
        done = len(added) <= batch_size  # everything reported: the fingerprint can be kept
        cursor = encode_cursor(current if done else None, now)
        if not events and not gone:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"{table.full_name}: every row is reported"),
                                   cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return _sensor
