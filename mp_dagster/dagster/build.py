"""``build_definitions``: schemas in, a Dagster ``Definitions`` out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from .. import dependencies
from ..schema import Schema
from ..table import Table
from .assets import build_master_asset, build_source_asset
from .checks import build_checks
from .file_sensor import build_file_definitions
from .io_manager import MasterPartIOManager, TableBinding
from .observe import MAX_OBSERVED_PER_TICK, build_observation_sensor
from .partitions import build_schemes
from .schedules import build_pending_schedule
from .sensors import (
    AUTO,
    MAX_PARTITIONS_PER_TICK,
    RetryPolicy,
    build_pending_sensor,
    check_keys_per_run,
)
from .translator import MasterPartTranslator

AUTO_TIERS = ("imported", "computed")


def table_bindings(
    schemas: list[Schema], translator: MasterPartTranslator | None = None
) -> dict[dg.AssetKey, TableBinding]:
    """Asset key -> (table, partition scheme) for every master of ``schemas``."""
    translator = translator or MasterPartTranslator()
    masters = dependencies.topological(t for s in schemas for t in s.tables)
    schemes = build_schemes(masters)
    return {
        translator.get_asset_key(t): TableBinding(t, schemes[t.full_name], translator.get_asset_key(t))
        for t in masters
    }


def build_definitions(
    *schemas: Schema,
    translator: MasterPartTranslator | None = None,
    io_manager_key: str = "mp_io_manager",
    sensors: bool = True,
    sensor_interval_seconds: int = 30,
    sensor_batch_size: int = MAX_PARTITIONS_PER_TICK,
    sensor_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    keys_per_run: int | str = AUTO,
    schedules: Mapping[type[Table], str] | None = None,
    checks: bool = True,
    stale_pending_seconds: float = 3600.0,
    max_partitions_per_run: int | None = None,
    executor: dg.ExecutorDefinition | None = None,
    retry: RetryPolicy | None = None,
    observe_sources: bool = True,
    observe_batch_size: int = MAX_OBSERVED_PER_TICK,
) -> dg.Definitions:
    """Dagster definitions for every master table of ``schemas``.

    * one asset per master (key ``[schema, table]``; parts described in its metadata);
    * Manual/Lookup masters are external partitioned assets; Imported/Computed masters are
      partitioned assets whose materialization runs ``make`` and writes through the IO manager;
    * per Manual/Lookup master with a primary key (``observe_sources=True``): a sensor that
      reports its rows as present partitions, new rows added and deleted rows removed, reading
      only a fingerprint of the table while nothing changed (``observe.py``; at most
      ``observe_batch_size`` rows reported per tick);
    * per auto-populated master: an asset job, a sensor on pending keys (``sensors=True``),
      asset checks (``checks=True``) and, if ``schedules`` maps the table to a cron string, a
      schedule requesting its pending keys;
    * per Manual table fed by files (``mp.FileSource``): a sensor registering new files as rows
      and partitions, and the check ``files_unchanged`` (see ``file_sensor.py``).

    Sensors and schedules group new keys into runs over ranges of neighbouring keys:
    ``keys_per_run="auto"`` makes about as many runs as the instance runs at once (each run is a
    process of its own: 400 new images become a few runs, not 400), an integer fixes the range
    size (1: one run per key, Dagster's usual way). Keys whose run failed are requested again
    by the sensor with a backoff, ``retry`` (a ``RetryPolicy``: 3 times, after 60, 120, 240 s).

    Backfills launched from the UI are one run (``max_partitions_per_run=None``) or runs of at
    most ``max_partitions_per_run`` keys, which the run queue (``max_concurrent_runs``), run
    launchers and ``executor`` (e.g. dagster-celery's ``celery_executor``) spread over workers;
    the translator's ``get_backfill_policy`` may choose per table.
    """
    if not schemas:
        raise ValueError("build_definitions needs at least one Schema")
    translator = translator or MasterPartTranslator()
    check_keys_per_run(keys_per_run)
    # runs' steps are processes of the machine that runs them unless an executor sends them away
    steps_run_here = executor is None or getattr(executor, "name", "") in ("in_process", "multiprocess")
    bindings = table_bindings(list(schemas), translator)
    source_keys = {
        b.scheme.partitions_def.name: key  # type: ignore[union-attr]
        for key, b in bindings.items()
        if b.table.tier not in AUTO_TIERS and b.scheme.kind == "own"
    }
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = []
    asset_checks: list[dg.AssetChecksDefinition] = []
    jobs: list[Any] = []
    sensor_defs: list[dg.SensorDefinition] = []
    schedule_defs: list[dg.ScheduleDefinition] = []
    schedules = dict(schedules or {})
    scheduled = {t.full_name: cron for t, cron in schedules.items()}
    for key, binding in bindings.items():
        table = binding.table
        if table.tier not in AUTO_TIERS:
            assets.append(build_source_asset(binding, translator, io_manager_key))
            if observe_sources and table._definition.heading.primary_key:
                sensor_defs.append(build_observation_sensor(
                    binding, minimum_interval_seconds=sensor_interval_seconds, batch_size=observe_batch_size,
                    default_status=sensor_default_status))
            continue
        assets.append(build_master_asset(binding, translator, io_manager_key, max_partitions_per_run))
        # sensor- and schedule-launched runs materialize the asset only; checks run on demand
        job = dg.define_asset_job(binding.job_name, selection=dg.AssetSelection.assets(key).without_checks())
        jobs.append(job)
        if sensors:
            sensor_defs.append(build_pending_sensor(
                binding, job, source_keys, minimum_interval_seconds=sensor_interval_seconds,
                batch_size=sensor_batch_size, default_status=sensor_default_status, keys_per_run=keys_per_run,
                retry=retry, steps_run_here=steps_run_here))
        if table.full_name in scheduled:
            schedule_defs.append(build_pending_schedule(binding, job, scheduled.pop(table.full_name),
                                                        keys_per_run=keys_per_run,
                                                        steps_run_here=steps_run_here))
        if checks:
            asset_checks.append(build_checks(binding, stale_pending_seconds))
    if scheduled:
        raise ValueError(f"schedules name tables that are not auto-populated masters here: {sorted(scheduled)}")
    # tables fed by files (mp.FileSource): a sensor registering new files, a check on changed ones
    file_sensors, file_checks = build_file_definitions(
        bindings, jobs, sensors=sensors, checks=checks, minimum_interval_seconds=sensor_interval_seconds,
        batch_size=sensor_batch_size, default_status=sensor_default_status)
    sensor_defs, asset_checks = file_sensors + sensor_defs, asset_checks + file_checks
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        jobs=jobs,
        sensors=sensor_defs,
        schedules=schedule_defs,
        resources={io_manager_key: dg.IOManagerDefinition.hardcoded_io_manager(MasterPartIOManager(bindings))},
        executor=executor,
    )
