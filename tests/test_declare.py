"""Declaring tables (DESIGN §1 "Declaring tables"): types, defaults, foreign keys, indexes,
naming, parts, idempotent re-declaration, and malformed definitions.

Every test runs on both backends (the ``schema`` fixture is parametrised by ``db_url``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import numpy as np
import pytest
from assertions import attribute_ref, raises_naming
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mp_dagster as mp

# --- helpers ----------------------------------------------------------------------------------


def assert_same(got: object, want: object) -> None:
    """Same type and value (numpy arrays: same dtype, shape and content)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), type(got)
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want), (type(got), type(want))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert type(got) is dict, type(got)
        assert set(got) == set(want)
        for k in want:
            assert_same(got[k], want[k])
    else:
        assert type(got) is type(want), (type(got), type(want), got)
        assert got == want


# --- every type -------------------------------------------------------------------------------

BIG_UINT64 = "BIG_UINT64"  # placeholder: 2**64 - 1 on PostgreSQL, 2**63 - 1 on SQLite

TYPE_CASES = [
    # classic names
    ("tinyint", -128),
    ("tinyint", 127),
    ("smallint", -32768),
    ("mediumint", 8_388_607),
    ("int", 2**31 - 1),
    ("int", -(2**31)),
    ("integer", 42),
    ("bigint", -(2**63)),
    ("bigint", 2**63 - 1),
    ("tinyint unsigned", 255),
    ("smallint unsigned", 65535),
    ("int unsigned", 2**32 - 1),
    ("bigint unsigned", BIG_UINT64),
    ("float", 1.5),
    ("double", 0.1),
    ("decimal(8,3)", decimal.Decimal("12345.678")),
    ("decimal(8,3)", decimal.Decimal("-0.001")),
    ("numeric(5,2)", decimal.Decimal("999.99")),
    ("varchar(20)", "hello world"),
    ("varchar(20)", ""),
    ("char(4)", "abcd"),
    ("enum('a','b')", "b"),
    ("date", dt.date(2024, 2, 29)),
    ("datetime", dt.datetime(2024, 2, 29, 23, 59, 58, 123456)),
    ("timestamp", dt.datetime(1999, 12, 31, 0, 0, 1)),
    ("bool", True),
    ("bool", False),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("json", {"a": [1, 2.5, None, "x"], "b": {"c": True}}),
    ("json", [1, "two", 3.0]),
    ("blob", np.arange(12, dtype=np.float64).reshape(3, 4)),
    ("mediumblob", [1, "two", 3.0, None, b"\x00\xff"]),
    ("longblob", {"a": np.array([1, 2, 3], dtype=np.int32), "b": (1, 2.5), "c": "text"}),
    # DataJoint 2 core names
    ("int8", -5),
    ("int16", -300),
    ("int32", 70000),
    ("int64", 2**40),
    ("uint8", 255),
    ("uint16", 65535),
    ("uint32", 2**32 - 1),
    ("uint64", BIG_UINT64),
    ("uint64", 0),
    ("float32", -2.25),
    ("float64", 1e300),
    ("bytes", b"\x00\x01\x02\xff"),
    ("<blob>", np.array([[1, 2], [3, 4]], dtype=np.int16)),
]

KEYABLE = {"blob", "mediumblob", "longblob", "<blob>", "bytes", "json"}


def _value_for(value: object, schema: mp.Schema) -> object:
    if isinstance(value, str) and value == BIG_UINT64:
        return 2**64 - 1 if schema.backend.name == "postgres" else 2**63 - 1
    return value


@pytest.mark.parametrize(
    ("sql_type", "value"),
    TYPE_CASES,
    ids=[f"{t}-{i}" for i, (t, _) in enumerate(TYPE_CASES)],
)
def test_every_type_round_trips(schema, sql_type, value):
    value = _value_for(value, schema)

    @schema
    class Typed(mp.Manual):
        definition = f"""
        id : int
        ---
        v : {sql_type}
        n = null : {sql_type}   # nullable by its default
        """

    Typed.insert1({"id": 1, "v": value})
    row = Typed.fetch1()
    assert set(row) == {"id", "v", "n"}
    assert_same(row["v"], value)
    assert row["n"] is None
    assert_same(Typed.fetch1("v"), value)
    assert_same((Typed & {"id": 1}).fetch(as_dict=True)[0]["v"], value)
    column = Typed.fetch("v")
    assert len(column) == 1
    records = Typed.fetch()
    assert records.dtype.names == ("id", "v", "n")
    if isinstance(value, (np.ndarray, list, tuple, dict)):
        assert_same(column[0], value)
        assert_same(records[0]["v"], value)
    else:
        assert column[0] == value
        assert records[0]["v"] == value

    if sql_type not in KEYABLE:

        @schema
        class Keyed(mp.Manual):
            definition = f"""
            k : {sql_type}
            """

        Keyed.insert1({"k": value})
        assert_same(Keyed.fetch1("k"), value)
        assert len(Keyed & {"k": value}) == 1
        assert_same((Keyed & {"k": value}).fetch1("k"), value)


