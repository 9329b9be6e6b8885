"""Hostile and malformed input, property-based (hypothesis), on PostgreSQL and SQLite.

* grammar fuzz: definitions assembled from grammar fragments and junk raise only ``MPError``
  and never leave a table (or a bookkeeping row) behind;
* inserted values of every wrong kind: ``DataError`` or success (and then the row reads back);
* keys with quotes, semicolons, ``|``, ``...``, control characters and unicode round-trip
  exactly through insert / fetch / restrict and through the partition-key codec; NUL is a
  ``DataError``;
* restriction dicts naming unknown attributes: ``QueryError`` (never SQL);
* corrupt and adversarial blobs written raw into the blob column: a ``BlobError`` on fetch,
  bounded memory, and no code execution (pickle payloads stay inert).

``MP_HOSTILE_EXAMPLES`` sets hypothesis' examples per property (default 100; 2000 pass too).
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import math
import os
import pickle
import sqlite3
import struct
import tracemalloc

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mp_dagster as mp
from mp_dagster import blob
from mp_dagster.dagster.partitions import decode_key, encode_key

SETTINGS = settings(max_examples=int(os.environ.get("MP_HOSTILE_EXAMPLES", "100")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
_names = itertools.count()


def declare_class(schema: mp.Schema, name: str, definition: str, base=mp.Manual, part_definition=None,
                  context: dict | None = None):
    body = {"definition": definition}
    if part_definition is not None:
        body["Detail"] = type("Detail", (mp.Part,), {"definition": part_definition})
    cls = type(name, (base,), body)
    schema.context = dict(context or {})
    try:
        return schema(cls)
    finally:
        schema.context = None


def meta_state(schema: mp.Schema):
    return schema.list_tables(), schema.backend.read_meta(schema.name)


# -- grammar fuzz --------------------------------------------------------------------------------

GOOD_NAMES = ["a", "b", "value", "x_1", "id", "key", "order", "select", "from", "user", "a" * 63]
BAD_NAMES = ["Bad", "1abc", "a-b", '"q"', "a;drop", "ü", "_x", "a" * 64, ""]
GOOD_TYPES = ["int", "smallint", "tinyint unsigned", "bigint unsigned", "float", "double", "varchar(12)", "char(3)",
              "decimal(5,2)", "enum('a','b')", "enum('it''s', \"x\")", "date", "datetime", "longblob", "json",
              "uuid", "bool", "text", "bytes", "int unsigned", "attach", "<blob>", "timestamp"]
BAD_TYPES = ["varchar()", "varchar(-1)", "varchar(0)", "varchar(99999999999)", "decimal(2,5)", "decimal(1000,2)",
             "enum()", "enum('a", "datetime(3)", "timestamp(7)", "int(11)", "foo", "int; DROP TABLE x", "",
             "varchar(10) unsigned", "double(3)", "varchar(3)) --", "int\x0bx", "char(99999999)", "decimal(0,0)"]
GOOD_DEFAULTS = ["", "", "", " = null", " = 1", " = 'x'", " = true", " = -1", " = 1.5"]
BAD_DEFAULTS = [" = ", " = 'unterminated", ' = "q"', " = 1e400", " = nan", " = 'a''; DROP TABLE x; --'",
                " = 99999999999999999999999", " = '2024-02-30'", " = CURRENT_TIMESTAMP", " = NULL"]
COMMENTS = ["", "", "  # a comment", "  # ; DROP TABLE x; --", "#", "  # ü \" ' ` $$"]
SPECIAL_LINES = ["---", "----", "-- -", "-> Parent", "-> Missing", "-> [nullable] Parent", "-> [unique] Parent",
                 "-> [bogus] Parent", "->", "-> Parent.Nope", "-> master", "index(a)", "unique index(a, b)",
                 "index()", "index(a, a)", "index(zzz)", "# comment line", "", "   ", ":", "= :", "a : : int",
                 "-> Parent # fk comment", "-> os.system"]


def mostly(good: list[str], bad: list[str]):
    """Mostly valid fragments (so that many definitions get as far as the database), some bad."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(bad))


