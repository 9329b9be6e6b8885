"""Tables fed by files (``mp.FileSource``): a sensor registers new files, a check reports changed ones.

Per table with a :class:`~mp_dagster.file_sources.FileSource`, ``build_definitions`` adds:

* the sensor ``<schema>__<table>_files`` (running by default): each tick scans the store
  (``FileSource.scan``: one listing, one query, hashing only new files and registered ones
  whose size or time moved), inserts the new files' rows (at most ``batch_size`` per tick),
  adds their keys to the table's dynamic partitions and reports them as materialized partitions
  of the table's asset (path, size and checksum in the metadata). The masters downstream share
  those partitions, so their pending-key sensors (``sensors.py``) request the runs on their next
  tick, exactly as for rows inserted by hand;
* the asset check ``files_unchanged`` on the table's asset. The sensor records it as failed
  (severity WARN, the changed files in its metadata) when registered files change, and as
  passed once they are resolved; run on demand it hashes every registered file. Changed files
  are never registered again on their own: ``Table.files.reregister(path)`` (or
  ``mp-dagster files Table --reregister PATH``) accepts the new content. On the next tick the
  sensor sees the file resolved, reports its partition materialized again and requests runs of
  the pending keys of the masters sharing the table's partitions, with run keys naming the new
  checksum (the pending sensors' run keys for those partitions were used for the old content).

The cursor remembers the changed and refused files already warned about (so the log warns
once, the check is recorded when the set changes) and registered files whose time moved but
whose content was verified unchanged (so they are not hashed again).
"""

import base64
import json
import zlib
from typing import Any

import dagster as dg

from ..file_sources import BoundFileSource, ScanResult, file_sources
from .checks import MasterPartChecks
from .io_manager import TableBinding
from .sensors import partition_tags, run_key

CHECK_NAME = "files_unchanged"
MAX_REMEMBERED = 20_000  # cursor entries per kind (refused, verified); beyond, only warnings repeat
SHOWN = 20  # files named per log line / metadata list
ADD_BATCH = 5_000  # partition keys per add (one IN list: SQLite allows 32,766 parameters)


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(state, sort_keys=True).encode(), 6)).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    """``{"changed": {path: describes}, "refused": {path: reason}, "verified": {path: [size, time]}}``."""
    state: dict[str, Any] = {"changed": {}, "refused": {}, "verified": {}}
    if cursor:
        try:
            state.update(json.loads(zlib.decompress(base64.b64decode(cursor))))
        except (ValueError, zlib.error):
            pass  # an unreadable cursor only means warnings repeat and touched files are hashed again
    return state


def check_evaluation(binding: TableBinding, scan: ScanResult) -> dg.AssetCheckEvaluation:
    """``files_unchanged``: failed (WARN) while registered files differ from their registration."""
    changed = [str(c) for c in scan.changed]
    return dg.AssetCheckEvaluation(
        asset_key=binding.asset_key, check_name=CHECK_NAME, passed=not changed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(changed)} registered files changed after registration: not recomputed; "
                     f"{binding.table.__name__}.files.reregister(path) accepts the new content"
                     if changed else "every registered file is as registered"),
        metadata={"changed files": dg.MetadataValue.json(changed[:1000]), "changed": len(changed),
                  "listed": scan.listed, "registered": scan.registered,
                  "missing (registered, no longer listed)": dg.MetadataValue.json(scan.missing[:1000])})


def recompute_requests(downstream: list[tuple[TableBinding, Any]], rows: list[dict[str, Any]],
                       checksum_attribute: str) -> list[dg.RunRequest]:
    """Runs for the downstream keys of re-registered files that are pending again. The run key
    carries the new content's checksum: the pending sensor's own run key for the partition was
    used for the old content, and Dagster launches a run key once."""
    requests = []
    for binding, _job in downstream:
        pk = binding.table.heading.primary_key
        for row in rows:
            key = {k: row[k] for k in pk}
            if binding.table().pending_keys(key):
                partition_key = binding.scheme.encode(key)
                requests.append(dg.RunRequest(
                    run_key=f"{run_key(binding, partition_key)}:file@{row[checksum_attribute][:12]}",
                    tags=partition_tags(partition_key), job_name=binding.job_name))
    return requests