def test_uint64_above_int64_range(schema, request):
    """PostgreSQL stores the whole uint64 range; SQLite's integers stop at 2**63 - 1 and must
    say so with a clear error naming table and attribute (and write nothing)."""

    @schema
    class Counter(mp.Manual):
        definition = """
        id : int
        ---
        count : uint64
        """

    big = 2**64 - 1
    if schema.backend.name == "postgres":
        Counter.insert1({"id": 1, "count": big})
        assert_same(Counter.fetch1("count"), big)
    else:
        with raises_naming(mp.DataError, f"{schema.name}.counter", "count"):
            Counter.insert1({"id": 1, "count": big})
        assert len(Counter) == 0


def test_blob_attributes_hold_plain_python_values(schema):
    @schema
    class Store(mp.Manual):
        definition = """
        id : int
        ---
        data : longblob
        """

    values = [
        np.zeros((0, 3), dtype=np.uint8),
        np.array(["a", "bc"]),
        3,
        2.5,
        "text",
        b"raw",
        [1, [2, [3]]],
        (1, "a"),
        {"nested": {"k": [1, None]}},
        [None],
    ]
    Store.insert([{"id": i, "data": v} for i, v in enumerate(values)])
    for i, v in enumerate(values):
        assert_same((Store & {"id": i}).fetch1("data"), v)
    # a top-level None is NULL, which a non-nullable blob refuses
    with raises_naming(
        mp.DataError, f"{schema.name}.store", attribute_ref(f"{schema.name}.store", "data")
    ):
        Store.insert1({"id": 99, "data": None})
    assert len(Store) == len(values)


# --- defaults, comments, dividers ---------------------------------------------------------------


def test_defaults_apply_when_attribute_omitted(schema):
    @schema
    class Settings(mp.Manual):
        definition = """
        # experiment settings
        id : int                      # the id
        ---
        count = 5 : int               # a number
        label = "text" : varchar(20)
        single = 'it''s' : varchar(20)
        hashed = "a # b: c" : varchar(20)  # quoted '#' and ':' belong to the default
        ratio = 1.5 : float64
        flag = true : bool
        day = "2020-01-02" : date
        level = 'b' : enum('a', 'b')
        note = null : varchar(40)
        created = CURRENT_TIMESTAMP : datetime
        """

    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    Settings.insert1({"id": 1})
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = Settings.fetch1()
    assert row["count"] == 5 and type(row["count"]) is int
    assert row["label"] == "text"
    assert row["single"] == "it's"
    assert row["hashed"] == "a # b: c"
    assert row["ratio"] == 1.5
    assert row["flag"] is True
    assert row["day"] == dt.date(2020, 1, 2)
    assert row["level"] == "b"
    assert row["note"] is None
    assert isinstance(row["created"], dt.datetime)
    assert before <= row["created"] <= after
    assert Settings.heading["note"].nullable
    assert not Settings.heading["count"].nullable

    # explicit values win over defaults; explicit None only where nullable
    Settings.insert1(
        {"id": 2, "count": 7, "label": "other", "note": "n", "created": dt.datetime(2001, 1, 1)}
    )
    row = (Settings & {"id": 2}).fetch1()
    assert (row["count"], row["label"], row["note"], row["created"]) == (
        7,
        "other",
        "n",
        dt.datetime(2001, 1, 1),
    )
    Settings.insert1({"id": 3, "note": None})
    assert (Settings & {"id": 3}).fetch1("note") is None


def test_single_quoted_default_with_doubled_quote(schema):
    @schema
    class Quoted(mp.Manual):
        definition = """
        id : int
        ---
        label = "say \\"hi\\"" : varchar(20)
        """

    Quoted.insert1({"id": 1})
    assert Quoted.fetch1("label") == 'say "hi"'


def test_comments_and_table_comment(schema):
    @schema
    class Commented(mp.Manual):
        definition = """
        # a table of things: with a colon, and a # hash
        thing_id : int     # identifies the thing
        ---
        name : varchar(30) # what it is called: a name
        weight = 2 : int   # grams
        """

    assert Commented.heading["thing_id"].comment == "identifies the thing"
    assert Commented.heading["name"].comment == "what it is called: a name"
    assert Commented.heading["weight"].comment == "grams"
    assert Commented.heading.names == ["thing_id", "name", "weight"]
    text = Commented.describe()
    assert text.splitlines()[0] == "# a table of things: with a colon, and a # hash"
    assert "identifies the thing" in text
    Commented.insert1({"thing_id": 1, "name": "x"})
    assert Commented.fetch1() == {"thing_id": 1, "name": "x", "weight": 2}


@pytest.mark.parametrize(
    "divider", ["---", "----", "-------------------", "---  # secondary below"]
)
def test_divider_of_three_or_more_dashes(schema, divider):
    @schema
    class Divided(mp.Manual):
        definition = f"""
        a : int
        {divider}
        b : int
        """

    assert Divided.primary_key == ["a"]
    assert Divided.heading.secondary == ["b"]
    Divided.insert1({"a": 1, "b": 2})
    assert Divided.fetch1() == {"a": 1, "b": 2}


def test_primary_key_only_without_divider(schema):
    @schema
    class KeyOnly(mp.Manual):
        definition = """
        a : int
        b : varchar(10)
        """

    assert KeyOnly.primary_key == ["a", "b"]
    KeyOnly.insert([(1, "x"), (1, "y")])
    assert len(KeyOnly) == 2