@st.composite
def attribute_lines(draw):
    return (draw(mostly(GOOD_NAMES, BAD_NAMES)) + draw(mostly(GOOD_DEFAULTS, BAD_DEFAULTS)) + " : "
            + draw(mostly(GOOD_TYPES, BAD_TYPES)) + draw(st.sampled_from(COMMENTS)))


JUNK = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
LINES = st.one_of(attribute_lines(), attribute_lines(), attribute_lines(), st.sampled_from(SPECIAL_LINES), JUNK)
WILD_DEFINITIONS = st.builds(
    lambda comment, lines: "\n".join(([comment] if comment else []) + lines),
    st.sampled_from(["", "# table comment", "# ; DROP TABLE x"]),
    st.lists(LINES, min_size=0, max_size=7),
)
KEY_TYPES = [t for t in GOOD_TYPES if t not in ("longblob", "json", "bytes", "attach", "<blob>")]
SANE_DEFINITIONS = st.builds(
    lambda fk, names, types, defaults, extra: "\n".join(
        fk + [f"{n} : {t}" for n, t in zip(names[:1], types)]
        + ["---"] + [f"{n}{d} : {t}" for n, t, d in zip(names[1:], types[1:], defaults)] + extra),
    st.sampled_from([[], [], ["-> Parent"]]),
    st.lists(st.sampled_from(GOOD_NAMES), min_size=1, max_size=4, unique=True),
    st.lists(st.sampled_from(KEY_TYPES), min_size=4, max_size=4),
    st.lists(st.sampled_from(["", "", " = null", " = null"] + GOOD_DEFAULTS), min_size=3, max_size=3),
    st.one_of(st.just([]), st.just([]), st.lists(LINES, min_size=1, max_size=1)),  # now and then a wild line
)
DEFINITIONS = st.one_of(SANE_DEFINITIONS, WILD_DEFINITIONS)
PART_DEFINITIONS = st.one_of(st.builds("-> master\n{}".format, SANE_DEFINITIONS), WILD_DEFINITIONS)


@pytest.fixture
def parent(schema):
    @schema
    class Parent(mp.Manual):
        definition = """
        pid : int
        """

    return Parent


@SETTINGS
@given(definition=DEFINITIONS, part=st.none() | PART_DEFINITIONS, computed=st.booleans())
def test_grammar_fuzz_raises_mp_errors_and_leaves_nothing_behind(schema, parent, definition, part, computed):
    name = f"Fuzz{next(_names)}"
    before = meta_state(schema)
    base = mp.Computed if computed else mp.Manual
    try:
        cls = declare_class(schema, name, definition, base=base, part_definition=part, context={"Parent": parent})
    except mp.MPError as exc:
        event(f"refused: {type(exc).__name__}")
        assert meta_state(schema) == before  # no table, no bookkeeping row: nothing half-declared
        return
    event("declared" + (" with a part" if part is not None else ""))
    # declared: the tables exist as described, and dropping restores the schema exactly
    tables = set(schema.list_tables())
    assert cls.table_name in tables
    for p in cls.parts:
        assert p.table_name in tables
    cls.drop()
    assert meta_state(schema) == before


def test_part_failing_after_its_master_leaves_no_master(schema, parent):
    """A valid master with a malformed part: the master's CREATE TABLE is rolled back too."""
    before = meta_state(schema)
    with pytest.raises(mp.DeclarationError):
        declare_class(schema, "HalfDeclared", "-> Parent\n---\nv : int", base=mp.Computed,
                      part_definition="-> master\nx : nosuchtype", context={"Parent": parent})
    assert meta_state(schema) == before


