"""DataJoint's ``tests/integration/test_cascade_delete.py`` (and the cases of its
``test_cascading_delete.py`` that tests/test_cascading_delete.py does not already carry: complex
keys #883/#886, ``Profile.Website`` #151/#365, dropping a part #374, nullable unique chains #1159),
ported to mp_dagster on both backends.

Adapted: ``dj.Diagram.cascade(expr, part_integrity=...).counts()`` is ``expr.delete_preview(...)``
here (keyed by ``schema.table``); restrictions are dicts, not SQL strings; an unknown
``part_integrity`` is an ``MPError``. Differences (README "For DataJoint users"): tables of
schemas that were never declared in this process are not discovered -- the database's own
foreign keys refuse the delete and nothing is deleted; ``drop()`` takes no ``part_integrity``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest
from assertions import raises_naming

import mp_dagster as mp


def parent_child(schema):
    @schema
    class Parent(mp.Manual):
        definition = """
        parent_id : int
        ---
        name : varchar(255)
        """

    @schema
    class Child(mp.Manual):
        definition = """
        -> Parent
        child_id : int
        ---
        data : varchar(255)
        """

    Parent.insert([(1, "P1"), (2, "P2")])
    Child.insert([(1, 1, "C1-1"), (1, 2, "C1-2"), (2, 1, "C2-1")])
    return Parent, Child


def test_simple_cascade_delete(schema):
    Parent, Child = parent_child(schema)
    (Parent & {"parent_id": 1}).delete(prompt=False)
    assert len(Parent) == 1
    assert Child.fetch(as_dict=True) == [{"parent_id": 2, "child_id": 1, "data": "C2-1"}]


def test_multi_level_cascade_delete(schema):
    @schema
    class GrandParent(mp.Manual):
        definition = """
        gp_id : int
        ---
        name : varchar(255)
        """

    @schema
    class Parent(mp.Manual):
        definition = """
        -> GrandParent
        parent_id : int
        ---
        name : varchar(255)
        """

    @schema
    class Child(mp.Manual):
        definition = """
        -> Parent
        child_id : int
        ---
        data : varchar(255)
        """

    GrandParent.insert1((1, "GP1"))
    Parent.insert([(1, 1, "P1"), (1, 2, "P2")])
    Child.insert([(1, 1, 1, "C1"), (1, 1, 2, "C2"), (1, 2, 1, "C3")])
    (GrandParent & {"gp_id": 1}).delete(prompt=False)
    assert len(GrandParent) == len(Parent) == len(Child) == 0


def test_cascade_delete_with_renamed_attrs(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        ---
        species : varchar(255)
        """

    @schema
    class Observation(mp.Manual):
        definition = """
        obs_id : int
        ---
        -> Animal.proj(subject_id='animal_id')
        measurement : float
        """

    Animal.insert([(1, "Mouse"), (2, "Rat")])
    Observation.insert([(1, 1, 10.5), (2, 1, 11.2), (3, 2, 15.3)])
    (Animal & {"animal_id": 1}).delete(prompt=False)
    assert Animal.fetch(as_dict=True) == [{"animal_id": 2, "species": "Rat"}]
    rows = Observation.fetch(as_dict=True)
    assert [(r["obs_id"], r["subject_id"]) for r in rows] == [(3, 2)]
    assert rows[0]["measurement"] == pytest.approx(15.3)


def test_delete_preview_with_counts(schema):
    Parent, Child = parent_child(schema)
    counts = (Parent & {"parent_id": 1}).delete_preview()
    assert counts == {Child.full_name: 2, Parent.full_name: 1}
    assert len(Parent) == 2 and len(Child) == 3  # nothing deleted


def test_cascade_reaches_declared_downstream_schemas_and_refuses_undeclared_ones(make_schema, db_url):
    """DataJoint discovers downstream schemas in the database; here the cascade follows every
    table declared in this process, and the database refuses (nothing deleted) when a table this
    process never declared references the rows."""
    upstream, downstream = make_schema("up"), make_schema("down")

    @upstream
    class Parent(mp.Manual):
        definition = """
        parent_id : int
        ---
        name : varchar(100)
        """

    @downstream
    class Child(mp.Manual):
        definition = """
        -> Parent
        child_id : int
        ---
        data : varchar(100)
        """

    Parent.insert([(1, "Alice"), (2, "Bob")])
    Child.insert([(1, 1, "row1"), (1, 2, "row2"), (2, 1, "row3")])
    assert (Parent & {"parent_id": 1}).delete_preview() == {Child.full_name: 2, Parent.full_name: 1}
    (Parent & {"parent_id": 1}).delete(prompt=False)
    assert len(Parent) == 1 and len(Child) == 1
    # a process that declares only the upstream schema: the downstream rows still protect theirs
    mp.dependencies.unregister(Child.full_name)
    try:
        with raises_naming(mp.MPError, Parent.full_name, "not declared in this process"):
            (Parent & {"parent_id": 2}).delete(prompt=False)
        assert len(Parent) == 1 and len(Child) == 1
    finally:
        mp.dependencies.register(Child)


