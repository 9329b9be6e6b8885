"""Sensors on new rows: each auto-populated master's pending keys become partitions and runs.

Each tick the sensor asks the database for the table's pending keys (``key_source`` minus the
table: one query), adds the new ones as dynamic partitions (at most ``batch_size`` per tick, as
Dagster advises; added through the instance, see below) and requests runs with stable run keys.
``keys_per_run`` says how keys are grouped: ``"auto"`` (default) splits the new keys into about
as many runs as the instance runs at once (the run queue's ``max_concurrent_runs``, else the
cores), each a single-run backfill over a range of neighbouring partitions (at most
``AUTO_MAX_KEYS_PER_RUN`` keys), so 400 new images keep every worker busy without 400 process
start-ups; an integer fixes the range size (1: one run per key). Its cursor holds the keys it
requested that are still pending, so a key is never requested twice while its run may still
write it; keys drop out of the cursor once written. Keys whose run failed are requested again
with a backoff, a few times (``RetryPolicy``).
"""

import base64
import json
import os
import time
import zlib
from dataclasses import dataclass
from typing import Any

import dagster as dg

from .io_manager import TableBinding

MAX_PARTITIONS_PER_TICK = 25_000


def encode_cursor(requested: dict[str, list[float]]) -> str:
    """``{partition key: [requests so far, when its failure was first seen (0: not failed)]}``."""
    payload = {"v": 2, "keys": requested}
    return base64.b64encode(zlib.compress(json.dumps(payload, sort_keys=True).encode(), 6)).decode()


def decode_cursor(cursor: str | None) -> dict[str, list[float]]:
    if not cursor:
        return {}
    try:
        payload = json.loads(zlib.decompress(base64.b64decode(cursor)))
    except (ValueError, zlib.error):
        return {}  # an unreadable cursor only means keys may be requested again; run keys dedupe
    if isinstance(payload, list):  # the first format: the keys requested
        return {str(k): [1, 0] for k in payload}
    return {str(k): [float(v[0]), float(v[1])] for k, v in payload.get("keys", {}).items()}


AUTO = "auto"
AUTO_MAX_KEYS_PER_RUN = 100


def run_workers(instance: dg.DagsterInstance, steps_run_here: bool = True) -> int:
    """How many runs the instance executes at once: the run queue's ``max_concurrent_runs``
    (the cores of this machine when the queue sets no limit), and no more than the cores when
    runs and their steps are processes of this machine (the default run launcher and executor):
    ten runs of 4 images on 2 cores took longer than two runs of 20."""
    cores = os.cpu_count() or 1
    try:
        queue = instance.get_concurrency_config().run_queue_config
    except Exception:  # noqa: BLE001 - an instance without a run queue
        queue = None
    limit = getattr(queue, "max_concurrent_runs", None)
    workers = limit if isinstance(limit, int) and limit > 0 else cores
    if steps_run_here and type(instance.run_launcher).__name__ == "DefaultRunLauncher":
        workers = min(workers, cores)
    return workers


