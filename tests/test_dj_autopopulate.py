"""DataJoint's ``tests/integration/test_autopopulate.py`` intents on its ``schema.py`` shapes
(``Subject`` -> ``Experiment`` -> ``Trial(-> Experiment.proj(animal='subject_id'))`` with part
``Condition`` -> ``Ephys`` with part ``Channel``), on both backends.

Adapted (README "For DataJoint users"): a ``make`` inserts exactly its own master row, so
DataJoint's ``Experiment.make`` (five rows per subject) and ``Trial.make`` (ten per experiment)
become one entry per key of a key source that includes the experiment / trial number. Not
ported: the jobs table (``jobs.refresh/ignore/error``, ``refresh=False``): reservations here are
locks, not rows; ``self.upstream`` (DataJoint 2.x's trace of pre-restricted ancestors).
"""

from __future__ import annotations

import pytest

import mp_dagster as mp

EXPERIMENTS_PER_SUBJECT = 5
TRIALS = 3


def declare(schema):
    @schema
    class User(mp.Lookup):
        definition = """
        username : varchar(12)
        """
        contents = [("Jake",), ("Cathryn",), ("Shan",)]

    @schema
    class Subject(mp.Lookup):
        definition = """
        subject_id : int
        ---
        species : varchar(30)
        """
        contents = [(1551, "mouse"), (1552, "mouse"), (1553, "rat"), (1554, "monkey")]

    @schema
    class ExperimentNo(mp.Lookup):
        definition = """
        experiment_id : int16
        """
        contents = [(i,) for i in range(EXPERIMENTS_PER_SUBJECT)]

    @schema
    class Experiment(mp.Imported):
        definition = """  # information about experiments
        -> Subject
        -> ExperimentNo
        ---
        -> [nullable] User
        notes = "" : varchar(2048)
        """

        def make(self, key):
            users = [None, "Jake", "Shan"]
            self.insert1(dict(key, username=users[(key["subject_id"] + key["experiment_id"]) % 3]))

    @schema
    class TrialNo(mp.Lookup):
        definition = """
        trial_id : int16
        """
        contents = [(i,) for i in range(TRIALS)]

    @schema
    class Trial(mp.Imported):
        definition = """  # a trial within an experiment (issue #516: a renamed key)
        -> Experiment.proj(animal='subject_id')
        -> TrialNo
        ---
        start_time : float64
        """

        class Condition(mp.Part):
            definition = """
            -> Trial
            cond_idx : int16
            ---
            orientation : float32
            """

        def make(self, key):
            self.insert1(dict(key, start_time=key["trial_id"] * 1.5))
            self.Condition.insert(dict(key, cond_idx=c, orientation=c * 12.0) for c in range(4))

    @schema
    class Ephys(mp.Imported):
        definition = """
        -> Trial
        ---
        sampling_frequency : float64
        """

        class Channel(mp.Part):
            definition = """
            -> master
            channel : int16
            ---
            voltage : blob
            """

        def make(self, key):
            self.insert1(dict(key, sampling_frequency=1000.0))
            self.Channel.insert(dict(key, channel=c, voltage=[c] * 3) for c in range(2))

    return User, Subject, Experiment, Trial, Ephys


def test_populate(schema):
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    assert Subject() and not Experiment()  # instances: a table class itself is always truthy
    Experiment.populate()
    assert len(Experiment) == len(Subject) * EXPERIMENTS_PER_SUBJECT
    # restricted populate, by a renamed key as DataJoint's test does
    restriction = Subject.proj(animal="subject_id").fetch("KEY")[0]
    Trial.populate(restriction)
    assert Trial()
    key_source = Trial().key_source
    assert key_source.primary_key == ["animal", "experiment_id", "trial_id"]
    assert len(key_source & Trial) == len(key_source & restriction)
    assert len(key_source - Trial) == len(key_source - restriction)
    # parts are populated with their master
    assert not Ephys() and not Ephys.Channel()
    Ephys.populate()
    assert len(Ephys) == len(Trial) and len(Ephys.Channel) == 2 * len(Trial)
    assert len(Trial.Condition) == 4 * len(Trial)


def test_populate_with_success_count_and_max_calls(schema):
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    assert Experiment.populate(max_calls=3)["success_count"] == 3
    ret = Experiment.populate()
    assert ret["success_count"] == len(Experiment) - 3 and ret["error_list"] == []
    restriction = Subject.proj(animal="subject_id").fetch("KEY")[0]
    ret = Trial.populate(restriction, suppress_errors=True)
    assert len(Trial().key_source & Trial) == ret["success_count"] == EXPERIMENTS_PER_SUBJECT * TRIALS


def test_allow_direct_insert(schema):
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    key = dict(Subject.fetch("KEY", limit=1)[0], experiment_id=1)
    with pytest.raises(mp.DirectInsertError):
        Experiment.insert1(key)
    assert len(Experiment) == 0
    Experiment.insert1(key, allow_direct_insert=True)
    assert len(Experiment) == 1


@pytest.mark.parametrize("processes", [1, 2])
def test_multi_processing(schema, processes):
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    Experiment.populate(processes=processes)
    assert len(Experiment) == len(Subject) * EXPERIMENTS_PER_SUBJECT


def test_populate_antijoin_and_progress(schema):
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    total = len(Experiment().key_source)
    Experiment.populate(max_calls=2)
    assert len(Experiment().key_source - Experiment) == total - 2
    assert Experiment().progress() == (total - 2, total)
    Experiment.populate()
    assert Experiment().progress() == (0, total)


