"""Query habits of DataJoint users (its test_relational_operand.py / test_fetch.py intents):
renaming projections keep the key's order, ``proj(..., "-attr")``, restricting by a fetched
record array and by a set."""

from __future__ import annotations

import numpy as np
import pytest

import mp_dagster as mp


def declare(schema):
    @schema
    class A(mp.Lookup):
        definition = """
        id_a : int
        ---
        cond_in_a : tinyint
        """
        contents = [(i, int(i % 4 > i % 3)) for i in range(10)]

    @schema
    class D(mp.Manual):
        definition = """
        -> A
        id_d : int
        ---
        score : float64
        note : varchar(20)
        """

    D.insert([(a, d, a + d / 10, f"n{a}{d}") for a in range(10) for d in range(4)])
    return A, D


def test_proj_rename_keeps_the_attribute_in_its_place(schema):
    A, D = declare(schema)
    renamed = D.proj(a="id_a")
    assert renamed.primary_key == ["a", "id_d"]
    assert renamed.heading.names == ["a", "id_d"]
    assert renamed.fetch(as_dict=True, limit=1) == [{"a": 0, "id_d": 0}]
    both = D.proj("note", a="id_a", s="score")
    assert both.heading.names == ["a", "id_d", "note", "s"]
    assert (both & {"a": 3, "id_d": 2}).fetch1() == {"a": 3, "id_d": 2, "note": "n32", "s": 3.2}


def test_proj_ellipsis_and_excluded_attributes(schema):
    A, D = declare(schema)
    assert D.proj(...).heading.names == ["id_a", "id_d", "score", "note"]
    assert D.proj(..., "-score").heading.names == ["id_a", "id_d", "note"]
    assert (D.proj(..., "-score", "-note") & {"id_a": 1}).fetch(as_dict=True)[0] == {"id_a": 1, "id_d": 0}
    with pytest.raises(mp.QueryError, match="cannot exclude primary key attribute 'id_d'"):
        D.proj(..., "-id_d")
    with pytest.raises(mp.QueryError, match="unknown attribute 'nope'"):
        D.proj(..., "-nope")


def test_restrict_by_a_fetched_record_array(schema):
    A, D = declare(schema)
    records = (A & {"cond_in_a": 1}).fetch()
    assert isinstance(records, np.ndarray) and records.dtype.names == ("id_a", "cond_in_a")
    ids = sorted(records["id_a"].tolist())
    assert sorted(set((D & records).fetch("id_a").tolist())) == ids
    assert len(D - records) == 40 - 4 * len(ids)
    assert len(A & records[:1]) == 1 and len(A & records[0]) == 1
    assert len(D & records[:0]) == 0  # an empty record array restricts to nothing, like []
    assert len(D & [records[:1], {"id_a": 9}]) == 8


def test_restrict_by_a_set(schema):
    A, D = declare(schema)
    either = {A & {"id_a": 1}, A & {"id_a": 2}}  # OR of its elements, as DataJoint does
    assert sorted(set((D & either).fetch("id_a").tolist())) == [1, 2]
    assert len(D - either) == 32
    assert len(D & frozenset()) == 0
    with pytest.raises(mp.QueryError, match="cannot restrict by int"):
        D & {1, 2}


def test_a_dropped_table_raises_the_librarys_error_naming_it(schema):
    A, D = declare(schema)
    query, instance = D & {"id_a": 1}, D()
    D.drop()
    checks = [lambda: D.fetch(), lambda: len(D), lambda: len(query), lambda: instance.fetch(as_dict=True),
              lambda: query.fetch1(), lambda: len(D & {"id_a": 1}), lambda: len(A & D),
              lambda: D.insert1((1, 1, 0.5, "x")), lambda: instance.insert([(1, 1, 0.5, "x")]),
              lambda: query.delete(prompt=False), lambda: D.heading]
    for check in checks:
        with pytest.raises(mp.QueryError, match=rf"{schema.name}\.d \(.*D\) was dropped"):
            check()
    assert len(A) == 10  # others work as before
    A.drop()
    with pytest.raises(mp.QueryError, match=r"\.a \(.*A\) was dropped"):
        A.fetch()