def resolve_keys_per_run(keys_per_run: int | str, new_keys: int, instance: dg.DagsterInstance,
                         steps_run_here: bool = True) -> int:
    """``"auto"``: split the new keys into about as many runs as the instance runs at once (at
    most ``AUTO_MAX_KEYS_PER_RUN`` keys each), so every worker is busy and no run is giant."""
    if keys_per_run != AUTO:
        return int(keys_per_run)
    workers = run_workers(instance, steps_run_here)
    return max(1, min(AUTO_MAX_KEYS_PER_RUN, -(-new_keys // workers)))


def check_keys_per_run(keys_per_run: int | str) -> None:
    if keys_per_run != AUTO and (not isinstance(keys_per_run, int) or keys_per_run < 1):
        raise ValueError(f"keys_per_run must be at least 1 or 'auto', not {keys_per_run!r}")


def run_key(binding: TableBinding, partition_key: str) -> str:
    """Stable: the same table and key always give the same run key (Dagster skips repeats)."""
    return f"{binding.table.full_name}:{partition_key}"


PARTITION_TAG = "dagster/partition"


def partition_tags(partition_key: str) -> dict[str, str]:
    """The run tag naming its partition: ``dagster/partition``, also for two dimensions (the
    key ``"2|low"``, which the run's context parses back into a ``MultiPartitionKey``). Not
    ``get_tags_for_partition_key``: for a ``MultiPartitionsDefinition`` it adds one
    ``dagster/partition/<dimension>`` tag per dimension, keys Dagster 1.13 deprecates as
    non-compliant (a DeprecationWarning per run request; they are to stop working). Dagster's
    own ``RunRequest(partition_key=MultiPartitionKey(...))`` adds them too, and validates the
    key (slow, see the sensor), so runs are tagged here. Materializations still carry the
    per-dimension event tags, which Dagster writes itself."""
    return {PARTITION_TAG: str(partition_key)}


def partition_run_request(binding: TableBinding, partition_key: str, suffix: str = "") -> dg.RunRequest:
    """A run of one partition, tagged with its partition key (``partition_tags``)."""
    return dg.RunRequest(run_key=run_key(binding, partition_key) + suffix, tags=partition_tags(partition_key))


def range_run_request(binding: TableBinding, first: str, last: str, suffix: str = "") -> dg.RunRequest:
    """One run over the partitions ``first`` to ``last`` (a single-run backfill of the range).
    Encoded keys never contain ``..`` (partitions.py escapes it), so the run key is unambiguous."""
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.RunRequest(run_key=f"{binding.table.full_name}:{first}..{last}{suffix}", tags=tags)


def run_requests(
    binding: TableBinding, instance: dg.DagsterInstance, keys: list[str], keys_per_run: int | str,
    suffix: str = "", steps_run_here: bool = True,
) -> list[dg.RunRequest]:
    """Runs for ``keys`` (partitions already added): one per key, or with ``keys_per_run`` > 1
    one per range of at most that many keys that are neighbours in the partitions definition's
    order, so that each range holds exactly the keys asked for. Two-dimension partitions get one
    run per key (their ranges run across the grid)."""
    partitions_def = binding.scheme.partitions_def
    keys_per_run = resolve_keys_per_run(keys_per_run, len(keys), instance, steps_run_here)
    if keys_per_run <= 1 or len(keys) <= 1 or not isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return [partition_run_request(binding, pk, suffix) for pk in keys]
    position = {k: i for i, k in enumerate(instance.get_dynamic_partitions(partitions_def.name))}
    ordered = sorted(keys, key=position.__getitem__)
    requests: list[dg.RunRequest] = []
    group: list[str] = []
    for pk in ordered:
        if group and (len(group) == keys_per_run or position[pk] != position[group[-1]] + 1):
            requests.append(_group_request(binding, group, suffix))
            group = []
        group.append(pk)
    requests.append(_group_request(binding, group, suffix))
    return requests


def _group_request(binding: TableBinding, group: list[str], suffix: str) -> dg.RunRequest:
    if len(group) == 1:
        return partition_run_request(binding, group[0], suffix)
    return range_run_request(binding, group[0], group[-1], suffix)


def pending_partitions(
    binding: TableBinding, instance: dg.DagsterInstance, requested: set[str], limit: int
) -> tuple[list[str], list[dg.AddDynamicPartitionsRequest], set[str]]:
    """(new partition keys, add requests for the dynamic definitions, all pending keys)."""
    scheme = binding.scheme
    pending = binding.table().pending_keys()
    encoded = [(scheme.encode(k), k) for k in pending]
    pending_set = {str(pk) for pk, _ in encoded}
    new = [(pk, k) for pk, k in encoded if str(pk) not in requested][:limit]
    add_requests = []
    for dyn, _source in scheme.dynamic_defs:
        existing = set(instance.get_dynamic_partitions(dyn.name))
        missing = list(dict.fromkeys(
            dim_key for _, k in new for name, dim_key in scheme.dimension_keys(k)
            if name == dyn.name and dim_key not in existing
        ))
        if missing:
            add_requests.append(dyn.build_add_request(missing))
    return [pk for pk, _ in new], add_requests, pending_set


@dataclass(frozen=True)
class RetryPolicy:
    """Keys whose run failed are requested again, at most ``max_retries`` times, the n-th time
    ``backoff_seconds * 2 ** (n - 1)`` after the failure was seen; then they are left failed
    (the UI shows the failed run, and the sensor's log names them)."""

    max_retries: int = 3
    backoff_seconds: float = 60.0


def keys_to_retry(
    binding: TableBinding, instance: dg.DagsterInstance, requested: dict[str, list[float]],
    policy: RetryPolicy, now: float,
) -> tuple[list[str], list[str]]:
    """(keys to request again now, keys that failed more often than the policy allows). Updates
    ``requested`` in place: a retried key counts one more request, its failure time is reset."""
    if not requested or policy.max_retries <= 0:
        return [], []
    statuses = instance.get_status_by_partition(
        binding.asset_key, list(requested), binding.scheme.partitions_def) or {}
    retry, given_up = [], []
    for pk, state in requested.items():
        if statuses.get(pk) != dg.AssetPartitionStatus.FAILED:
            continue
        requests, failed_at = state
        if not failed_at:
            state[1] = failed_at = now
        if requests > policy.max_retries:
            given_up.append(pk)
        elif now - failed_at >= policy.backoff_seconds * 2 ** (requests - 1):
            retry.append(pk)
            requested[pk] = [requests + 1, 0]
    return retry, given_up


def build_pending_sensor(
    binding: TableBinding,
    job: Any,  # the asset job from dg.define_asset_job
    source_keys: dict[str, dg.AssetKey],
    minimum_interval_seconds: int = 30,
    batch_size: int = MAX_PARTITIONS_PER_TICK,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    keys_per_run: int | str = AUTO,
    retry: RetryPolicy | None = None,
    steps_run_here: bool = True,
) -> dg.SensorDefinition:
    """The sensor of one auto-populated master. ``source_keys`` maps a dynamic definition name
    to the Manual/Lookup asset it belongs to: new keys of those are reported as materialized
    (runless), so the UI shows where the data came in. ``keys_per_run``: see the module."""
    check_keys_per_run(keys_per_run)
    retry = retry or RetryPolicy()
    table = binding.table
    name = f"{table.schema.name}__{table.table_name}_pending"

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Turns pending keys of {table.full_name} (new upstream rows) into partitions and runs.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        requested = decode_cursor(context.cursor)
        new, add_requests, pending = pending_partitions(binding, context.instance, set(requested), batch_size)
        requested = {pk: state for pk, state in requested.items() if pk in pending}  # written keys leave
        now = time.time()
        again, given_up = keys_to_retry(binding, context.instance, requested, retry, now)
        if given_up:
            context.log.warning(
                f"{table.full_name}: {len(given_up)} keys failed {retry.max_retries + 1} times and are no "
                f"longer requested (their failed runs say why; materialize them from the UI to try "
                f"again): {sorted(given_up)[:20]}")
        if not new and not again:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"no new pending keys in {table.full_name}"),
                                   cursor=encode_cursor(requested))
        # Partitions are added here, not returned as SensorResult.dynamic_partitions_requests, and
        # runs carry their partition as tags, not `partition_key`: Dagster 1.13 validates each
        # partitioned run request against all pending add requests (quadratic: 62 s for 25,000
        # keys) or with one storage query per key (95 s for 20,000 on SQLite). Added up front and
        # tagged, a 25,000-key tick takes seconds (bench/). The keys exist before any run starts.
        for request in add_requests:
            context.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        events = [
            dg.AssetMaterialization(asset_key=source_keys[req.partitions_def_name], partition=k,
                                    description="row present in the database")
            for req in add_requests
            if req.partitions_def_name in source_keys
            for k in req.partition_keys
        ]
        runs = run_requests(binding, context.instance, new, keys_per_run, steps_run_here=steps_run_here)
        if again:
            context.log.info(f"{table.full_name}: requesting {len(again)} failed keys again")
            runs += run_requests(binding, context.instance, again, keys_per_run, suffix=f":retry@{int(now)}",
                                 steps_run_here=steps_run_here)
        if new:
            context.log.info(f"{table.full_name}: {len(new)} new pending keys")
        requested.update({str(pk): [1, 0] for pk in new})
        return dg.SensorResult(run_requests=runs, asset_events=events, cursor=encode_cursor(requested))

    return _sensor
