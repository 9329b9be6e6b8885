"""DataJoint's ``tests/integration/test_relational_operand.py`` intents on its ``schema_simple``
shapes, on both backends: renames, joins, semijoins and antijoins, restrictions by lists,
nulls, dates and reserved words. ``aggr``, ``update1``, ``dj.U``, ``head``, the preview and
``dj.Top`` are covered by the query-habits work.

Differences (README "For DataJoint users"): no SQL-string restrictions or computed projections
(``"id_a in (1,2)"``, ``proj(a="(id_a)")``, ``like``, ``between``, ``curdate()``): restrict by
dicts, lists, sets, record arrays and queries, compute in Python; a restriction naming no
attribute of the table is an error (DataJoint ignores it: a misspelled name would select every
row); no union (``+``), ``dj.AndList``, ``FreeTable``/``VirtualModule`` or ``semantic_check``
(joins match attributes by name, as DataJoint 0.14 did).
"""

from __future__ import annotations

import datetime as dt

import pytest
from test_cascading_delete import declare_simple

import mp_dagster as mp


@pytest.fixture
def simple(schema):
    return declare_simple(schema, n_a=10, n_b=4, n_d=4, n_l=30, n_h=2)


def ids(name, values):
    return [{name: v} for v in values]


def test_rename(simple):
    A, B, L, D, E, G = simple
    x = B.proj(i="id_a") & ids("i", [1, 2, 3, 4])
    n = len(x)
    assert n == len(B & ids("id_a", [1, 2, 3, 4])) > 0
    both = (B & ids("id_b", [1, 2])) & ids("id_a", [1, 2, 3, 4])
    assert len(x & ids("id_b", [1, 2])) == len(both)
    assert len(x) == n  # restricting made a new query
    y = x.proj(j="i")
    assert len(y) == n
    assert len(y & ids("j", [3, 4, 5, 6])) == len(B & ids("id_a", [3, 4]))
    assert D.proj(a="id_a").primary_key == ["a" if k == "id_a" else k for k in D.primary_key]  # #483/#516


def test_join(simple):
    A, B, L, D, E, G = simple

    def check(x, y, rel):
        assert set(x.heading.names) | set(y.heading.names) == set(rel.heading.names)
        assert set(x.primary_key) | set(y.primary_key) == set(rel.primary_key)

    for x, y in ((A(), L()), (A & {"cond_in_a": 1}, L & {"cond_in_l": 1})):
        rel = x * y
        assert len(rel) == len(x) * len(y)
        check(x, y, rel)
    cond = A & {"cond_in_a": 1}
    x, y = B & cond, D()
    rel = x * y
    assert len(rel) >= len(x) and len(rel) >= len(y)
    assert not (rel - cond)
    check(x, y, rel)
    for renamed in (B.proj(i="id_a"), B.proj(a="id_a")):  # no common attribute: the full product
        rel = renamed * D()
        assert len(rel) == len(renamed) * len(D)
        check(renamed, D(), rel)
    # pairing: join then restrict, restrict then join
    x = A.proj(a1="id_a", c1="cond_in_a")
    y = A.proj(a2="id_a", c2="cond_in_a")
    rel = x * y & {"c1": 0} & {"c2": 1}
    assert len(x & {"c1": 0}) + len(y & {"c2": 1}) == len(A)
    assert len(rel) == len(x & {"c1": 0}) * len(y & {"c2": 1})
    assert len(rel) == len((A & {"cond_in_a": 0}).proj(a1="id_a") * (A & {"cond_in_a": 1}).proj(a2="id_a"))


def test_issue_463(simple):
    A, B, L, D, E, G = simple
    assert ((A & B) * B).fetch().size == len(A * B)


def test_project(simple):
    A, B, L, D, E, G = simple
    assert A.proj(a="id_a").heading.names == ["a"]
    cond = L & {"cond_in_l": 1}
    assert len(D & cond) + len(D - cond) == len(D)
    assert len((D & cond).proj()) == len(D & cond)
    with pytest.raises(mp.QueryError):  # computed projections are Python's job here
        A.proj(a="(id_a)")


