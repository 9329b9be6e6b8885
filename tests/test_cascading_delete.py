"""DataJoint's ``tests/integration/test_cascading_delete.py`` on its ``schema_simple`` shapes.

A master and its parts both carry secondary foreign keys (``E -> L`` and ``E.G -> L``), parts
reference parts of the same master (``E.M -> E.H``) and of another master (``E.F -> B.C``), and a
computed table sits downstream of the master (``G -> E``). DataJoint's ``make`` of ``B`` and ``D``
inserts several master rows per call; here the rows are inserted directly (the shapes are what
the deletes exercise). The ``part_integrity="enforce"`` check is per master entry here (DataJoint
checks per table): see README "Deletes".
"""

from __future__ import annotations

import random
import time

import pytest

import mp_dagster as mp


def declare_simple(schema, n_a=10, n_b=4, n_d=4, n_l=30, n_h=4):
    """schema_simple's A, B(C), L, D, E(F, G, H, M), G, filled deterministically.

    With the defaults: 160 entries of E, 4,800 rows of E.G (one per entry and L row)."""

    @schema
    class A(mp.Lookup):
        definition = """
        id_a : int
        ---
        cond_in_a : tinyint
        """
        contents = [(i, int(i % 4 > i % 3)) for i in range(n_a)]

    @schema
    class B(mp.Computed):
        definition = """
        -> A
        id_b : int
        ---
        mu : float  # mean value
        sigma : float  # standard deviation
        n : smallint  # number samples
        """

        class C(mp.Part):
            definition = """
            -> B
            id_c : int
            ---
            value : float  # normally distributed variables according to parameters in B
            """

    @schema
    class L(mp.Lookup):
        definition = """
        id_l : int
        ---
        cond_in_l : tinyint
        """
        contents = [(i, int(i % 3 >= i % 5)) for i in range(n_l)]

    @schema
    class D(mp.Computed):
        definition = """
        -> A
        id_d : int
        ---
        -> L
        """

    @schema
    class E(mp.Computed):
        definition = """
        -> B
        -> D
        ---
        -> L
        """

        class F(mp.Part):
            definition = """
            -> E
            id_f : int
            ---
            -> B.C
            """

        class G(mp.Part):
            definition = """  # test secondary fk reference
            -> E
            id_g : int
            ---
            -> L
            """

        class H(mp.Part):
            definition = """  # test no additional fk reference
            -> E
            id_h : int
            """

        class M(mp.Part):
            definition = """  # test part_integrity cascade
            -> E
            id_m : int32
            ---
            -> E.H
            """

    @schema
    class G(mp.Computed):
        definition = """  # test downstream of complex master/parts
        -> E
        """

    rng = random.Random(0)
    ls = list(range(n_l))
    b_rows, c_rows = [], []
    for a in range(n_a):
        for b in range(n_b):
            n = rng.randint(0, 10)
            b_rows.append(dict(id_a=a, id_b=b, mu=rng.random(), sigma=rng.random(), n=n))
            c_rows += [dict(id_a=a, id_b=b, id_c=c, value=rng.random()) for c in range(n)]
    d_rows = [dict(id_a=a, id_d=d, id_l=rng.choice(ls)) for a in range(n_a) for d in range(n_d)]
    e_rows, f_rows, g_rows, h_rows, m_rows = [], [], [], [], []
    for b in b_rows:
        for d in range(n_d):
            key = dict(id_a=b["id_a"], id_b=b["id_b"], id_d=d)
            e_rows.append(dict(key, id_l=rng.choice(ls)))
            refs = list(range(b["n"]))
            rng.shuffle(refs)
            f_rows += [dict(key, id_f=i, id_c=c) for i, c in enumerate(refs) if rng.getrandbits(1)]
            g_rows += [dict(key, id_g=i, id_l=lk) for i, lk in enumerate(ls)]
            h_rows += [dict(key, id_h=h) for h in range(n_h)]
            m_rows += [dict(key, id_m=m, id_h=rng.randrange(n_h)) for m in range(4)]
    with schema.transaction():
        B.insert(b_rows, allow_direct_insert=True)
        B.C.insert(c_rows, allow_direct_insert=True)
        D.insert(d_rows, allow_direct_insert=True)
        E.insert(e_rows, allow_direct_insert=True)
        for part, rows in ((E.F, f_rows), (E.G, g_rows), (E.H, h_rows), (E.M, m_rows)):
            part.insert(rows, allow_direct_insert=True)
        G.insert([{k: r[k] for k in ("id_a", "id_b", "id_d")} for r in e_rows], allow_direct_insert=True)
    return A, B, L, D, E, G