# -- inserted values -----------------------------------------------------------------------------

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.text(max_size=20), st.sampled_from(["x" * 1_000_000, "é" * 300, "\x00", "a\x00b", "\ud800"]),
    st.binary(max_size=20), st.dates(), st.datetimes(), st.times(), st.uuids(), st.decimals(),
    st.complex_numbers(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()),
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(max_dims=2, max_side=3)),
    hnp.from_dtype(np.dtype("float64")), hnp.from_dtype(np.dtype("int64")), hnp.from_dtype(np.dtype("uint8")),
    st.just(np.array(["a", "b"])), st.just(np.float64("nan")), st.just(np.datetime64("2024-01-01")),
    st.just(object()), st.just(type), st.just(b"\x00" * 10), st.just(bytearray(b"ab")), st.just({"a": object()}),
)

VALUE_COLUMNS = {
    "i8": "tinyint", "i32": "int", "u64": "bigint unsigned", "f32": "float", "f64": "double",
    "s": "varchar(8)", "t": "text", "dec": "decimal(5,2)", "b": "bool", "d": "date", "ts": "datetime",
    "u": "uuid", "j": "json", "e": "enum('a','b')", "bl": "longblob", "by": "bytes",
}


@pytest.fixture
def value_table(schema):
    body = "\n".join(f"{c} = null : {t}" for c, t in VALUE_COLUMNS.items())
    return declare_class(schema, "Values", f"id : int\n---\n{body}")


@SETTINGS
@given(column=st.sampled_from(sorted(VALUE_COLUMNS)), value=ANY_VALUE)
def test_inserted_values_give_data_error_or_round_trip(value_table, column, value):
    row_id = next(_names)
    try:
        value_table.insert1({"id": row_id, column: value})
    except mp.DataError:
        assert len(value_table & {"id": row_id}) == 0
        return
    # accepted: the row reads back without error, and plain values come back equal
    got = (value_table & {"id": row_id}).fetch1(column)
    if column in ("i8", "i32", "u64") and value is not None:
        assert got == int(value)
    if column in ("s", "t", "e") and value is not None:
        assert got == str(value)
    if column == "f64" and isinstance(value, float):
        assert got == value or (math.isnan(got) and math.isnan(value))


@pytest.mark.parametrize("column, value", [
    ("i32", math.nan), ("i32", math.inf), ("i32", np.float64("nan")), ("i32", np.array([1, 2])),
    ("i32", 2**31), ("i8", 128), ("u64", -1), ("u64", 2**64), ("s", "x" * 9), ("s", "a\x00b"),
    ("t", "\ud800"), ("dec", math.nan), ("dec", decimal.Decimal("inf")), ("dec", 1000), ("b", 2),
    ("d", "2024-02-30"), ("ts", "yesterday"), ("u", "not-a-uuid"), ("j", math.nan), ("j", {"a": object()}),
    ("e", "c"), ("by", "text"), ("f32", 1e39), ("f64", np.array([1.0])), ("s", np.array(["a"])),
    ("i32", np.array(1.5)), ("bl", object()), ("bl", np.array([object()], dtype=object)),
])
def test_wrong_values_are_data_errors(value_table, column, value):
    with pytest.raises(mp.DataError, match=rf"{value_table.full_name}\.{column}"):
        value_table.insert1({"id": 1, column: value})
    assert len(value_table) == 0


@pytest.mark.parametrize("value", [1e26, np.float64(1e26), decimal.Decimal("1e30"), 10**40])
def test_huge_numbers_into_a_decimal_are_data_errors(value_table, value):
    with pytest.raises(mp.DataError, match=rf"{value_table.full_name}\.dec"):
        value_table.insert1({"id": 1, "dec": value})


@pytest.mark.parametrize("value", ["", "abc", "123", '{"a": 1}', "null", "[1, 2]", "true", 'say "hi"'])
def test_json_strings_round_trip(value_table, value, request):
    value_table.insert1({"id": 1, "j": value})
    assert (value_table & {"id": 1}).fetch1("j") == value