def test_semijoin(schema):
    @schema
    class IJ(mp.Lookup):
        definition = """  # tests restrictions
        i : int
        j : int
        """
        contents = [dict(i=i, j=j + 2) for i in range(3) for j in range(3)]

    @schema
    class JI(mp.Lookup):
        definition = """  # attributes in the other order
        j : int
        i : int
        """
        contents = [dict(i=i + 1, j=j) for i in range(3) for j in range(3)]

    n = len(IJ & JI.fetch(as_dict=True))
    m = len(IJ - JI.fetch(as_dict=True))
    assert n > 0 and m > 0 and len(IJ) == m + n
    assert len(IJ & JI.fetch()) == n and len(IJ - JI.fetch()) == m
    assert len(IJ & JI) == n and len(IJ - JI) == m


def test_restrictions_by_lists(simple):
    A, B, L, D, E, G = simple
    x, y = D(), L & {"cond_in_l": 1}
    n = len(x)
    assert n > 0 and len(y) > 0 and len(x & y) < n
    assert len(D & []) == 0 and len(D & [[]]) == 0
    assert len(x & y) == len(D * L & {"cond_in_l": 1})
    assert len(x - y) == n - len(x & y)
    assert len(y - x) == len(y) - len(y & x)
    for empty in ([], (), set()):
        assert len(x & empty) == 0 and len(x - empty) == n
    assert len(x & {}) == n and len(x - {}) == 0
    with pytest.raises(mp.QueryError, match="names no attribute"):  # DataJoint: ignored
        x & {"foo": 0}
    assert len(x & y) == len(x & y.fetch()) and len(x - y) == len(x - y.fetch())
    w = A()
    assert not set(w.heading.names) & set(y.heading.names)
    assert len(w & y) == len(w) and len(w - y) == 0  # no common attributes


def test_restriction_by_null_and_dates(schema):
    @schema
    class F(mp.Manual):
        definition = """
        id : int
        ----
        date = null : date
        """

    F.insert([dict(id=1, date="2019-09-25"), dict(id=2, date=dt.date(2020, 1, 2)), dict(id=5)])
    assert len(F & {"date": None}) == 1 and len(F - {"date": None}) == 2  # is null / is not null
    assert len(F & dict(id=5, date=None)) == 1  # #824
    date = F.fetch("date", order_by="id")[0]
    assert len(F & {"date": str(date)}) == len(F & {"date": date}) == 1


def test_reserved_words(schema):
    @schema
    class ReservedWord(mp.Manual):
        definition = """
        # Test of SQL reserved words
        key : int
        ---
        in : varchar(25)
        from : varchar(25)
        int : int
        select : varchar(25)
        """

    ReservedWord.insert1({"key": 1, "in": "ouch", "from": "bummer", "int": 3, "select": "major pain"})
    assert (ReservedWord & {"key": 1, "in": "ouch", "from": "bummer"}).fetch1("int") == 3
    assert (ReservedWord.proj("int", double="from") & {"double": "bummer"}).fetch1("int") == 3
    assert list((ReservedWord & {"key": 1}).fetch("in")) == ["ouch"]  # quoted: no #249 error
    (ReservedWord & {"key": 1}).delete(prompt=False)
    assert len(ReservedWord) == 0


def test_percent_signs_are_values(schema):
    """#376: '%' in a value is a value (no LIKE patterns here)."""

    @schema
    class TTest3(mp.Manual):
        definition = """
        key : int
        ---
        value : varchar(300)
        """

    TTest3.insert(((1, "%%%"), (2, "one%"), (3, "one")))
    assert len(TTest3 & {"value": "%%%"}) == 1
    assert len(TTest3 & {"value": "one%"}) == 1


def test_join_project(schema):
    @schema
    class DataA(mp.Lookup):
        definition = """
        idx : int
        ---
        a : int
        """
        contents = list(zip(range(5), range(5)))

    @schema
    class DataB(mp.Lookup):
        definition = """
        idx : int
        ---
        a : int
        """
        contents = list(zip(range(5), range(5, 10)))

    assert len(DataA.proj() * DataB.proj()) == len(DataA) == len(DataB)
    assert len(DataA * DataB) == 0  # joined on a too: no row has equal values
