"""Working with rows (DESIGN §1 "Working with rows"): inserting, bad input, and fetching.

Bad input (unknown attribute, missing key attribute, wrong type, NULL where not allowed,
duplicate key, missing parent) gets an error naming the table and the attribute, and nothing is
written: a multi-row insert with one bad row writes none. Every test runs on both backends.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid

import numpy as np
import pytest
from assertions import attribute_ref, raises_naming
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mp_dagster as mp

# --- helpers ----------------------------------------------------------------------------------


def declare_sample(schema):
    @schema
    class Sample(mp.Manual):
        definition = """
        # samples with typed attributes
        sample_id : int
        name : varchar(8)
        ---
        small : tinyint
        count : uint8
        level : enum('low', 'high')
        weight : float64
        taken = null : date
        note = null : varchar(20)
        """

    return Sample


def good_sample(i: int) -> dict:
    return {
        "sample_id": i,
        "name": f"s{i}",
        "small": i % 100 - 50,
        "count": i % 256,
        "level": "low" if i % 2 else "high",
        "weight": i / 4,
    }


# --- inserting ----------------------------------------------------------------------------------


def test_insert1_and_insert_dicts(schema):
    Sample = declare_sample(schema)
    Sample.insert1(good_sample(0))
    Sample.insert([good_sample(i) for i in range(1, 4)])
    Sample().insert1({**good_sample(4), "taken": dt.date(2024, 1, 2), "note": "n"})
    Sample.insert([])  # nothing to do
    assert len(Sample) == 5
    row = (Sample & {"sample_id": 4}).fetch1()
    assert row == {**good_sample(4), "taken": dt.date(2024, 1, 2), "note": "n"}
    assert (Sample & {"sample_id": 2}).fetch1() == {**good_sample(2), "taken": None, "note": None}
    assert Sample.fetch("sample_id").tolist() == [0, 1, 2, 3, 4]


def test_insert_tuples_in_attribute_order(schema):
    Sample = declare_sample(schema)
    assert Sample.heading.names == [
        "sample_id",
        "name",
        "small",
        "count",
        "level",
        "weight",
        "taken",
        "note",
    ]
    Sample.insert1((1, "a", -1, 2, "low", 0.5, dt.date(2020, 5, 6), None))
    Sample.insert(
        [(2, "b", 3, 4, "high", 1.5, None, "x"), [3, "c", 5, 6, "low", 2.5, "2021-01-01", "y"]]
    )
    assert Sample.fetch(as_dict=True) == [
        {"sample_id": 1, "name": "a", "small": -1, "count": 2, "level": "low", "weight": 0.5,
         "taken": dt.date(2020, 5, 6), "note": None},
        {"sample_id": 2, "name": "b", "small": 3, "count": 4, "level": "high", "weight": 1.5,
         "taken": None, "note": "x"},
        {"sample_id": 3, "name": "c", "small": 5, "count": 6, "level": "low", "weight": 2.5,
         "taken": dt.date(2021, 1, 1), "note": "y"},
    ]  # fmt: skip
    table = f"{schema.name}.sample"
    with raises_naming(mp.DataError, table):
        Sample.insert1((4, "d", 1, 1, "low"))  # too few values
    with raises_naming(mp.DataError, table):
        Sample.insert1((4, "d", 1, 1, "low", 1.0, None, None, "extra"))
    assert len(Sample) == 3


def test_insert_with_foreign_key_tuple_order(schema):
    @schema
    class Subject(mp.Manual):
        definition = """
        subject : varchar(10)
        """

    @schema
    class Session(mp.Manual):
        definition = """
        session : int
        -> Subject
        ---
        duration : float64
        """

    assert Session.heading.names == ["session", "subject", "duration"]
    Subject.insert1(("m1",))
    Session.insert1((1, "m1", 3.5))
    assert Session.fetch1() == {"session": 1, "subject": "m1", "duration": 3.5}


def test_insert_numpy_structured_records(schema):
    @schema
    class Point(mp.Manual):
        definition = """
        point_id : int
        ---
        x : float64
        y : float64
        label : varchar(10)
        """

    records = np.array(
        [(1, 0.5, 1.5, "a"), (2, 2.5, 3.5, "b"), (3, -1.0, 0.0, "c")],
        dtype=[("point_id", "i8"), ("x", "f8"), ("y", "f4"), ("label", "U10")],
    )
    Point.insert(records[:2])
    Point.insert1(records[2])
    assert len(Point) == 3
    assert Point.fetch(as_dict=True) == [
        {"point_id": 1, "x": 0.5, "y": 1.5, "label": "a"},
        {"point_id": 2, "x": 2.5, "y": 3.5, "label": "b"},
        {"point_id": 3, "x": -1.0, "y": 0.0, "label": "c"},
    ]

    @schema
    class PointCopy(mp.Manual):
        definition = """
        point_id : int
        ---
        x : float64
        y : float64
        label : varchar(10)
        """

    fetched = Point.fetch()
    PointCopy.insert(fetched)  # what fetch() returns goes back in
    PointCopy.insert1((Point & {"point_id": 3}).fetch1(), skip_duplicates=True)
    assert PointCopy.fetch(as_dict=True) == Point.fetch(as_dict=True)

    bad = np.array([(9, 1.0, 1.0, "x", 5)], dtype=[("point_id", "i8"), ("x", "f8"), ("y", "f8"),
                                                    ("label", "U1"), ("bogus", "i4")])  # fmt: skip
    with raises_naming(mp.DataError, f"{schema.name}.point", "bogus"):
        Point.insert(bad)
    Point.insert(bad, ignore_extra_fields=True)
    assert (Point & {"point_id": 9}).fetch1("label") == "x"


def test_insert_rows_of_a_query(schema):
    @schema
    class Source(mp.Manual):
        definition = """
        n : int
        ---
        square : int
        """

    @schema
    class Target(mp.Manual):
        definition = """
        n : int
        ---
        square : int
        """

    Source.insert([(i, i * i) for i in range(10)])
    Target.insert(Source & [{"n": 2}, {"n": 3}])
    Target.insert(Source - Target)
    assert Target.fetch(as_dict=True) == Source.fetch(as_dict=True)


@pytest.mark.parametrize("n_rows", [3, 100])
def test_bulk_insert_of_typed_rows_round_trips(schema, n_rows):
    @schema
    class Bulk(mp.Manual):
        definition = """
        id : int64
        ---
        a : int8
        b : int16
        c : uint8
        d : uint16
        e : uint32
        f : float32
        g : float64
        h : bool
        i : date
        j : datetime
        k : uuid
        m : longblob
        n : bytes
        o = null : int32
        """

    rows = [
        {
            "id": 2**40 + r,
            "a": r % 128 - 64,
            "b": -r,
            "c": r % 256,
            "d": 65535 - r,
            "e": 2**32 - 1 - r,
            "f": r + 0.5,
            "g": r / 3,
            "h": r % 2 == 0,
            "i": dt.date(2000, 1, 1) + dt.timedelta(days=r),
            "j": dt.datetime(2000, 1, 1, 0, 0, 0, r),
            "k": uuid.UUID(int=r),
            "m": np.full((2, 2), r, dtype=np.int32),
            "n": bytes([r % 256]) * 3,
            "o": r if r % 3 else None,
        }
        for r in range(n_rows)
    ]
    Bulk.insert(rows)
    got = Bulk.fetch(as_dict=True)
    assert len(got) == n_rows
    for want, row in zip(rows, got):
        blob = row.pop("m")
        np.testing.assert_array_equal(blob, want["m"])
        assert blob.dtype == np.int32
        assert row == {k: v for k, v in want.items() if k != "m"}
        assert type(row["h"]) is bool and type(row["k"]) is uuid.UUID and type(row["n"]) is bytes


def test_numpy_and_python_scalar_spellings_are_accepted(schema):
    @schema
    class Scalars(mp.Manual):
        definition = """
        id : int
        ---
        n : int16
        x : float64
        flag : bool
        label : varchar(10)
        at : datetime
        """

    Scalars.insert1(
        {
            "id": np.int64(1),
            "n": np.uint8(7),
            "x": np.float32(0.5),
            "flag": np.bool_(True),
            "label": np.str_("np"),
            "at": np.datetime64("2020-01-02T03:04:05"),
        }
    )
    Scalars.insert1(
        {
            "id": 2.0,  # an integral float is an integer
            "n": 3,
            "x": 2,  # an int is a number
            "flag": 0,
            "label": "py",
            "at": dt.datetime(2020, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        }
    )
    assert Scalars.fetch(as_dict=True) == [
        {
            "id": 1,
            "n": 7,
            "x": 0.5,
            "flag": True,
            "label": "np",
            "at": dt.datetime(2020, 1, 2, 3, 4, 5),
        },
        {
            "id": 2,
            "n": 3,
            "x": 2.0,
            "flag": False,
            "label": "py",
            "at": dt.datetime(2020, 1, 2, 3, 4, 5),
        },
    ]
    with raises_naming(
        mp.DataError, f"{schema.name}.scalars", attribute_ref(f"{schema.name}.scalars", "flag")
    ):
        Scalars.insert1({"id": 3, "n": 1, "x": 1.0, "flag": 2, "label": "x", "at": "2020-01-01"})


def test_insert_a_single_row_with_insert_is_refused(schema):
    Sample = declare_sample(schema)
    with raises_naming(mp.DataError, f"{schema.name}.sample", "insert1"):
        Sample.insert(good_sample(1))
    with raises_naming(mp.DataError, f"{schema.name}.sample"):
        Sample.insert(["not a row"])
    with raises_naming(mp.DataError, f"{schema.name}.sample"):
        Sample.insert([42])
    assert len(Sample) == 0


def test_skip_duplicates(schema):
    Sample = declare_sample(schema)
    Sample.insert1({**good_sample(1), "note": "original"})
    Sample.insert(
        [{**good_sample(1), "note": "replacement"}, good_sample(2), good_sample(2), good_sample(3)],
        skip_duplicates=True,
    )
    assert Sample.fetch("sample_id").tolist() == [1, 2, 3]
    assert (Sample & {"sample_id": 1}).fetch1("note") == "original"  # not overwritten
    Sample.insert1({**good_sample(1), "note": "again"}, skip_duplicates=True)
    assert (Sample & {"sample_id": 1}).fetch1("note") == "original"
    # many rows (PostgreSQL's bulk path) with duplicates against existing rows
    Sample.insert([good_sample(i) for i in range(100)], skip_duplicates=True)
    assert len(Sample) == 100


def test_ignore_extra_fields(schema):
    Sample = declare_sample(schema)
    table = f"{schema.name}.sample"
    with raises_naming(mp.DataError, table, attribute_ref(table, "colour")):
        Sample.insert1({**good_sample(1), "colour": "red"})
    Sample.insert1({**good_sample(1), "colour": "red", "other": None}, ignore_extra_fields=True)
    Sample.insert([{**good_sample(i), "colour": i} for i in (2, 3)], ignore_extra_fields=True)
    assert Sample.fetch("sample_id").tolist() == [1, 2, 3]
    assert "colour" not in Sample.fetch(as_dict=True)[0]
    # extra fields are ignored, missing ones are still missing
    with raises_naming(mp.DataError, table, attribute_ref(table, "name")):
        Sample.insert1({"sample_id": 9, "colour": "red"}, ignore_extra_fields=True)
    assert len(Sample) == 3


# --- bad input ----------------------------------------------------------------------------------

BAD_VALUES = [
    pytest.param({"bogus": 1}, "bogus", id="unknown-attribute"),
    pytest.param({"name": ...}, "name", id="missing-key-attribute"),
    pytest.param({"sample_id": ...}, "sample_id", id="missing-first-key-attribute"),
    pytest.param({"weight": ...}, "weight", id="missing-required-secondary"),
    pytest.param({"small": 300}, "small", id="tinyint-too-big"),
    pytest.param({"small": -129}, "small", id="tinyint-too-small"),
    pytest.param({"count": -1}, "count", id="negative-uint8"),
    pytest.param({"count": 256}, "count", id="uint8-too-big"),
    pytest.param({"sample_id": 2**31}, "sample_id", id="int-too-big"),
    pytest.param({"name": "x" * 9}, "name", id="key-varchar-too-long"),
    pytest.param({"note": "y" * 21}, "note", id="varchar-too-long"),
    pytest.param({"level": "medium"}, "level", id="enum-not-in-list"),
    pytest.param({"level": "LOW"}, "level", id="enum-wrong-case"),
    pytest.param({"small": "5"}, "small", id="str-into-int"),
    pytest.param({"small": 1.5}, "small", id="fraction-into-int"),
    pytest.param({"small": [1]}, "small", id="list-into-int"),
    pytest.param({"sample_id": "1"}, "sample_id", id="str-into-int-key"),
    pytest.param({"note": ["a", "b"]}, "note", id="list-into-varchar"),
    pytest.param({"note": 5}, "note", id="int-into-varchar"),
    pytest.param({"name": b"bytes"}, "name", id="bytes-into-varchar"),
    pytest.param({"note": "a\x00b"}, "note", id="nul-in-string"),
    pytest.param({"name": "a\ud800"}, "name", id="lone-surrogate-in-key"),
    pytest.param({"note": "\udfff"}, "note", id="lone-surrogate-in-string"),
    pytest.param({"weight": "heavy"}, "weight", id="str-into-float"),
    pytest.param({"weight": None}, "weight", id="none-into-non-nullable"),
    pytest.param({"small": None}, "small", id="none-into-non-nullable-int"),
    pytest.param({"sample_id": None}, "sample_id", id="none-into-key"),
    pytest.param({"name": None}, "name", id="none-into-varchar-key"),
    pytest.param({"taken": "yesterday"}, "taken", id="bad-date-string"),
    pytest.param({"taken": dt.datetime(2020, 1, 1, 12)}, "taken", id="datetime-into-date"),
    pytest.param({"taken": 20200101}, "taken", id="int-into-date"),
]


def _bad_row(i: int, change: dict) -> dict:
    row = good_sample(i)
    for k, v in change.items():
        if v is ...:
            row.pop(k)
        else:
            row[k] = v
    return row


@pytest.mark.parametrize(("change", "attribute"), BAD_VALUES)
def test_bad_value_is_refused_naming_table_and_attribute(schema, change, attribute):
    Sample = declare_sample(schema)
    table = f"{schema.name}.sample"
    with raises_naming(mp.DataError, table, attribute_ref(table, attribute)) as info:
        Sample.insert1(_bad_row(0, change))
    assert isinstance(info.value, mp.MPError)
    assert len(Sample) == 0

    # a 100-row insert whose 57th row is bad writes nothing
    rows = [good_sample(i) for i in range(100)]
    rows[56] = _bad_row(56, change)
    with raises_naming(mp.DataError, table, attribute_ref(table, attribute)):
        Sample.insert(rows)
    assert len(Sample) == 0

    # the same as tuples in attribute order, where the bad input can be expressed that way
    if all(v is not ... for v in change.values()) and attribute in Sample.heading.names:
        names = Sample.heading.names
        as_tuples = [tuple(r.get(n) for n in names) for r in rows]
        with raises_naming(mp.DataError, table, attribute_ref(table, attribute)):
            Sample.insert(as_tuples)
        assert len(Sample) == 0

    rows[56] = good_sample(56)
    Sample.insert(rows)
    assert len(Sample) == 100


def test_nan_in_primary_key_is_refused(schema):
    @schema
    class Measure(mp.Manual):
        definition = """
        x : float64
        ---
        y : float64
        """

    table = f"{schema.name}.measure"
    with raises_naming(mp.DataError, table, attribute_ref(table, "x"), "NaN"):
        Measure.insert1({"x": float("nan"), "y": 1.0})
    with raises_naming(mp.DataError, table, attribute_ref(table, "x")):
        Measure.insert([{"x": float(i), "y": 0.0} for i in range(56)] + [{"x": np.nan, "y": 0.0}])
    assert len(Measure) == 0
    Measure.insert1({"x": 1.5, "y": float("inf")})
    assert Measure.fetch1() == {"x": 1.5, "y": math.inf}


def test_nan_in_a_secondary_float_round_trips(schema, request):

    @schema
    class Reading(mp.Manual):
        definition = """
        reading_id : int
        ---
        value : float64
        spare = null : float64
        """

    Reading.insert1({"reading_id": 1, "value": float("nan"), "spare": float("nan")})
    row = Reading.fetch1()
    assert math.isnan(row["value"]) and math.isnan(row["spare"])


def test_out_of_range_for_core_and_classic_types(schema):
    @schema
    class Ranges(mp.Manual):
        definition = """
        id : int
        ---
        a = 0 : int8
        b = 0 : uint16
        c = 0 : int unsigned
        d = 0 : bigint
        e = 0 : uint64
        f = 0 : float32
        g = 0 : decimal(4,2)
        h = 'ab' : char(2)
        """

    table = f"{schema.name}.ranges"
    for attr, value in [
        ("a", 128),
        ("a", -129),
        ("b", 65536),
        ("b", -1),
        ("c", 2**32),
        ("d", 2**63),
        ("e", -1),
        ("e", 2**64),
        ("f", 1e39),
        ("g", 100),
        ("g", "abc"),
        ("h", "abc"),
    ]:
        with raises_naming(mp.DataError, table, attribute_ref(table, attr)):
            Ranges.insert1({"id": 1, attr: value})
    assert len(Ranges) == 0
    Ranges.insert1({"id": 1, "a": -128, "b": 65535, "c": 2**32 - 1, "d": 2**63 - 1, "e": 2**63 - 1,
                    "f": 3.0e38, "g": "99.99", "h": "xy"})  # fmt: skip
    row = Ranges.fetch1()
    assert (row["a"], row["b"], row["c"], row["d"], row["e"]) == (
        -128,
        65535,
        2**32 - 1,
        2**63 - 1,
        2**63 - 1,
    )
    assert str(row["g"]) == "99.99" and row["h"] == "xy"


def test_equal_values_spelled_differently_are_one_key(schema):
    @schema
    class Spelled(mp.Manual):
        definition = """
        amount : decimal(5,2)
        day : date
        token : uuid
        """

    key = {"amount": "-0", "day": "2020-01-02", "token": "12345678-1234-5678-1234-567812345678"}
    Spelled.insert1(key)
    same = {"amount": 0, "day": dt.date(2020, 1, 2), "token": uuid.UUID(key["token"])}
    with raises_naming(mp.DuplicateError, f"{schema.name}.spelled"):
        Spelled.insert1(same)
    with raises_naming(mp.DuplicateError, f"{schema.name}.spelled"):
        Spelled.insert([{**same, "amount": "0.001"}, {**same, "amount": "0.00"}])  # both round to 0
    assert len(Spelled) == 1
    assert len(Spelled & same) == 1 and len(Spelled & key) == 1
    row = Spelled.fetch1()
    assert row == {
        "amount": decimal.Decimal("0.00"),
        "day": dt.date(2020, 1, 2),
        "token": same["token"],
    }


def test_duplicate_key_within_one_batch(schema):
    Sample = declare_sample(schema)
    table = f"{schema.name}.sample"
    rows = [good_sample(i) for i in range(100)]
    rows[56] = good_sample(3)
    with raises_naming(mp.DuplicateError, table, "sample_id", "name") as info:
        Sample.insert(rows)
    assert isinstance(info.value, mp.DataError)
    assert len(Sample) == 0


@pytest.mark.parametrize("n_rows", [1, 5, 100])
def test_duplicate_key_against_an_existing_row(schema, n_rows):
    @schema
    class Counter(mp.Manual):
        definition = """
        counter_id : int
        ---
        value : int
        """

    table = f"{schema.name}.counter"
    Counter.insert1({"counter_id": 3, "value": -1})
    rows = [{"counter_id": 1000 + i, "value": i} for i in range(n_rows)]
    rows[min(56, n_rows - 1)] = {"counter_id": 3, "value": 0}
    with raises_naming(mp.DuplicateError, table, "counter_id") as info:
        Counter.insert(rows)
    assert isinstance(info.value, mp.MPError)
    assert Counter.fetch(as_dict=True) == [{"counter_id": 3, "value": -1}]

    Sample = declare_sample(schema)
    Sample.insert1(good_sample(3))
    rows = [good_sample(i) for i in range(4, 4 + n_rows)]
    rows[min(56, n_rows - 1)] = {**good_sample(3), "note": "again"}
    with raises_naming(mp.DuplicateError, f"{schema.name}.sample", "sample_id"):
        Sample.insert(rows)
    assert Sample.fetch("sample_id").tolist() == [3]


@pytest.mark.parametrize("key_type", ["varchar(16)", "int"])
@pytest.mark.parametrize("n_rows", [1, 5, 100])
def test_missing_parent_is_refused(schema, n_rows, key_type):
    @schema
    class Animal(mp.Manual):
        definition = f"""
        animal : {key_type}
        """

    @schema
    class Weighing(mp.Manual):
        definition = """
        -> Animal
        day : int
        ---
        grams : float64
        """

    names = ["a", "b", "zebra"] if key_type.startswith("varchar") else [1, 2, 99]
    Animal.insert([{"animal": names[0]}, {"animal": names[1]}])
    rows = [{"animal": names[i % 2], "day": i, "grams": 20.0} for i in range(n_rows)]
    rows[min(56, n_rows - 1)] = {"animal": names[2], "day": 56, "grams": 1.0}
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.weighing", f"{schema.name}.animal", "animal"
    ) as info:
        Weighing.insert(rows)
    assert isinstance(info.value, mp.DataError)
    assert repr(names[2]) in str(info.value)  # the missing value
    assert len(Weighing) == 0


def test_missing_parent_of_a_composite_foreign_key(schema):
    @schema
    class Session(mp.Manual):
        definition = """
        subject : int
        session : int
        """

    @schema
    class Scan(mp.Manual):
        definition = """
        scan : int
        ---
        -> Session
        """

    Session.insert([(1, 1), (2, 2)])
    Scan.insert1({"scan": 1, "subject": 1, "session": 1})
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.scan", f"{schema.name}.session", "subject"
    ):
        Scan.insert1({"scan": 2, "subject": 1, "session": 2})  # both values exist, not together
    assert len(Scan) == 1


def test_bad_rows_inside_a_transaction(schema, request):
    """A user transaction (master with its parts) with a bad row: an error naming the table,
    and nothing of the transaction is written."""

    @schema
    class Recording(mp.Manual):
        definition = """
        rec_id : int
        """

        class Channel(mp.Part):
            definition = """
            -> master
            channel : int
            """

    Recording.insert1({"rec_id": 1})
    with raises_naming(mp.DuplicateError, f"{schema.name}.recording", "rec_id"):
        with schema.transaction():
            Recording.insert1({"rec_id": 2})
            Recording.insert1({"rec_id": 1})
    with raises_naming(mp.MissingParentError, f"{schema.name}.recording__channel", "rec_id"):
        with schema.transaction():
            Recording.insert1({"rec_id": 3})
            Recording.Channel.insert([{"rec_id": 3, "channel": 0}, {"rec_id": 4, "channel": 0}])
    assert Recording.fetch("rec_id").tolist() == [1]
    assert len(Recording.Channel) == 0


def test_bad_value_inside_a_transaction_writes_nothing(schema):
    @schema
    class Recording(mp.Manual):
        definition = """
        rec_id : int
        """

        class Channel(mp.Part):
            definition = """
            -> master
            channel : uint8
            """

    with raises_naming(mp.DataError, f"{schema.name}.recording__channel", "channel"):
        with schema.transaction():
            Recording.insert1({"rec_id": 1})
            Recording.Channel.insert([{"rec_id": 1, "channel": c} for c in (0, 1, 256)])
    assert len(Recording) == 0 and len(Recording.Channel) == 0
    with schema.transaction():
        Recording.insert1({"rec_id": 1})
        Recording.Channel.insert([{"rec_id": 1, "channel": c} for c in (0, 1, 255)])
    assert len(Recording) == 1 and len(Recording.Channel) == 3


def test_skip_duplicates_does_not_skip_missing_parents(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        """

    @schema
    class Weighing(mp.Manual):
        definition = """
        -> Animal
        day : int
        """

    Animal.insert1((1,))
    Weighing.insert1((1, 1))
    with raises_naming(mp.MissingParentError, f"{schema.name}.weighing", "animal_id"):
        Weighing.insert([(1, 1), (1, 2), (2, 1)], skip_duplicates=True)
    assert Weighing.fetch(as_dict=True) == [{"animal_id": 1, "day": 1}]


