"""The query habits DataJoint users reach for: ``aggr`` (with its safe expression language),
``mp.U``, ``update1``, ``fetch(order_by=, limit=, offset=)``, ``head``/``tail``; both backends."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid

import numpy as np
import pytest

import mp_dagster as mp


def declare(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        ---
        species : varchar(20)
        weight : float64
        email = null : varchar(40)
        photo = null : blob
        unique index (email)
        """

    @schema
    class Session(mp.Manual):
        definition = """
        -> Animal
        session : int
        ---
        duration : int16
        rig : varchar(10)
        """

    @schema
    class Scan(mp.Computed):
        definition = """
        -> Session
        ---
        quality : float64
        """

        class Cell(mp.Part):
            definition = """
            -> master
            cell : int
            ---
            area : float64
            """

        def make(self, key):
            self.insert1(dict(key, quality=0.5))
            self.Cell.insert([dict(key, cell=c, area=10.0 * (c + 1)) for c in range(key["session"] + 1)])

    Animal.insert([
        (1, "mouse", 20.0, "a@lab", np.zeros((8, 8))),
        (2, "mouse", 25.0, None, None),
        (3, "rat", 300.0, None, None),
        (4, "rat", 280.0, None, None),
        (5, "zebrafish", 1.0, None, None),
    ])
    Session.insert([(1, 1, 10, "A"), (1, 2, 20, "B"), (2, 1, 5, "A"), (3, 1, 7, "A"), (3, 2, 9, "A"), (3, 3, 11, "B")])
    Scan.populate()
    return Animal, Session, Scan


# -- aggr ---------------------------------------------------------------------------------------
def test_aggr_counts_sums_and_averages_per_row(schema):
    Animal, Session, Scan = declare(schema)
    rows = Animal.aggr(Session, n="count(*)", total="sum(duration)", mean="avg(duration)",
                       spread="max(duration) - min(duration)", rigs="count(distinct rig)",
                       first_rig="min(rig)").fetch(as_dict=True)
    assert rows == [
        {"animal_id": 1, "n": 2, "total": 30, "mean": 15.0, "spread": 10, "rigs": 2, "first_rig": "A"},
        {"animal_id": 2, "n": 1, "total": 5, "mean": 5.0, "spread": 0, "rigs": 1, "first_rig": "A"},
        {"animal_id": 3, "n": 3, "total": 27, "mean": 9.0, "spread": 4, "rigs": 2, "first_rig": "A"},
    ]
    assert all(type(r["mean"]) is float and type(r["total"]) is int for r in rows)
    agg = Animal.aggr(Session, n="count(*)")
    assert agg.primary_key == ["animal_id"] and agg.heading.names == ["animal_id", "n"]


def test_aggr_of_a_master_over_its_part_as_in_the_brief(schema):
    Animal, Session, Scan = declare(schema)
    per_scan = Scan.aggr(Scan.Cell, "quality", n="count(*)", mean_area="avg(area)")
    assert per_scan.heading.names == ["animal_id", "session", "quality", "n", "mean_area"]
    assert (per_scan & {"animal_id": 3, "session": 3}).fetch1() == {
        "animal_id": 3, "session": 3, "quality": 0.5, "n": 4, "mean_area": 25.0}
    # the result restricts, joins and sorts like any query; restrictions on both sides hold
    assert (per_scan & {"n": 2}).fetch("KEY") == [
        {"animal_id": 1, "session": 1}, {"animal_id": 2, "session": 1}, {"animal_id": 3, "session": 1}]
    big = (Scan & {"animal_id": 3}).aggr(Scan.Cell - {"cell": 0}, n="count(*)")
    assert big.fetch("n", order_by="n DESC").tolist() == [3, 2, 1]
    joined = (per_scan * Session).fetch("rig", "n", order_by="KEY")
    assert joined[0].tolist() == ["A", "B", "A", "A", "A", "B"] and joined[1].tolist() == [2, 3, 2, 2, 3, 4]


