"""DataJoint's ``tests/integration/test_declare.py`` intents on its ``schema.py`` shapes, on both
backends. The #365 part (``class Type(Part)`` with ``-> Type``) and #381 (``b -> A``) are in
tests/test_dj_renamed_fk.py.

Differences (README "For DataJoint users"): class names must be CamelCase (DataJoint warns on
underscores, #1150, and accepts them); a table needs a primary key (no singleton tables);
``parents/children/ancestors/descendants`` are functions of ``mp.dependencies`` returning table
classes, not methods returning names; attribute properties are on ``attr.type``
(``is_blob``, ``is_integer``), not ``attr.numeric``.
"""

from __future__ import annotations

import pytest
from assertions import raises_naming

import mp_dagster as mp
from mp_dagster import dependencies
from mp_dagster.declare import parse_definition


def declare(schema):
    @schema
    class User(mp.Lookup):
        definition = """  # lab members
        username : varchar(12)
        """
        contents = [("Jake",), ("Cathryn",)]

    @schema
    class Subject(mp.Lookup):
        definition = """  # Basic information about animal subjects used in experiments
        subject_id   :int32  #  unique subject id
        ---
        real_id            :varchar(40)  # real-world name. Omit if the same as subject_id
        species = "mouse"  :enum('mouse', 'monkey', 'human')
        date_of_birth      :date
        subject_notes      :varchar(4000)
        unique index (real_id, species)
        """

    @schema
    class Experiment(mp.Manual):
        definition = """  # information about experiments
        -> Subject
        experiment_id  :int16  # experiment number for this subject
        ---
        experiment_date  :date   # date when experiment was started
        -> [nullable] User
        data_path=""     :varchar(255)  # file path to recorded data
        notes=""         :varchar(2048) # e.g. purpose of experiment
        entry_time=CURRENT_TIMESTAMP :datetime   # automatic timestamp
        """

    @schema
    class Trial(mp.Manual):
        definition = """   # a trial within an experiment
        -> Experiment.proj(animal='subject_id')
        trial_id  :int16   # trial number
        ---
        start_time                 :float64      # (s)
        """

        class Condition(mp.Part):
            definition = """   # trial conditions
            -> Trial
            cond_idx : int16   # condition number
            ----
            orientation :  float32   # degrees
            """

    @schema
    class Ephys(mp.Manual):
        definition = """    # some kind of electrophysiological recording
        -> Trial
        ----
        sampling_frequency :float32   # (Hz)
        duration           :decimal(7,3)   # (s)
        """

        class Channel(mp.Part):
            definition = """     # subtable containing individual channels
            -> master
            channel    :int16   # channel number within Ephys
            ----
            voltage    : blob
            current = null : blob   # optional current to test null handling
            """

    @schema
    class IndexRich(mp.Manual):
        definition = """
        -> Subject
        ---
        -> [unique, nullable] User.proj(first="username")
        first_date : date
        value : int32
        index (first_date, value)
        """

    return User, Subject, Experiment, Trial, Ephys, IndexRich


def test_schema_decorator_and_help(schema):
    User, Subject, *_ = declare(schema)

    @schema
    class TTest(mp.Lookup):
        """
        doc string
        """

        definition = """
        key   :   int32     # key
        ---
        value   :   int32     # value
        """

    assert issubclass(Subject, mp.Lookup) and not issubclass(Subject, mp.Part)
    assert TTest.definition in TTest.__doc__ and "doc string" in TTest.__doc__
    assert TTest().definition in TTest().__doc__
    assert Subject.definition in Subject.__doc__


def test_describe_declares_the_same_table(schema):
    """test_describe / test_describe_indexes / test_describe_dependencies: ``describe()``
    parsed again gives the same structure."""
    tables = declare(schema)
    context = {t.__name__: t for t in tables}
    for t in (*tables, tables[3].Condition, tables[4].Channel):
        ctx = dict(context, master=t.master) if t.master is not None else context

        def resolve(ref, ctx=ctx):
            head, *rest = ref.split(".")
            target = ctx[head]
            for name in rest:
                target = getattr(target, name)
            return target

        again = parse_definition(t.full_name, t().describe(), resolve)
        assert again.spec() == t._definition.spec(), t().describe()


