"""How sensors turn pending keys into runs: ``keys_per_run="auto"`` sized by the run queue, and
failed keys requested again with a backoff and a cap. Real Dagster instances, both backends."""

from __future__ import annotations

import os
import time

import dagster as dg
import dagster_celery
import pytest
from pipelines import declare_imaging
from test_dagster import (
    add_images,
    asset_key,
    evaluate_sensor,
    job_for,
    partition_status,
    pk_of,
    run_checks,
)

from mp_dagster.dagster import MasterPartTranslator, RetryPolicy, build_definitions
from mp_dagster.dagster.sensors import decode_cursor


def queued_instance(tmp_path, max_concurrent_runs: int) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        f"  config:\n    max_concurrent_runs: {max_concurrent_runs}\n")
    return dg.DagsterInstance.from_config(str(home))


def ranges(requests) -> list[tuple[str, str]]:
    return [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            if "dagster/asset_partition_range_start" in r.tags else (pk_of(r), pk_of(r)) for r in requests]


def test_auto_keys_per_run_keeps_every_queued_worker_busy(schema, tmp_path):
    Image, Segmentation = declare_imaging(schema, n_rois=1)
    # steps on celery workers: as many runs as the queue runs at once (3)
    celery = dagster_celery.celery_executor.configured({"broker": "redis://127.0.0.1:1/0"})
    remote = build_definitions(schema, executor=celery)  # keys_per_run="auto" is the default
    local = build_definitions(schema)  # runs and steps on this machine: no more runs than cores
    with queued_instance(tmp_path, max_concurrent_runs=3) as queued:
        add_images(Image, range(30), size=2)
        first = evaluate_sensor(remote, Segmentation, queued)
        assert ranges(first.run_requests) == [("0", "9"), ("10", "19"), ("20", "29")]  # 3 runs for 3 workers
        add_images(Image, [30, 31], size=2)
        second = evaluate_sensor(remote, Segmentation, queued, cursor=first.cursor)
        assert ranges(second.run_requests) == [("30", "30"), ("31", "31")]  # few keys: a run each
        add_images(Image, range(100, 1100), size=2)
        third = evaluate_sensor(remote, Segmentation, queued, cursor=second.cursor)
        # 1,000 keys for 3 workers: runs of at most 100 keys, not 3 giant ones
        assert len(third.run_requests) == 10
        assert ranges(third.run_requests)[0] == ("100", "199")
        add_images(Image, range(2000, 2012), size=2)
        fourth = evaluate_sensor(local, Segmentation, queued, cursor=third.cursor)
        runs = min(3, os.cpu_count() or 1)
        assert len(fourth.run_requests) == runs, ranges(fourth.run_requests)
    with pytest.raises(ValueError, match="keys_per_run"):
        build_definitions(schema, keys_per_run="many")


def test_failed_keys_are_requested_again_with_backoff_then_left_failed(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    original = Segmentation.make
    attempts = []

    def make(self, key):
        if key["image_id"] == 2:
            attempts.append(time.monotonic())
            raise RuntimeError("the segmentation of image 2 diverged")
        original(self, key)

    Segmentation.make = make
    try:
        add_images(Image, [1, 2, 3])
        retry = RetryPolicy(max_retries=2, backoff_seconds=0.4)
        defs = build_definitions(schema, keys_per_run=1, retry=retry)
        job = job_for(defs, Segmentation)

        def run(requests):
            for r in requests:
                job.execute_in_process(instance=instance, tags=r.tags, raise_on_error=False)

        tick = evaluate_sensor(defs, Segmentation, instance)
        run(tick.run_requests)
        assert len(attempts) == 1 and sorted(Segmentation.fetch("image_id").tolist()) == [1, 3]
        assert partition_status(instance, Segmentation, ["2"], defs) == {"2": dg.AssetPartitionStatus.FAILED}
        cursor = tick.cursor
        for n in (1, 2):  # two retries, the second after twice the backoff
            tick = evaluate_sensor(defs, Segmentation, instance, cursor=cursor)
            assert tick.run_requests == [], "requested again before the backoff"
            cursor = tick.cursor
            deadline = time.monotonic() + 10
            while not tick.run_requests and time.monotonic() < deadline:
                time.sleep(0.1)
                tick = evaluate_sensor(defs, Segmentation, instance, cursor=cursor)
            assert [pk_of(r) for r in tick.run_requests] == ["2"]
            assert ":retry@" in tick.run_requests[0].run_key  # a new run key: Dagster does not dedupe it
            assert decode_cursor(tick.cursor)["2"][0] == n + 1
            run(tick.run_requests)
            cursor = tick.cursor
        assert len(attempts) == 3
        assert attempts[2] - attempts[1] >= 0.8 - 0.05  # backoff doubled
        # the cap: no more requests, however long we wait; the key stays FAILED in the UI
        time.sleep(1.7)
        tick = evaluate_sensor(defs, Segmentation, instance, cursor=cursor)
        assert tick.run_requests == [] and len(attempts) == 3
        assert partition_status(instance, Segmentation, ["2"], defs) == {"2": dg.AssetPartitionStatus.FAILED}
        assert "2" in decode_cursor(tick.cursor)  # still pending and known: never requested anew
        # the asset check says which keys are stuck, and why
        check = run_checks(defs, Segmentation, instance)["no_stale_pending"]
        assert not check.passed and check.metadata["failed pending keys"].value == 1
        why = check.metadata["why they failed (sample)"].value
        assert list(why) == ["2"] and "the segmentation of image 2 diverged" in why["2"], why
        # fixed upstream (here: make), a materialization from the UI writes it
        Segmentation.make = original
        result = job.execute_in_process(instance=instance, partition_key="2")
        assert result.success and len(Segmentation.ROI & {"image_id": 2}) == 2
        assert asset_key(Segmentation) in {e.asset_key for e in result.get_asset_materialization_events()}
    finally:
        Segmentation.make = original


def test_backfill_policy_comes_from_build_definitions_or_the_translator(schema):
    Image, Segmentation = declare_imaging(schema, n_rois=1)

    def policy(defs):
        return defs.resolve_asset_graph().get(asset_key(Segmentation)).backfill_policy

    assert policy(build_definitions(schema)) == dg.BackfillPolicy.single_run()  # one run, by default
    assert policy(build_definitions(schema, max_partitions_per_run=5)) == dg.BackfillPolicy.multi_run(5)

    class Slow(MasterPartTranslator):
        def get_backfill_policy(self, table):
            return dg.BackfillPolicy.multi_run(1) if table is Segmentation else None

    assert policy(build_definitions(schema, translator=Slow(), max_partitions_per_run=5)) == \
        dg.BackfillPolicy.multi_run(1)
    with pytest.raises(ValueError, match="max_partitions_per_run"):
        build_definitions(schema, max_partitions_per_run=0)