# --- foreign keys and indexes ------------------------------------------------------------------


def test_foreign_keys_in_either_section(schema):
    @schema
    class Subject(mp.Manual):
        definition = """
        subject_id : int
        ---
        name : varchar(20)
        """

    @schema
    class Rig(mp.Lookup):
        definition = """
        rig : varchar(8)
        """
        contents = [("A",), ("B",)]

    @schema
    class Session(mp.Manual):
        definition = """
        -> Subject
        session : int
        ---
        -> Rig
        notes = "" : varchar(100)
        """

    assert Session.primary_key == ["subject_id", "session"]
    assert Session.heading.secondary == ["rig", "notes"]
    assert not Session.heading["rig"].nullable
    assert sorted(Rig.fetch("rig")) == ["A", "B"]

    Subject.insert1({"subject_id": 1, "name": "mouse"})
    Session.insert1({"subject_id": 1, "session": 1, "rig": "A"})
    assert Session.fetch1() == {"subject_id": 1, "session": 1, "rig": "A", "notes": ""}
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.session", f"{schema.name}.subject", "subject_id"
    ):
        Session.insert1({"subject_id": 2, "session": 1, "rig": "A"})
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.session", f"{schema.name}.rig", "rig"
    ):
        Session.insert1({"subject_id": 1, "session": 2, "rig": "Z"})
    with raises_naming(mp.DataError, f"{schema.name}.session", "rig"):
        Session.insert1({"subject_id": 1, "session": 3})  # a secondary FK is required by default
    assert len(Session) == 1


def test_nullable_foreign_key(schema):
    @schema
    class Person(mp.Manual):
        definition = """
        person_id : int
        """

    @schema
    class Task(mp.Manual):
        definition = """
        task_id : int
        ---
        -> [nullable] Person
        title : varchar(40)
        """

    assert Task.heading["person_id"].nullable
    Person.insert1({"person_id": 7})
    Task.insert1({"task_id": 1, "title": "unassigned"})
    Task.insert1({"task_id": 2, "title": "explicit none", "person_id": None})
    Task.insert1({"task_id": 3, "title": "assigned", "person_id": 7})
    assert Task.fetch("person_id").tolist() == [None, None, 7]
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.task", f"{schema.name}.person", "person_id"
    ):
        Task.insert1({"task_id": 4, "title": "ghost", "person_id": 8})
    assert len(Task) == 3


def test_unique_foreign_key(schema):
    @schema
    class Probe(mp.Manual):
        definition = """
        probe : int
        """

    @schema
    class Mount(mp.Manual):
        definition = """
        mount : int
        ---
        -> [unique] Probe
        """

    Probe.insert([{"probe": 1}, {"probe": 2}])
    Mount.insert1({"mount": 1, "probe": 1})
    with raises_naming(mp.DuplicateError, f"{schema.name}.mount"):
        Mount.insert1({"mount": 2, "probe": 1})
    Mount.insert1({"mount": 3, "probe": 2})
    assert Mount.fetch("probe").tolist() == [1, 2]


def test_unique_nullable_foreign_key(schema):
    @schema
    class Slot(mp.Manual):
        definition = """
        slot : int
        """

    @schema
    class Card(mp.Manual):
        definition = """
        card : int
        ---
        -> [nullable, unique] Slot
        """

    Slot.insert1({"slot": 1})
    Card.insert([{"card": 1}, {"card": 2}, {"card": 3, "slot": 1}])  # NULLs do not collide
    with pytest.raises(mp.DuplicateError):
        Card.insert1({"card": 4, "slot": 1})
    assert len(Card) == 3


def test_indexes(schema):
    @schema
    class Cell(mp.Manual):
        definition = """
        cell_id : int
        ---
        x : int
        y : int
        label : varchar(20)
        index(x, y)
        unique index(label)
        """

    Cell.insert([(1, 0, 0, "a"), (2, 0, 0, "b")])  # plain index: repeated values are fine
    with raises_naming(mp.DuplicateError, f"{schema.name}.cell", "label"):
        Cell.insert1((3, 1, 1, "a"))
    with pytest.raises(mp.MPError):
        Cell.insert([(4, 1, 1, "c"), (5, 1, 1, "c")])
    assert sorted(Cell.fetch("label")) == ["a", "b"]


# --- naming -----------------------------------------------------------------------------------


def test_table_names(schema):
    @schema
    class SegmentationParam(mp.Lookup):
        definition = """
        param_id : int
        ---
        threshold : float64
        """
        contents = [(1, 0.5)]

    @schema
    class Segmentation(mp.Manual):
        definition = """
        seg_id : int
        ---
        -> SegmentationParam
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi_id : int
            """

        class CellTrace(mp.Part):
            definition = """
            -> Segmentation
            trace_id : int
            """

    @schema
    class HTTPRequestLog(mp.Manual):
        definition = """
        n : int
        """

    assert SegmentationParam.full_name == f"{schema.name}.segmentation_param"
    assert Segmentation.full_name == f"{schema.name}.segmentation"
    assert Segmentation.ROI.full_name == f"{schema.name}.segmentation__roi"
    assert Segmentation.CellTrace.full_name == f"{schema.name}.segmentation__cell_trace"
    assert HTTPRequestLog.full_name == f"{schema.name}.http_request_log"
    assert schema.list_tables() == sorted(
        [
            "segmentation_param",
            "segmentation",
            "segmentation__roi",
            "segmentation__cell_trace",
            "http_request_log",
        ]
    )
    assert Segmentation.ROI.primary_key == ["seg_id", "roi_id"]
    assert Segmentation.CellTrace.primary_key == ["seg_id", "trace_id"]
    assert Segmentation.ROI.master is Segmentation
    assert set(Segmentation.parts) == {Segmentation.ROI, Segmentation.CellTrace}