def test_attributes(schema):
    User, Subject, Experiment, Trial, Ephys, IndexRich = declare(schema)
    assert Subject.heading.names == ["subject_id", "real_id", "species", "date_of_birth", "subject_notes"]
    assert Subject.primary_key == ["subject_id"]
    assert Subject.heading["subject_id"].type.is_integer and not Subject.heading["real_id"].type.is_integer
    assert Experiment.heading.names == ["subject_id", "experiment_id", "experiment_date", "username",
                                        "data_path", "notes", "entry_time"]
    assert Experiment.primary_key == ["subject_id", "experiment_id"]
    assert Trial.heading.names == ["animal", "experiment_id", "trial_id", "start_time"]  # #516
    assert Trial.primary_key == ["animal", "experiment_id", "trial_id"]
    assert Ephys.heading.names == ["animal", "experiment_id", "trial_id", "sampling_frequency", "duration"]
    assert Ephys.Channel.heading.names == ["animal", "experiment_id", "trial_id", "channel", "voltage", "current"]
    assert Ephys.Channel.primary_key == ["animal", "experiment_id", "trial_id", "channel"]
    assert Ephys.Channel.heading["voltage"].type.is_blob
    assert IndexRich.heading.names == ["subject_id", "first", "first_date", "value"]


def test_dependencies(schema):
    User, Subject, Experiment, Trial, Ephys, IndexRich = declare(schema)
    assert Experiment in [c for c, _ in dependencies.children(User)]
    assert dependencies.parents(Experiment) == [Subject, User]
    assert Experiment in dependencies.descendants(Subject)
    assert Subject in dependencies.ancestors(Experiment)
    assert Trial in dependencies.descendants(Experiment) and Experiment in dependencies.ancestors(Trial)
    assert {c for c, fk in dependencies.children(Trial) if fk.in_key} == {Ephys, Trial.Condition}
    assert Trial.parts == [Trial.Condition]
    assert dependencies.parents(Ephys) == [Trial]
    assert [c for c, _ in dependencies.children(Ephys)] == [Ephys.Channel]
    assert dependencies.parents(Ephys.Channel) == [Ephys]
    # descendants are in dependency order: parents first
    order = dependencies.descendants(Subject)
    assert order.index(Experiment) < order.index(Trial) < order.index(Ephys) < order.index(Ephys.Channel)


def test_descendants_only_contain_part_table(schema):
    """#927"""

    @schema
    class A(mp.Manual):
        definition = """
        a: int
        """

    @schema
    class B(mp.Manual):
        definition = """
        -> A
        b: int
        """

    @schema
    class Master(mp.Manual):
        definition = """
        table_master: int
        """

        class Part(mp.Part):
            definition = """
            -> master
            -> B
            """

    assert [t.full_name for t in dependencies.descendants(A)] == [
        f"{schema.name}.a", f"{schema.name}.b", f"{schema.name}.master__part"]


@pytest.mark.parametrize("definition, fragment", [
    ("Bad_name : int", "'Bad_name'"),                                       # test_bad_attribute_name
    ("-> [nullable] Subject", "cannot be nullable"),                        # test_primary_nullable_foreign_key
    ("experiment : int\n---\n-> [optional] User", "optional"),              # test_invalid_foreign_key_option
    ("experiment : int\n---\ndescription : completely_invalid_type_xyz", "completely_invalid_type_xyz"),
    ("driverid : tinyint\n---\ncar_count : tinyinteger", "tinyinteger"),   # test_unsupported_int_datatype
])
def test_bad_declarations_are_refused(schema, definition, fragment):
    User, Subject, *_ = declare(schema)  # noqa: F841 - the definitions name them
    before = schema.list_tables()
    with raises_naming(mp.DeclarationError, f"{schema.name}.q", fragment):
        schema(type("Q", (mp.Manual,), {"definition": definition}))
    assert schema.list_tables() == before


def test_int_datatype(schema):
    @schema
    class Owner(mp.Manual):
        definition = """
        ownerid : int
        ---
        car_count : integer
        """

    assert Owner.heading["car_count"].type.is_integer


def test_long_table_name(schema):
    """#205: names over the database's limit are refused."""
    with raises_naming(mp.DeclarationError, "at most 63 characters"):

        @schema
        class WhyWouldAnyoneCreateATableNameThisLong(mp.Manual):
            definition = """
            master : int
            """

            class WithSuchALongPartNameThatItCrashesMySQL(mp.Part):
                definition = """
                -> master
                """

    assert schema.list_tables() == []


def test_index_attribute_name(schema):
    """#1411: an attribute named ``index`` is an attribute."""

    @schema
    class IndexAttribute(mp.Manual):
        definition = """
        index : int
        ---
        index_value : float
        """

    assert IndexAttribute.heading.names == ["index", "index_value"]
    IndexAttribute.insert1((1, 2.0))
    assert IndexAttribute.fetch1() == {"index": 1, "index_value": 2.0}
    IndexAttribute.drop()


def test_table_name_with_underscores_and_singletons_are_refused(schema):
    """Differences: DataJoint warns on underscores (#1150) and declares singleton tables."""
    with raises_naming(mp.DeclarationError, "CamelCase"):

        @schema
        class Table_With_Underscores(mp.Manual):
            definition = """
            id : int
            """

    with raises_naming(mp.DeclarationError, "no primary key"):

        @schema
        class Config(mp.Lookup):
            definition = """
            # Global configuration
            ---
            setting : varchar(100)
            """