# --- direct inserts -------------------------------------------------------------------------------


def declare_pipeline(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        """

        class Tag(mp.Part):
            definition = """
            -> master
            tag : varchar(16)
            """

    @schema
    class Segmentation(mp.Computed):
        definition = """
        -> Image
        ---
        n_rois : int
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi_id : int
            ---
            mask : longblob
            """

        def make(self, key):
            self.insert1({**key, "n_rois": 1})
            self.ROI.insert1({**key, "roi_id": 0, "mask": np.ones(2)})

    @schema
    class Acquisition(mp.Imported):
        definition = """
        acquisition : int
        """

    return Image, Segmentation, Acquisition


def test_direct_insert_into_auto_populated_tables_is_refused(schema):
    Image, Segmentation, Acquisition = declare_pipeline(schema)
    Image.insert1({"image_id": 1, "image": np.zeros(4)})  # Manual: inserts normally
    Image.Tag.insert1({"image_id": 1, "tag": "raw"})  # parts of a Manual master too (DataJoint)
    assert len(Image) == 1 and len(Image.Tag) == 1

    seg = f"{schema.name}.segmentation"
    with raises_naming(mp.DirectInsertError, seg, "allow_direct_insert") as info:
        Segmentation.insert1({"image_id": 1, "n_rois": 1})
    assert isinstance(info.value, mp.MPError)
    with raises_naming(mp.DirectInsertError, f"{seg}__roi", "allow_direct_insert"):
        Segmentation.ROI.insert1({"image_id": 1, "roi_id": 0, "mask": np.ones(2)})
    with raises_naming(mp.DirectInsertError, f"{seg}__roi"):
        Segmentation.ROI().insert([{"image_id": 1, "roi_id": 0, "mask": np.ones(2)}])
    with raises_naming(mp.DirectInsertError, f"{schema.name}.acquisition"):
        Acquisition.insert1({"acquisition": 1})
    assert len(Segmentation) == 0 and len(Segmentation.ROI) == 0 and len(Acquisition) == 0

    Segmentation.insert1({"image_id": 1, "n_rois": 1}, allow_direct_insert=True)
    Segmentation.ROI.insert(
        [{"image_id": 1, "roi_id": 0, "mask": np.ones(2)}], allow_direct_insert=True
    )
    Acquisition.insert1({"acquisition": 1}, allow_direct_insert=True)
    assert Segmentation.fetch1() == {"image_id": 1, "n_rois": 1}
    assert len(Segmentation.ROI) == 1 and len(Acquisition) == 1
    # allow_direct_insert does not bypass validation
    with raises_naming(mp.MissingParentError, seg, f"{schema.name}.image", "image_id"):
        Segmentation.insert1({"image_id": 2, "n_rois": 1}, allow_direct_insert=True)


def test_populate_writes_what_direct_insert_refuses(schema):
    Image, Segmentation, _ = declare_pipeline(schema)
    Image.insert([{"image_id": i, "image": np.zeros(2)} for i in range(3)])
    result = Segmentation.populate()
    assert result["success_count"] == 3
    assert len(Segmentation) == 3 and len(Segmentation.ROI) == 3


# --- values are parameters -----------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE x; --",
    '"; DROP TABLE x; --',
    "Robert'); DROP TABLE students;--",
    "' OR '1'='1",
    "it's",
    '"quoted"',
    "back\\slash",
    "\\'",
    "a|b|c",
    "a,b...c",
    "%s",
    "%(p0)s",
    ":p0",
    "?",
    "$1",
    "{}",
    "--",
    "/* comment */",
    "naïve café ☃ 日本語 🙂",
    "\u2028line\u2029separators\u0085",
    "tab\tnew\nline\r\nreturn",
    "\x01\x02\x1f\x7f",
    " leading and trailing ",
    "",
]


def test_sql_looking_values_round_trip_as_keys(schema):
    @schema
    class Name(mp.Manual):
        definition = """
        name : varchar(64)
        ---
        n : int
        text_value = null : varchar(64)
        """

    rows = [{"name": v, "n": i, "text_value": v} for i, v in enumerate(HOSTILE)]
    Name.insert(rows)
    assert len(Name) == len(HOSTILE)
    assert sorted(Name.fetch("name").tolist()) == sorted(HOSTILE)
    for i, value in enumerate(HOSTILE):
        restricted = Name & {"name": value}
        assert len(restricted) == 1, value
        assert restricted.fetch1() == {"name": value, "n": i, "text_value": value}
        assert (Name & {"text_value": value}).fetch1("n") == i
        assert len(Name - {"name": value}) == len(HOSTILE) - 1
        assert (Name & [{"name": value}, {"name": "no such name"}]).fetch1("n") == i
    assert schema.list_tables() == ["name"]
    Name.insert1({"name": HOSTILE[0], "n": 99}, skip_duplicates=True)
    with raises_naming(mp.DuplicateError, f"{schema.name}.name"):
        Name.insert1({"name": HOSTILE[0], "n": 99})
    assert len(Name) == len(HOSTILE)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
    )
)
def test_any_text_round_trips_as_a_key(schema, value):
    @schema
    class Word(mp.Manual):
        definition = """
        word : varchar(40)
        ---
        length : int
        """

    Word.insert1({"word": value, "length": len(value)}, skip_duplicates=True)
    assert (Word & {"word": value}).fetch1() == {"word": value, "length": len(value)}
    assert value in Word.fetch("word").tolist()
    with raises_naming(
        mp.DataError, f"{schema.name}.word", attribute_ref(f"{schema.name}.word", "word")
    ):
        Word.insert1({"word": value + "x" * (41 - len(value)), "length": 0})


def test_sql_looking_values_in_several_key_attributes(schema):
    @schema
    class Pair(mp.Manual):
        definition = """
        a : varchar(64)
        b : varchar(64)
        """

    @schema
    class Child(mp.Manual):
        definition = """
        -> Pair
        c : int
        """

    pairs = [{"a": x, "b": y} for x, y in zip(HOSTILE, reversed(HOSTILE))]
    Pair.insert(pairs)
    Child.insert([{**p, "c": 1} for p in pairs])
    assert len(Child & Pair) == len(pairs)
    for p in pairs:
        assert (Child & p).fetch1("KEY") == {**p, "c": 1}
    with raises_naming(mp.MissingParentError, f"{schema.name}.child", f"{schema.name}.pair"):
        Child.insert1({"a": "'; DROP TABLE x; --", "b": "missing", "c": 1})


# --- fetching ------------------------------------------------------------------------------------


def declare_images(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        name : varchar(20)
        width : int
        data = null : longblob
        """

    @schema
    class Marked(mp.Manual):
        definition = """
        -> Image
        ---
        reason : varchar(20)
        """

    Image.insert(
        [
            {"image_id": 3, "name": "c", "width": 30, "data": np.arange(3)},
            {"image_id": 1, "name": "a", "width": 10},
            {"image_id": 2, "name": "b", "width": 20, "data": {"k": [1, 2]}},
            {"image_id": 4, "name": "a", "width": 40},
        ]
    )
    Marked.insert([{"image_id": 2, "reason": "blurry"}, {"image_id": 3, "reason": "dark"}])
    return Image, Marked


def test_fetch_variants(schema):
    Image, _ = declare_images(schema)

    records = Image.fetch()
    assert isinstance(records, np.ndarray)
    assert records.dtype.names == ("image_id", "name", "width", "data")
    assert records["image_id"].tolist() == [1, 2, 3, 4]  # ordered by primary key
    assert records["width"].tolist() == [10, 20, 30, 40]
    assert records["name"].tolist() == ["a", "b", "c", "a"]
    assert records[0]["data"] is None
    np.testing.assert_array_equal(records[2]["data"], np.arange(3))

    dicts = Image.fetch(as_dict=True)
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4]
    assert dicts[1] == {"image_id": 2, "name": "b", "width": 20, "data": {"k": [1, 2]}}

    names = Image.fetch("name")
    assert isinstance(names, np.ndarray)
    assert names.tolist() == ["a", "b", "c", "a"]
    widths, ids = Image.fetch("width", "image_id")
    assert widths.tolist() == [10, 20, 30, 40] and ids.tolist() == [1, 2, 3, 4]
    assert Image.fetch("KEY") == [{"image_id": i} for i in (1, 2, 3, 4)]
    assert Image.keys() == Image.fetch("KEY")
    keys, width = (Image & {"image_id": 2}).fetch("KEY", "width")
    assert keys == [{"image_id": 2}] and width.tolist() == [20]
    assert Image.fetch("name", as_dict=True)[0] == {"name": "a"}
    assert Image.fetch("image_id", order_by="width DESC", limit=2).tolist() == [4, 3]
    assert [d["image_id"] for d in Image.fetch(format="dict")] == [1, 2, 3, 4]

    one = Image & {"image_id": 3}
    row = one.fetch1()
    assert row["name"] == "c" and row["width"] == 30
    np.testing.assert_array_equal(row["data"], np.arange(3))
    assert one.fetch1("name") == "c"
    assert one.fetch1("name", "width") == ("c", 30)
    assert one.fetch1("KEY") == {"image_id": 3}

    table = f"{schema.name}.image"
    with raises_naming(mp.QueryError, table, "bogus"):
        Image.fetch("bogus")
    with raises_naming(mp.QueryError, table, "bogus"):
        one.fetch1("bogus")


