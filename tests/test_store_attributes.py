"""Store-backed attribute types on real stores and real databases: ``<blob@store>``,
``<npy@store>``, ``<attach@store>``, ``<filepath@store>`` on a directory and on moto's S3 server
(tests/store_servers.py), on PostgreSQL and SQLite; the write order (objects before the rows'
transaction), garbage collection (``schema.gc()``, ``mp-dagster gc``), hostile input, corrupt
objects, an unreachable store, and the bytes written per store in Dagster's metadata."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from store_servers import S3_ENV, create_bucket, moto_server

import mp_dagster as mp
from mp_dagster.autopopulate import compute_entry, write_entry
from mp_dagster.cli import main as cli_main
from mp_dagster.codecs import Attachment, NpyRef, StoredFile
from mp_dagster.stores import (
    AddressError,
    CorruptObjectError,
    MissingObjectError,
    StoreError,
    get_store,
)

NOW = timedelta(0)  # gc's grace period in tests: collect at once


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory) -> str:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def configure_s3(monkeypatch, endpoint: str, name: str) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"sa-{uuid.uuid4().hex[:12]}"
    create_bucket(endpoint, bucket)
    monkeypatch.setenv(f"MP_DAGSTER_STORE_{name.upper()}", f"s3://{bucket}/lab")
    monkeypatch.setenv(f"MP_DAGSTER_STORE_{name.upper()}_ENDPOINT_URL", endpoint)


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch):
    """Store ``sa``: a directory, or a fresh bucket on moto."""
    if request.param == "file":
        monkeypatch.setenv("MP_DAGSTER_STORE_SA", (tmp_path / "store").as_uri())
    else:
        configure_s3(monkeypatch, request.getfixturevalue("moto_endpoint"), "sa")
    return get_store("sa")


def declare_recording(schema):
    @schema
    class Recording(mp.Manual):
        definition = """  # every store type
        rec : int
        ---
        movie : <npy@sa>
        meta = null : <blob@sa>
        notes = null : <attach@sa>
        raw = null : <filepath@sa>
        """

    return Recording


def objects(store, prefix="") -> set[str]:
    return {o.address for o in store.list(prefix)}


def put_user_file(store, address: str, data: bytes) -> None:
    """A file that arrived in the store by itself (an instrument writing into the folder)."""
    path = f"{store.root}/{address}"
    if store.is_local:
        store.fs.makedirs(store.fs._parent(path), exist_ok=True)
    store.fs.pipe_file(path, data)


def test_each_type_round_trips(schema, store, tmp_path, monkeypatch):
    Recording = declare_recording(schema)
    movie = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    notes = tmp_path / "notes.txt"
    notes.write_text("lamp flickered at t=3 s")
    put_user_file(store, "incoming/session1.bin", b"\x00raw instrument bytes")
    meta = {"rate": 30.0, "mask": np.eye(3, dtype=bool), "names": ["a", "b"]}
    Recording.insert([
        dict(rec=1, movie=movie, meta=meta, notes=str(notes), raw="incoming/session1.bin"),
        dict(rec=2, movie=np.asfortranarray(movie[0]), meta=meta),  # same meta: stored once
        dict(rec=3, movie=movie[:, ::2, 1]),  # a strided view
    ])
    rows = Recording.fetch(as_dict=True, order_by="rec")
    ref = rows[0]["movie"]
    assert isinstance(ref, NpyRef) and ref.shape == (4, 5, 6) and ref.dtype == np.float32
    assert np.array_equal(ref.load(), movie) and np.array_equal(np.asarray(ref), movie)
    assert np.array_equal(rows[1]["movie"].load(), movie[0]) and rows[1]["movie"].fortran_order
    assert np.array_equal(np.asarray(rows[2]["movie"]), movie[:, ::2, 1])
    assert rows[0]["meta"]["rate"] == 30.0 and np.array_equal(rows[0]["meta"]["mask"], np.eye(3, dtype=bool))
    assert rows[1]["meta"]["names"] == ["a", "b"] and rows[2]["meta"] is None
    assert len(objects(store, "sha256")) == 2  # one meta blob (stored once) + one attachment
    attachment = rows[0]["notes"]
    assert isinstance(attachment, Attachment) and attachment.name == "notes.txt" and attachment.size == 23
    out = tmp_path / "downloads"
    out.mkdir()
    downloaded = attachment.download(out)
    assert downloaded == out / "notes.txt" and downloaded.read_text() == "lamp flickered at t=3 s"
    assert attachment.download(out) == downloaded  # the same content: kept as is
    raw = rows[0]["raw"]
    assert isinstance(raw, StoredFile) and raw.read_bytes() == b"\x00raw instrument bytes"
    assert raw.sha256 == hashlib.sha256(b"\x00raw instrument bytes").hexdigest()
    if store.is_local:
        # plain .npy files that any numpy reads; memory-mapped on a file store
        assert np.array_equal(np.load(store.local_path(ref.address)), movie)
        assert isinstance(ref.load(), np.memmap)
        assert Path(raw).read_bytes() == b"\x00raw instrument bytes"
    else:
        with pytest.raises(TypeError, match="not a local file"):
            os.fspath(raw)
    # fetching references reads no object: with the store pointed elsewhere they still come
    monkeypatch.setenv("MP_DAGSTER_STORE_SA", (tmp_path / "elsewhere").as_uri())
    monkeypatch.delenv("MP_DAGSTER_STORE_SA_ENDPOINT_URL", raising=False)
    refs = Recording.fetch("movie", order_by="rec")
    assert [r.shape for r in refs] == [(4, 5, 6), (5, 6), (4, 3)]
    with pytest.raises(MissingObjectError, match="movie"):
        refs[0].load()


def test_reinserting_fetched_values_copies_references_not_data(schema, store, tmp_path):
    Recording = declare_recording(schema)
    notes = tmp_path / "n.txt"
    notes.write_bytes(b"n")
    Recording.insert1(dict(rec=1, movie=np.arange(10), notes=notes))
    before = objects(store)
    row = (Recording & {"rec": 1}).fetch1()
    Recording.insert1(dict(row, rec=2))
    assert objects(store) == before  # the same objects, referenced twice
    assert np.array_equal((Recording & {"rec": 2}).fetch1("movie").load(), np.arange(10))
    (Recording & {"rec": 1}).delete(prompt=False)
    report = schema.gc("sa", grace=NOW, dry_run=False)["sa"]
    assert report.deleted == [] and objects(store) == before


def test_unconfigured_store_is_a_declaration_error(schema, monkeypatch):
    monkeypatch.delenv("MP_DAGSTER_STORE_NOPE", raising=False)
    with pytest.raises(mp.DeclarationError, match=r"\.movie: store 'nope' is not configured: set MP_DAGSTER_STORE_NOPE"):

        @schema
        class Lost(mp.Manual):
            definition = """
            lost : int
            ---
            movie : <npy@nope>
            """

    assert schema.list_tables() == []


def test_default_store_and_batches(schema, monkeypatch, tmp_path):
    """``<blob@>`` is the store ``default``; a batch of rows writes each object once."""
    monkeypatch.setenv("MP_DAGSTER_STORE_DEFAULT", (tmp_path / "default").as_uri())

    @schema
    class Frame(mp.Manual):
        definition = """
        frame : int
        ---
        pixels : <npy@>
        info : <blob@>
        """

    Frame.insert([dict(frame=i, pixels=np.full(4, i), info={"i": i % 2}) for i in range(40)], skip_duplicates=True)
    store = get_store("default")
    assert len(objects(store, "objects")) == 40 and len(objects(store, "sha256")) == 2
    assert [int(p.load()[0]) for p in Frame.fetch("pixels", order_by="frame")] == list(range(40))
    assert str(Frame.heading["pixels"].type) == "<npy@>"


def declare_pipeline(schema, fail_on=()):
    @schema
    class Session(mp.Manual):
        definition = """
        session : int
        """

    @schema
    class Traces(mp.Computed):
        definition = """  # an entry whose arrays live in the store
        -> Session
        ---
        summary : <blob@sa>
        """

        class Cell(mp.Part):
            definition = """
            -> master
            cell : int
            ---
            trace : <npy@sa>
            """

        def make(self, key):
            rng = np.random.default_rng(key["session"])
            traces = rng.random((3, 1000))
            self.insert1(dict(key, summary={"mean": traces.mean(axis=1)}))
            for c, trace in enumerate(traces):
                self.Cell.insert1(dict(key, cell=c, trace=trace))
            if key["session"] in fail_on:
                raise RuntimeError("make failed after writing its objects")

    return Session, Traces


def check_no_dangling(*tables) -> int:
    """Every store value of every row loads (objects present, sizes and hashes right)."""
    checked = 0
    for table in tables:
        for row in table.fetch(as_dict=True):
            for value in row.values():
                if isinstance(value, NpyRef):
                    value.load(mmap=False)
                    checked += 1
    return checked


def test_make_writes_objects_first_and_gc_collects_what_failed(schema, store):
    Session, Traces = declare_pipeline(schema, fail_on=(2,))
    Session.insert([{"session": s} for s in range(3)])
    entry = compute_entry(Traces, {"session": 0})
    # make returned: its objects are in the store, its rows not yet in the database
    assert len(objects(store, "objects")) == 3 and len(Traces()) == 0
    assert entry.store_bytes == {"sa": 3 * (128 + 8000) + len(store.get_bytes(next(iter(objects(store, "sha256")))))}
    assert write_entry(entry)
    result = Traces.populate(suppress_errors=True)
    assert result["success_count"] == 1 and len(result["error_list"]) == 1
    assert sorted(Traces.fetch("session")) == [0, 1] and len(Traces.Cell()) == 6
    assert len(objects(store, "objects")) == 9  # session 2's three arrays are orphans
    preview = schema.gc(grace=NOW)["sa"]  # a dry run: nothing removed
    assert preview.dry_run and len(preview.unreferenced) == 4 and preview.unreferenced_bytes > 24_000
    assert preview.referenced == 8 and len(objects(store)) == 12
    assert schema.gc(grace=timedelta(hours=1))["sa"].unreferenced == []  # all younger than the grace
    report = schema.gc(grace=NOW, dry_run=False)["sa"]
    assert len(report.deleted) == 4 and report.missing == []
    assert check_no_dangling(Traces.Cell) == 6
    # a delete removes rows in one transaction; the objects wait for gc
    (Traces & {"session": 0}).delete(prompt=False)
    assert len(objects(store)) == 8
    report = schema.gc(grace=NOW, dry_run=False)["sa"]
    assert len(report.deleted) == 4 and check_no_dangling(Traces.Cell) == 3
    assert np.array_equal(Traces.Cell.fetch("trace", order_by="cell")[0].load(),
                          np.random.default_rng(1).random((3, 1000))[0])
    # a write the database refuses (no such master) is rolled back; its object is garbage
    with pytest.raises(mp.MissingParentError):
        Traces.Cell.insert1(dict(session=7, cell=0, trace=np.zeros(5)), allow_direct_insert=True)
    assert len(Traces.Cell()) == 3 and len(objects(store, "objects")) == 4
    report = schema.gc(grace=NOW, dry_run=False)["sa"]
    assert len(report.deleted) == 1 and check_no_dangling(Traces.Cell) == 3


def test_gc_sees_every_schema_sharing_the_store(make_schema, store):
    first, second = make_schema("sa1"), make_schema("sa2")
    A, B = declare_recording(first), declare_recording(second)
    shared = np.arange(100.0)
    A.insert1(dict(rec=1, movie=shared, meta={"x": 1}))
    B.insert1(dict(rec=1, movie=shared, meta={"x": 1}))  # the same blob content: one object
    (A & {"rec": 1}).delete(prompt=False)
    report = first.gc("sa", grace=NOW, dry_run=False)["sa"]
    assert len(report.deleted) == 1  # A's array only: B still references the blob
    assert check_no_dangling(B) == 1 and (B & {"rec": 1}).fetch1("meta") == {"x": 1}


def test_cli_gc_previews_asks_and_removes(schema, store, capsys, monkeypatch, tmp_path):
    Recording = declare_recording(schema)
    Recording.insert([dict(rec=r, movie=np.full(10, r)) for r in range(3)])
    (Recording & {"rec": 0}).delete(prompt=False)
    url = schema.database_url
    monkeypatch.setenv("MP_DAGSTER_READ_ONLY", "0")  # the CLI sets both: restored afterwards
    monkeypatch.setenv("MP_DAGSTER_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)  # no definitions.py: the database alone says what to keep
    assert cli_main(["gc", "--database-url", url, "--store", "sa", "--grace", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "store 'sa': would remove 1 unreferenced object(s), 208 bytes" in out
    assert len(objects(store)) == 3
    monkeypatch.setattr("sys.stdin", None)
    assert cli_main(["gc", "--database-url", url, "--store", "sa", "--grace", "0"]) == 2  # no terminal
    assert "pass --yes" in capsys.readouterr().err and len(objects(store)) == 3
    assert cli_main(["gc", "--database-url", url, "--store", "sa", "--grace", "1h", "--yes"]) == 0
    assert len(objects(store)) == 3 and "would remove 0" in capsys.readouterr().out
    assert cli_main(["gc", "--database-url", url, "--store", "sa", "--grace", "0", "--yes"]) == 0
    assert "removed 1 unreferenced" in capsys.readouterr().out and len(objects(store)) == 2
    assert check_no_dangling(Recording) == 2
    assert cli_main(["gc", "--database-url", url, "--grace", "soon"]) == 2
    assert "--grace 'soon'" in capsys.readouterr().err
    # a store this database does not use is never collected (the wrong database, a typo)
    monkeypatch.setenv("MP_DAGSTER_STORE_OTHER", store.url)
    assert cli_main(["gc", "--database-url", url, "--store", "other", "--grace", "0", "--yes"]) == 1
    assert "no attribute of this database" in capsys.readouterr().err and len(objects(store)) == 2


# -- hostile input, damage, failures --------------------------------------------------------


def test_hostile_paths_and_values_are_refused_and_nothing_is_written(schema, store, tmp_path):
    Recording = declare_recording(schema)
    table = Recording.full_name
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    cases = [
        (dict(raw="../outside.txt"), AddressError, r"\.raw: .*'\.\./outside\.txt' refused"),
        (dict(raw="a/../../x"), AddressError, r"\.raw: .*refused"),
        (dict(raw="sha256/ab/cd/x"), mp.DataError, r"\.raw: .*an area the store manages"),
        (dict(raw="incoming/missing.bin"), MissingObjectError, r"\.raw: .*no object"),
        (dict(notes=str(tmp_path / "no-such-file")), mp.DataError, r"\.notes: .*is not a file"),
        (dict(notes=str(tmp_path)), mp.DataError, r"\.notes: .*is not a file"),
        (dict(movie=np.array([object(), 1])), mp.DataError, r"\.movie: .*dtype object"),
        (dict(movie=[1, 2, 3]), mp.DataError, r"\.movie: .*expected a numpy array"),
    ]
    if store.is_local:
        cases.append((dict(raw=str(outside)), mp.DataError, r"\.raw: .*is not under"))
    for bad, error, message in cases:
        row = dict(rec=1, movie=np.zeros(3)) | bad
        with pytest.raises(error, match=table + message):
            Recording.insert1(row)
    assert len(Recording()) == 0
    # a name that could leave the download folder is refused, whatever the database says
    notes = tmp_path / "n.txt"
    notes.write_text("n")
    Recording.insert1(dict(rec=1, movie=np.zeros(3), notes=notes))
    record = Recording.fetch1("notes").record() | {"name": "../escaped.txt"}
    hostile = Attachment("sa", record["address"], record["name"], record["size"], record["sha256"], "notes")
    target = tmp_path / "dl"
    target.mkdir()
    for name in ["../escaped.txt", "a/b", "..", "", "x\x00y", "a\\b"]:
        hostile.name = name
        with pytest.raises(ValueError, match="refused"):
            hostile.download(target)
    assert list(target.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_truncated_or_corrupt_objects_are_detected_on_fetch(schema, store, tmp_path):
    Recording = declare_recording(schema)
    put_user_file(store, "incoming/a.bin", b"original")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(os.urandom(1000))
    Recording.insert1(dict(rec=1, movie=np.arange(1000.0), meta=np.arange(500), notes=notes, raw="incoming/a.bin"))
    row = Recording.fetch1()
    store.fs.pipe_file(f"{store.root}/{row['movie'].address}", b"\x93NUMPY truncated")
    with pytest.raises(CorruptObjectError, match=r"movie: <npy@sa> object .* truncated or replaced"):
        Recording.fetch1("movie").load()
    meta_address = next(iter(objects(store, "sha256") - {row["notes"].address}))
    store.fs.pipe_file(f"{store.root}/{meta_address}", b"garbage")
    with pytest.raises(CorruptObjectError, match=rf"{Recording.full_name}: meta: <blob@sa>: .*truncated or corrupt"):
        Recording.fetch1("meta")
    store.fs.pipe_file(f"{store.root}/{row['notes'].address}", b"x" * 1000)  # same size, other content
    with pytest.raises(CorruptObjectError, match="truncated or corrupt"):
        Recording.fetch1("notes").read_bytes()
    put_user_file(store, "incoming/a.bin", b"modified")  # same size: the checksum tells
    with pytest.raises(CorruptObjectError, match=r"raw: .*'incoming/a.bin' does not have the checksum"):
        Recording.fetch1("raw")
    put_user_file(store, "incoming/a.bin", b"short")
    with pytest.raises(CorruptObjectError, match="has 5 bytes, it had 8"):
        Recording.fetch1("raw")


def test_huge_arrays_stream_in_bounded_memory(schema, store):
    Recording = declare_recording(schema)
    movie = np.random.default_rng(0).random((64, 2**17))  # 64 MiB
    Recording.insert1(dict(rec=0, movie=movie[:1]))  # clients made, models loaded
    tracemalloc.start()
    try:
        Recording.insert1(dict(rec=1, movie=movie))
        insert_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        ref = (Recording & {"rec": 1}).fetch1("movie")
        loaded = ref.load()
        total = float(loaded.sum())
        load_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == pytest.approx(float(movie.sum()))
    assert insert_peak < 0.2 * movie.nbytes, insert_peak  # streamed: never a second copy
    limit = 0.1 if store.is_local else 1.3  # memory-mapped, or read once
    assert load_peak < limit * movie.nbytes, load_peak


def test_unreachable_store_mid_write_is_a_clear_error_and_nothing_is_written(schema, tmp_path, monkeypatch):
    """The S3 server goes away between two writes of one ``make``: the entry fails naming the
    table and attribute, no row is committed, and nothing partial is left."""
    with moto_server(tmp_path / "moto.log") as endpoint:
        configure_s3(monkeypatch, endpoint, "sa")
        Session, Traces = declare_pipeline(schema)
        Session.insert([{"session": 1}, {"session": 2}])
        assert Traces.populate(max_calls=1)["success_count"] == 1
    with pytest.raises(StoreError, match=rf"{Traces.full_name}\.summary: <blob@sa>: .*'sa'.*cannot write"):
        Traces.populate()
    assert Traces.fetch("session").tolist() == [1] and len(Traces.Cell()) == 3
    with pytest.raises(StoreError, match=rf"{Traces.Cell.full_name}\.trace: <npy@sa>: .*cannot write"):
        Traces.Cell.insert1(dict(session=1, cell=9, trace=np.zeros(3)), allow_direct_insert=True)
    assert len(Traces.Cell()) == 3


def test_dagster_materialization_shows_bytes_written_per_store(schema, store, instance):
    import dagster as dg

    from mp_dagster.dagster import build_definitions

    Session, Traces = declare_pipeline(schema)
    Session.insert([{"session": 0}])
    defs = build_definitions(schema)
    instance.add_dynamic_partitions(f"{schema.name}__session", ["0"])
    job = defs.resolve_job_def(f"{schema.name}__traces_job")
    assert job.execute_in_process(partition_key="0", instance=instance).success
    event = instance.get_latest_materialization_event(dg.AssetKey([schema.name, "traces"]))
    metadata = event.asset_materialization.metadata
    assert metadata["store/sa bytes written"].value > 3 * 8000
    assert check_no_dangling(Traces.Cell) == 3


def test_a_codec_of_your_own_in_a_store(schema, store):
    """A user codec accepting stores and chaining to ``<blob>``: ``<graph@sa>`` packs the value
    and stores it through ``<blob@sa>`` (content-addressed)."""
    from mp_dagster import codecs

    class StoredGraph(mp.Codec):
        name = "stored_graph"

        def get_dtype(self, is_store):
            return "<blob>"

        def encode(self, value, *, key=None, store_name=None):
            assert store_name == "sa"
            return {"nodes": sorted(value), "edges": [list(value[n]) for n in sorted(value)]}

        def decode(self, stored, *, key=None):
            return dict(zip(stored["nodes"], map(tuple, stored["edges"])))

    try:
        @schema
        class Net(mp.Manual):
            definition = """
            net : int
            ---
            graph : <stored_graph@sa>
            """

        Net.insert1(dict(net=1, graph={"a": ("b",), "b": ("a",)}))
        assert Net.fetch1("graph") == {"a": ("b",), "b": ("a",)}
        assert len(objects(store, "sha256")) == 1
        assert Net.heading["graph"].type.storage == "<blob> -> <hash> -> json"
        assert schema.gc("sa", grace=NOW, dry_run=False)["sa"].deleted == []
    finally:
        codecs.unregister_codec("stored_graph")