def sizes(*tables):
    return [len(t) for t in tables]


def test_delete_tree(schema):
    A, B, L, D, E, G = declare_simple(schema)
    assert all(sizes(L, A, B, B.C, D, E, E.F, E.G, E.H, E.M, G))
    A().delete(prompt=False)
    assert sizes(A, B, B.C, D, E, E.F, E.G, E.H, E.M, G) == [0] * 10
    assert len(L) == 30


def test_stepwise_delete(schema):
    A, B, L, D, E, G = declare_simple(schema)
    n_f = len(E.F)
    # B.C is referenced by the part E.F (secondary): "ignore" removes those part rows alone
    assert B.C().delete_preview(part_integrity="ignore") == {E.F.full_name: n_f, B.C.full_name: len(B.C)}
    B.C().delete(prompt=False, part_integrity="ignore")
    assert sizes(B.C, E.F) == [0, 0] and len(E) == 160
    B().delete(prompt=False)
    assert sizes(B, E, E.G, E.H, E.M, G) == [0] * 6 and len(D) == 40


def test_delete_a_whole_master_entry(schema):
    A, B, L, D, E, G = declare_simple(schema)
    key = {"id_a": 1, "id_b": 2, "id_d": 3}
    expected = {t.full_name: len(t & key) for t in (E.F, E.G, E.H, E.M, G)}
    assert expected[E.G.full_name] == 30 and expected[E.M.full_name] == 4
    preview = (E & key).delete_preview()
    assert preview == {**expected, E.full_name: 1}
    assert (E & key).delete(prompt=False) == 1
    assert not any(len(t & key) for t in (E, E.F, E.G, E.H, E.M, G))
    assert len(E) == 159 and len(E.G) == 159 * 30


def test_delete_tree_restricted(schema):
    A, B, L, D, E, G = declare_simple(schema)
    rel = A & {"cond_in_a": 1}
    rest = {t.full_name: len(t) - len(t & rel) for t in (A, B, B.C, D, E, E.F, E.G, G)}
    assert 0 < len(rel) < len(A)
    rel.delete(prompt=False)
    assert not any(len(t & rel.proj()) for t in (B, B.C, D, E, E.F, E.G, G))
    assert {t.full_name: len(t) for t in (A, B, B.C, D, E, E.F, E.G, G)} == rest


def test_delete_lookup(schema):
    A, B, L, D, E, G = declare_simple(schema)
    L().delete(prompt=False)
    assert sizes(L, D, E, E.F, E.G, E.H, E.M, G) == [0] * 8
    assert len(A) == 10 and len(B) == 40
    A().delete(prompt=False)
    assert sizes(A, B, B.C) == [0, 0, 0]


def test_delete_lookup_restricted_is_per_entry(schema):
    """Every entry of E has a part row E.G referencing each row of L: deleting some rows of L
    would leave entries without some of their parts. DataJoint's enforce passes (E lost rows too,
    through D); here the check is per entry, so it refuses, and ``cascade`` takes the entries."""
    A, B, L, D, E, G = declare_simple(schema)
    rel = L & {"cond_in_l": 1}
    original, deleted = len(L), len(rel)
    with pytest.raises(mp.PartIntegrityError, match=r"e__g without their master .*\.e\b"):
        rel.delete(prompt=False)
    assert len(L) == original and len(E.G) == 4800
    rel.delete(prompt=False, part_integrity="cascade")
    assert len(L) == original - deleted
    assert sizes(E, E.F, E.G, E.H, E.M, G) == [0] * 6 and len(B) == 40


def test_delete_downstream_of_parts_that_reference_parts(schema):
    A, B, L, D, E, G = declare_simple(schema)
    key = {"id_a": 4, "id_b": 1}
    n_e = len(E & key)
    assert (B & key).delete(prompt=False) == 1
    assert not (E & key) and not (E.M & key) and not (G & key)
    assert len(E) == 160 - n_e