def test_fetch_of_nothing(schema):
    Image, _ = declare_images(schema)
    empty = Image & {"image_id": 99}
    records = empty.fetch()
    assert isinstance(records, np.ndarray) and len(records) == 0
    assert records.dtype.names == ("image_id", "name", "width", "data")
    assert empty.fetch(as_dict=True) == []
    assert len(empty.fetch("name")) == 0
    names, widths = empty.fetch("name", "width")
    assert len(names) == 0 and len(widths) == 0
    assert empty.fetch("KEY") == []
    assert len(empty) == 0 and not empty
    assert len(Image & []) == 0


def test_fetch_of_container_blobs(schema):
    @schema
    class Holder(mp.Manual):
        definition = """
        id : int
        ---
        value = null : longblob
        """

    values = [[1, 2], [3, 4], None, np.arange(2), (5, 6), {"a": 1}]
    Holder.insert([{"id": i, "value": v} for i, v in enumerate(values)])
    column = Holder.fetch("value")
    assert column.shape == (len(values),)
    records = Holder.fetch()
    for i, v in enumerate(values):
        for got in (column[i], records[i]["value"], Holder.fetch(as_dict=True)[i]["value"]):
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(got, v)
            else:
                assert got == v and type(got) is type(v)


def test_fetch1_needs_exactly_one_row(schema):
    Image, _ = declare_images(schema)
    table = f"{schema.name}.image"
    with raises_naming(mp.MPError, table):
        (Image & {"image_id": 99}).fetch1()
    with raises_naming(mp.MPError, table):
        (Image & {"name": "a"}).fetch1()  # two rows
    with raises_naming(mp.MPError, table):
        (Image & {"name": "a"}).fetch1("width")
    with raises_naming(mp.MPError, table):
        Image.fetch1()  # four rows
    assert (Image & {"name": "a", "width": 40}).fetch1("image_id") == 4