def master_ab(schema, part_b: str):
    @schema
    class Master(mp.Manual):
        definition = """
        master_id : int32
        """

        class PartA(mp.Part):
            definition = """
            -> master
            part_a_id : int32
            """

        class PartB(mp.Part):
            definition = part_b

    return Master


def test_cascade_part_of_part_no_master_reference(schema):
    """#1429 case 2: PartB references PartA only (no ``-> master``)."""
    Master = master_ab(schema, """
        -> Master.PartA
        part_b_id : int32
        """)
    Master.insert([(1,), (2,)])
    Master.PartA.insert([(1, 10), (1, 11), (2, 20)])
    Master.PartB.insert([(1, 10, 100), (1, 10, 101), (1, 11, 110), (2, 20, 200)])
    counts = (Master.PartB & {"master_id": 1, "part_a_id": 10, "part_b_id": 100}).delete_preview(
        part_integrity="cascade")
    assert counts[Master.full_name] == 1
    assert counts[Master.PartA.full_name] == 2
    assert counts[Master.PartB.full_name] == 3


def test_cascade_part_of_part_renamed_fk(schema):
    """#1429 case 1: PartB has no ``master_id`` (renamed to ``src_master``)."""
    Master = master_ab(schema, """
        -> Master.PartA.proj(src_master='master_id', src_part='part_a_id')
        part_b_id : int32
        """)
    Master.insert([(1,), (2,)])
    Master.PartA.insert([(1, 10), (2, 20)])
    Master.PartB.insert([(1, 10, 100), (2, 20, 200)])
    counts = (Master.PartB & {"src_master": 1, "src_part": 10, "part_b_id": 100}).delete_preview(
        part_integrity="cascade")
    assert counts == {Master.PartB.full_name: 1, Master.PartA.full_name: 1, Master.full_name: 1}


def test_cascade_three_level_part_chain(schema):
    @schema
    class Master(mp.Manual):
        definition = """
        master_id : int32
        """

        class PartA(mp.Part):
            definition = """
            -> master
            part_a_id : int32
            """

        class PartB(mp.Part):
            definition = """
            -> Master.PartA
            part_b_id : int32
            """

        class PartC(mp.Part):
            definition = """
            -> Master.PartB
            part_c_id : int32
            """

    Master.insert([(1,), (2,)])
    Master.PartA.insert([(1, 10), (1, 11), (2, 20)])
    Master.PartB.insert([(1, 10, 100), (1, 11, 110), (2, 20, 200)])
    Master.PartC.insert([(1, 10, 100, 1000), (1, 11, 110, 1100), (2, 20, 200, 2000)])
    counts = (Master.PartC & {"master_id": 1, "part_a_id": 10, "part_b_id": 100, "part_c_id": 1000}
              ).delete_preview(part_integrity="cascade")
    assert counts[Master.full_name] == 1
    assert counts[Master.PartA.full_name] == counts[Master.PartB.full_name] == counts[Master.PartC.full_name] == 2


def test_cascade_part_of_part_actual_delete(schema):
    Master = master_ab(schema, """
        -> Master.PartA
        part_b_id : int32
        """)
    Master.insert([(1,), (2,)])
    Master.PartA.insert([(1, 10), (2, 20)])
    Master.PartB.insert([(1, 10, 100), (2, 20, 200)])
    (Master.PartB & {"master_id": 1}).delete(prompt=False, part_integrity="cascade")
    assert list(Master.fetch("master_id")) == [2]
    assert len(Master.PartA) == 1 and len(Master.PartB) == 1


def test_cascade_two_parts_same_master_both_restrict(schema):
    @schema
    class Ext(mp.Manual):
        definition = """
        ext_id : int32
        """

    @schema
    class Master(mp.Manual):
        definition = """
        master_id : int32
        """

        class PartA(mp.Part):
            definition = """
            -> master
            -> Ext
            """

        class PartB(mp.Part):
            definition = """
            -> master
            -> Ext
            """

    Ext.insert([(1,), (2,)])
    Master.insert([(1,), (2,), (3,)])
    Master.PartA.insert([(1, 1), (3, 2)])
    Master.PartB.insert([(2, 1), (3, 2)])
    assert (Ext & {"ext_id": 1}).delete_preview(part_integrity="cascade")[Master.full_name] == 2
    (Ext & {"ext_id": 1}).delete(prompt=False, part_integrity="cascade")
    assert set(Master.fetch("master_id")) == {3}
    assert len(Master.PartA) == len(Master.PartB) == 1
    assert len(Ext & {"ext_id": 2}) == 1