def test_delete_parts_complex_cascade(schema):
    """DataJoint #151 / PR #1158: a cascade from upstream through a master with parts that
    reference parts (E.M -> E.H) and a downstream table (G)."""
    A, B, L, D, E, G = declare_simple(schema)
    before = len(G)
    (A & {"id_a": 1}).delete(prompt=False, part_integrity="cascade")
    assert before - len(G) == 16
    assert not (E & {"id_a": 1}) and not (E.M & {"id_a": 1}) and len(B) == 36


def test_cascade_delete_of_a_lookup_settles_quickly_with_bounded_sql(schema):
    """``part_integrity="cascade"`` on schema_simple (4,800 rows of E.G, each entry of E with a
    part row referencing every row of L): the plan pulls in every entry of E, rounds until no new
    master entry comes, and stays fast (it used to nest subqueries deeper every round: a parser
    stack overflow on SQLite, minutes and gigabytes on PostgreSQL)."""
    A, B, L, D, E, G = declare_simple(schema)
    rel = L & {"cond_in_l": 1}
    n_l, n_d = len(rel), len(D & rel.proj())
    start = time.perf_counter()
    preview = rel.delete_preview(part_integrity="cascade")
    preview_s = time.perf_counter() - start
    assert preview == {
        G.full_name: 160, E.M.full_name: 640, E.F.full_name: len(E.F), E.G.full_name: 4800,
        E.H.full_name: 640, E.full_name: 160, D.full_name: n_d, L.full_name: n_l,
    }
    assert list(preview)[-1] == L.full_name  # leaves first
    start = time.perf_counter()
    assert rel.delete(prompt=False, part_integrity="cascade") == n_l
    delete_s = time.perf_counter() - start
    print(f"\n{schema.backend.name}: cascade preview {preview_s:.3f} s, delete {delete_s:.3f} s")
    assert preview_s < 20 and delete_s < 20
    assert sizes(E, E.F, E.G, E.H, E.M, G) == [0] * 6
    assert len(L) == 30 - n_l and len(D) == 40 - n_d and len(B.C) > 0


def test_cascade_from_a_part_takes_whole_entries_through_parts_that_reference_parts(schema):
    A, B, L, D, E, G = declare_simple(schema)
    rel = E.H & {"id_h": 0, "id_a": 2}  # E.M references E.H: those rows go too, then the entries
    entries = len(E & {"id_a": 2})
    assert rel.delete_preview(part_integrity="cascade")[E.full_name] == entries
    with pytest.raises(mp.PartIntegrityError):
        rel.delete(prompt=False)
    rel.delete(prompt=False, part_integrity="cascade")
    assert not (E & {"id_a": 2}) and not (E.G & {"id_a": 2}) and len(E) == 160 - entries


def test_delete_from_a_lookup_referenced_by_a_part(schema):
    """DataJoint's Profile / Website (#151): Website is a lookup, Profile.Link a part."""

    @schema
    class Website(mp.Lookup):
        definition = """
        url_hash : uuid
        ---
        url : varchar(1000)
        """

    @schema
    class Profile(mp.Manual):
        definition = """
        ssn : char(11)
        ---
        name : varchar(70)
        """

        class Link(mp.Part):  # DataJoint names it Website too (#365): not declarable here yet
            definition = """
            -> master
            -> Website
            """

    import uuid

    urls = [uuid.uuid5(uuid.NAMESPACE_URL, f"https://example.org/{i}") for i in range(6)]
    Website.insert([(u, f"https://example.org/{i}") for i, u in enumerate(urls)])
    Profile.insert([(f"000-00-000{i}", f"p{i}") for i in range(4)])
    Profile.Link.insert([(f"000-00-000{i}", urls[i + j]) for i in range(4) for j in range(2)])
    with pytest.raises(mp.PartIntegrityError):
        Website().delete(prompt=False, part_integrity="enforce")
    assert len(Website) == 6 and len(Profile.Link) == 8
    Website().delete(prompt=False, part_integrity="cascade")
    assert sizes(Website, Profile.Link, Profile) == [0, 0, 0]
    Profile.insert1(("000-00-0009", "p9"))
    Profile().delete(prompt=False)
    assert len(Profile) == 0
