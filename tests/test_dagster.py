"""The Dagster layer with real Dagster: definitions, lineage, partitions, IO manager, sensors,
schedules, checks. Rows are checked in the database (both backends) afterwards."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from pipelines import declare_ephys, declare_imaging

import mp_dagster as mp
from mp_dagster.dagster import (
    MasterPartTranslator,
    build_definitions,
    build_schemes,
    decode_key,
    encode_key,
)
from mp_dagster.dagster.partitions import key_encoder
from mp_dagster.dagster.sensors import decode_cursor
from mp_dagster.png import encode_png

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def asset_key(table) -> dg.AssetKey:
    return dg.AssetKey([table.schema.name, table.table_name])


def job_for(defs: dg.Definitions, table) -> dg.JobDefinition:
    return defs.resolve_job_def(f"{table.schema.name}__{table.table_name}_job")


def evaluate_sensor(defs, table, instance, cursor=None):
    sensor = defs.resolve_sensor_def(f"{table.schema.name}__{table.table_name}_pending")
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs,
                                      cursor=cursor)
    result = sensor.evaluate_tick(context)
    # the daemon applies partition requests; in a test we do
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def pk_of(request: dg.RunRequest) -> str:
    """The partition a requested run is for (sensors tag their runs; see sensors.py)."""
    return request.partition_key or request.tags["dagster/partition"]


def add_images(image_cls, ids, size=8):
    rng = np.random.default_rng(0)
    image_cls.insert([dict(image_id=i, image=rng.random((size, size))) for i in ids])


def partition_status(instance, table, keys, defs):
    graph = defs.resolve_asset_graph()
    partitions_def = graph.get(asset_key(table)).partitions_def
    return instance.get_status_by_partition(asset_key(table), keys, partitions_def)


# --------------------------------------------------------------------------------------------


def test_definitions_validate_cli_on_the_demo(tmp_path):
    env = {**os.environ, "MP_DAGSTER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_asset_graph_mirrors_foreign_keys(make_schema):
    imaging, ephys, analysis = make_schema("img"), make_schema("eph"), make_schema("ana")
    Image, Segmentation = declare_imaging(imaging)
    Recording, ArrayResponse = declare_ephys(ephys)

    @analysis
    class Match(mp.Computed):
        definition = """  # pairs ROIs with electrodes: a part references other schemas' tables
        -> Recording
        """

        class Pair(mp.Part):
            definition = """
            -> master
            -> Segmentation.ROI
            """

        def make(self, key):
            self.insert1(key)

    defs = build_definitions(imaging, ephys, analysis)
    graph = defs.resolve_asset_graph()
    keys = {k for k in graph.get_all_asset_keys()}
    assert keys == {asset_key(t) for t in (Image, Segmentation, Recording, ArrayResponse, Match)}
    # parts are not assets: they are described in their master's metadata
    assert dg.AssetKey([imaging.name, "segmentation__roi"]) not in keys
    assert graph.get(asset_key(Segmentation)).parent_keys == {asset_key(Image)}
    assert graph.get(asset_key(ArrayResponse)).parent_keys == {asset_key(Recording)}
    assert graph.get(asset_key(Match)).parent_keys == {asset_key(Recording), asset_key(Segmentation)}
    assert graph.get(asset_key(Image)).parent_keys == set()
    seg = graph.get(asset_key(Segmentation))
    assert seg.group_name == imaging.name
    assert seg.metadata["dagster/table_name"] == Segmentation.full_name
    columns = [c.name for c in seg.metadata[f"part ROI ({Segmentation.ROI.full_name})"].columns]
    assert columns == ["image_id", "roi", "roi_pixels", "roi_weights"]
    backend = imaging.backend.name
    assert seg.tags.get(f"dagster/kind/{backend}") == ""
    assert not graph.get(asset_key(Image)).is_materializable  # manual rows arrive from outside
    assert graph.get(asset_key(Segmentation)).is_materializable


def test_translator_overrides_single_methods(schema):
    Image, Segmentation = declare_imaging(schema)

    class Custom(MasterPartTranslator):
        def get_asset_key(self, table):
            return dg.AssetKey(["lab", table.table_name])

        def get_group_name(self, table):
            return "pipeline"

        def get_automation_condition(self, table):
            return dg.AutomationCondition.eager() if table.tier == "computed" else None

        def get_tags(self, table):
            return {"team": "imaging"}

    defs = build_definitions(schema, translator=Custom())
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["lab", "segmentation"]))
    assert node.parent_keys == {dg.AssetKey(["lab", "image"])}
    assert node.group_name == "pipeline"
    assert node.tags["team"] == "imaging"
    assert node.automation_condition is not None
    assert "image segmentation" in node.description


def test_partition_schemes_follow_the_key_structure(schema):
    Image, Segmentation = declare_imaging(schema)

    @schema
    class Param(mp.Lookup):
        definition = """
        param : varchar(16)
        """
        contents = [("fast",), ("slow",)]

    @schema
    class Trial(mp.Computed):
        definition = """  # key = Image key x Param key: a two-dimension partition
        -> Image
        -> Param
        """

        def make(self, key):
            self.insert1(key)

    @schema
    class RoiQuality(mp.Computed):
        definition = """  # key = (image_id, roi): its own partitions, composite keys
        -> Segmentation.ROI
        ---
        quality : float64
        """

        def make(self, key):
            self.insert1(dict(key, quality=1.0))

    schemes = build_schemes([Image, Param, Segmentation, Trial, RoiQuality])
    assert schemes[Image.full_name].kind == "own"
    assert schemes[Segmentation.full_name].kind == "shared"
    assert schemes[Segmentation.full_name].partitions_def == schemes[Image.full_name].partitions_def
    assert schemes[Trial.full_name].kind == "multi"
    assert schemes[RoiQuality.full_name].kind == "own"
    assert schemes[RoiQuality.full_name].encode({"image_id": 3, "roi": 7}) == "image_id=3,roi=7"
    trial_key = schemes[Trial.full_name].encode({"image_id": 2, "param": "slow"})
    assert isinstance(trial_key, dg.MultiPartitionKey)
    assert trial_key.keys_by_dimension == {"image": "2", "param": "slow"}
    assert schemes[Trial.full_name].decode(str(trial_key)) == {"image_id": 2, "param": "slow"}


def test_two_dimension_partitions_materialize_end_to_end(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=2)

    @schema
    class Param(mp.Lookup):
        definition = """
        param : varchar(16)
        ---
        threshold : float64
        """
        contents = [("low", 0.2), ("high", 0.8)]

    @schema
    class Mask(mp.Computed):
        definition = """  # Image x Param: a two-dimension partition
        -> Image
        -> Param
        """

        class Pixel(mp.Part):
            definition = """
            -> master
            pixel : int
            """

        def make(self, key):
            image = (Image & key).fetch1("image")
            threshold = (Param & key).fetch1("threshold")
            self.insert1(key)
            self.Pixel.insert(dict(key, pixel=int(p)) for p in np.flatnonzero(image.ravel() > threshold))

    add_images(Image, [1, 2])
    defs = build_definitions(schema, keys_per_run=10)  # two dimensions: still one run per key
    graph = defs.resolve_asset_graph()
    assert graph.get(asset_key(Mask)).parent_keys == {asset_key(Image), asset_key(Param)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_sensor(defs, Mask, instance)
    keys = sorted(pk_of(r) for r in result.run_requests)
    assert keys == ["1|high", "1|low", "2|high", "2|low"]  # dimensions in name order: image, param
    # Dagster's compliant tag only: no deprecated dagster/partition/<dimension> keys, no warning
    assert not [t for r in result.run_requests for t in r.tags if t.startswith("dagster/partition/")]
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    for request in result.run_requests:
        run = job_for(defs, Mask).execute_in_process(instance=instance, tags=request.tags)
        assert run.success
    assert len(Mask) == 4
    for key in Mask.fetch("KEY"):
        image = (Image & key).fetch1("image")
        threshold = (Param & key).fetch1("threshold")
        assert len(Mask.Pixel & key) == int(np.sum(image > threshold))
    assert instance.get_materialized_partitions(asset_key(Mask)) == set(keys)


HOSTILE = ["a|b", "x,y", "with space", "it's \"quoted\"", "ünïcødé ☃", "a...b", "..", "tab\there",
           "line\nbreak", "bell\a", "100%", "k=v", "", " lead", "trail ", "semi;colon -- DROP TABLE x"]


@pytest.mark.parametrize("value", HOSTILE)
def test_partition_keys_round_trip_any_text(schema, value):
    @schema
    class Subject(mp.Manual):
        definition = """
        name : varchar(64)
        ---
        age : int
        """

    @schema
    class Session(mp.Manual):
        definition = """
        -> Subject
        session_date : date
        """

    key = {"name": value, "session_date": dt.date(2026, 1, 2)}
    for table, k in ((Subject, {"name": value}), (Session, key)):
        text = encode_key(table, k)
        assert key_encoder(table)(k) == text  # the observation sensors' encoder, the same text
        for bad in ("...", "|", "\n", "\t", "\a", "\0"):
            assert bad not in text
        assert decode_key(table, text) == k
    if "," in value or "=" in value:
        assert encode_key(Session, key).count(",") == 1


def test_hostile_keys_materialize_end_to_end(schema, instance):
    @schema
    class Subject(mp.Manual):
        definition = """
        name : varchar(64)
        """

    @schema
    class Summary(mp.Computed):
        definition = """
        -> Subject
        ---
        length : int
        """

        class Letter(mp.Part):
            definition = """
            -> master
            position : int
            ---
            letter : varchar(8)
            """

        def make(self, key):
            self.insert1(dict(key, length=len(key["name"])))
            self.Letter.insert(dict(key, position=i, letter=c) for i, c in enumerate(key["name"]))

    names = [v for v in HOSTILE if v]
    Subject.insert([{"name": n} for n in names])
    defs = build_definitions(schema, keys_per_run=1)
    result = evaluate_sensor(defs, Summary, instance)
    assert len(result.run_requests) == len(names)
    keys = [pk_of(r) for r in result.run_requests]
    # one run over the whole range (dynamic partitions are ordered as they were added)
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    assert job_for(defs, Summary).execute_in_process(instance=instance, tags=tags).success
    assert instance.get_materialized_partitions(asset_key(Summary)) == set(keys)
    assert sorted(Summary.fetch("name").tolist()) == sorted(names)
    for n in names:
        assert (Summary & {"name": n}).fetch1("length") == len(n)
        assert "".join((Summary.Letter & {"name": n}).fetch("letter", order_by="position")) == n


def test_materialize_one_partition_writes_master_and_parts_with_metadata(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=7)
    add_images(Image, [0, 1, 2])
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    result = job_for(defs, Segmentation).execute_in_process(partition_key="1", instance=instance)
    assert result.success
    assert Segmentation.fetch("image_id").tolist() == [1]
    assert len(Segmentation.ROI & {"image_id": 1}) == 7
    event = instance.get_latest_materialization_event(asset_key(Segmentation))
    materialization = event.asset_materialization
    assert materialization.partition == "1"
    md = materialization.metadata
    # this partition's rows, labelled as such; the table's total (UI: "Row count") separately
    assert md[f"rows written (this partition): {Segmentation.ROI.full_name}"].value == 7
    assert md[f"rows written (this partition): {Segmentation.full_name}"].value == 1
    assert md[f"rows in table (all partitions): {Segmentation.full_name}"].value == 1
    assert md["dagster/row_count"].value == 1
    assert job_for(defs, Segmentation).execute_in_process(partition_key="2", instance=instance).success
    md = instance.get_latest_materialization_event(asset_key(Segmentation)).asset_materialization.metadata
    assert md[f"rows written (this partition): {Segmentation.ROI.full_name}"].value == 7
    assert md[f"rows in table (all partitions): {Segmentation.full_name}"].value == 2
    assert md["dagster/row_count"].value == 2
    assert not [k for k in md if k.startswith("rows ") and "partition" not in k]  # no unlabelled counts
    assert md["dagster/table_name"].value == Segmentation.full_name
    assert [c.name for c in md["dagster/column_schema"].schema.columns] == ["image_id"]
    preview = md["preview segmentation__roi"].value
    assert len(preview.records) == 5 and preview.records[0].data["roi"] == 0
    assert instance.get_materialized_partitions(asset_key(Segmentation)) == {"1", "2"}
    # the definition carries the column schema
    node = defs.resolve_asset_graph().get(asset_key(Segmentation))
    assert [c.name for c in node.metadata["dagster/column_schema"].columns] == ["image_id"]


def test_materialization_carries_the_tables_picture(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=3)

    def preview_png(self, key, rows):
        # the picture sees the entry's decoded rows
        assert [r["roi"] for r in rows[Segmentation.ROI.table_name]] == [0, 1, 2]
        return encode_png(np.full((6, 4, 3), 200, dtype=np.uint8))

    Segmentation.preview_png = preview_png
    add_images(Image, [4])
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    assert job_for(defs, Segmentation).execute_in_process(partition_key="4", instance=instance).success
    md = instance.get_latest_materialization_event(asset_key(Segmentation)).asset_materialization.metadata
    match = re.fullmatch(r"!\[.*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md["picture"].value)
    png = base64.b64decode(match.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (4, 6)  # width, height from IHDR


def test_single_run_backfill_commits_each_key_and_rerun_skips(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=4)
    add_images(Image, range(6))
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    Segmentation.populate({"image_id": 2})  # one key done outside Dagster
    tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": "5"}
    result = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=tags)
    assert result.success
    assert sorted(Segmentation.fetch("image_id").tolist()) == list(range(6))
    assert [len(Segmentation.ROI & {"image_id": i}) for i in range(6)] == [4] * 6
    assert instance.get_materialized_partitions(asset_key(Segmentation)) == {str(i) for i in range(6)}
    rerun = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=tags)
    assert rerun.success
    assert len(Segmentation.ROI) == 24
    outputs = [e for e in rerun.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert {e.event_specific_data.materialization.metadata["mp_dagster/entries_skipped_in_run"].value
            for e in outputs} == {6}
    # a backfill's partitions carry the table's total rows, not a per-partition count
    assert {e.event_specific_data.materialization.metadata["dagster/row_count"].value for e in outputs} == {6}


def test_long_runs_log_progress(schema, instance, monkeypatch):
    from mp_dagster.dagster import assets

    Image, Segmentation = declare_imaging(schema, n_rois=1)
    add_images(Image, range(80))
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)

    def progress_lines(first: int, last: int) -> list[str]:
        tags = {"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)}
        result = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=tags)
        assert result.success
        return [e.user_message for e in instance.all_logs(result.run_id) if "keys done" in e.user_message]

    # faster than PROGRESS_MIN_SECONDS: only the last line
    monkeypatch.setattr(assets, "PROGRESS_MIN_SECONDS", 3600.0)
    fast = progress_lines(0, 39)
    assert len(fast) == 1 and fast[0].startswith(f"{Segmentation.full_name}: 40/40 keys done, 0 failed")
    # a backfill (no per-key metadata) still gives each partition the table's total rows
    md = instance.get_latest_materialization_event(asset_key(Segmentation)).asset_materialization.metadata
    assert md["dagster/row_count"].value == 40
    assert md[f"rows in table (all partitions): {Segmentation.full_name}"].value == 40
    # slower (no minimum interval): a line every 5 % of the keys
    monkeypatch.setattr(assets, "PROGRESS_MIN_SECONDS", 0.0)
    slow = progress_lines(40, 79)
    assert len(slow) == 20
    assert slow[0].startswith(f"{Segmentation.full_name}: 2/40 keys done, 0 failed")
    assert slow[-1].startswith(f"{Segmentation.full_name}: 40/40 keys done, 0 failed")
    assert len(Segmentation) == 80


def test_failing_make_leaves_no_rows_and_a_failed_partition(schema, instance):
    Image, Segmentation = declare_imaging(schema, fail_after=20)
    add_images(Image, [5])
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    result = job_for(defs, Segmentation).execute_in_process(partition_key="5", instance=instance,
                                                           raise_on_error=False)
    assert not result.success
    assert len(Segmentation) == 0 and len(Segmentation.ROI) == 0
    status = partition_status(instance, Segmentation, ["5"], defs)
    assert status["5"] == dg.AssetPartitionStatus.FAILED


def test_range_with_a_failing_key_commits_the_others(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=3)

    original = Segmentation.make

    def make(self, key):
        if key["image_id"] == 2:
            raise ValueError("bad image")
        original(self, key)

    Segmentation.make = make
    add_images(Image, range(4))
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": "3"}
    result = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    assert Segmentation.fetch("image_id").tolist() == [0, 1, 3]
    assert len(Segmentation.ROI) == 9
    status = partition_status(instance, Segmentation, ["0", "1", "2", "3"], defs)
    assert status == {"0": dg.AssetPartitionStatus.MATERIALIZED, "1": dg.AssetPartitionStatus.MATERIALIZED,
                      "2": dg.AssetPartitionStatus.FAILED, "3": dg.AssetPartitionStatus.MATERIALIZED}


def test_backfill_writes_as_it_goes_and_a_failing_key_fails_alone(schema, instance):
    """A backfill (more keys than DETAILED_RUN_KEYS) commits each entry as soon as it is
    computed; a key whose make fails, or whose rows the database refuses, fails alone."""
    from mp_dagster.dagster.assets import DETAILED_RUN_KEYS

    Image, Segmentation = declare_imaging(schema, n_rois=3)
    original = Segmentation.make
    seen_in_table: list[int] = []

    def make(self, key):
        seen_in_table.append(len(Segmentation()))  # entries committed before this key's make
        if key["image_id"] == 7:
            raise ValueError("bad image")
        original(self, key)
        if key["image_id"] == 11:  # refused by the database: ROI 0 twice
            Segmentation.ROI.insert1(dict(key, roi=0, roi_pixels=np.arange(2), roi_weights=np.ones(2)))

    Segmentation.make = make
    n = DETAILED_RUN_KEYS + 10
    add_images(Image, range(n))
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    tags = {"dagster/asset_partition_range_start": "0", "dagster/asset_partition_range_end": str(n - 1)}
    result = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    good = [i for i in range(n) if i not in (7, 11)]
    assert Segmentation.fetch("image_id").tolist() == good
    assert len(Segmentation.ROI) == 3 * len(good)
    # key k's make saw every earlier good key committed: written as they went, not at the end
    # (keys go in key order, 0, 1, 2, ..., not in the text order of partition keys, "10" < "2")
    assert seen_in_table == [len([g for g in good if g < i]) for i in range(n)]
    status = partition_status(instance, Segmentation, [str(i) for i in range(n)], defs)
    assert {k for k, v in status.items() if v == dg.AssetPartitionStatus.FAILED} == {"7", "11"}
    assert {k for k, v in status.items() if v == dg.AssetPartitionStatus.MATERIALIZED} == {str(i) for i in good}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "2 of 30 keys failed" in failure.step_failure_data.error.message
    assert "DuplicateError" in failure.step_failure_data.error.message


def test_load_input_gives_the_upstream_partition_rows(schema, instance):
    Recording, ArrayResponse = declare_ephys(schema, electrodes=2, channels=3)
    Recording.insert([dict(array=a, signals=np.arange(24.0).reshape(6, 4)) for a in (1, 2)])
    mp_defs = build_definitions(schema)
    evaluate_sensor(mp_defs, ArrayResponse, instance)
    graph = mp_defs.resolve_asset_graph()
    partitions_def = graph.get(asset_key(ArrayResponse)).partitions_def
    seen = {}

    @dg.asset(partitions_def=partitions_def, ins={"response": dg.AssetIn(key=asset_key(ArrayResponse))})
    def channel_report(context, response):
        seen[context.partition_key] = response
        return None

    array_asset = next(a for a in mp_defs.assets
                       if isinstance(a, dg.AssetsDefinition) and a.key == asset_key(ArrayResponse))
    run = dg.materialize(
        [array_asset, channel_report],
        partition_key="2", instance=instance,
        resources={"mp_io_manager": mp_defs.resources["mp_io_manager"]},
    )
    assert run.success
    rows = seen["2"]
    assert [r["array"] for r in rows[ArrayResponse.table_name]] == [2]
    assert len(rows[ArrayResponse.ElectrodeResponse.table_name]) == 2
    channels = rows[ArrayResponse.ChannelResponse.table_name]
    assert len(channels) == 6 and all(isinstance(c["response"], np.ndarray) for c in channels)


def test_sensor_adds_partitions_requests_runs_once_and_keeps_a_cursor(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    add_images(Image, [10, 11, 12])
    defs = build_definitions(schema, keys_per_run=1)
    first = evaluate_sensor(defs, Segmentation, instance)
    assert sorted(pk_of(r) for r in first.run_requests) == ["10", "11", "12"]
    assert {r.run_key for r in first.run_requests} == {f"{Segmentation.full_name}:{k}" for k in ("10", "11", "12")}
    image_def = build_schemes([Image])[Image.full_name].partitions_def.name
    assert sorted(instance.get_dynamic_partitions(image_def)) == ["10", "11", "12"]
    # the Manual table's new rows are reported as materialized partitions of its asset
    assert {e.partition for e in first.asset_events} == {"10", "11", "12"}
    # nothing new: no request again, even though nothing ran yet
    second = evaluate_sensor(defs, Segmentation, instance, cursor=first.cursor)
    assert second.run_requests == [] and second.skip_message
    add_images(Image, [13])
    third = evaluate_sensor(defs, Segmentation, instance, cursor=second.cursor)
    assert [pk_of(r) for r in third.run_requests] == ["13"]
    # once written, keys leave the cursor
    Segmentation.populate()
    fourth = evaluate_sensor(defs, Segmentation, instance, cursor=third.cursor)
    assert fourth.run_requests == [] and decode_cursor(fourth.cursor) == {}


def run_ranges(requests) -> list[tuple[str, str]]:
    """(first, last) partition of each requested run (a one-key run: (key, key))."""
    out = []
    for r in requests:
        if "dagster/asset_partition_range_start" in r.tags:
            out.append((r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]))
        else:
            out.append((pk_of(r), pk_of(r)))
    return out


def test_sensor_groups_new_keys_into_range_runs(schema, instance):
    """keys_per_run=4: 10 new images become runs over 4, 4 and 2 neighbouring partitions; each
    run, executed as the daemon would, writes exactly its keys; a second tick asks nothing."""
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    add_images(Image, range(10))
    defs = build_definitions(schema, keys_per_run=4)
    first = evaluate_sensor(defs, Segmentation, instance)
    order = instance.get_dynamic_partitions(f"{schema.name}__image")
    assert run_ranges(first.run_requests) == [(order[0], order[3]), (order[4], order[7]), (order[8], order[9])]
    assert len({r.run_key for r in first.run_requests}) == 3
    for n, request in enumerate(first.run_requests):
        result = job_for(defs, Segmentation).execute_in_process(instance=instance, tags=request.tags)
        assert result.success
        assert len(Segmentation) == min(4 * (n + 1), 10)
    assert sorted(Segmentation.fetch("image_id").tolist()) == list(range(10))
    assert len(Segmentation.ROI) == 20
    assert instance.get_materialized_partitions(asset_key(Segmentation)) == {str(i) for i in range(10)}
    assert evaluate_sensor(defs, Segmentation, instance, cursor=first.cursor).run_requests == []


def test_range_runs_hold_only_pending_neighbours(schema, instance):
    """Keys written meanwhile split the ranges: no run spans a key that is not requested."""
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    add_images(Image, range(8))
    instance.add_dynamic_partitions(f"{schema.name}__image", [str(i) for i in range(8)])
    Segmentation.populate([{"image_id": 2}, {"image_id": 3}, {"image_id": 6}])
    defs = build_definitions(schema, keys_per_run=100)
    requests = evaluate_sensor(defs, Segmentation, instance).run_requests
    assert run_ranges(requests) == [("0", "1"), ("4", "5"), ("7", "7")]
    # the schedule groups the same way
    defs = build_definitions(schema, sensors=False, keys_per_run=100, schedules={Segmentation: "0 * * * *"})
    schedule = defs.resolve_schedule_def(f"{schema.name}__segmentation_schedule")
    context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                        scheduled_execution_time=dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc))
    assert run_ranges(schedule.evaluate_tick(context).run_requests) == [("0", "1"), ("4", "5"), ("7", "7")]
    with pytest.raises(ValueError, match="keys_per_run"):
        build_definitions(schema, keys_per_run=0)


def test_sensor_with_100k_upstream_rows_batches_within_the_time_limit(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=1)
    blob = np.zeros(1)
    Image.insert([dict(image_id=i, image=blob) for i in range(100_000)])
    defs = build_definitions(schema, keys_per_run=1)
    started = time.monotonic()
    first = evaluate_sensor(defs, Segmentation, instance)
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"sensor tick took {elapsed:.1f} s: Dagster would time it out"
    assert len(first.run_requests) == 25_000  # Dagster's advised cap on partitions per tick
    requested = {pk_of(r) for r in first.run_requests}
    second = evaluate_sensor(defs, Segmentation, instance, cursor=first.cursor)
    assert len(second.run_requests) == 25_000
    assert requested.isdisjoint(pk_of(r) for r in second.run_requests)


def test_schedule_requests_the_pending_partitions(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    add_images(Image, [1, 2, 3])
    Segmentation.populate({"image_id": 2})
    defs = build_definitions(schema, sensors=False, schedules={Segmentation: "*/15 * * * *"})
    schedule = defs.resolve_schedule_def(f"{schema.name}__segmentation_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    when = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        repository_def=defs.get_repository_def())
    data = schedule.evaluate_tick(context)
    assert sorted(pk_of(r) for r in data.run_requests) == ["1", "3"]
    for request in data.run_requests:
        assert job_for(defs, Segmentation).execute_in_process(partition_key=pk_of(request),
                                                              instance=instance).success
    assert sorted(Segmentation.fetch("image_id").tolist()) == [1, 2, 3]
    later = dg.build_schedule_context(instance=instance, scheduled_execution_time=when + dt.timedelta(minutes=15),
                                      repository_def=defs.get_repository_def())
    assert schedule.evaluate_tick(later).skip_message


def run_checks(defs, table, instance):
    wanted = dg.AssetCheckKey(asset_key(table), "matches_database")
    checks_def = next(c for c in defs.asset_checks if wanted in c.check_keys)
    result = dg.materialize([checks_def], instance=instance, selection=dg.AssetSelection.checks(checks_def),
                            resources={"mp_io_manager": defs.resources["mp_io_manager"]})
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_delete_is_seen_by_dagster_and_can_be_recomputed(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=3)
    add_images(Image, [1, 2])
    defs = build_definitions(schema)
    evaluate_sensor(defs, Segmentation, instance)
    for pk in ("1", "2"):
        assert job_for(defs, Segmentation).execute_in_process(partition_key=pk, instance=instance).success
    assert run_checks(defs, Segmentation, instance)["matches_database"].passed
    (Segmentation & {"image_id": 2}).delete()
    evaluation = run_checks(defs, Segmentation, instance)["matches_database"]
    assert not evaluation.passed
    assert evaluation.metadata["sample deleted"].value == ["2"]
    # recompute from the UI = materialize the partition again
    assert job_for(defs, Segmentation).execute_in_process(partition_key="2", instance=instance).success
    assert len(Segmentation.ROI & {"image_id": 2}) == 3
    assert run_checks(defs, Segmentation, instance)["matches_database"].passed


def test_checks_flag_entries_without_parts_unrecorded_rows_and_stale_keys(schema, instance):
    Image, Segmentation = declare_imaging(schema, n_rois=3, fail_after=None)
    add_images(Image, [1, 2, 3])
    defs = build_definitions(schema, stale_pending_seconds=0)
    evaluate_sensor(defs, Segmentation, instance)
    Segmentation.insert1({"image_id": 1}, allow_direct_insert=True)  # a master without its parts
    checks = run_checks(defs, Segmentation, instance)
    assert not checks["parts_complete"].passed
    assert checks["parts_complete"].metadata["entries without parts"].value == 1
    assert not checks["matches_database"].passed
    assert checks["matches_database"].metadata["rows without a materialization"].value == 1
    assert checks["no_stale_pending"].passed  # nothing was requested yet
    original = Segmentation.make
    Segmentation.make = lambda self, key: (_ for _ in ()).throw(RuntimeError("down"))
    job_for(defs, Segmentation).execute_in_process(partition_key="3", instance=instance, raise_on_error=False)
    Segmentation.make = original
    stale = run_checks(defs, Segmentation, instance)["no_stale_pending"]
    assert not stale.passed
    assert stale.metadata["sample"].value == ["3"]
