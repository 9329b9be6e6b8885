"""The write/read fast paths (bench/ measures them; these check they change nothing), on both
backends: batch conversion of rows, deferred statements on PostgreSQL, binary fetches, and the
codec's cached array layouts."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import numpy as np
import pytest

import mp_dagster as mp
from mp_dagster import blob
from mp_dagster.autopopulate import compute_entry, write_entry


def declare(schema, n_rois):
    rng = np.random.default_rng(0)
    weights = [rng.random(8) for _ in range(n_rois)]

    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        scale = null : float
        label = "" : varchar(16)
        """

    @schema
    class Seg(mp.Computed):
        definition = """
        -> Image
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi : smallint
            ---
            w : longblob
            """

        def make(self, key):
            self.insert1(key)
            self.ROI.insert([dict(key, roi=r, w=weights[r]) for r in range(n_rois)])

    return Image, Seg, weights


def label(i):
    return f"ünï'{i}".ljust(16, "é")  # varchar(16), filled: unicode through COPY and back


def rows(n, start=0):
    return [dict(image_id=i, image=np.full((2, 3), i, dtype=np.int16), scale=0.1, label=label(i))
            for i in range(start, start + n)]


@pytest.mark.parametrize("n", [1, 15, 16, 40])
def test_batches_of_any_size_store_the_same_values(schema, n):
    Image, Seg, weights = declare(schema, n)
    Image.insert(rows(n))
    Image.insert([(i, np.arange(3), None, "t") for i in range(100, 100 + n)])  # sequences too
    Seg.populate()
    got = Image.fetch(as_dict=True, order_by="image_id")
    assert [r["image_id"] for r in got] == list(range(n)) + list(range(100, 100 + n))
    assert all(np.array_equal(r["image"], np.full((2, 3), r["image_id"], dtype=np.int16))
               for r in got[:n])
    assert all(r["scale"] is None and r["label"] == "t" for r in got[n:])
    assert [r["label"] for r in got[:n]] == [label(i) for i in range(n)]
    # float32 keeps its text-format value even when fetched with blobs (binary results)
    assert {r["scale"] for r in got[:n]} == {0.1}
    w = (Seg.ROI & {"image_id": 0}).fetch("w", order_by="roi")
    assert len(w) == n and all(np.array_equal(a, b) for a, b in zip(w, weights))
    assert all(a.flags.writeable for a in w)


def test_batch_errors_name_the_first_bad_row_in_row_order(schema):
    Image, _, _ = declare(schema, 1)
    batch = rows(40)
    batch[30]["image"] = object()  # a later row: bad blob
    batch[20]["image_id"] = 2**40  # the first bad row: out of range
    with pytest.raises(mp.DataError, match="image_id") as info:
        Image.insert(batch)
    assert "out of range" in str(info.value)
    batch[20]["image_id"] = 20
    with pytest.raises(mp.DataError, match=r"\.image"):
        Image.insert(batch)
    batch = rows(40)
    batch[33]["image_id"] = 5
    with pytest.raises(mp.DuplicateError, match="rows 5 and 33"):
        Image.insert(batch)
    Image.insert(batch, skip_duplicates=True)
    assert len(Image) == 39
    batch = rows(20)
    batch[17] = {**batch[17], "extra": 1}
    with pytest.raises(mp.DataError, match="unknown attribute 'extra' in row 17"):
        Image.insert(batch)
    assert len(Image) == 39


def test_a_failed_entry_leaves_nothing_and_the_connection_usable(schema):
    Image, Seg, _ = declare(schema, 3)
    Image.insert(rows(3))
    entry = compute_entry(Seg, {"image_id": 1})
    # a part row of another (missing) master: refused when the deferred INSERT reaches the server
    entry.rows[Seg.ROI].append((7, 0, blob.pack(np.zeros(2))))
    with pytest.raises(mp.MPError):
        write_entry(entry)
    assert len(Seg) == 0 and len(Seg.ROI) == 0
    assert write_entry(compute_entry(Seg, {"image_id": 1}))
    assert not write_entry(compute_entry(Seg, {"image_id": 1}))  # written meanwhile: skipped
    assert len(Seg) == 1 and len(Seg.ROI) == 3
    Seg.populate()
    assert len(Seg.ROI) == 9


