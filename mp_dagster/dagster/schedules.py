"""Scheduled partitions: a cron schedule that requests the currently pending keys of a table."""


from typing import Any

import dagster as dg

from .io_manager import TableBinding
from .sensors import MAX_PARTITIONS_PER_TICK, pending_partitions


def build_pending_schedule(
    binding: TableBinding,
    job: Any,  # the asset job from dg.define_asset_job
    cron_schedule: str,
    execution_timezone: str = "UTC",
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    batch_size: int = MAX_PARTITIONS_PER_TICK,
) -> dg.ScheduleDefinition:
    """Every tick, request a run for each key still pending (also those requested before and not
    yet written: a tick is a retry). Run keys carry the tick time, so each tick requests anew."""
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
        return [
            dg.RunRequest(run_key=f"{table.full_name}:{pk}:{tick}",
                          tags=binding.scheme.partitions_def.get_tags_for_partition_key(pk))
            for pk in keys
        ]

    return _schedule