# -- hostile keys ----------------------------------------------------------------------------------

HOSTILE_TEXT = ["'", "''", '"', "a'; DROP TABLE x; --", "semi;colon", "a|b", "|", "...", "a...b", "..", "%", "%00",
                "%2E", "\\", "\\'", "\r\n", "\t", "\x1b[31m", "\x7f", "\u200b", "é", "e\u0301", "ß", "SS", "İ",
                "🙂", "\U0010ffff", " ", " a", "a ", "A", "a", "$1", "?", ":name", "%(x)s", "{}", "'||'"]
KEY_TEXT = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
    st.text(alphabet=st.sampled_from("'\";|.%\\,=\n\r\t\x01 aé🙂"), max_size=12),
)


@pytest.fixture
def named(schema):
    Named = declare_class(schema, "Named", "name : varchar(255)\n---\nn : int")  # noqa: N806
    Visit = declare_class(schema, "Visit", "-> Named\nday : date\nlabel : varchar(64)",  # noqa: N806
                          context={"Named": Named})
    return Named, Visit


@SETTINGS
@given(values=st.lists(KEY_TEXT, min_size=1, max_size=8, unique=True))
def test_hostile_keys_round_trip_exactly(schema, named, values):
    Named, Visit = named  # noqa: N806
    tables_before = schema.list_tables()
    Named.insert([{"name": v, "n": i} for i, v in enumerate(values)])
    try:
        Visit.insert([{"name": v, "day": dt.date(2026, 1, 2), "label": v[:64]} for v in values])
        stored = Named.fetch("name", "n", as_dict=True)
        assert sorted((r["name"], r["n"]) for r in stored) == sorted((v, i) for i, v in enumerate(values))
        for i, v in enumerate(values):
            # each value restricts to exactly its own row: no quoting, collation or normalisation
            assert (Named & {"name": v}).fetch("n").tolist() == [i]
            assert (Visit & {"name": v, "label": v[:64]}).fetch1("name") == v
            key = {"name": v}
            assert decode_key(Named, encode_key(Named, key)) == key
            vkey = {"name": v, "day": dt.date(2026, 1, 2), "label": v[:64]}
            text = encode_key(Visit, vkey)
            assert decode_key(Visit, text) == vkey
            assert "..." not in text and "|" not in text
            assert not any(ord(c) < 32 or ord(c) == 127 for c in text)
            assert text.count(",") == 2 and text.count("=") == 3
        assert schema.list_tables() == tables_before  # no statement was altered
    finally:
        Visit.delete(prompt=False)
        Named.delete(prompt=False)


@SETTINGS
@given(text=st.one_of(st.text(max_size=40), st.sampled_from(["", ",", "=", "name=", "name=a,name=b", "%", "%G0",
                                                              "%00", "day=2026-13-01", "name=a,day=x,label=y"])))
def test_arbitrary_partition_keys_decode_or_raise_mp_error(named, text):
    Named, Visit = named  # noqa: N806
    for table in (Named, Visit):
        try:
            key = decode_key(table, text)
        except mp.MPError:
            continue
        assert list(key) == table.primary_key
        if not any(isinstance(v, str) and "\x00" in v for v in key.values()):  # (NUL: never stored)
            assert decode_key(table, encode_key(table, key)) == key


def test_nul_in_a_key_is_a_data_error(named):
    Named, _ = named  # noqa: N806
    with pytest.raises(mp.DataError, match="NUL"):
        Named.insert1({"name": "a\x00b", "n": 1})
    with pytest.raises(mp.QueryError, match="NUL"):
        len(Named & {"name": "a\x00b"})
    assert len(Named) == 0


# -- restrictions naming unknown attributes --------------------------------------------------------

UNKNOWN_NAMES = st.one_of(st.text(max_size=20), st.sampled_from(['n"; DROP TABLE x; --', "N", "name ", "Name",
                                                                  "1", "*", "", "%s", "n) OR (1=1"]))


