"""DataJoint's ``tests/integration/test_relation.py`` and ``test_fetch.py`` intents (inserting,
fetching) on both backends. DataJoint 2's ``to_dicts()/to_arrays()/keys()`` are
``fetch(as_dict=True)/fetch()/fetch("KEY")`` here (DataJoint 0.14's names). Ordering, limits,
offsets, ``head/tail``, ``dj.U`` and the notebook preview are covered by the query-habits work.

Differences (README "For DataJoint users"): a misnamed or extra attribute is a ``DataError``
naming the table and attribute (DataJoint: ``KeyError``); a missing ``definition`` is a
``DeclarationError`` (DataJoint: ``NotImplementedError``); a float into an integer attribute is
refused, not rounded; no ``insert(replace=True)``, ``delete_quick()``, pandas/polars/arrow
frames; iterating a query fetches its rows first (DataJoint 2 streams them).
"""

from __future__ import annotations

import decimal

import numpy as np
import pytest
from assertions import raises_naming

import mp_dagster as mp

LANGUAGES = [("Fabian", "English"), ("Edgar", "English"), ("Dimitri", "English"), ("Dimitri", "Ukrainian"),
             ("Fabian", "German"), ("Edgar", "Japanese")]


def declare(schema):
    @schema
    class User(mp.Lookup):
        definition = """
        username : varchar(12)
        """
        contents = [("Jake",), ("Cathryn",), ("Shan",), ("Fabian",), ("Edgar",), ("George",), ("Dimitri",)]

    @schema
    class Subject(mp.Lookup):
        definition = """
        subject_id : int32
        ---
        real_id : varchar(40)
        species = "mouse" : enum('mouse', 'monkey', 'human')
        date_of_birth : date
        subject_notes : varchar(4000)
        """
        contents = [
            [1551, "1551", "mouse", "2015-04-01", "genetically engineered super mouse"],
            [10, "Curious George", "monkey", "2008-06-30", ""],
            [1552, "1552", "mouse", "2015-06-15", ""],
            [1553, "1553", "mouse", "2016-07-01", ""],
        ]

    @schema
    class Language(mp.Lookup):
        definition = """
        name : varchar(40)
        language : varchar(40)
        """
        contents = LANGUAGES

    @schema
    class Test(mp.Lookup):
        definition = """
        key : int32
        ---
        value : int32
        """
        contents = [(k, 2 * k) for k in range(10)]

    @schema
    class Test2(mp.Manual):
        definition = """
        key : int32
        ---
        value : int32
        """

    @schema
    class TestExtra(mp.Manual):
        definition = """
        key : int32
        ---
        value : int32
        extra : int32
        """

    @schema
    class TestNoExtra(mp.Manual):
        definition = """
        key : int32
        ---
        value : int32
        """

    return User, Subject, Language, Test, Test2, TestExtra, TestNoExtra


# -- test_relation.py -----------------------------------------------------------------------

def test_contents(schema):
    User, Subject, *_ = declare(schema)
    assert User() and len(User) == len(User.contents)
    assert sorted(User.fetch("username")) == sorted(u[0] for u in User.contents)
    assert sorted(Subject.fetch("subject_id")) == sorted(s[0] for s in Subject.contents)


@pytest.mark.parametrize("rows, fragment", [
    ([dict(username="Bob"), dict(user="Alice")], "'user'"),  # test_misnamed_attribute1
    ([dict(user="Bob")], "'user'"),  # test_misnamed_attribute2 (DataJoint: KeyError)
    ([dict(username="Robert", spouse="Alice")], "'spouse'"),  # test_extra_attribute1
    ([()], "0 values"),  # test_empty_insert / test_empty_insert1
    ([("First", "Second")], "2 values"),  # test_wrong_arguments_insert
    ([3], "int"),  # test_wrong_insert_type
])
def test_bad_inserts_name_the_table_and_write_nothing(schema, rows, fragment):
    User, *_ = declare(schema)
    with raises_naming(mp.DataError, User.full_name, fragment):
        User.insert(rows)
    assert len(User) == len(User.contents)


def test_extra_attribute2(schema):
    User, *_ = declare(schema)
    User.insert1(dict(username="Robert", spouse="Alice"), ignore_extra_fields=True)
    assert len(User & {"username": "Robert"}) == 1


