"""Asset checks for what Dagster cannot see in the database.

* ``parts_complete``: master entries with no rows in any of their parts (WARN: a make may
  legitimately produce no parts, but entries written outside ``make`` usually lack them);
* ``matches_database``: keys in the table without a recorded materialization (written by
  ``populate()`` outside Dagster), and materialized partitions whose rows are gone (deleted):
  those show here and can be recomputed from the UI;
* ``no_stale_pending``: keys that were requested (a run exists) longer than a threshold ago
  and are still not written.
"""


import time
import warnings
from typing import Any

import dagster as dg

from .io_manager import TableBinding

SAMPLE = 20


EXECUTION_TYPE_BETA = r"Parameter `execution_type` of function `AssetsDefinition.__init__` is currently in beta"


class MasterPartChecks(dg.AssetChecksDefinition):
    """Our asset checks, which stay asset checks when Dagster copies them.

    A ``dg`` project's defs folder adds its metadata to every definition a component returns
    (``Definitions.with_definition_metadata_update``). Dagster 1.13 copies a checks definition
    with ``self.__class__.dagster_internal_init``, which makes a plain ``AssetsDefinition``; the
    repository then wraps that in ``AssetChecksDefinition`` again, passing the beta parameter
    ``execution_type``: a BetaWarning on every code load of the demo project (``dg dev``,
    ``dg check defs``). Copies of this class are made as this class, their beta parameter
    silenced here only, so there is nothing to wrap and nothing to warn about."""

    @staticmethod
    def dagster_internal_init(**attributes: Any) -> "MasterPartChecks":  # type: ignore[override]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=EXECUTION_TYPE_BETA, category=dg.BetaWarning)
            return MasterPartChecks(**attributes)


def _sample(keys: set[str] | list[str]) -> list[str]:
    return sorted(keys)[:SAMPLE]


def build_checks(binding: TableBinding, stale_after_seconds: float = 3600.0) -> dg.AssetChecksDefinition:
    table, scheme, asset_key = binding.table, binding.scheme, binding.asset_key
    specs = [
        dg.AssetCheckSpec("matches_database", asset=asset_key,
                          description="Rows in the table and materialized partitions agree."),
        dg.AssetCheckSpec("no_stale_pending", asset=asset_key,
                          description=f"No key requested more than {stale_after_seconds:.0f} s ago is still pending."),
    ]
    if table.parts:
        specs.append(dg.AssetCheckSpec("parts_complete", asset=asset_key,
                                       description="Every master entry has rows in its parts."))

    @dg.multi_asset_check(specs=specs, name=f"{table.schema.name}__{table.table_name}_checks", can_subset=True)
    def _checks(context: dg.AssetCheckExecutionContext):
        instance = context.instance
        selected = {k.name for k in context.selected_asset_check_keys}
        if "matches_database" in selected:
            in_db = {str(scheme.encode(k)) for k in table().fetch("KEY")}
            materialized = {str(k) for k in instance.get_materialized_partitions(asset_key)}
            unrecorded, deleted = in_db - materialized, materialized - in_db
            yield dg.AssetCheckResult(
                check_name="matches_database",
                passed=not unrecorded and not deleted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "rows without a materialization": len(unrecorded),
                    "materialized but deleted": len(deleted),
                    "sample unrecorded": dg.MetadataValue.json(_sample(unrecorded)),
                    "sample deleted": dg.MetadataValue.json(_sample(deleted)),
                },
                description=(
                    f"{len(deleted)} materialized partitions have no rows (deleted): re-materialize them "
                    "to recompute" if deleted else None
                ),
            )
        if "no_stale_pending" in selected:
            yield _stale_pending(instance, binding, stale_after_seconds)
        if "parts_complete" in selected:
            incomplete = table()
            for part in table.parts:
                # the part's columns holding the master key, under the master's names
                cols = part._definition.master_key or table._definition.heading.primary_key
                incomplete = incomplete - part().proj(**{
                    k: c for k, c in zip(table._definition.heading.primary_key, cols) if k != c})
            keys = incomplete.fetch("KEY", limit=SAMPLE)
            count = len(incomplete) if keys else 0
            yield dg.AssetCheckResult(
                check_name="parts_complete",
                passed=count == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"entries without parts": count,
                          "sample": dg.MetadataValue.json([str(scheme.encode(k)) for k in keys])},
            )

    return MasterPartChecks.dagster_internal_init(**_checks.get_attributes_dict())


def _stale_pending(instance: dg.DagsterInstance, binding: TableBinding, threshold: float) -> dg.AssetCheckResult:
    pending = {str(binding.scheme.encode(k)): k for k in binding.table().pending_keys()}
    stale: list[str] = []
    oldest: float | None = None
    now = time.time()
    names = list(pending)
    for start in range(0, len(names), 1000):
        records = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/partition": names[start : start + 1000]})
        )
        for record in records:
            run = record.dagster_run
            if binding.asset_key not in (run.asset_selection or ()) and run.job_name != binding.job_name:
                continue  # a run of another asset sharing the partition definition
            created = record.create_timestamp.timestamp()
            pk = run.tags.get("dagster/partition")
            if pk in pending and now - created > threshold:
                stale.append(pk)
                oldest = created if oldest is None else min(oldest, created)
    stale = sorted(set(stale))
    failed = failure_reasons(instance, binding, names)
    metadata: dict[str, Any] = {
        "pending keys": len(pending),
        "stale pending keys": len(stale),
        "sample": dg.MetadataValue.json(stale[:SAMPLE]),
        "failed pending keys": len(failed),
        "why they failed (sample)": dg.MetadataValue.json(dict(sorted(failed.items())[:SAMPLE])),
    }
    if oldest is not None:
        metadata["oldest request age (s)"] = round(now - oldest, 1)
    return dg.AssetCheckResult(
        check_name="no_stale_pending", passed=not stale and not failed, severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"{len(failed)} pending keys failed; the sample says why (the sensor requests a failed "
        "key again a few times, then leaves it for you)" if failed else None)


def failure_reasons(instance: dg.DagsterInstance, binding: TableBinding, keys: list[str]) -> dict[str, str]:
    """Partition key -> why its latest run failed (run id and error), for the ``keys`` whose
    latest materialization attempt failed (a sample of ``SAMPLE`` keys gets a reason)."""
    if not keys:
        return {}
    statuses = instance.get_status_by_partition(binding.asset_key, keys, binding.scheme.partitions_def) or {}
    failed = sorted(k for k, s in statuses.items() if s == dg.AssetPartitionStatus.FAILED)
    reasons: dict[str, str] = {}
    for pk in failed:
        info = instance.get_latest_planned_materialization_info(binding.asset_key, pk) if len(reasons) < SAMPLE else None
        reasons[pk] = "failed"
        if info is None:
            continue
        errors = [e.dagster_event.step_failure_data.error for e in instance.all_logs(
            info.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            if e.dagster_event and e.dagster_event.step_failure_data and e.dagster_event.step_failure_data.error]
        error = errors[-1] if errors else None
        while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        message = error.message.strip().splitlines()[0] if error is not None else "see the run"
        reasons[pk] = f"run {info.run_id}: {message[:300]}"
    return reasons