@pytest.mark.parametrize(
    "name", ["bad\n", "Bad", "1bad", "bad-name", "bad name", "a__b", "pg_x", "x" * 64, ""]
)
def test_invalid_schema_names_are_refused(db_url, name):
    with pytest.raises(mp.DeclarationError) as info:
        mp.Schema(name, database_url=db_url)
    assert repr(name) in str(info.value) or name in str(info.value)


def test_long_table_names_with_indexes(schema):
    long_name = "A" + "b" * 62  # table name of 63 characters, PostgreSQL's maximum
    first = "A" + "b" * 50 + "First"
    second = "A" + "b" * 50 + "Second"
    for class_name in (long_name, first, second):
        cls = type(class_name, (mp.Manual,), {"definition": "id : int\n---\nx : int\nindex(x)"})
        schema(cls)
        cls.insert1((1, 2))
        assert cls.fetch1() == {"id": 1, "x": 2}
    assert len(schema.list_tables()) == 3


def test_too_long_table_name_is_refused(schema):
    cls = type("A" + "b" * 63, (mp.Manual,), {"definition": "id : int"})
    with raises_naming(mp.DeclarationError, "abbbb", "63"):
        schema(cls)
    assert schema.list_tables() == []


# --- parts ------------------------------------------------------------------------------------


def _fill_array_response(ArrayResponse):
    with ArrayResponse.schema.transaction():
        ArrayResponse.insert1({"array": 1}, allow_direct_insert=True)
        ArrayResponse.ElectrodeResponse.insert(
            [{"array": 1, "electrode": e} for e in (1, 2)], allow_direct_insert=True
        )
        ArrayResponse.ChannelResponse.insert(
            [
                {"array": 1, "electrode": e, "channel": c, "response": np.full(3, e * 10 + c)}
                for e in (1, 2)
                for c in (1, 2, 3)
            ],
            allow_direct_insert=True,
        )


@pytest.mark.parametrize("reference", ["ElectrodeResponse", "ArrayResponse.ElectrodeResponse"])
def test_parts_referencing_parts_of_the_same_master(schema, reference):
    @schema
    class ArrayResponse(mp.Computed):
        definition = """
        array : int
        """

        class ElectrodeResponse(mp.Part):
            definition = """
            -> master
            electrode : int    # electrode number on the probe
            """

        class ChannelResponse(mp.Part):
            definition = f"""
            -> {reference}
            channel : int
            ---
            response : longblob  # response of a channel
            """

        def make(self, key):
            raise NotImplementedError

    name = schema.name
    assert ArrayResponse.ChannelResponse.full_name == f"{name}.array_response__channel_response"
    assert ArrayResponse.ChannelResponse.primary_key == ["array", "electrode", "channel"]
    assert schema.list_tables() == [
        "array_response",
        "array_response__channel_response",
        "array_response__electrode_response",
    ]
    _fill_array_response(ArrayResponse)
    assert len(ArrayResponse.ChannelResponse) == 6
    assert_same(
        (ArrayResponse.ChannelResponse & {"electrode": 2, "channel": 3}).fetch1("response"),
        np.full(3, 23),
    )
    with raises_naming(
        mp.MissingParentError,
        f"{name}.array_response__channel_response",
        f"{name}.array_response__electrode_response",
        "electrode",
    ):
        ArrayResponse.ChannelResponse.insert1(
            {"array": 1, "electrode": 9, "channel": 1, "response": 0}, allow_direct_insert=True
        )


def test_part_declared_before_the_part_it_references(schema):
    @schema
    class ArrayResponse(mp.Computed):
        definition = """
        array : int
        """

        class ChannelResponse(mp.Part):
            definition = """
            -> ElectrodeResponse
            channel : int
            ---
            response : longblob
            """

        class ElectrodeResponse(mp.Part):
            definition = """
            -> master
            electrode : int
            """

    assert ArrayResponse.ChannelResponse.primary_key == ["array", "electrode", "channel"]
    _fill_array_response(ArrayResponse)
    assert len(ArrayResponse.ChannelResponse) == 6


def test_part_declared_before_the_part_it_references_by_dotted_name(schema):
    @schema
    class ArrayResponse(mp.Computed):
        definition = """
        array : int
        """

        class ChannelResponse(mp.Part):
            definition = """
            -> ArrayResponse.ElectrodeResponse
            channel : int
            """

        class ElectrodeResponse(mp.Part):
            definition = """
            -> master
            electrode : int
            """

    assert ArrayResponse.ChannelResponse.primary_key == ["array", "electrode", "channel"]


