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


def test_delete_downstream_of_parts_that_reference_parts(schema):
    A, B, L, D, E, G = declare_simple(schema)
    key = {"id_a": 4, "id_b": 1}
    n_e = len(E & key)
    assert (B & key).delete(prompt=False) == 1
    assert not (E & key) and not (E.M & key) and not (G & key)
    assert len(E) == 160 - n_e