def test_restrictions(schema):
    Image, Marked = declare_images(schema)

    def ids(expr):
        return sorted(expr.fetch("image_id").tolist())

    assert ids(Image & {"image_id": 2}) == [2]
    assert ids(Image & {"name": "a"}) == [1, 4]
    assert ids(Image & {"name": "a", "width": 10}) == [1]
    assert ids(Image & [{"image_id": 1}, {"image_id": 3}, {"image_id": 99}]) == [1, 3]  # OR
    assert ids(Image & [{"name": "a"}, {"width": 20}]) == [1, 2, 4]
    assert ids(Image & []) == []
    assert ids(Image & Marked) == [2, 3]  # semijoin
    assert ids(Image & (Marked & {"reason": "dark"})) == [3]
    assert ids(Image - Marked) == [1, 4]  # antijoin
    assert ids(Image - {"name": "a"}) == [2, 3]
    assert ids(Image - [{"image_id": 1}, {"image_id": 2}]) == [3, 4]
    assert ids((Image & {"name": "a"}) - {"width": 40}) == [1]
    assert ids(Image & {"name": "a"} & {"width": 40}) == [4]
    assert ids(Image & True) == [1, 2, 3, 4]
    assert ids(Image & False) == []
    records = Image.proj("name", "width").fetch()
    assert ids(Image & records[1]) == [2]  # a fetched record restricts like a dict
    assert ids(Image & Image.fetch("KEY")[:2]) == [1, 2]

    assert len(Image) == 4
    assert len(Image & {"name": "a"}) == 2
    assert len(Image - Marked) == 2
    assert bool(Image & {"image_id": 1}) and not (Image & {"image_id": 99})


