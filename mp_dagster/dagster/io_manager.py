"""The IO manager: writes each partition's entry (master + parts) in its own transaction.

Thin on purpose, like Dagster's ``db_io_manager``: it maps partition keys to table keys and
delegates to the relational layer's write path (``write_entry``), the same one ``populate()``
uses. ``load_input`` hands a downstream asset the upstream partition's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from .. import dependencies
from ..autopopulate import Entry, write_entry
from ..table import Table
from .partitions import PartitionScheme


@dataclass(frozen=True)
class TableBinding:
    """A master table, its partition scheme, and its asset key."""

    table: type[Table]
    scheme: PartitionScheme
    asset_key: dg.AssetKey

    @property
    def job_name(self) -> str:
        """The asset job that sensors and schedules launch for this table."""
        return f"{self.table.schema.name}__{self.table.table_name}_job"


def entry_rows(table: type[Table], key: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The master row and part rows of one key, by table name (``segmentation``, ``segmentation__roi``)."""
    out = {table.table_name: (table() & key).fetch(as_dict=True)}
    for part in table.parts:
        out[part.table_name] = (part() & dependencies.part_restriction(part, key)).fetch(as_dict=True)
    return out


ROWS_WRITTEN = "rows written (this partition): {}"
TABLE_ROWS = "rows in table (all partitions): {}"


def table_rows_metadata(table: type[Table]) -> dict[str, Any]:
    """The table's total rows (one count query): ``dagster/row_count``, which the UI shows as
    "Row count" and Dagster defines as the rows of the materialized table, and the same number
    under a label that says so."""
    total = len(table())
    return {TABLE_ROWS.format(table.full_name): total, "dagster/row_count": total}


class MasterPartIOManager(dg.IOManager):
    """Writes ``{partition_key: Entry}`` outputs, each entry in its own transaction. ``None``
    values are keys already written before the run; ``True``/``False`` are keys the asset
    already handed to :meth:`write` itself (a backfill writes each entry as soon as it is
    computed, so that it holds one entry in memory, not all of them): written / written
    meanwhile by someone else."""

    def __init__(self, bindings: dict[dg.AssetKey, TableBinding]) -> None:
        self.bindings = bindings

    def binding(self, asset_key: dg.AssetKey) -> TableBinding:
        try:
            return self.bindings[asset_key]
        except KeyError:
            raise dg.Failure(f"asset {asset_key.to_user_string()} is not an mp_dagster table") from None

    def write(self, entry: Entry) -> bool:
        """Write one entry in one transaction; False if the key was written meanwhile."""
        return write_entry(entry)

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Entry | bool | None]) -> None:
        if obj is None:
            return
        written = skipped = 0
        detailed = len(obj) <= 20  # each log line is an event in Dagster's storage
        for partition_key in sorted(obj):
            entry = obj[partition_key]
            if isinstance(entry, bool):  # written (or found written) by the asset already
                written += entry
                skipped += not entry
            elif entry is not None and self.write(entry):
                written += 1
                if detailed:
                    context.log.info(f"wrote {partition_key}: {entry.row_counts()}")
            else:
                skipped += 1
                if detailed:
                    context.log.info(f"{partition_key} was already written: skipped")
        metadata: dict[str, Any] = {"mp_dagster/entries_written_in_run": written,
                                    "mp_dagster/entries_skipped_in_run": skipped}
        if not detailed:  # a backfill: no per-partition metadata, but the table's total rows
            context.log.info(f"wrote {written} entries, skipped {skipped} already written")
            metadata.update(table_rows_metadata(self.binding(context.asset_key).table))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        binding = self.binding(context.asset_key)
        table, scheme = binding.table, binding.scheme
        if not context.has_asset_partitions:
            return entry_rows(table, {})
        keys = list(context.asset_partition_keys)
        rows = {pk: entry_rows(table, scheme.decode(pk)) for pk in keys}
        return rows[keys[0]] if len(keys) == 1 else rows