@SETTINGS
@given(restriction=st.dictionaries(UNKNOWN_NAMES, ANY_VALUE, min_size=1, max_size=3))
def test_restriction_naming_only_unknown_attributes_is_a_query_error(named, restriction):
    Named, _ = named  # noqa: N806
    assume(not any(k in ("name", "n") for k in restriction))
    with pytest.raises(mp.QueryError, match="restriction names no attribute"):
        len(Named & restriction)
    with pytest.raises(mp.QueryError, match="restriction names no attribute"):
        (Named - restriction).fetch()


def test_unknown_attributes_beside_known_ones_do_not_reach_sql(named):
    """DataJoint semantics: in a dict restriction, attributes the table lacks do not restrict."""
    Named, _ = named  # noqa: N806
    Named.insert([{"name": "a", "n": 1}, {"name": "b", "n": 2}])
    hostile = {"name": "a", 'x"; DROP TABLE y; --': 1, "n) OR (1=1": 2}
    assert (Named & hostile).fetch("n").tolist() == [1]
    with pytest.raises(mp.QueryError):
        len(Named & {"n": "not a number"})


# -- corrupt and adversarial blobs -----------------------------------------------------------------


@pytest.fixture
def raw_blobs(schema, tmp_path):
    """A blob table, and a function writing raw bytes into its blob column (bypassing pack)."""
    Blobby = declare_class(schema, "Blobby", "id : int\n---\npayload : longblob")  # noqa: N806
    backend = schema.backend
    if backend.name == "postgres":
        conn = psycopg.connect(backend.url, autocommit=True)
        query = psycopg.sql.SQL("INSERT INTO {} (id, payload) VALUES (%s, %s)").format(
            psycopg.sql.Identifier(schema.name, "blobby"))

        def write(row_id: int, data: bytes) -> None:
            conn.execute(query, (row_id, data))
    else:
        conn = sqlite3.connect(backend.path, isolation_level=None, timeout=30)

        def write(row_id: int, data: bytes) -> None:
            conn.execute(f'INSERT INTO "{schema.name}.blobby" (id, payload) VALUES (?, ?)', (row_id, data))

    yield Blobby, write
    conn.close()


def fetch_raw(Blobby, write, data: bytes):  # noqa: N803
    """Write ``data`` raw, fetch it through the library: the value, or the BlobError."""
    row_id = next(_names)
    write(row_id, data)
    tracemalloc.start()
    try:
        value = (Blobby & {"id": row_id}).fetch1("payload")
        error = None
    except mp.BlobError as exc:
        value, error = None, exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # bounded memory: decoding never allocates much more than the bytes it was given
    assert peak < 16 * len(data) + 4_000_000, (peak, len(data))
    return value, error


class Touch:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


GOOD_VALUES = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.int32, np.uint8, np.complex64, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)),
    st.lists(st.integers() | st.text(max_size=5) | st.floats(allow_nan=False), max_size=5),
    st.dictionaries(st.text(max_size=4), st.integers() | st.none(), max_size=4),
    st.tuples(st.integers(), st.binary(max_size=8), st.dates()),
)


@SETTINGS
@given(value=GOOD_VALUES, data=st.data())
def test_corrupted_blobs_fail_with_blob_error(raw_blobs, value, data):
    Blobby, write = raw_blobs  # noqa: N806
    packed = bytearray(blob.pack(value))
    how = data.draw(st.sampled_from(["truncate", "flip", "splice", "random", "magic+random"]))
    if how == "truncate":
        corrupt = bytes(packed[: data.draw(st.integers(0, len(packed) - 1))])
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(packed) - 1))
            packed[i] = data.draw(st.integers(0, 255))
        corrupt = bytes(packed)
    elif how == "splice":
        i = data.draw(st.integers(0, len(packed)))
        corrupt = bytes(packed[:i]) + data.draw(st.binary(min_size=1, max_size=16)) + bytes(packed[i:])
    elif how == "random":
        corrupt = data.draw(st.binary(max_size=64))
    else:
        corrupt = blob.MAGIC + data.draw(st.binary(max_size=64))
    fetch_raw(Blobby, write, corrupt)  # a value (the damage may be benign) or a BlobError; nothing else