def test_projection(schema):
    Image, Marked = declare_images(schema)
    keys = Image.proj()
    assert keys.heading.names == ["image_id"]
    assert keys.fetch(as_dict=True) == [{"image_id": i} for i in (1, 2, 3, 4)]
    assert len(keys) == 4
    assert (Image & {"name": "b"}).proj().fetch1() == {"image_id": 2}
    with_name = Image.proj("name")
    assert with_name.heading.names == ["image_id", "name"]
    assert (with_name & {"image_id": 3}).fetch1() == {"image_id": 3, "name": "c"}
    renamed = Image.proj(label="name")
    assert (renamed & {"image_id": 1}).fetch1() == {"image_id": 1, "label": "a"}
    assert sorted((Image - Marked.proj()).fetch("image_id").tolist()) == [1, 4]
    assert sorted((Image & Marked.proj()).fetch("image_id").tolist()) == [2, 3]
    with raises_naming(mp.QueryError, f"{schema.name}.image", "bogus"):
        Image.proj("bogus")


def test_class_level_use(schema):
    Image, Marked = declare_images(schema)
    key = {"image_id": 2}
    assert (Image & key).fetch1("name") == "b"
    assert len(Image) == 4
    assert len(Image.fetch()) == 4
    assert Image.fetch("KEY")[0] == {"image_id": 1}
    assert Image.proj().fetch("image_id").tolist() == [1, 2, 3, 4]
    assert sorted((Image - Marked).fetch("image_id").tolist()) == [1, 4]
    assert sorted((Image & Marked).fetch("image_id").tolist()) == [2, 3]
    assert [r["image_id"] for r in Image] == [1, 2, 3, 4]
    assert (Image() & key).fetch1() == (Image & key).fetch1()
    assert Image.full_name == f"{schema.name}.image"
    assert Image.primary_key == ["image_id"]
    assert (Marked * Image & {"reason": "dark"}).fetch1("name") == "c"