def test_populate_antijoin_overlapping_attrs(schema):
    """A key source with secondary attributes named like the target's, different values."""

    @schema
    class Sensor(mp.Lookup):
        definition = """
        sensor_id : int32
        ---
        num_samples : int32
        quality : decimal(4,2)
        """
        contents = [(1, 100, 0.95), (2, 200, 0.87), (3, 150, 0.92), (4, 175, 0.89)]

    @schema
    class ProcessedSensor(mp.Computed):
        definition = """
        -> Sensor
        ---
        num_samples : int32
        quality : decimal(4,2)
        result : decimal(8,2)
        """

        @property
        def key_source(self):
            return Sensor()

        def make(self, key):
            source = (Sensor() & key).fetch1()
            self.insert1(dict(sensor_id=key["sensor_id"], num_samples=source["num_samples"] * 2,
                              quality=float(source["quality"]) + 0.05,
                              result=float(source["num_samples"]) * float(source["quality"])))

    ProcessedSensor().populate(max_calls=2)
    assert len(ProcessedSensor()) == 2
    ProcessedSensor().populate()
    assert len(ProcessedSensor()) == 4
    assert ProcessedSensor().progress() == (0, 4)


def test_load_dependencies(schema):
    """A table declared after its parent was populated populates from it."""

    @schema
    class ImageSource(mp.Lookup):
        definition = """
        image_source_id : int
        """
        contents = [(0,)]

    @schema
    class Image(mp.Imported):
        definition = """
        -> ImageSource
        ---
        image_data : blob
        """

        def make(self, key):
            self.insert1(dict(key, image_data={}))

    Image.populate()

    @schema
    class Crop(mp.Computed):
        definition = """
        -> Image
        ---
        crop_image : blob
        """

        def make(self, key):
            self.insert1(dict(key, crop_image={}))

    Crop.populate()
    assert len(Crop) == 1


def source_table(schema):
    @schema
    class Source(mp.Lookup):
        definition = """
        source_id : int
        ---
        value : int
        """
        contents = [(1, 100), (2, 200)]

    return Source


def test_make_kwargs_regular(schema):
    Source = source_table(schema)  # noqa: F841 - the definitions name it

    @schema
    class Scaled(mp.Computed):
        definition = """
        -> Source
        ---
        multiplier : int
        result : int
        """

        def make(self, key, multiplier=1):
            self.insert1(dict(key, multiplier=multiplier, result=key["source_id"] * multiplier))

    Scaled.populate({"source_id": 1})
    assert (Scaled & {"source_id": 1}).fetch1("result") == 1
    Scaled.populate({"source_id": 2}, make_kwargs={"multiplier": 10})
    assert (Scaled & {"source_id": 2}).fetch1("multiplier", "result") == (10, 20)


@pytest.mark.parametrize("processes", [1, 2])
def test_make_kwargs_tripartite(schema, processes):
    """DataJoint #1350: make_kwargs go to make_fetch of the three-part make."""
    Source = source_table(schema)  # noqa: F841 - the definitions name it

    @schema
    class Tripartite(mp.Computed):
        definition = """
        -> Source
        ---
        scale : int
        result : int
        """

        def make_fetch(self, key, scale=1):
            return (Source & key).fetch1("value"), scale

        def make_compute(self, key, value, scale):
            return value * scale, scale

        def make_insert(self, key, result, scale):
            self.insert1(dict(key, scale=scale, result=result))

    Tripartite.populate({"source_id": 1}, processes=processes)
    assert (Tripartite & {"source_id": 1}).fetch1("scale", "result") == (1, 100)
    Tripartite.populate({"source_id": 2}, make_kwargs={"scale": 5}, processes=processes)
    assert (Tripartite & {"source_id": 2}).fetch1("scale", "result") == (5, 1000)


def test_tripartite_make_refuses_an_entry_whose_inputs_changed(schema):
    """What DataJoint checks in its transaction: make_fetch reads again after make_insert."""
    Source = source_table(schema)  # noqa: F841 - the definitions name it

    @schema
    class Racing(mp.Computed):
        definition = """
        -> Source
        ---
        result : int
        """

        def make_fetch(self, key):
            return ((Source & key).fetch1("value"),)

        def make_compute(self, key, value):
            # another process changes the input while this computes
            (Source & key).delete(prompt=False, part_integrity="ignore")
            Source.insert1(dict(key, value=value + 1), allow_direct_insert=True)
            return (value * 2,)

        def make_insert(self, key, doubled):
            self.insert1(dict(key, result=doubled))

    with pytest.raises(mp.MakeError, match="changed while make_compute ran"):
        Racing.populate({"source_id": 1})
    assert len(Racing) == 0


def test_a_three_part_make_must_return_tuples(schema):
    Source = source_table(schema)  # noqa: F841 - the definitions name it

    @schema
    class Loose(mp.Computed):
        definition = """
        -> Source
        """

        def make_fetch(self, key):
            return 1

        def make_compute(self, key, value):
            return (value,)

        def make_insert(self, key, value):
            self.insert1(key)

    with pytest.raises(mp.MakeError, match="make_fetch must return a tuple"):
        Loose.populate()
    assert len(Loose) == 0


def test_a_table_without_make_says_what_to_define(schema):
    Source = source_table(schema)  # noqa: F841 - the definitions name it

    @schema
    class Nothing(mp.Computed):
        definition = """
        -> Source
        """

    with pytest.raises(mp.MakeError, match="make_fetch, make_compute and make_insert"):
        Nothing.populate()


def test_populate_with_reservations_respects_restrictions(schema):
    """#1413: populate(reserve_jobs=True) with a restriction computes only those keys."""
    User, Subject, Experiment, Trial, Ephys = declare(schema)
    first = Subject.fetch("KEY", order_by="subject_id", limit=1)[0]
    Experiment.populate(first, reserve_jobs=True)
    assert len(Experiment) == EXPERIMENTS_PER_SUBJECT
    assert len(Experiment - first) == 0
