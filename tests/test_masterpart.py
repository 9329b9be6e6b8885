"""The master-part write path: whole entries or nothing, on both backends, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipelines import declare_ephys, declare_imaging, segment

import mp_dagster as mp

WORKER = Path(__file__).parent / "worker.py"


def add_images(image_cls, ids, size=16):
    rng = np.random.default_rng(1)
    image_cls.insert([dict(image_id=i, image=rng.random((size, size))) for i in ids])


def test_seed_segmentation_populates_every_roi(schema):
    Image, Segmentation = declare_imaging(schema)
    add_images(Image, range(3))
    result = Segmentation.populate()
    assert result == {"success_count": 3, "error_list": []}
    assert len(Segmentation) == 3
    assert len(Segmentation.ROI) == 3 * 45
    for image_id in range(3):
        image = (Image & {"image_id": image_id}).fetch1("image")
        rois = (Segmentation.ROI & {"image_id": image_id}).fetch(as_dict=True)
        expected = list(segment(image))
        assert [r["roi"] for r in rois] == list(range(45))
        for row, (pixels, weights) in zip(rois, expected):
            np.testing.assert_array_equal(row["roi_pixels"], pixels)
            np.testing.assert_array_equal(row["roi_weights"], weights)
    assert Segmentation.populate() == {"success_count": 0, "error_list": []}


def test_parts_referencing_parts_are_written_parents_first(schema):
    Recording, ArrayResponse = declare_ephys(schema, electrodes=3, channels=5)
    Recording.insert([dict(array=a, signals=np.arange(40.0).reshape(8, 5)) for a in (1, 2)])
    ArrayResponse.populate()
    assert len(ArrayResponse) == 2
    assert len(ArrayResponse.ElectrodeResponse) == 6
    assert len(ArrayResponse.ChannelResponse) == 30
    assert ArrayResponse.ChannelResponse.full_name.endswith(".array_response__channel_response")
    row = (ArrayResponse.ChannelResponse & {"array": 2, "electrode": 1, "channel": 2}).fetch1()
    np.testing.assert_array_equal(row["response"], np.arange(40.0).reshape(8, 5)[7])


def test_failure_halfway_through_make_leaves_nothing(schema):
    Image, Segmentation = declare_imaging(schema, fail_after=20)
    add_images(Image, [7])
    with pytest.raises(RuntimeError, match="after 20 ROIs"):
        Segmentation.populate()
    assert len(Segmentation) == 0
    assert len(Segmentation.ROI) == 0
    assert Segmentation.pending_keys() == [{"image_id": 7}]
    result = Segmentation.populate(suppress_errors=True)
    assert result["success_count"] == 0
    assert [k for k, _ in result["error_list"]] == [{"image_id": 7}]
    assert len(Segmentation.ROI) == 0


def test_failure_during_the_write_leaves_nothing(schema):
    """The database refuses the 30th part row (a missing parent): no master, no part."""

    @schema
    class Label(mp.Lookup):
        definition = """
        label : varchar(16)
        """
        contents = [("cell",), ("vessel",)]

    @schema
    class Frame(mp.Manual):
        definition = """
        frame : int
        """

    @schema
    class Annotation(mp.Computed):
        definition = """
        -> Frame
        """

        class Item(mp.Part):
            definition = """
            -> master
            item : int
            ---
            -> Label
            """

        def make(self, key):
            self.insert1(key)
            self.Item.insert(dict(key, item=i, label="cell" if i != 29 else "nerve") for i in range(45))

    Frame.insert1({"frame": 1})
    with pytest.raises(mp.MissingParentError, match=rf"{Annotation.Item.full_name}.*label"):
        Annotation.populate()
    assert len(Annotation) == 0 and len(Annotation.Item) == 0
    assert Annotation.pending_keys() == [{"frame": 1}]


def test_make_must_insert_exactly_its_master_row(schema):
    @schema
    class Source(mp.Manual):
        definition = """
        source : int
        """

    @schema
    class NoMaster(mp.Computed):
        definition = """
        -> Source
        """

        class Piece(mp.Part):
            definition = """
            -> master
            piece : int
            """

        def make(self, key):
            self.Piece.insert1(dict(key, piece=1))

    @schema
    class WrongKey(mp.Computed):
        definition = """
        -> Source
        """

        def make(self, key):
            self.insert1({"source": key["source"] + 100})

    @schema
    class Meddler(mp.Computed):
        definition = """
        -> Source
        """

        def make(self, key):
            self.insert1(key)
            Source.insert1({"source": 99})

    Source.insert1({"source": 1})
    with pytest.raises(mp.MakeError, match="master row"):
        NoMaster.populate()
    with pytest.raises(mp.MakeError, match="another key"):
        WrongKey.populate()
    with pytest.raises(mp.MakeError, match="only .*meddler and its parts"):
        Meddler.populate()
    assert len(NoMaster.Piece) == 0 and len(WrongKey) == 0 and len(Meddler) == 0
    assert len(Source) == 1


def test_direct_inserts_into_auto_populated_tables_are_refused(schema):
    Image, Segmentation = declare_imaging(schema)
    add_images(Image, [1])
    with pytest.raises(mp.DirectInsertError, match=Segmentation.full_name):
        Segmentation.insert1({"image_id": 1})
    with pytest.raises(mp.DirectInsertError, match=Segmentation.ROI.full_name):
        Segmentation.ROI.insert1({"image_id": 1, "roi": 0, "roi_pixels": 1, "roi_weights": 2})
    Segmentation.insert1({"image_id": 1}, allow_direct_insert=True)
    Segmentation.ROI.insert1({"image_id": 1, "roi": 0, "roi_pixels": 1, "roi_weights": 2}, allow_direct_insert=True)
    assert len(Segmentation) == 1 and len(Segmentation.ROI) == 1


def test_populate_restrictions_and_max_calls(schema, capsys):
    Image, Segmentation = declare_imaging(schema, n_rois=3)
    add_images(Image, range(10))
    assert Segmentation.progress() == (10, 10)
    assert Segmentation.populate({"image_id": 4})["success_count"] == 1
    assert Segmentation.fetch("image_id").tolist() == [4]
    assert Segmentation.populate(Image & [{"image_id": 1}, {"image_id": 2}])["success_count"] == 2
    assert Segmentation.populate(max_calls=3)["success_count"] == 3
    assert Segmentation.progress() == (4, 10)
    assert Segmentation.populate(display_progress=True)["success_count"] == 4
    bar = capsys.readouterr().err  # tqdm: keys done, failures and rate
    assert "Segmentation.populate" in bar and "4/4" in bar and "failed=0" in bar and "rate=" in bar
    assert sorted(Segmentation.fetch("image_id").tolist()) == list(range(10))


def _run_worker(url, schema_name, *args, **popen):
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, schema_name, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_a_key_landed_by_another_writer_meanwhile_is_skipped(schema):
    """make ran, then someone else wrote the same key: the late entry writes nothing."""
    from mp_dagster.autopopulate import compute_entry, write_entry

    Image, Segmentation = declare_imaging(schema, n_rois=45)
    add_images(Image, [1])
    late = compute_entry(Segmentation, {"image_id": 1})
    assert write_entry(compute_entry(Segmentation, {"image_id": 1})) is True
    assert write_entry(late) is False
    assert len(Segmentation) == 1 and len(Segmentation.ROI) == 45
    assert Segmentation.pending_keys() == []


def test_writes_lost_to_other_writers_leave_the_connection_usable(schema, caplog):
    """Runs of writes that lose their key to another writer (the entry is rolled back), mixed
    with writes that land: every later write on the same connection still lands. (PostgreSQL
    pipelines skip the statements after a failed one; a skipped statement must not be taken for
    prepared, or every later write failed with "prepared statement ... does not exist".)"""
    from mp_dagster.autopopulate import compute_entry, write_entry

    Image, Segmentation = declare_imaging(schema, n_rois=3)
    add_images(Image, range(120), size=2)
    key = iter(range(120))
    with caplog.at_level("WARNING", logger="psycopg"):
        for landed, lost in [(0, 1), (0, 2), (3, 5), (1, 7), (6, 2)]:
            for _ in range(landed):
                assert write_entry(compute_entry(Segmentation, {"image_id": next(key)})) is True
            late = [(k, compute_entry(Segmentation, {"image_id": k})) for k in [next(key) for _ in range(lost)]]
            for k, _ in late:  # another writer lands these keys first
                Segmentation.populate({"image_id": k})
            for _, entry in late:
                assert write_entry(entry) is False
            assert write_entry(compute_entry(Segmentation, {"image_id": next(key)})) is True
    assert len(Segmentation.ROI) == 3 * len(Segmentation)
    assert not [r for r in caplog.records if "error ignored" in r.getMessage()]  # no stray warning


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_a_second_writer_waits_for_the_first_and_lands_only_if_it_rolled_back(schema, first_commits):
    """Two writers of one key at once: the second waits for the first transaction; if that
    commits, the second writes nothing; if it rolls back, the second writes its whole entry."""
    import threading

    from mp_dagster.autopopulate import compute_entry, write_entry

    Image, Segmentation = declare_imaging(schema, n_rois=45)
    add_images(Image, [1])
    key = {"image_id": 1}
    second = compute_entry(Segmentation, key)
    inside, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def first_writer():
        try:
            with schema.transaction():
                Segmentation.insert1(key, allow_direct_insert=True)
                Segmentation.ROI.insert([dict(key, roi=r, roi_pixels=np.arange(3), roi_weights=np.ones(3))
                                         for r in range(3)], allow_direct_insert=True)
                assert len(Segmentation & key) == 1  # our rows are at the server, uncommitted
                inside.set()
                assert release.wait(30)
                if not first_commits:
                    raise RuntimeError("first writer gives up")
        except RuntimeError:
            pass

    def second_writer():
        outcome["wrote"] = write_entry(second)

    a = threading.Thread(target=first_writer)
    a.start()
    assert inside.wait(30)
    b = threading.Thread(target=second_writer)
    b.start()
    b.join(0.5)
    assert b.is_alive(), "the second writer must wait for the first transaction"
    release.set()
    a.join(30)
    b.join(30)
    assert outcome == {"wrote": not first_commits}
    assert len(Segmentation) == 1
    assert len(Segmentation.ROI) == (3 if first_commits else 45)


def test_duplicate_part_rows_from_make_are_an_error_naming_the_part(schema):
    @schema
    class Frame(mp.Manual):
        definition = """
        frame : int
        """

    @schema
    class Tracking(mp.Computed):
        definition = """
        -> Frame
        """

        class Point(mp.Part):
            definition = """
            -> master
            point : int
            ---
            x : float
            """

        def make(self, key):
            self.insert1(key)
            self.Point.insert([dict(key, point=i % 30, x=float(i)) for i in range(45)])

    Frame.insert1({"frame": 1})
    with pytest.raises(mp.DuplicateError, match=Tracking.Point.full_name):
        Tracking.populate()
    assert len(Tracking) == 0 and len(Tracking.Point) == 0
    assert Tracking.pending_keys() == [{"frame": 1}]


def test_two_processes_populating_the_same_keys_write_each_entry_once(schema, db_url):
    Image, Segmentation = declare_imaging(schema, n_rois=45)
    add_images(Image, range(12))
    workers = [_run_worker(db_url, schema.name, "--sleep", "0.02") for _ in range(2)]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["errors"] == [] for r in results), results
    assert sum(r["success_count"] for r in results) == 12
    assert len(Segmentation) == 12
    counts = [len(Segmentation.ROI & k) for k in Segmentation.fetch("KEY")]
    assert counts == [45] * 12


def test_sigkill_during_the_write_leaves_nothing_partial(schema, db_url, tmp_path):
    """Kill the worker after make returned, while its 45 x 1 MB part rows are being written."""
    Image, Segmentation = declare_imaging(schema, n_rois=45)
    add_images(Image, [1])
    signal_file = tmp_path / "computed"
    worker = _run_worker(
        db_url, schema.name, "--blob-kb", "1024", env={**os.environ, "MP_TEST_SIGNAL_FILE": str(signal_file)}
    )
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker never finished make"
        time.sleep(0.005)
    time.sleep(0.01)  # inside the write: 45 MB take far longer than this to go in
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    # whatever the moment, the database holds the whole entry or nothing of it
    masters, parts = len(Segmentation), len(Segmentation.ROI)
    assert (masters, parts) in ((0, 0), (1, 45))
    assert masters == 0, "the kill came after the commit: the write was faster than expected"
    assert Segmentation.pending_keys() == [{"image_id": 1}]
    # and the key can be populated afterwards (no lock or half-open transaction left behind)
    Segmentation.populate()
    assert (len(Segmentation), len(Segmentation.ROI)) == (1, 45)
