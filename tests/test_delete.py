"""Deletes go through the master, cascade to parts and downstream, in one transaction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pipelines import declare_ephys, declare_imaging

import mp_dagster as mp


def imaging_with_downstream(schema, n_images=3, n_rois=5):
    Image, Segmentation = declare_imaging(schema, n_rois=n_rois)

    @schema
    class RoiStats(mp.Computed):
        definition = """  # a table downstream of a part
        -> Segmentation.ROI
        ---
        total : float64
        """

        def make(self, key):
            weights = (Segmentation.ROI & key).fetch1("roi_weights")
            self.insert1(dict(key, total=float(np.sum(weights))))

    Image.insert([dict(image_id=i, image=np.full((4, 4), float(i))) for i in range(n_images)])
    Segmentation.populate()
    RoiStats.populate()
    return Image, Segmentation, RoiStats


def test_master_delete_cascades_to_parts_and_downstream(schema):
    Image, Segmentation, RoiStats = imaging_with_downstream(schema)
    assert (len(Segmentation), len(Segmentation.ROI), len(RoiStats)) == (3, 15, 15)
    preview = (Segmentation & {"image_id": 1}).delete_preview()
    assert preview == {RoiStats.full_name: 5, Segmentation.ROI.full_name: 5, Segmentation.full_name: 1}
    # leaves first
    assert list(preview)[-1] == Segmentation.full_name
    assert (Segmentation & {"image_id": 1}).delete() == 1
    assert (len(Segmentation), len(Segmentation.ROI), len(RoiStats)) == (2, 10, 10)
    assert len(Image) == 3
    assert not (Segmentation.ROI & {"image_id": 1})
    # the deleted key is pending again and can be recomputed
    assert Segmentation.pending_keys() == [{"image_id": 1}]
    Segmentation.populate()
    assert len(Segmentation.ROI & {"image_id": 1}) == 5


def test_upstream_delete_takes_whole_entries(schema):
    Image, Segmentation, RoiStats = imaging_with_downstream(schema)
    assert (Image & [{"image_id": 0}, {"image_id": 2}]).delete_preview() == {
        RoiStats.full_name: 10,
        Segmentation.ROI.full_name: 10,
        Segmentation.full_name: 2,
        Image.full_name: 2,
    }
    assert (Image & [{"image_id": 0}, {"image_id": 2}]).delete() == 2
    assert Image.fetch("image_id").tolist() == [1]
    assert Segmentation.fetch("image_id").tolist() == [1]
    assert set(Segmentation.ROI.fetch("image_id").tolist()) == {1}
    assert set(RoiStats.fetch("image_id").tolist()) == {1}


def test_class_level_delete_of_everything(schema):
    Image, Segmentation, RoiStats = imaging_with_downstream(schema)
    Image.delete()
    assert [len(t) for t in (Image, Segmentation, Segmentation.ROI, RoiStats)] == [0, 0, 0, 0]


def test_direct_part_delete_is_refused_cascade_takes_the_master_ignore_is_explicit(schema):
    Image, Segmentation, RoiStats = imaging_with_downstream(schema)
    with pytest.raises(mp.PartIntegrityError, match=r"part of .*segmentation.*delete from the master"):
        (Segmentation.ROI & {"image_id": 0, "roi": 2}).delete()
    with pytest.raises(mp.PartIntegrityError):
        (Segmentation.ROI & {"image_id": 0}).delete_preview()
    assert len(Segmentation.ROI) == 15
    # cascade: the whole master entry (all 5 ROIs and what depends on them) goes
    assert (Segmentation.ROI & {"image_id": 0, "roi": 2}).delete_preview(part_integrity="cascade") == {
        RoiStats.full_name: 5,
        Segmentation.ROI.full_name: 5,
        Segmentation.full_name: 1,
    }
    (Segmentation.ROI & {"image_id": 0, "roi": 2}).delete(part_integrity="cascade")
    assert Segmentation.fetch("image_id").tolist() == [1, 2]
    assert len(Segmentation.ROI) == 10 and len(RoiStats) == 10
    # ignore: the explicit escape hatch removes just the part row (and its dependents)
    (Segmentation.ROI & {"image_id": 1, "roi": 0}).delete(part_integrity="ignore")
    assert len(Segmentation.ROI & {"image_id": 1}) == 4
    assert len(Segmentation) == 2 and len(RoiStats) == 9


def test_upstream_cascade_that_would_orphan_a_master_is_refused_or_takes_it(schema):
    @schema
    class Kind(mp.Lookup):
        definition = """
        kind : varchar(8)
        """
        contents = [("a",), ("b",)]

    @schema
    class Scan(mp.Manual):
        definition = """
        scan : int
        """

    @schema
    class Sorted(mp.Computed):
        definition = """
        -> Scan
        """

        class Unit(mp.Part):
            definition = """
            -> master
            unit : int
            ---
            -> Kind
            """

        def make(self, key):
            self.insert1(key)
            self.Unit.insert(dict(key, unit=u, kind="a" if u % 2 else "b") for u in range(4))

    Scan.insert([{"scan": 1}, {"scan": 2}])
    Sorted.populate()
    with pytest.raises(mp.PartIntegrityError, match=r"without\s+their master"):
        (Kind & {"kind": "a"}).delete()
    assert len(Sorted.Unit) == 8 and len(Kind) == 2
    assert (Kind & {"kind": "a"}).delete_preview(part_integrity="cascade") == {
        Sorted.Unit.full_name: 8,
        Sorted.full_name: 2,
        Kind.full_name: 1,
    }
    (Kind & {"kind": "a"}).delete(part_integrity="cascade")
    assert (len(Sorted), len(Sorted.Unit), len(Kind)) == (0, 0, 1)
    assert len(Scan) == 2


def test_delete_of_parts_that_reference_parts(schema):
    Recording, ArrayResponse = declare_ephys(schema, electrodes=2, channels=3)
    Recording.insert([dict(array=a, signals=np.zeros((6, 4))) for a in range(3)])
    ArrayResponse.populate()
    (ArrayResponse & {"array": 1}).delete()
    assert ArrayResponse.fetch("array").tolist() == [0, 2]
    assert len(ArrayResponse.ElectrodeResponse) == 4 and len(ArrayResponse.ChannelResponse) == 12


def test_a_failed_delete_removes_nothing(schema):
    """A cascade into a table this process does not know is refused by the foreign key: the
    whole delete rolls back, parts included."""
    Image, Segmentation, _ = imaging_with_downstream(schema)
    other = mp.Schema(schema.name, database_url=schema.database_url)

    @other
    class Audit(mp.Manual):
        definition = """
        -> Segmentation
        ---
        note : varchar(40)
        """

    Audit.insert1({"image_id": 2, "note": "keep"})
    # forget Audit in this process: the library no longer plans to cascade into it
    mp.dependencies.unregister(Audit.full_name)
    with pytest.raises(mp.MPError, match="nothing was deleted"):
        (Image & {"image_id": 2}).delete()
    assert len(Image) == 3 and len(Segmentation) == 3 and len(Segmentation.ROI) == 15
    mp.dependencies.register(Audit)


def test_delete_never_waits_for_input_without_a_terminal(schema, db_url, tmp_path):
    script = tmp_path / "del.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "import mp_dagster as mp\n"
        "from pipelines import declare_imaging\n"
        f"s = mp.Schema({schema.name!r}, database_url={db_url!r})\n"
        "Image, Seg = declare_imaging(s, n_rois=2)\n"
        "print((Image & {'image_id': 0}).delete())\n"
    )
    Image, Segmentation = declare_imaging(schema, n_rois=2)
    Image.insert([dict(image_id=i, image=np.zeros(2)) for i in range(2)])
    Segmentation.populate()
    done = subprocess.run([sys.executable, str(script)], stdin=subprocess.PIPE, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert Image.fetch("image_id").tolist() == [1]
    with pytest.raises(mp.MPError, match="not a terminal"):
        (Image & {"image_id": 1}).delete(prompt=True)
    assert len(Image) == 1