def test_aggr_keep_all_rows_literals_and_division(schema):
    Animal, Session, Scan = declare(schema)
    kept = Animal.aggr(Session, "species", keep_all_rows=True, n="count(session)", rows="count(*)",
                       total="sum(duration)", per_min="sum(duration) / 60", scaled="2 * count(session) + 0.5",
                       neg="-max(duration)", label="'x'")
    rows = kept.fetch(as_dict=True, order_by="animal_id")
    assert [r["n"] for r in rows] == [2, 1, 3, 0, 0]  # count an attribute: 0 without matches
    assert [r["rows"] for r in rows] == [2, 1, 3, 1, 1]  # count(*) counts the empty match (SQL, DataJoint)
    assert rows[3]["total"] is None and rows[3]["per_min"] is None
    assert rows[0]["per_min"] == pytest.approx(0.5) and rows[0]["scaled"] == 4.5 and rows[0]["neg"] == -20
    assert rows[0]["species"] == "mouse" and {r["label"] for r in rows} == {"x"}
    assert len(Animal.aggr(Session, n="count(*)")) == 3  # without keep_all_rows: matched rows only
    zero = Animal.aggr(Session, keep_all_rows=True, q="sum(duration) / (count(session) - count(session))")
    assert {r["q"] for r in zero.fetch(as_dict=True)} == {None}  # dividing by zero: NULL on both backends


def test_aggr_expressions_are_parsed_not_sent_as_sql(schema):
    Animal, Session, Scan = declare(schema)
    bad = {
        "count(x)": "unknown attribute 'x'",
        "sqrt(duration)": "function 'sqrt' is not allowed (allowed: count, sum, avg, min, max)",
        "duration": "'duration' varies within a group: use it inside an aggregate function",
        "count(*); DROP TABLE animal": "cannot parse",
        "count(*) -- comment": "unknown attribute 'comment'",  # arithmetic, not a comment
        "max(count(*))": "count() inside another aggregate function",
        "avg(rig)": "avg() needs numbers, not varchar(10)",
        "count(*": "expected ')'",
        "sum(duration) || 'x'": "cannot parse",
        "`duration`": "cannot parse",
        "": "expected an expression string",
    }
    for text, message in bad.items():
        with pytest.raises(mp.QueryError, match=r"aggr\(.*session\) attribute 'n'") as info:
            Animal.aggr(Session, n=text)
        assert message in str(info.value), (text, str(info.value))
    with pytest.raises(mp.QueryError, match="'photo' is a blob attribute: it cannot be aggregated"):
        mp.U().aggr(Animal, n="count(photo)")
    with pytest.raises(mp.QueryError, match="'species' is already an attribute"):
        Animal.aggr(Session, "species", species="count(*)")
    with pytest.raises(mp.QueryError, match="invalid attribute name 'bad name'"):
        Animal.aggr(Session, **{"bad name": "count(*)"})
    with pytest.raises(mp.QueryError, match="name at least one computed attribute"):
        Animal.aggr(Session)
    with pytest.raises(mp.QueryError, match="cannot project unknown attribute 'nope'"):
        Animal.aggr(Session, "nope", n="count(*)")
    assert len(Animal) == 5 and len(Session) == 6  # nothing reached the database as text