def array_header(dtype: bytes, dims: tuple[int, ...], order: bytes = b"C") -> bytes:
    head = blob.MAGIC + b"A" + bytes([len(dtype)]) + dtype + order + bytes([len(dims)])
    head += b"".join(struct.pack("<Q", d) for d in dims)
    return head + bytes(-len(head) % 16)


ADVERSARIAL = {
    "empty": b"",
    "magic only": blob.MAGIC,
    "huge 2-d array": array_header(b"<f8", (2**31, 2**31)),
    "dims overflow int64": array_header(b"<f8", (2**40, 2**40, 2**40)),
    "dimension >= 2**63": array_header(b"<f8", (2**63,)),
    "dims product wraps to 0": array_header(b"<u1", (2**32, 2**32)) + b"\x00" * 8,
    "65 dimensions": array_header(b"<f8", (1,) * 65),
    "object dtype": array_header(b"|O8", (1,)) + b"\x00" * 8,
    "structured dtype": array_header(b"[('a','<i4')]", (1,)),
    "huge itemsize": array_header(b"|S999999999", (2**20,)),
    "object array of 2**60": blob.MAGIC + b"OC\x01" + struct.pack("<Q", 2**60),
    "list of 2**32-1": blob.MAGIC + b"l" + struct.pack("<I", 2**32 - 1),
    "dict of 2**32-1": blob.MAGIC + b"d" + struct.pack("<I", 2**32 - 1) + b"NN",
    "str of 4 GiB": blob.MAGIC + b"s" + struct.pack("<I", 2**32 - 1) + b"abc",
    "big int of 4 GiB": blob.MAGIC + b"I" + struct.pack("<I", 2**32 - 1),
    "nested 10000 deep": blob.MAGIC + b"l\x01\x00\x00\x00" * 10_000 + b"N",
    "set of unhashables": blob.MAGIC + b"S\x01\x00\x00\x00l\x00\x00\x00\x00",
    "bad date": blob.MAGIC + b"a" + struct.pack("<HBB", 2024, 13, 40),
    "bad utf-8": blob.MAGIC + b"s\x02\x00\x00\x00\xff\xfe",
    "trailing garbage": blob.pack(1) + b"junk",
    "datajoint mYm": b"mYm\x00" + b"\x00" * 32,
    "datajoint zlib": b"ZL123\x00" + b"x\x9c" + b"\x00" * 20,
    "future version": b"mpb9\x00N",
    "npy with pickle": b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 60,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_blobs_give_a_clear_error_and_bounded_memory(raw_blobs, name):
    Blobby, write = raw_blobs  # noqa: N806
    value, error = fetch_raw(Blobby, write, ADVERSARIAL[name])
    assert error is not None, f"{name!r} decoded to {value!r:.200}"
    assert Blobby.full_name in str(error) and ("blob" in str(error).lower())


def test_pickle_payloads_are_never_executed(raw_blobs, tmp_path):
    Blobby, write = raw_blobs  # noqa: N806
    target = tmp_path / "pwned"
    payloads = [pickle.dumps(Touch(str(target)), protocol=p) for p in (0, 2, 4, 5)]
    payloads += [blob.MAGIC + p for p in payloads] + [b"mYm\x00" + p for p in payloads]
    payloads += [blob.MAGIC + b"b" + struct.pack("<I", len(p)) + p for p in payloads[:1]]  # pickle as bytes
    for data in payloads:
        value, error = fetch_raw(Blobby, write, data)
        assert error is not None or isinstance(value, bytes)  # bytes stay bytes, never unpickled
        assert not target.exists(), "a blob executed code"
    assert not target.exists()