def test_user_transactions_still_see_their_own_rows(schema):
    Image, Seg, _ = declare(schema, 2)
    with schema.transaction():
        Image.insert(rows(3))
        assert len(Image) == 3
        Image.insert(rows(20, start=3))
        assert len(Image & {"image_id": 22}) == 1
    with pytest.raises(mp.DuplicateError), schema.transaction():
        Image.insert(rows(2, start=50))
        Image.insert(rows(2, start=0))
    assert len(Image) == 23


def test_restricted_queries_are_reused_with_fresh_values(schema):
    Image, _, _ = declare(schema, 1)
    Image.insert(rows(5))
    for i in range(5):
        assert (Image & {"image_id": i}).fetch1("label") == label(i)
        assert len(Image - {"image_id": i}) == 4
        assert bool(Image & {"image_id": i, "label": label(i)})
        assert not (Image & {"image_id": i, "label": "nope"})
        assert len(Image & {"scale": None}) == 0
    with pytest.raises(mp.QueryError, match="invalid restriction"):
        bool(Image & {"image_id": "x"})


KEY_VALUES = {
    "int32": [0, -7, 2**31 - 1],
    "int64": [2**40, -(2**40), 3],
    "varchar(32)": ["a", "it's", "ünï ☃", "", "x|y,z", "semi;colon -- DROP"],
    "float64": [0.5, -1e300, 3.25],
    "bool": [True, False],
    "date": [dt.date(2026, 11, 24), dt.date(1970, 1, 1)],
    "datetime": [dt.datetime(2026, 11, 24, 12, 30, 1), dt.datetime(2000, 1, 1)],
    "uuid": [uuid.UUID(int=1), uuid.UUID(int=2**127)],
    "decimal(8,2)": [Decimal("1.25"), Decimal("-999.99")],
}


@pytest.mark.parametrize("sqltype", list(KEY_VALUES))
def test_many_keys_restrict_like_their_or(schema, sqltype):
    """``Table & [{"k": v1}, {"k": v2}, ...]`` (one array parameter on PostgreSQL, an IN list on
    SQLite) selects exactly what the OR of the dicts selects, for every key type."""
    @schema
    class Item(mp.Manual):
        definition = f"""
        k : {sqltype}
        ---
        n : int
        """

    values = KEY_VALUES[sqltype]
    Item.insert([dict(k=v, n=i) for i, v in enumerate(values)])
    wanted = values[: max(2, len(values) - 1)]
    got = sorted((Item & [{"k": v} for v in wanted]).fetch("n").tolist())
    assert got == list(range(len(wanted)))
    one_by_one = sorted(n for v in wanted for n in (Item & {"k": v}).fetch("n").tolist())
    assert got == one_by_one
    assert len(Item - [{"k": v} for v in wanted]) == len(values) - len(wanted)
    # the same keys again (duplicates) and extra attributes the table lacks change nothing
    assert len(Item & [{"k": v, "other": 1} for v in wanted * 2]) == len(wanted)
    with pytest.raises(mp.QueryError, match="invalid restriction"):
        len(Item & [{"k": wanted[0]}, {"k": object()}])


def test_codec_cached_layouts_still_validate():
    for arr in (np.arange(64.0), np.asfortranarray(np.arange(12.0).reshape(3, 4)),
                np.arange(12, dtype="<i2").reshape(3, 4), np.array(2.5), np.array(["ab", "c"])):
        data = blob.pack(arr)
        for _ in range(3):  # the second decode uses the cached layout
            out = blob.unpack(data)
            assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)
            assert out.flags.writeable and out.flags.f_contiguous == arr.flags.f_contiguous
        with pytest.raises(mp.BlobError):
            blob.unpack(data[:-1])
        with pytest.raises(mp.BlobError):
            blob.unpack(data + b"\0")
    view = blob.unpack(bytearray(blob.pack(np.arange(4.0))))  # writable input: zero-copy view
    assert view.base is not None and view.flags.writeable