# -- U ------------------------------------------------------------------------------------------
def test_universal_set_distinct_values_and_aggregation(schema):
    Animal, Session, Scan = declare(schema)
    species = mp.U("species") & Animal
    assert species.primary_key == ["species"]
    assert species.fetch("species").tolist() == ["mouse", "rat", "zebrafish"]
    assert len(mp.U("species") & (Animal & Session)) == 2
    assert (mp.U("species", "animal_id") & (Animal & {"species": "rat"})).fetch(as_dict=True) == [
        {"species": "rat", "animal_id": 3}, {"species": "rat", "animal_id": 4}]
    per = mp.U("species").aggr(Animal, n="count(*)", heaviest="max(weight)")
    assert per.fetch(as_dict=True) == [{"species": "mouse", "n": 2, "heaviest": 25.0},
                                       {"species": "rat", "n": 2, "heaviest": 300.0},
                                       {"species": "zebrafish", "n": 1, "heaviest": 1.0}]
    assert (per & {"n": 2}).fetch("species").tolist() == ["mouse", "rat"]
    sessions = mp.U("rig").aggr(Session * Animal, n="count(*)", animals="count(distinct animal_id)")
    assert sessions.fetch(as_dict=True) == [{"rig": "A", "n": 4, "animals": 3}, {"rig": "B", "n": 2, "animals": 2}]
    assert mp.U().aggr(Animal, n="count(*)", mean="avg(weight)").fetch1() == {"n": 5, "mean": 125.2}
    emails = (mp.U("email") & Animal).fetch()  # a nullable attribute: NULL is one of the values
    assert set(emails["email"]) == {"a@lab", None}
    assert mp.U("email").aggr(Animal, n="count(*)").fetch("n", order_by="n").tolist() == [1, 4]
    for call, message in (
        (lambda: mp.U("nope") & Animal, "has no attribute 'nope'"),
        (lambda: mp.U("photo") & Animal, "is a blob attribute: it has no distinct values"),
        (lambda: mp.U() & Animal, "name the attributes"),
        (lambda: mp.U("species") * Animal, "not supported"),
        (lambda: mp.U("a; b"), "invalid attribute name"),
        (lambda: mp.U("species").aggr(Animal, n="weight"), "'weight' varies within a group"),
    ):
        with pytest.raises(mp.QueryError, match=message):
            call()


# -- update1 ------------------------------------------------------------------------------------
def test_update1_changes_secondary_attributes_of_one_row(schema):
    Animal, Session, Scan = declare(schema)
    Animal.update1(dict(animal_id=2, weight=26.5, photo=np.ones((2, 3))))
    row = (Animal & {"animal_id": 2}).fetch1()
    assert row["weight"] == 26.5 and row["species"] == "mouse" and row["photo"].shape == (2, 3)
    Animal().update1(dict(animal_id=1, email=None, photo=None))  # nullable attributes to NULL
    assert (Animal & {"animal_id": 1}).fetch1("email", "photo") == (None, None)
    Session.update1(dict(animal_id=3, session=2, duration=True))  # converted as insert converts
    assert (Session & {"animal_id": 3, "session": 2}).fetch1("duration") == 1
    assert (Animal - {"animal_id": 2}).fetch("weight").tolist() == [20.0, 300.0, 280.0, 1.0]


def test_update1_refusals_name_table_and_attribute_and_write_nothing(schema):
    Animal, Session, Scan = declare(schema)
    def state():
        return Animal.proj(..., "-photo").fetch(as_dict=True), [p is None for p in Animal.fetch("photo")]

    before = state()
    t = Animal.full_name
    for row, error, message in (
        (dict(animal_id=9, weight=1.0), mp.DataError, f"{t}: update1 found no row with primary key {{'animal_id': 9}}"),
        (dict(animal_id=2, weight="heavy"), mp.DataError, f"{t}.weight: expected a number"),
        (dict(animal_id=2, species=None), mp.DataError, f"{t}.species"),
        (dict(animal_id=2), mp.DataError, "primary-key attributes ['animal_id'] cannot be updated"),
        (dict(weight=1.0), mp.DataError, "needs the whole primary key to find the row; missing ['animal_id']"),
        (dict(animal_id=2, colour="red"), mp.DataError, f"{t}: unknown attribute 'colour'"),
        (dict(animal_id=2, email="a@lab"), mp.DuplicateError, f"{t}: update1 of email"),
        ([2, "rat"], mp.DataError, "update1 expects one row as a dict"),
    ):
        with pytest.raises(error, match=None) as info:
            Animal.update1(row)
        assert message in str(info.value), str(info.value)
    with pytest.raises(mp.DataError, match="not on a restriction"):
        (Animal & {"animal_id": 2}).update1(dict(animal_id=2, weight=1.0))
    with pytest.raises(mp.DataError, match=f"{Session.full_name}.duration"):
        Session.update1(dict(animal_id=1, session=1, duration=10**6))
    assert state() == before


