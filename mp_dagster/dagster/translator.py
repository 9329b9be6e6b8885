"""``MasterPartTranslator``: one object decides how a table looks in Dagster.

As with dagster-dbt's translator, subclass it and override single methods::

    class MyTranslator(MasterPartTranslator):
        def get_group_name(self, table):
            return "imaging_pipeline"

        def get_automation_condition(self, table):
            return dg.AutomationCondition.eager() if table.tier == "computed" else None
"""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg
import numpy as np

from .. import dependencies
from ..file_sources import file_source_of
from ..table import Table


def column_schema(table: type[Table]) -> dg.TableSchema:
    heading = table._definition.heading
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=a.name,
                type=str(a.type),
                description=a.comment or None,
                constraints=dg.TableColumnConstraints(nullable=a.nullable),
                tags={"primary_key": ""} if a.in_key else {},
            )
            for a in heading
        ]
    )


PREVIEW_ROWS = 5


def _cell(value: Any) -> Any:
    """A table-metadata cell: scalars as they are, arrays and containers summarised."""
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape}"
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def preview_table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    records = [dg.TableRecord({k: _cell(v) for k, v in r.items()}) for r in rows[:PREVIEW_ROWS]]
    names = list(rows[0]) if rows else []
    schema = dg.TableSchema(columns=[dg.TableColumn(n, "string") for n in names])
    return dg.MetadataValue.table(records=records, schema=schema)


class MasterPartTranslator:
    """Maps a master table (and its parts) to an asset's key, group, description, metadata..."""

    def get_asset_key(self, table: type[Table]) -> dg.AssetKey:
        """``[schema_name, table_name]``."""
        return dg.AssetKey([table.schema.name, table.table_name])

    def get_group_name(self, table: type[Table]) -> str | None:
        """The schema's name."""
        return table.schema.name

    def get_description(self, table: type[Table]) -> str:
        """The table comment, then the definitions of the master and its parts."""
        comment = table._definition.comment
        lines = [comment] if comment else []
        lines.append(f"{table.tier.capitalize()} table `{table.full_name}`.")
        lines.append("```\n" + table().describe() + "\n```")
        for part in table.parts:
            lines.append(f"Part `{part.full_name}`:\n```\n" + part().describe() + "\n```")
        return "\n\n".join(lines)

    def get_automation_condition(self, table: type[Table]) -> dg.AutomationCondition | None:
        """None: new keys are picked up by the table's sensor. ``AutomationCondition.eager()`` is
        the declarative alternative (see the README)."""
        return None

    def get_backfill_policy(self, table: type[Table]) -> dg.BackfillPolicy | None:
        """None: ``build_definitions`` decides (``max_partitions_per_run``). Return a policy to
        choose per table, e.g. ``dg.BackfillPolicy.multi_run(10)`` for an expensive ``make``."""
        return None

    def get_tags(self, table: type[Table]) -> dict[str, str]:
        return {"mp_dagster/tier": table.tier}

    def get_kinds(self, table: type[Table]) -> set[str]:
        return {table.schema.backend.name}

    def get_owners(self, table: type[Table]) -> list[str] | None:
        return None

    def get_metadata(self, table: type[Table]) -> dict[str, Any]:
        """Definition metadata: table name, column schema, and each part's columns."""
        metadata: dict[str, Any] = {
            "dagster/table_name": table.full_name,
            "dagster/column_schema": column_schema(table),
            "mp_dagster/tier": table.tier,
            "mp_dagster/primary_key": ", ".join(table._definition.heading.primary_key),
        }
        for part in table.parts:
            metadata[f"part {part.__name__} ({part.full_name})"] = column_schema(part)
        files = file_source_of(table)
        if files is not None:  # a table fed by files (file_sources.py)
            metadata["mp_dagster/files"] = files.source.describe()
        return metadata

    def get_materialization_metadata(
        self, table: type[Table], key: dict[str, Any], rows: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Per-partition metadata from the entry's rows (``{table_name: [row dicts]}``): a preview
        table of the master row and of the first part rows, and, if the master class defines
        ``preview_png(self, key, rows) -> bytes``, that picture (shown by the UI)."""
        metadata: dict[str, Any] = {}
        for name, table_rows in rows.items():
            if table_rows:
                metadata[f"preview {name}"] = preview_table(table_rows)
        make_picture = getattr(table, "preview_png", None)
        if make_picture is not None:
            png = make_picture(table(), key, rows)
            if png:
                encoded = base64.b64encode(png).decode()
                metadata["picture"] = dg.MetadataValue.md(
                    f"![{table.full_name} {key}](data:image/png;base64,{encoded})"
                )
        return metadata

    def get_deps(self, table: type[Table]) -> list[dg.AssetKey]:
        """The masters of every table the master or any of its parts references."""
        return [self.get_asset_key(m) for m in dependencies.upstream_masters(table)]