def test_restriction_by_unknown_attributes(schema):
    Image, _ = declare_images(schema)
    table = f"{schema.name}.image"
    with raises_naming(mp.QueryError, table, "bogus"):
        Image & {"bogus": 1}  # noqa: B018
    with raises_naming(mp.QueryError, table, "bogus"):
        Image - {"bogus": 1}  # noqa: B018
    with raises_naming(mp.QueryError, table, "bogus"):
        Image & [{"image_id": 1}, {"bogus": 1}]  # noqa: B018
    # one known attribute: DataJoint restricts by what the table has and ignores the rest
    assert (Image & {"image_id": 2, "bogus": 1}).fetch1("name") == "b"
    assert sorted((Image & {"name": "a", "reason": "x"}).fetch("image_id").tolist()) == [1, 4]
    assert sorted((Image - {"image_id": 2, "bogus": 1}).fetch("image_id").tolist()) == [1, 3, 4]


def test_restriction_with_a_bad_value_or_kind(schema):
    Image, _ = declare_images(schema)
    table = f"{schema.name}.image"
    with raises_naming(mp.QueryError, table, "image_id"):
        len(Image & {"image_id": "not a number"})
    with raises_naming(mp.QueryError, table, "data"):
        Image & {"data": np.arange(3)}  # noqa: B018
    with raises_naming(mp.QueryError, table):
        Image & "image_id = 1"  # noqa: B018 - SQL text is not accepted
    with raises_naming(mp.QueryError, table):
        Image & 42  # noqa: B018
    assert len(Image) == 4