def test_update1_on_auto_populated_tables_needs_allow_direct_update(schema):
    Animal, Session, Scan = declare(schema)
    key = {"animal_id": 1, "session": 1}
    with pytest.raises(mp.DirectInsertError, match=f"{Scan.full_name} is a computed table.*allow_direct_update=True"):
        Scan.update1(dict(key, quality=0.9))
    with pytest.raises(mp.DirectInsertError, match=f"{Scan.Cell.full_name} is a part of an auto-populated master"):
        Scan.Cell.update1(dict(key, cell=0, area=1.0))
    assert (Scan & key).fetch1("quality") == 0.5
    Scan.update1(dict(key, quality=0.9), allow_direct_update=True)
    Scan.Cell.update1(dict(key, cell=0, area=1.0), allow_direct_update=True)
    assert (Scan & key).fetch1("quality") == 0.9 and (Scan.Cell & dict(key, cell=0)).fetch1("area") == 1.0


def test_update1_of_a_foreign_key_checks_the_parent(schema):
    Animal, Session, Scan = declare(schema)

    @schema
    class Cage(mp.Manual):
        definition = """
        cage : int
        ---
        -> Animal
        """

    Cage.insert1((1, 1))
    Cage.update1(dict(cage=1, animal_id=3))
    with pytest.raises(mp.MissingParentError, match=re.escape(
            f"{Cage.full_name}: update1 at {{'cage': 1}}: attribute(s) animal_id = (99,) reference a row missing "
            f"from {Animal.full_name}")):
        Cage.update1(dict(cage=1, animal_id=99))
    assert Cage.fetch1() == {"cage": 1, "animal_id": 3}


class ShoutCodec(mp.Codec):
    """Text stored upper-case (to see that update1 encodes as insert does)."""

    name = "qh_shout"
    dtype = "varchar(40)"

    def validate(self, value):
        if not isinstance(value, str):
            raise TypeError("expected text")

    def encode(self, value, *, key=None, store_name=None):
        return value.upper()

    def decode(self, stored, *, key=None):
        return stored.lower() + "!"


def test_update1_encodes_codec_attributes_as_insert_does(schema):
    @schema
    class Note(mp.Manual):
        definition = """
        note_id : int
        ---
        text : <qh_shout>
        """

    Note.insert1((1, "hello"))
    Note.update1(dict(note_id=1, text="bye"))
    assert (Note & {"note_id": 1}).fetch1("text") == "bye!"
    with pytest.raises(mp.DataError, match=re.escape(f"{Note.full_name}.text: <qh_shout> cannot encode int")):
        Note.update1(dict(note_id=1, text=3))
    assert (Note & {"note_id": 1}).fetch1("text") == "bye!"


