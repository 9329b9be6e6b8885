"""Tests of the blob codec (mp_dagster.blob): round trips, and hostile input on unpack."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import pickle
import struct
import tracemalloc
import uuid
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp_dagster.blob import MAGIC, MAX_DEPTH, pack, unpack
from mp_dagster.errors import BlobError, MPError

# --- helpers ----------------------------------------------------------------------------------


def assert_same(got: object, want: object) -> None:
    """Strict structural equality: same types all the way down (bytearray decodes as bytes)."""
    if isinstance(want, np.ndarray):
        assert type(got) is np.ndarray
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        if want.dtype.kind == "O":
            for g, w in zip(got.ravel(order="K"), want.ravel(order="K")):
                assert_same(g, w)
        else:
            np.testing.assert_array_equal(got, want)
        return
    want_type = bytes if type(want) is bytearray else type(want)
    assert type(got) is want_type, (type(got), want_type)
    if isinstance(want, np.generic):
        assert got.dtype == want.dtype
        if want.dtype.kind in "fc" and np.isnan(want):
            assert np.isnan(got)
        else:
            assert got == want
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert list(got.keys()) == list(want.keys())  # insertion order preserved
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want


def roundtrip(obj: object) -> object:
    blob = pack(obj)
    assert type(blob) is bytes
    assert blob.startswith(MAGIC)
    return unpack(blob)


def array_blob(
    dtype: bytes, shape: tuple[int, ...], data: bytes = b"", order: bytes = b"C"
) -> bytes:
    """Hand-craft an array blob following the documented layout."""
    head = MAGIC + b"A" + bytes([len(dtype)]) + dtype + order + bytes([len(shape)])
    head += struct.pack(f"<{len(shape)}Q", *shape)
    return head + bytes(-len(head) % 16) + data


def assert_blob_error(data: object) -> None:
    with pytest.raises(BlobError):
        unpack(data)  # type: ignore[arg-type]


def safe_unpack(data: bytes) -> None:
    """Unpack must either return a value or raise BlobError -- nothing else."""
    try:
        unpack(data)
    except BlobError:
        pass


# --- arrays -----------------------------------------------------------------------------------

DTYPES = [
    "?",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
    ">f8",
    ">i4",
    ">c16",
    np.longdouble,
    "S5",
    "U3",
    "M8[ns]",
    "M8[D]",
    "m8[s]",
]
SHAPES = [(), (0,), (0, 3), (3, 0), (7,), (1, 1), (3, 4), (3, 4, 5), (2, 1, 3, 2)]


def make_array(dtype: object, shape: tuple[int, ...], order: str) -> np.ndarray:
    size = math.prod(shape)
    base = np.arange(1, size + 1) * 7 % 13
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        flat = (base % 2).astype(dtype)
    elif dtype.kind == "c":
        flat = (base + 1j * base[::-1]).astype(dtype)
    else:
        flat = base.astype(dtype)
    return np.asarray(flat.reshape(shape), order=order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_array_roundtrip(dtype: object, shape: tuple[int, ...], order: str) -> None:
    arr = make_array(dtype, shape, order)
    blob = pack(arr)
    out = unpack(blob)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == arr.dtype
    assert out.dtype.str == arr.dtype.str  # byte order preserved
    assert out.shape == arr.shape
    assert out.flags.c_contiguous == arr.flags.c_contiguous
    assert out.flags.f_contiguous == arr.flags.f_contiguous
    assert out.flags.writeable
    assert not np.shares_memory(out, arr)
    # writable input: zero-copy view of the buffer, still writable, same result
    out2 = unpack(bytearray(blob))
    np.testing.assert_array_equal(out2, arr)
    assert out2.flags.writeable
    assert out2.flags.f_contiguous == arr.flags.f_contiguous
    if out2.size:
        assert out2.flags.aligned


def test_fortran_order_preserved() -> None:
    arr = np.asfortranarray(np.arange(24.0).reshape(2, 3, 4))
    out = unpack(pack(arr))
    assert out.flags.f_contiguous and not out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)
    assert out.strides == arr.strides


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(20.0)[::2],
        lambda: np.arange(20.0)[::-3],
        lambda: np.arange(60).reshape(3, 4, 5)[:, 1:3, ::2],
        lambda: np.arange(60).reshape(3, 4, 5).transpose(1, 0, 2),
        lambda: np.asfortranarray(np.arange(60.0).reshape(6, 10))[:, ::3],
        lambda: np.arange(60.0).reshape(6, 10).T[::-1],
        lambda: np.broadcast_to(np.arange(3), (4, 3)),
    ],
    ids=["step", "negative-step", "3d-slice", "3d-transpose", "F-slice", "T-reversed", "bcast"],
)
def test_non_contiguous_arrays(make) -> None:
    arr = make()
    assert not (arr.flags.c_contiguous or arr.flags.f_contiguous)
    out = unpack(pack(arr))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.flags.c_contiguous or out.flags.f_contiguous
    assert out.flags.writeable


def test_fetched_array_is_writable_and_independent() -> None:
    blob = pack(np.arange(5.0))
    out = unpack(blob)
    out[0] = 42.0
    assert unpack(blob)[0] == 0.0  # the blob itself is untouched


def test_bytearray_input_is_zero_copy_view() -> None:
    buf = bytearray(pack(np.arange(5, dtype=np.int64)))
    out = unpack(buf)
    out[1] = 99
    assert unpack(buf)[1] == 99  # documented: shares memory with a writable input


def test_memoryview_inputs() -> None:
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    blob = pack(arr)
    for data in (
        memoryview(blob),
        memoryview(bytearray(blob)),
        memoryview(bytearray(blob)).toreadonly(),
        memoryview(np.frombuffer(blob, np.uint8)),
        memoryview(b"xx" + blob)[2:],
    ):
        out = unpack(data)
        np.testing.assert_array_equal(out, arr)
        assert out.flags.writeable
    assert unpack(memoryview(bytearray(pack([1, "a"])))) == [1, "a"]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_subclass_and_object_arrays() -> None:
    m = np.asmatrix(np.eye(2))
    out = unpack(pack(m))
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, np.eye(2))

    obj = np.empty((2, 3), dtype=object, order="F")
    obj[0, 0] = [1, "a"]
    obj[0, 1] = np.arange(3)
    obj[1, 2] = {"k": np.float32(2.5)}
    out = unpack(pack(obj))
    assert out.dtype == object and out.shape == (2, 3) and out.flags.f_contiguous
    assert_same(out, obj)
    assert unpack(pack(np.empty((0, 2), dtype=object))).shape == (0, 2)


# --- scalars and Python values --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        np.float64(1.5),
        np.float32(-2.25),
        np.float16(0.5),
        np.longdouble(1) / 3,
        np.int8(-5),
        np.int32(3),
        np.int64(-(2**62)),
        np.uint64(2**64 - 1),
        np.complex64(1 - 2j),
        np.complex128(3 + 4j),
        np.bool_(True),
        np.bool_(False),
        np.float64("nan"),
        np.str_("héllo"),
        np.str_(""),
        np.bytes_(b"ab\x00c"),
        np.bytes_(b""),
        np.datetime64("2024-02-29T12:34:56.789", "ms"),
        np.datetime64("NaT"),
        np.timedelta64(5, "h"),
    ],
    ids=repr,
)
def test_numpy_scalar_roundtrip(value: np.generic) -> None:
    out = roundtrip(value)
    assert type(out) is type(value)
    assert out.dtype == value.dtype
    if value.dtype.kind in "Mm" and np.isnat(value):
        assert np.isnat(out)
    else:
        assert_same(out, value)


BIG = 3**200

PY_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    2**64,
    BIG,
    -BIG,
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    1 + 2j,
    complex(0, -0.0),
    "",
    "ascii",
    "héllo wörld ✓ 日本語 🎉",
    "nul\x00inside",
    b"",
    b"\x00\xff\x80",
    bytearray(b"mutable"),
    [],
    (),
    {},
    [1, 2.5, "three", None, b"4"],
    (1, (2, (3, ()))),
    {"a": 1, "b": [1, 2, {"c": (3, 4)}], "z": None},
    {3: "int key", "s": "str key", (1, "t"): "tuple key", None: "none key", b"k": 1.5},
    {"z": 1, "a": 2, "m": 3},  # insertion order, not sorted
    {1, 2, 3},
    frozenset({"a", "b"}),
    set(),
    {"arr": np.arange(6.0).reshape(2, 3), "list": [np.int16(7), np.zeros((0, 2))]},
    [np.arange(3), np.asfortranarray(np.ones((2, 2))), (np.bool_(True), np.float32(1))],
    decimal.Decimal("3.14159265358979323846264338327950288"),
    decimal.Decimal("-0.000"),
    decimal.Decimal("1E+30"),
    decimal.Decimal("Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    dt.date(2024, 2, 29),
    dt.date(1, 1, 1),
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2024, 11, 3, 1, 30, fold=1),
    dt.time(12, 34, 56, 789),
    dt.time(1, 2, tzinfo=dt.timezone(-dt.timedelta(hours=8))),
    dt.timedelta(days=-3, seconds=7, microseconds=11),
    dt.timedelta(days=999999999),
]


@pytest.mark.parametrize("value", PY_VALUES, ids=lambda v: repr(v)[:40])
def test_python_value_roundtrip(value: object) -> None:
    assert_same(roundtrip(value), value)


def test_datetime_fold_and_tz_preserved() -> None:
    value = dt.datetime(2024, 11, 3, 1, 30, fold=1)
    assert roundtrip(value).fold == 1
    aware = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert roundtrip(aware).utcoffset() == dt.timedelta(hours=-3)


def test_subclasses_encode_as_base_types() -> None:
    class MyInt(int):
        pass

    class MyStr(str):
        pass

    assert_same(roundtrip(MyInt(5)), 5)
    assert_same(roundtrip(MyStr("x")), "x")
    assert_same(roundtrip(OrderedDict([("b", 1), ("a", 2)])), {"b": 1, "a": 2})
    assert_same(roundtrip(memoryview(b"abc")), b"abc")


def test_deep_nesting_limit() -> None:
    value: object = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    assert roundtrip(value) == value
    with pytest.raises(BlobError, match="nested"):
        pack([value])


def test_big_container() -> None:
    value = {f"key{i}": [i, float(i), str(i)] for i in range(2000)}
    assert roundtrip(value) == value


# --- pack errors --------------------------------------------------------------------------------


class Foo:
    pass


@pytest.mark.parametrize(
    "value",
    [
        Foo(),
        object(),
        [1, Foo()],
        {"k": Foo()},
        {Foo(): 1},
        print,
        range(3),
        np.zeros(3, dtype=[("a", "<f8"), ("b", "<i4")]),
        np.zeros(2, dtype="V8"),
        np.zeros(2, dtype=[("a", "<f8")])[0],
        np.ma.masked_array([1, 2], mask=[0, 1]),
        np.array([Foo(), 1], dtype=object),
        "lone surrogate \ud800",
        dt.datetime(2024, 1, 1, tzinfo=dt.tzinfo()),
    ],
    ids=lambda v: type(v).__name__,
)
def test_pack_rejects_unsupported(value: object) -> None:
    with pytest.raises(BlobError):
        pack(value)


def test_pack_error_message_names_type() -> None:
    with pytest.raises(BlobError, match=r"type Foo.*supported: numpy arrays"):
        pack({"x": [Foo()]})
    assert issubclass(BlobError, MPError)


def test_pack_self_referencing_container() -> None:
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(BlobError):
        pack(loop)


# --- hostile input on unpack ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_rejected(protocol: int) -> None:
    for obj in ({"a": 1}, np.arange(3), [1, "x"], Foo):
        assert_blob_error(pickle.dumps(obj, protocol=protocol))
        assert_blob_error(MAGIC + pickle.dumps(obj, protocol=protocol))


def test_pack_output_is_not_pickle() -> None:
    blob = pack({"a": np.arange(3), "b": [1, "x"]})
    with pytest.raises(Exception):  # noqa: B017 - any failure is fine: it is not a pickle
        pickle.loads(blob)


@pytest.mark.parametrize(
    "dtype",
    [b"|O", b"|O8", b"O", b"<O8", b"|V8", b"|V0", b"V", b"<f8,<i4", b"[('a','<f8')]", b"",
     b"<f3", b"<i16", b"|b2", b"<S5", b"|S0", b"<U0", b"|U3", b"<M4", b"<M8[fortnight]",
     b"float64", b"<f8 ", b"<\xff8", b"<i8\x00", b"(2,)<f8", b"<f8(2,)", b"|S99999999999"],
)  # fmt: skip
def test_disallowed_dtype_rejected(dtype: bytes) -> None:
    assert_blob_error(array_blob(dtype, (1,), bytes(8)))
    assert_blob_error(MAGIC + b"n" + bytes([len(dtype)]) + dtype + bytes(8))


def test_object_dtype_crafted_blob_rejected() -> None:
    # 8 "pointers" worth of bytes claiming to be an object array: must never be trusted
    with pytest.raises(BlobError, match="dtype"):
        unpack(array_blob(b"|O", (1,), struct.pack("<Q", id(object()))))


def test_crafted_array_blob_helper_matches_format() -> None:
    arr = np.arange(6, dtype="<f8").reshape(2, 3)
    assert array_blob(b"<f8", (2, 3), arr.tobytes()) == pack(arr)


@pytest.mark.parametrize(
    "shape",
    [
        (10**15,),
        (2**62,),
        (2**63 - 1,),
        (2**64 - 1,),
        (2**32, 2**32),
        (2**63 + 1, 0),
        (10**6, 10**6, 10**6),
        (3, 2**62, 4),
    ],
    ids=str,
)
def test_huge_dimension_claims_fail_fast(shape: tuple[int, ...]) -> None:
    tracemalloc.start()
    try:
        for dtype in (b"<f8", b"|u1", b"<U1000"):
            assert_blob_error(array_blob(dtype, shape, bytes(64)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_zero_size_with_absurd_dims_is_rejected_or_empty() -> None:
    for shape in [(0, 2**62), (0, 2**62, 2**62)]:
        try:
            out = unpack(array_blob(b"<f8", shape))
        except BlobError:
            continue
        assert out.size == 0


def test_too_many_dims_rejected() -> None:
    assert_blob_error(array_blob(b"<f8", (1,) * 65, bytes(8)))
    data = MAGIC + b"A\x03<f8C\xff" + bytes(8 * 255)
    assert_blob_error(data)


def test_huge_container_counts_fail_fast() -> None:
    for tag in b"ltdSzsbID":
        assert_blob_error(MAGIC + bytes([tag]) + struct.pack("<I", 2**32 - 1) + bytes(10))
    # object array claiming 10**12 elements
    assert_blob_error(MAGIC + b"OC\x02" + struct.pack("<QQ", 10**6, 10**6) + b"N" * 10)


def test_deeply_nested_crafted_blob_raises_blob_error() -> None:
    for depth in (MAX_DEPTH + 1, 5000, 200_000):
        nested = MAGIC + (b"l\x01\x00\x00\x00" * depth) + b"N"
        assert_blob_error(nested)
    ok = MAGIC + (b"l\x01\x00\x00\x00" * MAX_DEPTH) + b"N"
    value = unpack(ok)
    for _ in range(MAX_DEPTH):
        value = value[0]  # type: ignore[index]
    assert value is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"m",
        MAGIC,
        MAGIC[:-1],
        b"mpb2\0N",  # future version
        b"mYm\0A" + bytes(20),  # DataJoint blob
        b"dj0\0" + bytes(20),
        b"ZL123\0" + bytes(20),
        b"\x80\x04N.",
        MAGIC + b"?",  # unknown tag
        MAGIC + b"\x00",
        MAGIC + b"NN",  # trailing garbage
        MAGIC + b"i" + bytes(7),
        MAGIC + b"s\x02\x00\x00\x00\xff\xfe",  # invalid utf-8
        MAGIC + b"s\x01\x00\x00\x00\xed",
        MAGIC + b"s\x03\x00\x00\x00\xed\xa0\x80",  # utf-8-encoded surrogate
        MAGIC + b"s\x05\x00\x00\x00ab",  # declared length > present
        MAGIC + b"d\x02\x00\x00\x00iaaaaaaaaNiaaaaaaaaN",  # duplicate dict keys
        MAGIC + b"d\x01\x00\x00\x00l\x00\x00\x00\x00N",  # unhashable dict key
        MAGIC + b"S\x01\x00\x00\x00d\x00\x00\x00\x00",  # unhashable set item
        MAGIC + b"S\x02\x00\x00\x00NN",  # duplicate set items
        MAGIC + b"D\x03\x00\x00\x00abc",  # invalid decimal
        MAGIC + b"D\x02\x00\x00\x00\xff1",
        MAGIC + b"u" + bytes(15),
        MAGIC + b"a" + struct.pack("<HBB", 2023, 2, 29),  # invalid date
        MAGIC + b"a" + struct.pack("<HBB", 0, 1, 1),
        MAGIC + b"w" + struct.pack("<HBBBBBIBB", 2024, 1, 1, 25, 0, 0, 0, 0, 0),
        MAGIC + b"w" + struct.pack("<HBBBBBIBB", 2024, 1, 1, 0, 0, 0, 0, 2, 0),
        MAGIC + b"w" + struct.pack("<HBBBBBIBBq", 2024, 1, 1, 0, 0, 0, 0, 0, 1, 10**11),
        MAGIC + b"w" + struct.pack("<HBBBBBIBBq", 2024, 1, 1, 0, 0, 0, 0, 0, 1, -(2**63)),
        MAGIC + b"w" + struct.pack("<HBBBBBIBB", 2024, 1, 1, 0, 0, 0, 0, 0, 7) + bytes(8),
        MAGIC + b"h" + struct.pack("<BBBIBB", 0, 0, 0, 10**6, 0, 0),
        MAGIC + b"e" + struct.pack("<iII", 0, 86400, 0),
        MAGIC + b"e" + struct.pack("<iII", 2**31 - 1, 0, 0),  # beyond timedelta.max
        array_blob(b"<f8", (2,), bytes(8)),  # too little data
        array_blob(b"<f8", (2,), bytes(24)),  # too much data
        array_blob(b"<f8", (2,), bytes(16), order=b"X"),  # bad order
        array_blob(b"<f8", (2,))[:-1] + b"\x01" + bytes(16),  # non-zero padding
        MAGIC + b"n\x03<f8" + bytes(4),  # truncated scalar
        MAGIC + b"OC\x01" + struct.pack("<Q", 2) + b"N",  # object array, missing element
        MAGIC + b"OZ\x01" + struct.pack("<Q", 1) + b"N",
        MAGIC + b"OC\x01" + struct.pack("<Q", 2**63) + b"N",
    ],
)
def test_malformed_input_raises_blob_error(data: bytes) -> None:
    assert_blob_error(data)
    assert_blob_error(bytearray(data))
    assert_blob_error(memoryview(data))


def test_magic_messages() -> None:
    with pytest.raises(BlobError, match="version"):
        unpack(b"mpb2\0N")
    with pytest.raises(BlobError, match="DataJoint"):
        unpack(b"mYm\0" + bytes(10))
    with pytest.raises(BlobError, match="bad magic"):
        unpack(pickle.dumps(1))
    with pytest.raises(BlobError, match="trailing"):
        unpack(pack(1) + b"\x00")


@pytest.mark.parametrize("data", ["a string", 12, None, [1, 2], 1.5])
def test_non_bytes_input_rejected(data: object) -> None:
    assert_blob_error(data)


SAMPLE_VALUES = [
    np.arange(12, dtype="<f8").reshape(3, 4),
    np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3)),
    np.array(["ab", "cde"]),
    {"a": [1, 2.5, "x", None, b"y"], 7: (True, np.float32(2)), "big": -(2**80)},
    [
        decimal.Decimal("1.5"),
        uuid.UUID(int=5),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
        dt.time(1),
        dt.timedelta(1),
        dt.date(2020, 1, 1),
        {1, 2},
        frozenset(),
        1j,
    ],
    np.array([[1, "a"], [None, [2]]], dtype=object),
]


@pytest.mark.parametrize("value", SAMPLE_VALUES, ids=lambda v: type(v).__name__)
def test_every_truncation_raises_blob_error(value: object) -> None:
    blob = pack(value)
    for n in range(len(blob)):
        with pytest.raises(BlobError):
            unpack(blob[:n])
        with pytest.raises(BlobError):
            unpack(bytearray(blob[:n]))
    with pytest.raises(BlobError):
        unpack(blob + b"\x00")


@pytest.mark.parametrize("value", SAMPLE_VALUES, ids=lambda v: type(v).__name__)
def test_flipped_bytes_never_raise_other_exceptions(value: object) -> None:
    blob = pack(value)
    for i in range(len(blob)):
        for mask in (0x01, 0x10, 0x80, 0xFF):
            corrupt = bytearray(blob)
            corrupt[i] ^= mask
            safe_unpack(bytes(corrupt))


# --- property tests -----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
)
keys = st.text() | st.integers() | st.binary() | st.none() | st.tuples(st.integers(), st.text())
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_property_roundtrip(value: object) -> None:
    out = roundtrip(value)
    assert out == value
    assert_same(out, value)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["?", "i1", "u2", "i4", "u8", "f2", "f4", "f8", "c8", ">f8", "S3", "U2"]),
    st.lists(st.integers(0, 4), max_size=4),
    st.booleans(),
)
def test_property_array_roundtrip(dtype: str, shape: list[int], fortran: bool) -> None:
    arr = make_array(dtype, tuple(shape), "F" if fortran else "C")
    out = roundtrip(arr)
    assert_same(out, arr)
    assert out.flags.f_contiguous == arr.flags.f_contiguous


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes(data: bytes) -> None:
    safe_unpack(data)
    safe_unpack(MAGIC + data)
    for tag in b"AOnld":
        safe_unpack(MAGIC + bytes([tag]) + data)


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_property_corrupted_blob(value: object, data: st.DataObject) -> None:
    blob = bytearray(pack(value))
    i = data.draw(st.integers(len(MAGIC), len(blob) - 1))
    blob[i] = data.draw(st.integers(0, 255))
    safe_unpack(bytes(blob))
    cut = data.draw(st.integers(0, len(blob) - 1))
    assert_blob_error(pack(value)[:cut])
