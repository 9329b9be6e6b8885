"""Source tables observed (issue 14, item 1): Manual and Lookup rows show as present partitions
in Dagster on their own, without any downstream sensor; deleted rows' partitions go; a tick that
finds the table unchanged reads only its fingerprint. Real Dagster instance, both backends."""

from __future__ import annotations

import time
import warnings

import dagster as dg
import numpy as np
from pipelines import declare_imaging

import mp_dagster as mp
from mp_dagster import keyset
from mp_dagster.dagster import build_definitions, build_schemes
from mp_dagster.dagster.observe import decode_cursor

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

MATERIALIZED = dg.AssetPartitionStatus.MATERIALIZED


def asset_key(table) -> dg.AssetKey:
    return dg.AssetKey([table.schema.name, table.table_name])


def observe(defs, table, instance, cursor=None):
    """One tick of the table's observation sensor; its events stored as the daemon stores them."""
    sensor = defs.resolve_sensor_def(f"{table.schema.name}__{table.table_name}_observe")
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    result = sensor.evaluate_tick(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def add_images(image_cls, ids, size=4):
    rng = np.random.default_rng(0)
    image_cls.insert([dict(image_id=i, image=rng.random((size, size))) for i in ids])


def present(instance, defs, table) -> set[str]:
    """The partitions the UI shows as materialized: those of the definition whose status says so."""
    partitions_def = defs.resolve_asset_graph().get(asset_key(table)).partitions_def
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    statuses = instance.get_status_by_partition(asset_key(table), keys, partitions_def) or {}
    return {k for k, s in statuses.items() if s == MATERIALIZED}


def test_fingerprint_changes_with_every_insert_and_delete(schema):
    Image, _ = declare_imaging(schema, n_rois=1)
    empty = keyset.fingerprint(Image)
    assert empty.rows == 0
    add_images(Image, [1, 2, 3])
    three = keyset.fingerprint(Image)
    assert three.rows == 3 and three != empty and keyset.fingerprint(Image) == three
    (Image & {"image_id": 2}).delete()
    add_images(Image, [4])  # as many rows as before, another key set
    swapped = keyset.fingerprint(Image)
    assert swapped.rows == 3 and swapped.checksum != three.checksum
    added, gone = keyset.diff(Image, ["1", "2", "3"], lambda k: str(k["image_id"]))
    assert added == [("4", {"image_id": 4})] and gone == {"2"}


def test_manual_rows_show_present_without_a_downstream_sensor_and_deletes_go(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    add_images(Image, [1, 2, 3])
    defs = build_definitions(schema, sensors=False)  # no sensor on Segmentation at all
    assert {s.name for s in defs.sensors} == {f"{schema.name}__image_observe"}
    first = observe(defs, Image, instance)
    assert sorted(e.partition for e in first.asset_events) == ["1", "2", "3"]
    assert present(instance, defs, Image) == {"1", "2", "3"}
    # unchanged: the fingerprint says so, nothing is reported again
    second = observe(defs, Image, instance, first.cursor)
    assert not second.asset_events and "unchanged" in second.skip_message
    add_images(Image, [4])
    third = observe(defs, Image, instance, second.cursor)
    assert [e.partition for e in third.asset_events] == ["4"]
    # a partition materialized by hand (from the UI): its upstream partition is not Missing
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key="4", instance=instance,
                                  asset_selection=[asset_key(Segmentation)]).success
    assert present(instance, defs, Segmentation) == {"4"}
    assert present(instance, defs, Image) == {"1", "2", "3", "4"}
    # deleted rows: their partitions are removed (Segmentation's, which shares them, too)
    (Segmentation & {"image_id": 4}).delete()
    (Image & [{"image_id": 2}, {"image_id": 4}]).delete()
    fourth = observe(defs, Image, instance, third.cursor)
    assert not fourth.asset_events
    image_def = build_schemes([Image])[Image.full_name].partitions_def.name
    assert sorted(instance.get_dynamic_partitions(image_def)) == ["1", "3"]
    assert present(instance, defs, Image) == {"1", "3"} and present(instance, defs, Segmentation) == set()
    # a row inserted again is a new row: reported again
    add_images(Image, [2])
    fifth = observe(defs, Image, instance, fourth.cursor)
    assert [e.partition for e in fifth.asset_events] == ["2"]
    assert present(instance, defs, Image) == {"1", "2", "3"}
    assert observe(defs, Image, instance, fifth.cursor).skip_message


def test_lookup_and_keyed_manual_tables_are_observed_for_two_dimension_downstreams(schema, instance):
    Image, _ = declare_imaging(schema, n_rois=1)

    @schema
    class Param(mp.Lookup):
        definition = """
        param : varchar(16)
        """
        contents = [("low",), ("high",)]

    @schema
    class Note(mp.Manual):
        definition = """  # keyed by its image: shares Image's partitions
        -> Image
        ---
        text : varchar(100)
        """

    @schema
    class Mask(mp.Computed):
        definition = """
        -> Image
        -> Param
        """

        def make(self, key):
            self.insert1(key)

    add_images(Image, [1, 2])
    Note.insert1({"image_id": 2, "text": "blurry"})
    defs = build_definitions(schema, sensors=False)
    for table in (Image, Param, Note):
        observe(defs, table, instance)
    assert present(instance, defs, Param) == {"low", "high"}
    assert present(instance, defs, Note) == {"2"}
    # the two-dimension partitions of the downstream exist without its sensor: materialize one
    mask_def = defs.resolve_asset_graph().get(asset_key(Mask)).partitions_def
    assert len(mask_def.get_partition_keys(dynamic_partitions_store=instance)) == 4
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(partition_key="1|low", instance=instance,
                                  asset_selection=[asset_key(Mask)]).success
    assert Mask.fetch("KEY") == [{"image_id": 1, "param": "low"}]


def test_observation_can_be_turned_off_and_reports_in_batches(schema, instance):
    Image, _ = declare_imaging(schema, n_rois=1)
    assert not [s for s in build_definitions(schema, observe_sources=False).sensors if s.name.endswith("_observe")]
    add_images(Image, range(5))
    defs = build_definitions(schema, sensors=False, observe_batch_size=2)
    reported, cursor = [], None
    for _ in range(3):
        result = observe(defs, Image, instance, cursor)
        reported.append(sorted(e.partition for e in result.asset_events))
        cursor = result.cursor
        # the fingerprint is kept only once every row is reported
        assert (decode_cursor(cursor)[0] is None) == (len(sum(reported, [])) < 5)
    assert reported == [["0", "1"], ["2", "3"], ["4"]]
    assert observe(defs, Image, instance, cursor).skip_message


def test_unchanged_100k_row_table_costs_one_fingerprint_query(schema, instance):
    Image, _ = declare_imaging(schema, n_rois=1)
    blob = np.zeros(1)
    Image.insert([dict(image_id=i, image=blob) for i in range(100_000)])
    defs = build_definitions(schema, sensors=False, observe_batch_size=100_000)
    sensor = defs.resolve_sensor_def(f"{schema.name}__image_observe")
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert len(first.asset_events) == 100_000  # every row, once (events not stored here: slow)
    started = time.monotonic()
    second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                          cursor=first.cursor))
    elapsed = time.monotonic() - started
    assert not second.asset_events and "unchanged" in second.skip_message
    assert elapsed < 5, f"an unchanged tick took {elapsed:.1f} s"  # bench/observe.py has the numbers