# -- fetch order_by / limit / offset, head / tail ----------------------------------------------
def test_fetch_order_by_limit_offset(schema):
    Animal, Session, Scan = declare(schema)
    assert Animal.fetch("animal_id", order_by="weight DESC").tolist() == [3, 4, 2, 1, 5]
    assert Animal.fetch("animal_id", order_by="weight desc", limit=2, offset=1).tolist() == [4, 2]
    assert Animal.fetch("animal_id", order_by=["species DESC", "KEY DESC"]).tolist() == [5, 4, 3, 2, 1]
    assert Animal.fetch("animal_id", order_by="species").tolist() == [1, 2, 3, 4, 5]  # key breaks ties
    assert Animal.fetch("animal_id", order_by="KEY DESC", limit=2).tolist() == [5, 4]
    assert Animal.fetch("KEY", offset=3) == [{"animal_id": 4}, {"animal_id": 5}]  # offset alone
    assert (Session & {"animal_id": 3}).fetch(as_dict=True, order_by=("duration DESC",), limit=1)[0]["session"] == 3
    assert len(Animal.fetch(limit=0)) == 0 and Animal.fetch(offset=10).shape == (0,)
    for kwargs, message in (
        ({"order_by": "weight; DROP TABLE x"}, "invalid order_by term"),
        ({"order_by": "weight DESCENDING"}, "invalid order_by term"),
        ({"order_by": "height"}, "order_by names unknown attribute 'height'"),
        ({"order_by": "photo"}, "cannot order by a blob attribute"),
        ({"order_by": 3}, "order_by must be a string or a list"),
        ({"order_by": [None]}, "invalid order_by term None"),
        ({"limit": -1}, "limit must be an integer >= 0"),
        ({"limit": True}, "limit must be an integer >= 0"),
        ({"offset": "1"}, "offset must be an integer >= 0"),
    ):
        with pytest.raises(mp.QueryError, match=Animal.full_name) as info:
            Animal.fetch(**kwargs)
        assert message in str(info.value), str(info.value)


def test_head_and_tail(schema):
    Animal, Session, Scan = declare(schema)
    assert Animal.head(2)["animal_id"].tolist() == [1, 2]
    assert [r["animal_id"] for r in Animal.head(n=3, as_dict=True)] == [1, 2, 3]
    assert Animal.tail(2)["animal_id"].tolist() == [4, 5]  # the last ones, in key order
    assert [r["session"] for r in (Session & {"animal_id": 3}).tail(n=2, as_dict=True)] == [2, 3]
    assert len(Animal.head()) == 5 and len(Animal().tail()) == 5
    with pytest.raises(mp.QueryError, match="takes limit or n, not both"):
        Animal.head(3, n=2)


def test_aggr_over_other_types_agrees_on_both_backends(schema):
    @schema
    class Visit(mp.Manual):
        definition = """
        visit : int
        ---
        site : enum('north', 'south')
        day : date
        cost : decimal(8,2)
        paid : bool
        token : uuid
        small : float32
        """

    Visit.insert([
        (1, "north", dt.date(2024, 1, 5), decimal.Decimal("10.50"), True, uuid.uuid4(), 1.5),
        (2, "south", dt.date(2024, 3, 1), decimal.Decimal("2.25"), False, uuid.uuid4(), 2.5),
        (3, "south", dt.date(2023, 12, 31), decimal.Decimal("1.00"), True, uuid.uuid4(), 0.5),
    ])
    row = mp.U("site").aggr(Visit, first="min(day)", last="max(day)", spent="sum(cost)", mean="avg(cost)",
                            paid="count(paid)", tokens="count(distinct token)", top="max(small)")
    assert row.fetch(as_dict=True) == [
        {"site": "north", "first": dt.date(2024, 1, 5), "last": dt.date(2024, 1, 5), "spent": 10.5, "mean": 10.5,
         "paid": 1, "tokens": 1, "top": 1.5},
        {"site": "south", "first": dt.date(2023, 12, 31), "last": dt.date(2024, 3, 1), "spent": 3.25,
         "mean": 1.625, "paid": 2, "tokens": 2, "top": 2.5},
    ]
    assert mp.U().aggr(Visit, s="max(site)").fetch1("s") == "south"
    for text, message in (("max(paid)", "max() cannot compare bool values"),
                          ("min(token)", "min() cannot compare uuid values"),
                          ("sum(paid)", "sum() needs numbers, not bool"),
                          ("max(site) + 1", "'+' needs numbers, not enum('north','south')")):
        with pytest.raises(mp.QueryError, match=re.escape(f"{message} in {text!r}")):
            mp.U("site").aggr(Visit, x=text)