# -- skip_duplicates skips primary-key duplicates only (DataJoint's test_skip_duplicates.py, #1049)


def declare_item(schema):
    @schema
    class Item(mp.Manual):
        definition = """
        item_id : int
        ---
        name : varchar(100)
        email : varchar(100)
        unique index (email)
        """

    Item.insert1(dict(item_id=1, name="Alice", email="alice@example.com"))
    return Item


def test_skip_duplicates_skips_an_existing_primary_key(schema):
    Item = declare_item(schema)
    Item.insert1(dict(item_id=1, name="Bob", email="bob@example.com"), skip_duplicates=True)
    assert (Item & {"item_id": 1}).fetch1() == dict(item_id=1, name="Alice", email="alice@example.com")


@pytest.mark.parametrize("n_rows", [1, 40])  # 40: the batch paths (VALUES lists, COPY fallback)
def test_skip_duplicates_raises_on_a_unique_index_violation_of_a_new_key(schema, n_rows):
    Item = declare_item(schema)
    rows = [dict(item_id=100 + i, name="x", email=f"x{i}@example.com") for i in range(n_rows - 1)]
    rows.append(dict(item_id=2, name="Bob", email="alice@example.com"))
    with pytest.raises(mp.DuplicateError, match=r"item.*email"):
        Item.insert(rows, skip_duplicates=True)
    assert Item.fetch("item_id").tolist() == [1]  # nothing written
    Item.insert([dict(item_id=1, name="B", email="b@example.com"), dict(item_id=3, name="C", email="c@x.org")],
                skip_duplicates=True)
    assert Item.fetch("item_id").tolist() == [1, 3]


