"""Renamed foreign keys (``-> Animal.proj(subject_id='animal_id')``) and the part declarations
DataJoint accepts (its ``test_declare.py`` #365 case, ``-> master`` below ``---``), on both
backends: the database's foreign keys, inserts, queries, populate, cascading deletes and the
Dagster asset graph all follow the renamed references."""

from __future__ import annotations

import pytest
from assertions import raises_naming

import mp_dagster as mp


def declare_animals(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        ---
        species : varchar(32)
        """

    @schema
    class Observation(mp.Manual):
        definition = """
        obs_id : int
        ---
        -> Animal.proj(subject_id='animal_id')
        measurement : float64
        """

    @schema
    class Pairing(mp.Manual):
        definition = """  # two references to the same parent under different names
        -> Animal.proj(left_id='animal_id')
        -> Animal.proj(right_id = "animal_id")
        ---
        note = '' : varchar(32)
        """

    Animal.insert([(1, "mouse"), (2, "rat"), (3, "mouse")])
    Observation.insert([(1, 1, 10.5), (2, 1, 11.2), (3, 2, 15.3), (4, 3, 1.0)])
    Pairing.insert([(1, 2, "a"), (2, 3, "b"), (3, 1, "c"), (1, 3, "d")])
    return Animal, Observation, Pairing


def test_renamed_foreign_keys_declare_and_reference_the_parent(schema, db_url):
    Animal, Observation, Pairing = declare_animals(schema)
    assert Observation.heading.names == ["obs_id", "subject_id", "measurement"]
    assert Observation.primary_key == ["obs_id"]
    assert Pairing.primary_key == ["left_id", "right_id"]
    assert Pairing.heading["left_id"].type == Animal.heading["animal_id"].type
    # the database enforces the renamed references
    with raises_naming(mp.MissingParentError, Observation.full_name, "subject_id", Animal.full_name):
        Observation.insert1((9, 99, 0.0))
    with raises_naming(mp.MissingParentError, Pairing.full_name, "right_id", Animal.full_name):
        Pairing.insert1((1, 42, "x"))
    assert len(Observation) == 4 and len(Pairing) == 4  # nothing written
    assert "Animal.proj(subject_id='animal_id')\n" in Observation().describe()
    assert "Animal.proj(left_id='animal_id')\n" in Pairing().describe()
    # declaring the same classes again (a restart) matches what the database holds
    again = mp.Schema(schema.name, database_url=db_url)

    @again
    class Animal(mp.Manual):  # noqa: F811
        definition = """
        animal_id : int
        ---
        species : varchar(32)
        """

    @again
    class Observation(mp.Manual):  # noqa: F811
        definition = """
        obs_id : int
        ---
        -> Animal.proj(subject_id='animal_id')
        measurement : float64
        """

    assert len(Observation) == 4


def test_renamed_foreign_keys_in_the_graph_queries_and_deletes(schema):
    Animal, Observation, Pairing = declare_animals(schema)
    assert mp.dependencies.parents(Pairing) == [Animal, Animal]
    assert {c.full_name for c, _ in mp.dependencies.children(Animal)} == {Observation.full_name, Pairing.full_name}
    # joins and restrictions through the renamed name (DataJoint's way: rename the parent)
    subjects = Animal.proj("species", subject_id="animal_id")
    joined = (Observation * subjects & {"species": "mouse"}).fetch("obs_id", order_by="obs_id")
    assert list(joined) == [1, 2, 4]
    assert len(Observation & (subjects & {"species": "rat"})) == 1
    lefts = Pairing * Animal.proj(left_species="species", left_id="animal_id")
    assert sorted((lefts & {"left_species": "mouse"}).fetch("right_id")) == [1, 2, 3]  # pairs (1, 2), (3, 1), (1, 3)
    # the preview and the delete follow both renamed keys
    assert (Animal & {"animal_id": 1}).delete_preview() == {
        Pairing.full_name: 3, Observation.full_name: 2, Animal.full_name: 1}
    assert (Animal & {"animal_id": 1}).delete(prompt=False) == 1
    assert sorted(Observation.fetch("obs_id")) == [3, 4]
    assert Pairing.fetch("left_id", "right_id", as_dict=True) == [{"left_id": 2, "right_id": 3}]
    assert sorted(Animal.fetch("animal_id")) == [2, 3]


def test_renamed_foreign_key_in_the_key_of_a_computed_table_populates(schema):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        """

    @schema
    class Weighing(mp.Computed):
        definition = """
        -> Animal.proj(subject_id='animal_id')
        ---
        grams : float64
        """

        def make(self, key):
            assert set(key) == {"subject_id"}
            self.insert1(dict(key, grams=key["subject_id"] * 2.5))

    Animal.insert([(1,), (2,)])
    assert sorted(k["subject_id"] for k in Weighing().key_source.fetch("KEY")) == [1, 2]
    Weighing.populate()
    assert sorted(zip(*Weighing.fetch("subject_id", "grams"))) == [(1, 2.5), (2, 5.0)]
    (Animal & {"animal_id": 2}).delete(prompt=False)
    assert list(Weighing.fetch("subject_id")) == [1]


def test_renamed_reference_to_a_sibling_part_and_cascade(schema):
    """DataJoint's #1429 shapes: PartB reaches its master only through a renamed reference."""

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
            -> Master.PartA.proj(src_master='master_id', src_part='part_a_id')
            part_b_id : int32
            """

    assert Master.PartB.heading.names == ["src_master", "src_part", "part_b_id"]
    Master.insert([(1,), (2,)])
    Master.PartA.insert([(1, 10), (1, 11), (2, 20)])
    Master.PartB.insert([(1, 10, 100), (1, 11, 110), (2, 20, 200)])
    restricted = Master.PartB & {"src_master": 1, "src_part": 10, "part_b_id": 100}
    with raises_naming(mp.PartIntegrityError, Master.PartB.full_name):
        restricted.delete(prompt=False)
    assert restricted.delete_preview(part_integrity="cascade") == {
        Master.PartB.full_name: 2, Master.PartA.full_name: 2, Master.full_name: 1}
    restricted.delete(prompt=False, part_integrity="cascade")
    assert list(Master.fetch("master_id")) == [2]
    assert list(Master.PartB.fetch("src_master")) == [2]
    # deleting from the master takes PartB through the renamed reference
    (Master & {"master_id": 2}).delete(prompt=False)
    assert len(Master.PartA) == 0 and len(Master.PartB) == 0


@pytest.mark.parametrize("line, fragments", [
    ("-> Animal.proj(subject_id=animal_id)", ("new_name='parent_attribute'",)),
    ("-> Animal.proj(subject_id='species')", ("'species'", "not in the primary key")),
    ("-> Animal.proj(a='animal_id', b='animal_id')", ("'animal_id' twice",)),
    ("-> Animal.proj(Bad='animal_id')", ("'Bad'",)),
    ("-> Animal.restrict(x='animal_id')", ("Table.proj(",)),
    ("-> Animal.proj(x='animal_id'); DROP TABLE t", ("cannot parse foreign key",)),
    ("b -> Animal", ("b -> Animal",)),  # DataJoint's test_bad_fk_rename (#381)
])
def test_bad_renamed_foreign_keys_are_refused(schema, line, fragments):
    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        ---
        species : varchar(32)
        """

    with raises_naming(mp.DeclarationError, f"{schema.name}.obs", *fragments):

        @schema
        class Obs(mp.Manual):
            definition = f"""
            obs_id : int
            ---
            {line}
            """

    assert schema.list_tables() == ["animal"]


def test_a_part_named_like_the_table_it_references(schema):
    """DataJoint's test_declare.py::test_part (#365): ``class Type(Part)`` with ``-> Type``."""

    @schema
    class Type(mp.Lookup):
        definition = """
        type : varchar(255)
        """
        contents = [("Type1",), ("Type2",), ("Type3",)]

    @schema
    class TypeMaster(mp.Manual):
        definition = """
        master_id : int
        """

        class Type(mp.Part):
            definition = """
            -> TypeMaster
            -> Type
            """

    assert TypeMaster.Type.heading.names == ["master_id", "type"]
    assert mp.dependencies.parents(TypeMaster.Type) == [TypeMaster, Type]
    TypeMaster.insert1((1,))
    TypeMaster.Type.insert([(1, "Type1"), (1, "Type3")])
    with raises_naming(mp.MissingParentError, TypeMaster.Type.full_name, Type.full_name):
        TypeMaster.Type.insert1((1, "Type9"))
    (Type & {"type": "Type1"}).delete(prompt=False, part_integrity="cascade")
    assert len(TypeMaster) == 0 and len(TypeMaster.Type) == 0 and len(Type) == 2


def test_a_part_referencing_itself_is_refused(schema):
    with raises_naming(mp.DeclarationError, "cannot reference itself"):

        @schema
        class Holder(mp.Manual):
            definition = """
            holder_id : int
            """

            class Item(mp.Part):
                definition = """
                -> master
                -> Item
                """


def test_a_part_with_its_master_below_the_divider(schema):
    """DataJoint accepts ``-> master`` in the secondary section: the part's own key identifies
    its rows, each still belongs to one master entry."""

    @schema
    class Session(mp.Manual):
        definition = """
        session_id : int
        """

    @schema
    class Sorting(mp.Computed):
        definition = """
        -> Session
        """

        class Unit(mp.Part):
            definition = """
            unit_id : int      # numbered across sessions
            ---
            -> master
            quality : float64
            """

        def make(self, key):
            self.insert1(key)
            self.Unit.insert(dict(key, unit_id=key["session_id"] * 10 + i, quality=i / 2) for i in range(3))

    assert Sorting.Unit.primary_key == ["unit_id"]
    Session.insert([(1,), (2,)])
    Sorting.populate()
    assert sorted(Sorting.Unit.fetch("unit_id")) == [10, 11, 12, 20, 21, 22]
    assert len(Sorting.Unit & {"session_id": 2}) == 3
    with raises_naming(mp.PartIntegrityError, Sorting.Unit.full_name):
        (Sorting.Unit & {"unit_id": 10}).delete(prompt=False)
    assert (Sorting.Unit & {"unit_id": 10}).delete_preview(part_integrity="cascade") == {
        Sorting.Unit.full_name: 3, Sorting.full_name: 1}
    (Session & {"session_id": 1}).delete(prompt=False)
    assert sorted(Sorting.Unit.fetch("unit_id")) == [20, 21, 22]
    (Sorting.Unit & {"unit_id": 21}).delete(prompt=False, part_integrity="cascade")
    assert len(Sorting) == 0 and len(Sorting.Unit) == 0 and len(Session) == 1


def test_dagster_assets_follow_renamed_references(schema, instance):
    """The asset graph has the renamed parent as a dependency; a run materializes the entries
    with parts that reach their master through renamed references / below the divider."""
    import dagster as dg

    from mp_dagster.dagster import build_definitions

    @schema
    class Animal(mp.Manual):
        definition = """
        animal_id : int
        """

    @schema
    class Weighing(mp.Computed):
        definition = """
        -> Animal.proj(subject_id='animal_id')
        ---
        grams : float64
        """

        class Reading(mp.Part):
            definition = """
            reading_id : int
            ---
            -> master
            value : float64
            """

        class Check(mp.Part):
            definition = """
            -> master
            -> Weighing.Reading.proj(checked_reading='reading_id')
            check_no : int
            """

        class Note(mp.Part):
            definition = """  # reaches the master key only through the renamed reference
            -> Weighing.Check.proj(src_subject='subject_id', src_reading='checked_reading')
            ---
            text : varchar(16)
            """

        def make(self, key):
            s = key["subject_id"]
            self.insert1(dict(key, grams=s * 2.0))
            self.Reading.insert([dict(key, reading_id=s * 10 + i, value=i) for i in range(2)])
            self.Check.insert([dict(key, checked_reading=s * 10, check_no=1)])
            self.Note.insert([dict(src_subject=s, src_reading=s * 10, check_no=1, text="ok")])

    Animal.insert([(1,), (2,)])
    defs = build_definitions(schema)
    graph = defs.resolve_asset_graph()
    weighing_key = dg.AssetKey([schema.name, "weighing"])
    assert graph.get(weighing_key).parent_keys == {dg.AssetKey([schema.name, "animal"])}
    sensor = defs.resolve_sensor_def(f"{schema.name}__weighing_pending")
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), definitions=defs)
    result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    assert len(result.run_requests) >= 1
    job = defs.resolve_job_def(f"{schema.name}__weighing_job")
    for request in result.run_requests:
        assert job.execute_in_process(instance=instance, tags=request.tags).success
    assert sorted(Weighing.fetch("subject_id")) == [1, 2]
    assert sorted(Weighing.Reading.fetch("reading_id")) == [10, 11, 20, 21]
    assert sorted(Weighing.Check.fetch("checked_reading")) == [10, 20]
    counts = mp.dagster.assets.stored_counts(Weighing, {"subject_id": 2})
    assert counts == {Weighing.full_name: 1, Weighing.Reading.full_name: 2, Weighing.Check.full_name: 1,
                      Weighing.Note.full_name: 1}
    assert mp.dagster.io_manager.entry_rows(Weighing, {"subject_id": 1})["weighing__note"] == [
        {"src_subject": 1, "src_reading": 10, "check_no": 1, "text": "ok"}]
    (Animal & {"animal_id": 1}).delete(prompt=False)
    assert sorted(Weighing.Check.fetch("checked_reading")) == [20]
    assert list(Weighing.Note.fetch("src_subject")) == [2]