def test_missing_definition(schema):
    with raises_naming(mp.DeclarationError, "needs a `definition` string"):
        schema(type("MissingDefinition", (mp.Manual,), {"definitions": "id : int\n---\ncomment : varchar(16)"}))


def test_insert_select(schema):
    User, Subject, Language, Test, Test2, TestExtra, TestNoExtra = declare(schema)
    Test2.insert(Test)
    assert len(Test2) == len(Test)
    # from a renamed projection (DataJoint computes subject_id="s+1000" in SQL; here in Python)
    rows = [dict(r, subject_id=r["s"] + 1000) for r in Subject.proj(..., s="subject_id").fetch(as_dict=True)]
    Subject.insert([{k: v for k, v in r.items() if k != "s"} for r in rows])
    assert len(Subject) == 8


def test_insert_select_ignore_extra_fields(schema):
    User, Subject, Language, Test, Test2, TestExtra, TestNoExtra = declare(schema)
    keyno = int(Test.fetch("key").max()) + 1
    TestExtra.insert1((keyno, 0, 0))
    with raises_naming(mp.DataError, Test.full_name, "'extra'"):  # ..._fields0
        Test.insert(TestExtra)
    Test.insert(TestExtra, ignore_extra_fields=True)  # ..._fields1
    assert keyno in Test.fetch("key")
    TestNoExtra.insert(Test, ignore_extra_fields=True)  # ..._fields2
    TestNoExtra.delete(prompt=False)
    TestNoExtra.insert(TestExtra & {"key": keyno}, ignore_extra_fields=True)  # ..._fields3
    assert list(TestNoExtra.fetch("key")) == [keyno]
    # test_skip_duplicates: inserting from another table twice
    TestNoExtra.insert(Test, ignore_extra_fields=True, skip_duplicates=True)
    TestNoExtra.insert(Test, ignore_extra_fields=True, skip_duplicates=True)
    assert len(TestNoExtra) == len(Test)


def test_skip_and_not_skip_duplicates_of_record_arrays(schema):
    User, Subject, *_ = declare(schema)
    dtype = [("subject_id", "i4"), ("real_id", "O"), ("species", "O"), ("date_of_birth", "O"),
             ("subject_notes", "O")]
    tmp = np.array([(2, "Klara", "monkey", "2010-01-01", ""), (1, "Peter", "mouse", "2015-01-01", "")], dtype=dtype)
    Subject.insert(tmp)
    Subject.insert(tmp, skip_duplicates=True)
    assert len(Subject & [{"subject_id": 1}, {"subject_id": 2}]) == 2
    (Subject & [{"subject_id": 1}, {"subject_id": 2}]).delete(prompt=False)
    doubled = np.array([(2, "Klara", "monkey", "2010-01-01", ""), (2, "Klara", "monkey", "2010-01-01", ""),
                        (1, "Peter", "mouse", "2015-01-01", "")], dtype=dtype)
    with pytest.raises(mp.DuplicateError):
        Subject.insert(doubled, skip_duplicates=False)
    assert len(Subject) == 4


def test_no_error_suppression(schema):
    """skip_duplicates=True does not hide other errors (a missing attribute)."""
    User, Subject, Language, Test, *_ = declare(schema)
    with raises_naming(mp.DataError, Test.full_name, "value"):
        Test.insert([dict(key=100)], skip_duplicates=True)


def test_blob_insert(schema):
    @schema
    class Image(mp.Manual):
        definition = """
        image_id : int
        ---
        img : blob
        """

    x = np.random.default_rng(0).standard_normal((20, 10))
    Image.insert1((1, x))
    assert np.array_equal(Image.fetch()[0]["img"], x)


def test_drop(schema):
    User, Subject, Language, Test, Test2, *_ = declare(schema)
    Test2.drop()
    with raises_naming(mp.MPError, "test2"):
        Test2.fetch()


# -- test_fetch.py ------------------------------------------------------------------------------

def test_getattribute(schema):
    User, Subject, *_ = declare(schema)
    assert sorted(Subject.proj().fetch(as_dict=True), key=lambda r: r["subject_id"]) == sorted(
        Subject.fetch("KEY"), key=lambda r: r["subject_id"])
    tmp = Subject.fetch(order_by="subject_id")
    notes, real_id = Subject.fetch("subject_notes", "real_id")
    assert sorted(notes) == sorted(tmp["subject_notes"]) and sorted(real_id) == sorted(tmp["real_id"])
    assert (Subject & {"subject_id": 10}).fetch1("subject_id") == 10
    assert (Subject & {"subject_id": 10}).fetch1("subject_id", "species") == (10, "monkey")