def test_cascade_rejects_invalid_part_integrity(schema):
    @schema
    class Simple(mp.Manual):
        definition = """
        sid : int32
        """

    Simple.insert([(1,)])
    for call in (lambda: (Simple & {"sid": 1}).delete_preview(part_integrity="casade"),
                 lambda: (Simple & {"sid": 1}).delete(prompt=False, part_integrity="enforcee")):
        with pytest.raises(mp.MPError, match="part_integrity must be one of"):
            call()
    assert len(Simple) == 1


# -- the rest of DataJoint's test_cascading_delete.py ------------------------------------------

def test_delete_complex_keys(schema):
    """#883 / #886: an eight-attribute key."""

    @schema
    class ComplexParent(mp.Lookup):
        definition = "\n".join(f"parent_id_{i + 1}: int32" for i in range(8))
        contents = [tuple(range(8))]

    @schema
    class ComplexChild(mp.Lookup):
        definition = "\n".join(["-> ComplexParent", "child_id_1: int32"])
        contents = [tuple(range(9))]

    restriction = {f"parent_id_{i + 1}": i for i in range(8)} | {"child_id_1": 8}
    assert len(ComplexParent & restriction) == len(ComplexChild & restriction) == 1
    (ComplexParent & restriction).delete(prompt=False)
    assert len(ComplexParent & restriction) == len(ComplexChild & restriction) == 0


def profile_website(schema):
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
        birthdate : date
        sex : enum('M', 'F')
        """

        class Website(mp.Part):  # named like the table it references (#365)
            definition = """
            -> master
            -> Website
            """

    def url_hash(url: str) -> uuid.UUID:
        return uuid.UUID(bytes=hashlib.sha1(url.encode()).digest()[:16])

    for n in range(10):  # DataJoint's populate_random, deterministic
        ssn = f"{n:03d}-00-{n:04d}"
        Profile.insert1(dict(ssn=ssn, name=f"name {n}", birthdate=dt.date(1990, 1, 1 + n), sex="MF"[n % 2]))
        urls = [f"https://example.org/{n}/{k}" for k in range(n % 3 + 1)] + ["https://shared.example"]
        Website.insert([dict(url_hash=url_hash(u), url=u) for u in urls], skip_duplicates=True)
        Profile.Website.insert([dict(ssn=ssn, url_hash=url_hash(u)) for u in urls])
    return Profile, Website


def test_delete_master(schema):
    Profile, Website = profile_website(schema)
    Profile().delete(prompt=False)
    assert len(Profile) == len(Profile.Website) == 0 and len(Website) > 0


def test_delete_parts_error(schema):
    """#151: deleting a part directly is refused under ``enforce``."""
    Profile, Website = profile_website(schema)
    with raises_naming(mp.PartIntegrityError, Profile.Website.full_name, Profile.full_name):
        Profile.Website().delete(prompt=False, part_integrity="enforce")
    # and deleting the referenced lookup rows would orphan whole entries' parts
    with raises_naming(mp.PartIntegrityError, Profile.Website.full_name):
        Website().delete(prompt=False)
    assert len(Profile) == 10


def test_delete_parts(schema):
    """#151: ``cascade`` takes the whole master entries."""
    Profile, Website = profile_website(schema)
    Profile.Website().delete(prompt=False, part_integrity="cascade")
    assert len(Profile) == len(Profile.Website) == 0
    Website().delete(prompt=False)
    assert len(Website) == 0


def test_drop_part(schema):
    """#374: a part is dropped with its master, never alone."""
    Profile, Website = profile_website(schema)
    with raises_naming(mp.MPError, Profile.Website.full_name):
        Profile.Website().drop()
    assert len(Profile.Website) > 0


def test_delete_1159(schema):
    """#1159: the restriction reaches tables through a nullable unique secondary key and a
    secondary key."""

    @schema
    class ThingA(mp.Manual):
        definition = """
        a: int32
        """

    @schema
    class ThingB(mp.Manual):
        definition = """
        b1: int32
        b2: int32
        ---
        b3: int32
        """

    @schema
    class ThingC(mp.Manual):
        definition = """
        -> ThingA
        ---
        -> [unique, nullable] ThingB
        """

    @schema
    class ThingD(mp.Manual):
        definition = """
        d: int32
        ---
        -> ThingC
        """

    @schema
    class ThingE(mp.Manual):
        definition = """
        -> ThingD
        """

    ThingA.insert(dict(a=a) for a in range(7))
    ThingB.insert([dict(b1=1, b2=1, b3=100), dict(b1=1, b2=2, b3=100)])
    ThingC.insert([dict(a=i) for i in range(6)])
    ThingD.insert([dict(a=i, d=i) for i in range(5)])
    ThingE.insert([dict(d=i) for i in range(4)])
    (ThingA & {"a": 3}).delete(prompt=False)
    assert len(ThingA) == 6
    assert len(ThingE) == 3
