"""DataJoint's ``tests/integration/test_blob.py`` intents, through a table on both backends.

Differences (README "For DataJoint users"): structured/record arrays and ``range`` objects are
refused with a ``BlobError`` naming the table and attribute (nothing is written); DataJoint's own
``mYm`` blobs (its ``test_insert_longblob_32bit``) are not read; the datetime64 speed comparison
is a timing, not a test here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import numpy as np
import pytest
from assertions import raises_naming
from numpy.testing import assert_array_equal

import mp_dagster as mp
import mp_dagster.blob


def declare(schema):
    @schema
    class Longblob(mp.Manual):
        definition = """
        id : int
        ---
        data = null : blob  # None is stored as NULL (DataJoint: pack(None))
        """

    return Longblob


def roundtrip(table, value):
    table.insert1({"id": 1, "data": value})
    try:
        return (table & {"id": 1}).fetch1("data")
    finally:
        (table & {"id": 1}).delete(prompt=False)


SCALARS = [32, -3.7e-2, np.float64(3e31), -np.inf, np.array(-3).astype(np.uint8),
           np.array(-1).astype(np.uint8), np.int16(-33), np.array(-33).astype(np.uint16), np.int32(-3),
           np.array(-1).astype(np.uint32), np.int64(373), np.array(-3).astype(np.uint64)]


def test_pack(schema):
    """test_pack: scalars, arrays, containers, UUID, Decimal, datetimes keep value and type."""
    t = declare(schema)
    rng = np.random.default_rng(0)
    for x in SCALARS:
        assert roundtrip(t, x) == pytest.approx(x, rel=1e-6)
    assert np.isnan(roundtrip(t, np.nan))
    for x in (rng.standard_normal((8, 10)), rng.standard_normal(10), np.float32(rng.standard_normal((3, 4, 5))),
              np.int16(rng.standard_normal((1, 2, 3)))):
        y = roundtrip(t, x)
        assert_array_equal(x, y)
        assert y.dtype == x.dtype
    assert roundtrip(t, None) is None
    for x, kind in ((-255, int), (-25523987234234287910987234987098245697129798713407812347, int),
                    (7.0, float), (7j, complex)):
        y = roundtrip(t, x)
        assert x == y and type(y) is kind
    assert roundtrip(t, True) is True
    assert roundtrip(t, [None]) == [None]
    now = datetime.now()
    x = {"name": "Anonymous", "age": 15, 99: now, "range": [110, 190], (11, 12): None}
    y = roundtrip(t, x)
    assert y == x and not isinstance(y["range"][0], np.ndarray)
    for x in (uuid.uuid4(), Decimal("-112122121.000003000"), [1, now, {1: "one", "two": 2}, (1, 2)],
              (1, now, {1: "one", "two": 2}, (uuid.uuid4(), 2)), {"elephant"}, Decimal("1.24"), now,
              np.bool_(True), "test", np.datetime64("1998").astype("datetime64[us]")):
        assert roundtrip(t, x) == x
    x = (1, {now.date(): "today", "now": now.date()}, {"yes!": [1, 2, np.array((3, 4))]})
    y = roundtrip(t, x)
    assert y[1] == x[1]
    assert_array_equal(y[2]["yes!"][2], x[2]["yes!"][2])
    assert_array_equal(roundtrip(t, np.array(["yes"])), np.array(["yes"]))
    # DataJoint packs range(10) as a tuple; here: store tuple(range(10)) (see below)
    assert roundtrip(t, tuple(range(10))) == tuple(range(10))


@pytest.mark.parametrize("value", [
    np.array([(1.0, 2), (3.0, 4)], dtype=[("x", float), ("y", int)]),
    np.array([(1.0, 2), (3.0, 4)], dtype=[("x", float), ("y", int)]).view(np.recarray),
    np.array([(3, 4)], dtype=[("tmp0", float), ("tmp1", "O")]).view(np.recarray),
    range(10),
], ids=["structured", "recarray", "recarray-object", "range"])
def test_recarrays_and_ranges_are_refused_by_name(schema, value):
    """test_recarrays / range in test_pack: refused, naming table and attribute; nothing written."""
    t = declare(schema)
    with raises_naming(mp.BlobError, f"{t.full_name}.data", ("dtype", "range")):
        t.insert([{"id": 0, "data": np.zeros(2)}, {"id": 1, "data": value}])
    assert len(t) == 0
    # the documented way: a dict of the fields, or the range as a tuple / array
    if isinstance(value, np.ndarray):
        t.insert1({"id": 2, "data": {name: value[name] for name in value.dtype.names}})
        back = (t & {"id": 2}).fetch1("data")
        for name in value.dtype.names:
            assert_array_equal(back[name], value[name])
    else:
        t.insert1({"id": 2, "data": np.arange(10)})
        assert_array_equal((t & {"id": 2}).fetch1("data"), np.arange(10))


def test_object_arrays(schema):
    t = declare(schema)
    x = np.array(((1, 2, 3), True), dtype="object")
    assert_array_equal(roundtrip(t, x), x)


def test_complex(schema):
    t = declare(schema)
    rng = np.random.default_rng(1)
    for z in (rng.standard_normal((8, 10)) + 1j * rng.standard_normal((8, 10)),
              rng.standard_normal(10) + 1j * rng.standard_normal(10),
              np.float32(rng.standard_normal((3, 4, 5))) + 1j * np.float32(rng.standard_normal((3, 4, 5))),
              np.int16(rng.standard_normal((1, 2, 3))) + 1j * np.int16(rng.standard_normal((1, 2, 3)))):
        y = roundtrip(t, z)
        assert_array_equal(y, z)
        assert y.dtype == z.dtype


def test_insert_longblob(schema):
    t = declare(schema)
    t.insert1({"id": 1, "data": [1, 2, 3]})
    assert (t & {"id": 1}).fetch1() == {"id": 1, "data": [1, 2, 3]}
    (t & {"id": 1}).delete(prompt=False)
    t.insert1({"id": 1, "data": np.array([1, 2, 3])})
    assert_array_equal((t & {"id": 1}).fetch1()["data"], np.array([1, 2, 3]))


def test_datajoint_blobs_are_refused(schema):
    """test_insert_longblob_32bit stores DataJoint's mYm bytes with raw SQL: reading such bytes
    here is refused with a clear error (our format is our own, and never pickle)."""
    mym = bytes.fromhex("6D596D00530200000001000000010000000400000068697473")
    with pytest.raises(mp.BlobError, match="DataJoint"):
        mp.blob.unpack(mym)