def test_fetch1_and_keys(schema):
    User, Subject, Language, *_ = declare(schema)
    key = {"name": "Edgar", "language": "Japanese"}
    row = (Language & key).fetch1()
    assert row == key and all((Language & key).fetch1(k) == v for k, v in row.items())
    assert (Language & key).fetch1("KEY") == key
    keys = Language.fetch("KEY")
    assert len(keys) == len(LANGUAGES) and all(set(k) == {"name", "language"} for k in keys)
    keys, names = Language.fetch("KEY", "name")
    assert isinstance(keys, list) and isinstance(names, np.ndarray) and len(keys) == len(names)
    for call in (lambda: Language.fetch1(), lambda: Language.fetch1("name")):
        with pytest.raises(mp.QueryError, match="more than one"):
            call()
    assert [dict(r) for r in Language] == Language.fetch(as_dict=True)  # iteration yields dicts
    assert len(Language.fetch()) == len(Language)


def test_misspelled_attribute(schema):
    User, Subject, Language, *_ = declare(schema)
    with raises_naming(mp.QueryError, Language.full_name, "'lang'"):
        (Language & {"lang": "ENGLISH"}).fetch(as_dict=True)


def test_decimal(schema):
    """#334: decimal keys fetched and used in restrictions."""

    @schema
    class DecimalPrimaryKey(mp.Lookup):
        definition = """
        id : decimal(4,3)
        """
        contents = [(0.1,), (0.25,), (3.99,)]

    DecimalPrimaryKey.insert1([decimal.Decimal("3.1415926")])
    rows = DecimalPrimaryKey.fetch()
    assert len(DecimalPrimaryKey & rows[0]) == 1
    keys = DecimalPrimaryKey.fetch("KEY")
    assert len(keys) == 4 and len(DecimalPrimaryKey & keys[1]) == 1


def test_nullable_numbers(schema):
    @schema
    class NullableNumbers(mp.Manual):
        definition = """
        key : int
        ---
        fvalue = null : float32
        dvalue = null : float64
        ivalue = null : int
        """

    rng = np.random.default_rng(0)
    NullableNumbers.insert((k, rng.standard_normal(), rng.standard_normal(), int(rng.integers(-1000, 1000)))
                           for k in range(10))
    NullableNumbers.insert1((100, None, None, None))
    f, d, i = NullableNumbers.fetch("fvalue", "dvalue", "ivalue")
    assert None in list(i)
    assert np.isnan(d).sum() == 1 and np.isnan(f).sum() == 1
    with raises_naming(mp.DataError, NullableNumbers.full_name, "ivalue"):  # no silent rounding
        NullableNumbers.insert1((101, 0.0, 0.0, 2.5))


def test_same_secondary_attribute_and_backslash(schema):
    @schema
    class Parent(mp.Lookup):
        definition = """
        parent_id : int
        ---
        name : varchar(30)
        """
        contents = [(1, "Joe")]

    @schema
    class Child(mp.Lookup):
        definition = """
        -> Parent
        child_id : int
        ---
        name : varchar(30)
        """
        contents = [(1, 12, "Dan")]

    assert list((Child * Parent.proj()).fetch("name")) == ["Dan"]
    expected = "She\\Hulk"  # #999
    Parent.insert([(2, expected)])
    q = Parent & dict(name=expected)
    assert q.fetch1("name") == expected
    q.delete(prompt=False)
    assert len(Parent) == 1


def test_fetch_inhomogeneous_shapes(schema):
    """#1380: blobs of different shapes come back as an object array, shapes kept."""

    @schema
    class Longblob(mp.Manual):
        definition = """
        id : int
        ---
        data : blob
        """

    rng = np.random.default_rng(0)
    for shapes in ([(100,), (100, 1), (100, 2)], [(100,), (1, 100), (2, 100)]):
        Longblob.delete(prompt=False)
        Longblob.insert([{"id": i, "data": rng.standard_normal(s)} for i, s in enumerate(shapes)])
        data = Longblob.fetch("data", order_by="id")
        assert data.dtype == object and [d.shape for d in data] == shapes