def test_table_referencing_a_part_of_another_master(schema):
    @schema
    class Segmentation(mp.Manual):
        definition = """
        seg_id : int
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi_id : int
            """

    @schema
    class RoiLabel(mp.Manual):
        definition = """
        -> Segmentation.ROI
        ---
        label : varchar(10)
        """

    assert RoiLabel.primary_key == ["seg_id", "roi_id"]
    Segmentation.insert1((1,))
    Segmentation.ROI.insert([(1, 1), (1, 2)])
    RoiLabel.insert1((1, 2, "soma"))
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.roi_label", f"{schema.name}.segmentation__roi"
    ):
        RoiLabel.insert1((1, 3, "dendrite"))
    assert len(Segmentation.ROI & RoiLabel) == 1


def test_decorating_a_part_is_refused(schema):
    with raises_naming(mp.DeclarationError, "ROI", "Part", "do not decorate"):

        @schema
        class Segmentation(mp.Manual):
            definition = """
            seg_id : int
            """

            @schema
            class ROI(mp.Part):
                definition = """
                -> master
                roi_id : int
                """

    class Orphan(mp.Part):
        definition = """
        x : int
        """

    with raises_naming(mp.DeclarationError, "Orphan", "Part"):
        schema(Orphan)
    assert schema.list_tables() == []


def test_part_with_a_nested_part_is_refused(schema):
    with raises_naming(mp.DeclarationError, "Inner", "part"):

        @schema
        class Outer(mp.Manual):
            definition = """
            outer_id : int
            """

            class Inner(mp.Part):
                definition = """
                -> master
                inner_id : int
                """

                class Innermost(mp.Part):
                    definition = """
                    -> master
                    innermost_id : int
                    """

    assert schema.list_tables() == []


def test_part_without_the_master_key_is_refused(schema):
    with raises_naming(mp.DeclarationError, f"{schema.name}.scan__field", "scan_id", "master"):

        @schema
        class Scan(mp.Manual):
            definition = """
            scan_id : int
            """

            class Field(mp.Part):
                definition = """
                field_id : int
                """

    with raises_naming(mp.DeclarationError, f"{schema.name}.scan__field", "scan_id"):

        @schema
        class Scan(mp.Manual):  # noqa: F811 - a second attempt, a nullable reference to the master
            definition = """
            scan_id : int
            """

            class Field(mp.Part):
                definition = """
                field_id : int
                ---
                -> [nullable] master
                """

    assert schema.list_tables() == []


def test_class_nested_in_a_master_must_be_a_part(schema):
    with raises_naming(mp.DeclarationError, "Nested", "Part"):

        @schema
        class Holder(mp.Manual):
            definition = """
            holder_id : int
            """

            class Nested(mp.Manual):
                definition = """
                nested_id : int
                """

    assert schema.list_tables() == []


def test_part_referencing_a_table_of_another_schema(schema, make_schema):
    other = make_schema("probes")

    @other
    class Probe(mp.Manual):
        definition = """
        probe : varchar(16)
        ---
        channels : int
        """

    @schema
    class Recording(mp.Manual):
        definition = """
        rec_id : int
        """

        class Channel(mp.Part):
            definition = """
            -> master
            -> Probe
            channel : int
            """

    assert Probe.full_name == f"{other.name}.probe"
    assert Recording.Channel.primary_key == ["rec_id", "probe", "channel"]
    assert other.list_tables() == ["probe"]
    assert schema.list_tables() == ["recording", "recording__channel"]
    Probe.insert1({"probe": "np-1", "channels": 384})
    Recording.insert1({"rec_id": 1})
    Recording.Channel.insert([{"rec_id": 1, "probe": "np-1", "channel": c} for c in range(3)])
    assert len(Recording.Channel & Probe) == 3
    with raises_naming(
        mp.MissingParentError, f"{schema.name}.recording__channel", f"{other.name}.probe", "probe"
    ):
        Recording.Channel.insert1({"rec_id": 1, "probe": "np-2", "channel": 0})
    assert len(Recording.Channel) == 3


# --- declaring again ---------------------------------------------------------------------------