def build_file_sensor(binding: TableBinding, source: BoundFileSource, *, minimum_interval_seconds: int = 30,
                      batch_size: int = 25_000,
                      default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
                      downstream: list[tuple[TableBinding, Any]] | None = None) -> dg.SensorDefinition:
    """The sensor registering the new files of one file-fed table (see the module).
    ``downstream``: (binding, asset job) of the masters sharing the table's partitions, whose
    keys it requests again when a changed file is re-registered."""
    table, scheme = binding.table, binding.scheme
    name = f"{table.schema.name}__{table.table_name}_files"
    downstream = downstream or []

    @dg.sensor(name=name, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
               jobs=[job for _, job in downstream] or None,
               description=f"Registers new files of {source.source.describe()} as rows of {table.full_name} "
                           "(and partitions); reports files changed after registration.")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = decode_cursor(context.cursor)
        scan = source.scan(verified={p: tuple(v) for p, v in state["verified"].items()})
        rows = source.register(scan, limit=batch_size).rows
        events: list[Any] = []
        pk, s = table.heading.primary_key, source.source
        changed = {c.path: str(c) for c in scan.changed}
        missing = set(scan.missing)
        resolved = [p for p in state["changed"] if p not in changed and p not in missing]
        runs: list[dg.RunRequest] = []
        if resolved:  # re-registered (or put back): a new materialization; recompute what is pending
            again = source.rows_by_path(resolved)
            runs = recompute_requests(downstream, list(again.values()), s.checksum_attribute)
            if runs:
                context.log.info(f"{table.full_name}: {len(again)} files registered again; requesting "
                                 f"{len(runs)} runs of the entries computed from them")
            for path, row in again.items():
                events.append(dg.AssetMaterialization(
                    asset_key=binding.asset_key, partition=scheme.encode({k: row[k] for k in pk}),
                    description="file registered again", metadata={
                        "path": path, "size": row[s.size_attribute], "checksum": row[s.checksum_attribute],
                        "store": s.store_name}))
        if rows:
            keys = {scheme.encode({k: r[k] for k in pk}): r for r in rows}
            partition_keys = list(keys)
            for dyn, _ in scheme.dynamic_defs:  # adding skips keys already there (one query a batch)
                for start in range(0, len(partition_keys), ADD_BATCH):
                    context.instance.add_dynamic_partitions(dyn.name, partition_keys[start:start + ADD_BATCH])
            events += [dg.AssetMaterialization(
                asset_key=binding.asset_key, partition=pk_text, description="file registered",
                metadata={"path": row[s.path_attribute], "size": row[s.size_attribute],
                          "checksum": row[s.checksum_attribute], "store": s.store_name})
                for pk_text, row in keys.items()]
            context.log.info(f"{table.full_name}: registered {len(rows)} new files "
                             f"({scan.summary()})")
        if changed != state["changed"]:
            fresh = [text for path, text in changed.items() if state["changed"].get(path) != text]
            if fresh:
                context.log.warning(
                    f"{table.full_name}: {len(fresh)} registered files changed after registration and are "
                    f"NOT recomputed ({table.__name__}.files.reregister(path) accepts the new content, deleting "
                    f"what was computed from the old): " + "; ".join(fresh[:SHOWN]))
            events.append(check_evaluation(binding, scan))
        refused = {r.path: r.reason for r in scan.refused}
        fresh_refused = [f"{p!r}: {why}" for p, why in refused.items() if state["refused"].get(p) != why]
        if fresh_refused:
            context.log.warning(f"{table.full_name}: {len(fresh_refused)} files refused (not registered): "
                                + "; ".join(fresh_refused[:SHOWN]))
        verified = {**state["verified"], **{p: list(v) for p, v in scan.verified.items()}}
        cursor = encode_cursor({"changed": changed, "refused": dict(list(refused.items())[:MAX_REMEMBERED]),
                                "verified": dict(list(verified.items())[-MAX_REMEMBERED:])})
        if not rows and not runs:
            reason = f"no new files for {table.full_name} ({scan.summary()})"
            return dg.SensorResult(skip_reason=dg.SkipReason(reason), asset_events=events, cursor=cursor)
        return dg.SensorResult(run_requests=runs, asset_events=events, cursor=cursor)

    return _sensor


def build_file_check(binding: TableBinding, source: BoundFileSource) -> dg.AssetChecksDefinition:
    """``files_unchanged`` on the table's asset: run on demand, it hashes every registered file."""

    @dg.asset_check(asset=binding.asset_key, name=CHECK_NAME, blocking=False,
                    description="Registered files still have the size and SHA-256 they were registered with "
                                "(on demand: every file is read; the file sensor records it as it scans).")
    def _check() -> dg.AssetCheckResult:
        evaluation = check_evaluation(binding, source.scan(deep=True))
        return dg.AssetCheckResult(passed=evaluation.passed, severity=evaluation.severity,
                                   description=evaluation.description, metadata=evaluation.metadata)

    # as our other checks: stays an asset check when a dg defs folder copies it (no BetaWarning)
    return MasterPartChecks.dagster_internal_init(**_check.get_attributes_dict())


def build_file_definitions(
    bindings: dict[dg.AssetKey, TableBinding], jobs: list[Any], *, sensors: bool, checks: bool,
    minimum_interval_seconds: int, batch_size: int, default_status: dg.DefaultSensorStatus,
) -> tuple[list[dg.SensorDefinition], list[dg.AssetChecksDefinition]]:
    """The file sensors and checks of every file-fed table among ``bindings``; ``jobs``: the
    masters' asset jobs (named ``binding.job_name``)."""
    by_table = {b.table.full_name: b for b in bindings.values()}
    job_named = {job.name: job for job in jobs}
    sensor_defs, check_defs = [], []
    for source in file_sources(b.table for b in bindings.values()):
        binding = by_table[source.table.full_name]
        source.check_table()  # a table that does not fit fails at load, naming the attribute
        if sensors:
            downstream = [(b, job_named[b.job_name]) for b in bindings.values()
                          if b.job_name in job_named and b.scheme.kind == "shared"
                          and b.scheme.parents.get("source") is source.table]
            sensor_defs.append(build_file_sensor(binding, source, minimum_interval_seconds=minimum_interval_seconds,
                                                 batch_size=batch_size, default_status=default_status,
                                                 downstream=downstream))
        if checks:
            check_defs.append(build_file_check(binding, source))
    return sensor_defs, check_defs
