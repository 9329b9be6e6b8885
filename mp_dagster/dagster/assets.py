"""One asset per master table: Manual/Lookup tables as external assets (the data's origin),
auto-populated masters as partitioned assets whose materialization runs ``make``."""


from typing import Any

import dagster as dg

from ..autopopulate import Entry, compute_entry
from ..table import Table
from .io_manager import MasterPartIOManager, TableBinding, entry_rows
from .translator import MasterPartTranslator, column_schema


def entry_metadata(binding: TableBinding, counts: dict[str, int]) -> dict[str, Any]:
    """Per-partition materialization metadata: rows per table, row count, table name."""
    table = binding.table
    metadata: dict[str, Any] = {f"rows {name}": n for name, n in counts.items()}
    metadata["dagster/row_count"] = sum(counts.values())
    metadata["dagster/table_name"] = table.full_name
    metadata["dagster/column_schema"] = column_schema(table)
    return metadata


def stored_counts(table: type[Table], key: dict[str, Any]) -> dict[str, int]:
    return {t.full_name: len(t() & key) for t in (table, *table.parts)}


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


def build_master_asset(
    binding: TableBinding, translator: MasterPartTranslator, io_manager_key: str
) -> dg.AssetsDefinition:
    """An auto-populated master: materializing partition ``k`` runs ``make(decode(k))``.

    A run over many partitions (``BackfillPolicy.single_run()``) computes each key in turn and
    the IO manager commits each key in its own transaction. Keys already in the table are not
    recomputed. If some keys fail, the others are still written (through the IO manager) and
    the run fails naming the failed keys, which Dagster marks failed.
    """
    table, scheme = binding.table, binding.scheme
    metadata = translator.get_metadata(table)

    @dg.asset(
        key=binding.asset_key,
        deps=translator.get_deps(table),
        partitions_def=scheme.partitions_def,
        io_manager_key=io_manager_key,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=translator.get_group_name(table),
        description=translator.get_description(table),
        metadata=metadata,
        tags=translator.get_tags(table),
        kinds=translator.get_kinds(table),
        owners=translator.get_owners(table),
        automation_condition=translator.get_automation_condition(table),
        required_resource_keys={io_manager_key},
    )
    def _master_asset(context: dg.AssetExecutionContext) -> dict[str, Entry | None]:
        keys = sorted(context.partition_keys)
        entries: dict[str, Entry | None] = {}
        failures: dict[str, BaseException] = {}
        for n, partition_key in enumerate(keys, 1):
            key = scheme.decode(partition_key)
            if table() & key:
                entries[partition_key] = None
                rows = entry_rows(table, key)
                counts = {t.full_name: len(rows[t.table_name]) for t in (table, *table.parts)}
                context.log.info(f"[{n}/{len(keys)}] {partition_key}: already in {table.full_name}, skipped")
            else:
                if not (table()._key_source() & key):
                    failures[partition_key] = dg.Failure(
                        f"{table.full_name}: key {key} is not in the key source (its upstream rows are missing)"
                    )
                    continue
                try:
                    entry = compute_entry(table, key)
                except Exception as exc:  # noqa: BLE001 - reported per key below
                    context.log.error(f"[{n}/{len(keys)}] {partition_key}: make failed: {exc!r}")
                    failures[partition_key] = exc
                    continue
                entries[partition_key] = entry
                counts = entry.row_counts()
                rows = entry.rows_by_table()
                context.log.info(f"[{n}/{len(keys)}] {partition_key}: computed {counts}")
            metadata = entry_metadata(binding, counts)
            metadata.update(translator.get_materialization_metadata(table, key, rows))
            context.add_asset_metadata(metadata, partition_key=partition_key)
        if not failures:
            return entries
        if len(keys) == 1:
            raise next(iter(failures.values()))
        # some keys failed: still commit the others, each in its own transaction, then fail the run
        io_manager: MasterPartIOManager = getattr(context.resources, io_manager_key)
        for partition_key, entry in entries.items():
            if entry is not None:
                io_manager.write(entry)
            key = scheme.decode(partition_key)
            md = entry_metadata(binding, stored_counts(table, key))
            context.log_event(
                dg.AssetMaterialization(asset_key=binding.asset_key, partition=partition_key, metadata=md)
            )
        raise dg.Failure(
            description=f"{table.full_name}: make failed for {len(failures)} of {len(keys)} keys: "
            + "; ".join(f"{k}: {e!r}" for k, e in list(failures.items())[:20]),
            metadata={"failed partitions": dg.MetadataValue.json(sorted(failures))},
        )

    return _master_asset