def test_redecorating_the_same_class_is_a_noop(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        image : longblob
        """

    Image.insert1({"image_id": 1, "image": np.ones(3)})
    assert schema(Image) is Image
    assert schema(Image) is Image
    assert len(Image) == 1
    assert schema.list_tables() == ["image"]


def test_redecorating_a_master_with_parts_is_a_noop(schema):
    @schema
    class Segmentation(mp.Manual):
        definition = """
        seg_id : int
        """

        class ROI(mp.Part):
            definition = """
            -> master
            roi_id : int
            """

    Segmentation.insert1({"seg_id": 1})
    Segmentation.ROI.insert1({"seg_id": 1, "roi_id": 1})
    schema(Segmentation)
    assert len(Segmentation.ROI) == 1


def test_fresh_identical_class_is_a_noop_and_keeps_rows(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        # images
        image_id : int
        ---
        image : longblob
        taken = CURRENT_TIMESTAMP : datetime
        """

        class Tag(mp.Part):
            definition = """
            -> master
            tag : varchar(20)
            """

    Image.insert1({"image_id": 1, "image": np.ones(3)})
    Image.Tag.insert1({"image_id": 1, "tag": "a"})
    first = Image

    @schema
    class Image(mp.Manual):  # noqa: F811 - the point of the test
        definition = """
        # images
        image_id : int
        ---
        image : longblob
        taken = CURRENT_TIMESTAMP : datetime
        """

        class Tag(mp.Part):
            definition = """
            -> master
            tag : varchar(20)
            """

    assert Image is not first
    assert Image.full_name == first.full_name
    assert len(Image) == 1 and len(Image.Tag) == 1
    assert_same(Image.fetch1("image"), np.ones(3))
    assert schema.list_tables() == ["image", "image__tag"]


def test_redeclaring_with_every_kind_of_default_is_a_noop(schema):
    definition = """
    id : int
    ---
    a = 5 : int
    b = -1.5 : float64
    c = nan : float64
    d = inf : float64
    e = "text" : varchar(10)
    f = '2020-01-02' : date
    g = "2020-01-02 03:04:05" : datetime
    h = CURRENT_TIMESTAMP : timestamp
    i = "1.50" : decimal(4,2)
    j = 2.25 : decimal(4,2)
    k = true : bool
    m = "12345678-1234-5678-1234-567812345678" : uuid
    n = 'b' : enum('a', 'b')
    o = null : longblob
    p = null : json
    """

    for _ in range(3):
        cls = type("Defaults", (mp.Manual,), {"definition": definition})
        schema(cls)
    assert schema.list_tables() == ["defaults"]
    cls.insert1({"id": 1, "c": 0.0})
    row = cls.fetch1()
    assert (
        row["d"] == float("inf")
        and row["i"] == decimal.Decimal("1.50")
        and row["j"] == decimal.Decimal("2.25")
    )
    assert row["g"] == dt.datetime(2020, 1, 2, 3, 4, 5) and isinstance(row["h"], dt.datetime)
    assert row["m"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert row["o"] is None and row["p"] is None and row["k"] is True


def test_spelling_of_a_type_does_not_matter(schema):
    @schema
    class Spelled(mp.Manual):
        definition = """
        a : int
        ---
        b : double
        c : longblob
        """

    Spelled.insert1((1, 2.0, [1]))

    @schema
    class Spelled(mp.Manual):  # noqa: F811
        definition = """
        a : int32
        ---
        b : float64
        c : <blob>
        """

    assert len(Spelled) == 1


def test_comment_only_change_is_accepted(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        # old table comment
        image_id : int   # old
        ---
        width : int      # old
        """

    Image.insert1((1, 640))

    @schema
    class Image(mp.Manual):  # noqa: F811
        definition = """
        # a new table comment
        image_id : int   # the image
        ---
        width : int      # pixels
        """

    assert Image.fetch1() == {"image_id": 1, "width": 640}


@pytest.mark.parametrize(
    ("new_definition", "fragments"),
    [
        pytest.param(
            """
            image_id : int
            ---
            width : int
            height : int
            """,
            ["'height'", "in the class but not in the database"],
            id="added-attribute",
        ),
        pytest.param(
            """
            image_id : int
            """,
            ["'width'", "in the database but not in the class"],
            id="removed-attribute",
        ),
        pytest.param(
            """
            image_id : int
            ---
            width : bigint
            """,
            ["'width'", "type", "int32", "int64"],
            id="changed-type",
        ),
        pytest.param(
            """
            image_id : int
            width : int
            """,
            ["'width'", "primary key"],
            id="changed-key",
        ),
        pytest.param(
            """
            image_id : int
            ---
            width = 5 : int
            """,
            ["'width'", "default"],
            id="added-default",
        ),
        pytest.param(
            """
            image_id : int
            ---
            width = null : int
            """,
            ["'width'", "nullable"],
            id="made-nullable",
        ),
        pytest.param(
            """
            image_id : varchar(10)
            ---
            width : int
            """,
            ["'image_id'", "varchar(10)"],
            id="changed-key-type",
        ),
    ],
)
def test_changed_definition_is_refused_naming_the_difference(schema, new_definition, fragments):
    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        width : int
        """

    original = Image
    Image.insert1((1, 640))

    class Image(mp.Manual):  # noqa: F811
        definition = new_definition

    with raises_naming(mp.DeclarationError, f"{schema.name}.image", *fragments):
        schema(Image)
    # the table and its rows are untouched
    assert original.fetch1() == {"image_id": 1, "width": 640}
    assert schema.list_tables() == ["image"]

    # the same class object re-decorated after its definition was edited
    original.definition = new_definition
    with raises_naming(mp.DeclarationError, f"{schema.name}.image", *fragments):
        schema(original)


def test_changed_part_definition_is_refused(schema):
    @schema
    class Scan(mp.Manual):
        definition = """
        scan_id : int
        """

        class Field(mp.Part):
            definition = """
            -> master
            field : int
            """

    class Scan(mp.Manual):  # noqa: F811
        definition = """
        scan_id : int
        """

        class Field(mp.Part):
            definition = """
            -> master
            field : int
            ---
            depth : float64
            """

    with raises_naming(mp.DeclarationError, f"{schema.name}.scan__field", "'depth'"):
        schema(Scan)
    assert schema.list_tables() == ["scan", "scan__field"]


def test_changed_tier_is_refused(schema):
    @schema
    class Thing(mp.Manual):
        definition = """
        thing_id : int
        """

    class Thing(mp.Lookup):  # noqa: F811
        definition = """
        thing_id : int
        """

    with raises_naming(mp.DeclarationError, f"{schema.name}.thing", "manual", "lookup"):
        schema(Thing)


# --- malformed definitions ------------------------------------------------------------------------

MALFORMED = [
    pytest.param("x : floaty", "x", ["floaty"], id="unknown-type"),
    pytest.param("x : varchar", "x", ["varchar"], id="varchar-without-length"),
    pytest.param("x : varchar(0)", "x", [], id="varchar-zero"),
    pytest.param("x : decimal(3,5)", "x", [], id="decimal-scale-above-precision"),
    pytest.param("x : enum()", "x", [], id="empty-enum"),
    pytest.param("x : enum('a','a')", "x", [], id="duplicate-enum-value"),
    pytest.param("x : int unsigned signed", "x", [], id="type-with-trailing-words"),
    pytest.param("x : int\n---\ny : varchar(5) unsigned", "y", ["unsigned"], id="unsigned-varchar"),
    pytest.param(
        "x : int\n---\ny : decimal(5,2) unsigned", "y", ["unsigned"], id="unsigned-decimal"
    ),
    pytest.param("x int", "x", [":"], id="missing-colon"),
    pytest.param("x :", "x", [], id="empty-type"),
    pytest.param("Xyz : int", "Xyz", [], id="uppercase-name"),
    pytest.param("camelCase : int", "camelCase", [], id="camel-case-name"),
    pytest.param("1abc : int", None, ["1abc"], id="leading-digit"),
    pytest.param("_private : int", "_private", [], id="leading-underscore"),
    pytest.param("x; drop table y : int", None, ["x; drop table y"], id="sql-injection-name"),
    pytest.param('x" int, "y : int', None, ["x"], id="quote-in-name"),
    pytest.param("a" * 64 + " : int", "a" * 64, [], id="name-too-long"),
    pytest.param("x : int; drop table y", "x", [], id="sql-injection-type"),
    pytest.param("x = 1; drop table y : int", "x", [], id="sql-injection-default"),
    pytest.param("x : longblob", "x", ["primary key"], id="blob-in-key"),
    pytest.param("x : <blob>", "x", ["primary key"], id="core-blob-in-key"),
    pytest.param("x : bytes", "x", ["primary key"], id="bytes-in-key"),
    pytest.param("x : json", "x", ["primary key"], id="json-in-key"),
    pytest.param("x = null : int", "x", ["nullable"], id="nullable-in-key"),
    pytest.param("---\nx : int", None, ["primary key"], id="no-primary-key"),
    pytest.param("# only a comment", None, ["primary key"], id="only-comment"),
    pytest.param("", None, ["primary key"], id="empty"),
    pytest.param("-> Nowhere\nx : int", None, ["Nowhere"], id="unknown-foreign-key-target"),
    pytest.param("-> Parent.Nope\nx : int", None, ["Parent.Nope"], id="unknown-part-target"),
    pytest.param("-> raw_string\nx : int", None, ["raw_string"], id="foreign-key-to-non-table"),
    pytest.param("-> \nx : int", None, ["->"], id="empty-foreign-key"),
    pytest.param("-> Parent Other\nx : int", None, ["Parent Other"], id="two-names-in-foreign-key"),
    pytest.param("x : int\nx : int", "x", ["twice"], id="duplicate-attribute"),
    pytest.param("x : int\n---\nx : varchar(3)", "x", ["twice"], id="duplicate-across-sections"),
    pytest.param("-> Parent\nparent_id : int", "parent_id", ["twice"], id="attribute-shadowing-fk"),
    pytest.param("-> Parent\n-> Parent\nx : int", None, ["Parent"], id="duplicate-foreign-key"),
    pytest.param("x : int\n---\ny : int\n---\nz : int", None, ["---"], id="two-dividers"),
    pytest.param("x : int\n---\n-> [sorted] Parent", None, ["sorted"], id="unknown-fk-option"),
    pytest.param(
        "x : int\n---\n-> [nullable unique] Parent",
        None,
        ["nullable unique"],
        id="fk-options-no-comma",
    ),
    pytest.param("-> [nullable] Parent\nx : int", None, ["nullable"], id="nullable-fk-in-key"),
    pytest.param("x : int\n---\ny : int\nindex(y, nope)", "nope", [], id="index-unknown-attribute"),
    pytest.param(
        "x : int\n---\nunique index(nope)", "nope", [], id="unique-index-unknown-attribute"
    ),
    pytest.param("x : int\n---\nindex()", None, ["index"], id="empty-index"),
    pytest.param(
        "x : int\n---\nunique index(x, x)", None, ["index"], id="repeated-in-unique-index"
    ),
    pytest.param("x : int\n---\ny : int\nindex(y, y)", None, ["index"], id="repeated-in-index"),
    pytest.param("x : int\n---\ny = 'abc' : int", "y", ["default"], id="string-default-for-int"),
    pytest.param("x : int\n---\ny = 1.5 : int", "y", ["default"], id="fraction-default-for-int"),
    pytest.param("x : int\n---\ny = 300 : tinyint", "y", ["default"], id="out-of-range-default"),
    pytest.param("x : int\n---\ny = -1 : uint8", "y", ["default"], id="negative-unsigned-default"),
    pytest.param("x : int\n---\ny = 'toolong' : varchar(3)", "y", ["default"], id="long-default"),
    pytest.param("x : int\n---\ny = 'c' : enum('a','b')", "y", ["default"], id="enum-default"),
    pytest.param("x : int\n---\ny = 'yesterday' : date", "y", ["default"], id="date-default"),
    pytest.param("x : int\n---\ny = 'x' : uuid", "y", ["default"], id="uuid-default"),
    pytest.param("x : int\n---\ny = 2 : bool", "y", ["default"], id="bool-default"),
    pytest.param(
        "x : int\n---\ny = CURRENT_TIMESTAMP : int", "y", ["CURRENT_TIMESTAMP"], id="now-for-int"
    ),
    pytest.param(
        "x : int\n---\ny = unquoted : varchar(9)", "y", ["unquoted"], id="unquoted-default"
    ),
    pytest.param("x : int\n---\ny = 'a : varchar(9)", "y", [], id="unterminated-quote"),
    pytest.param("x : int\n---\ny = : int", "y", ["default"], id="empty-default"),
    pytest.param("x : int\n---\ny = 1 : longblob", "y", ["null"], id="blob-default"),
    pytest.param("x : int\n---\n= 5 : int", None, ["= 5"], id="missing-name"),
    pytest.param("x : int\n---\nsomething odd", None, ["something odd"], id="garbage-line"),
    pytest.param("# table \x00 comment\nx : int", None, ["NUL"], id="nul-in-table-comment"),
    pytest.param("x : int  # attribute \x00 comment", None, ["NUL"], id="nul-in-comment"),
]


@pytest.mark.parametrize(("definition", "attribute", "fragments"), MALFORMED)
def test_malformed_definition_raises_declaration_error(schema, definition, attribute, fragments):
    @schema
    class Parent(mp.Manual):
        definition = """
        parent_id : int
        """

    raw_string = "not a table"  # noqa: F841 - referenced by one definition

    class Broken(mp.Manual):
        pass

    Broken.definition = definition
    table = f"{schema.name}.broken"
    if attribute is not None:
        fragments = [attribute_ref(table, attribute), *fragments]
    with raises_naming(mp.DeclarationError, table, *fragments) as info:
        schema(Broken)
    assert isinstance(info.value, mp.MPError)
    assert schema.list_tables() == ["parent"]
    with pytest.raises(mp.DeclarationError):
        Broken.full_name  # noqa: B018 - the class did not become a table


def test_definition_must_be_a_string(schema):
    class NoDefinition(mp.Manual):
        pass

    with raises_naming(mp.DeclarationError, f"{schema.name}.no_definition", "definition"):
        schema(NoDefinition)

    class NumberDefinition(mp.Manual):
        definition = 42

    with raises_naming(mp.DeclarationError, f"{schema.name}.number_definition", "definition"):
        schema(NumberDefinition)
    assert schema.list_tables() == []


def test_decorating_a_non_table_is_refused(schema):
    class NotATable:
        definition = "x : int"

    with raises_naming(mp.DeclarationError, "NotATable"):
        schema(NotATable)

    class Untiered(mp.Table):
        definition = "x : int"

    with raises_naming(mp.DeclarationError, "Untiered", "Manual"):
        schema(Untiered)

    class lower_case_name(mp.Manual):  # noqa: N801 - the point of the test
        definition = "x : int"

    with raises_naming(mp.DeclarationError, "lower_case_name"):
        schema(lower_case_name)
    assert schema.list_tables() == []


# --- random definitions -----------------------------------------------------------------------

FRAGMENTS = [
    "# comment",
    "id : int",
    "x : int",
    "y = 5 : int",
    "z = null : varchar(10)",
    "w : enum('a', 'b')",
    "b : longblob",
    "---",
    "-----",
    "-> Parent",
    "-> [nullable] Parent",
    "-> [unique] Parent",
    "-> master",
    "-> Nope",
    "index(x)",
    "unique index(x, y)",
    "d = CURRENT_TIMESTAMP : datetime",
    "q = 'it''s' : varchar(5)",
    "v : decimal(5,2)",
    "e : varchar(",
    "f : enum('a",
    ":",
    "=",
    "->",
    "'",
    '"',
    "#",
    "\x00",
    "id : int # \x00",
    "# \x00 table comment",
]

definitions = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=8).map(
        "\n".join
    ),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=definitions)
def test_random_definitions_raise_only_mp_errors(schema, text):
    @schema
    class Parent(mp.Manual):
        definition = """
        parent_id : int
        """

    class Fuzz(mp.Manual):
        pass

    Fuzz.definition = text
    try:
        schema(Fuzz)
    except mp.MPError:
        assert "fuzz" not in schema.list_tables()
        return
    # it was a valid definition: the table exists and works; drop it for the next example
    assert "fuzz" in schema.list_tables()
    assert len(Fuzz) == 0
    Fuzz.drop()
    assert "fuzz" not in schema.list_tables()
