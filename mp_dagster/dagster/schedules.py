"""Scheduled partitions: a cron schedule that requests the currently pending keys of a table."""


from typing import Any

import dagster as dg

from .io_manager import TableBinding
from .sensors import MAX_PARTITIONS_PER_TICK, pending_partitions, run_requests


def build_pending_schedule(
    binding: TableBinding,
    job: Any,  # the asset job from dg.define_asset_job
    cron_schedule: str,
    execution_timezone: str = "UTC",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    batch_size: int = MAX_PARTITIONS_PER_TICK,
    keys_per_run: int | str = "auto",
    steps_run_here: bool = True,
) -> dg.ScheduleDefinition:
    """Every tick, request runs for the keys still pending (also those requested before and not
    yet written: a tick is a retry), grouped as the sensor groups them (``keys_per_run``). Run
    keys carry the tick time, so each tick requests anew."""
    table = binding.table
    name = f"{table.schema.name}__{table.table_name}_schedule"

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        job=job,
        execution_timezone=execution_timezone,
        default_status=default_status,
        description=f"Requests the pending keys of {table.full_name} on '{cron_schedule}'.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        keys, add_requests, _ = pending_partitions(binding, context.instance, set(), batch_size)
        if not keys:
            return dg.SkipReason(f"no pending keys in {table.full_name}")
        # schedules cannot return partition requests: add the missing partitions directly
        for request in add_requests:
            context.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        tick = context.scheduled_execution_time.isoformat()
        return run_requests(binding, context.instance, keys, keys_per_run, suffix=f":{tick}",
                            steps_run_here=steps_run_here)

    return _schedule