def test_bools_into_integer_attributes_are_stored_as_1_and_0(schema):
    """DataJoint stores True/False in integer attributes (its cond_in_a : tinyint contents)."""

    @schema
    class Flag(mp.Manual):
        definition = """
        flag_id : int
        ---
        flag : tinyint
        count : uint8
        """

    Flag.insert([(1, True, np.True_), (2, False, np.False_)])
    Flag.insert([dict(flag_id=i, flag=bool(i % 2), count=i) for i in range(3, 40)])  # batch path
    assert Flag.fetch("flag", limit=2).tolist() == [1, 0]
    assert (Flag & {"flag_id": 1}).fetch1("count") == 1
    assert len(Flag & {"flag": True}) == 20 and len(Flag & {"flag": False}) == 19


@pytest.mark.parametrize("value", [range(4), np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])],
                         ids=["range", "structured-array"])
def test_blob_values_the_codec_refuses_are_named(schema, value):
    """Documented in README "For DataJoint users": convert with list(...) / np.arange, or store
    a structured array's fields as a dict of arrays."""

    @schema
    class Store(mp.Manual):
        definition = """
        store_id : int
        ---
        data : longblob
        """

    with pytest.raises(mp.BlobError, match=r"store\.data: cannot encode"):
        Store.insert1((1, value))
    assert len(Store) == 0
    Store.insert1((1, list(range(4)) if isinstance(value, range) else {n: value[n] for n in value.dtype.names}))
    assert len(Store) == 1
