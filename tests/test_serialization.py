"""serialize / deserialize: round trips, the documented byte layout,
zero-copy reading, and rejection of malformed blobs."""

import gc
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import neuropods_native
from neuropods_native import deserialize, serialize
from helpers import STRING_KIND

NUMERIC = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]
CODES = {name: i + 1 for i, name in enumerate(NUMERIC[:-1])}
CODES.update({"bool": 12, "string": 13})


def _sample(dtype, shape=(2, 3, 4)):
    n = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(n) % 3 == 0).reshape(shape)
    info = np.finfo(dtype) if dtype.startswith("float") else np.iinfo(dtype)
    values = np.linspace(float(info.min) / 2, float(info.max) / 2, n)
    return values.astype(dtype).reshape(shape)


def _roundtrip_equal(a, b):
    assert b.dtype == a.dtype, (a.dtype, b.dtype)
    assert b.shape == a.shape
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4), (1, 0, 3)])
def test_numeric_roundtrip(dtype, shape):
    a = _sample(dtype, shape) if np.prod(shape) else np.zeros(shape, dtype)
    b = deserialize(serialize(a))
    _roundtrip_equal(a, b)
    assert not b.flags.writeable
    assert b.base is not None


def test_extreme_values_roundtrip():
    for dtype in ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]:
        info = np.iinfo(dtype)
        a = np.array([info.min, info.max, 0], dtype)
        _roundtrip_equal(a, deserialize(serialize(a)))
    f = np.array([np.inf, -np.inf, -0.0, np.finfo(np.float64).tiny, np.finfo(np.float64).max])
    b = deserialize(serialize(f))
    _roundtrip_equal(f, b)
    assert np.signbit(b[2])
    nan = deserialize(serialize(np.array([np.nan], np.float32)))
    assert np.isnan(nan[0]) and nan.dtype == np.float32


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a.T, id="transposed"),
        pytest.param(lambda a: a[:, ::2], id="strided"),
        pytest.param(lambda a: a.astype(a.dtype.newbyteorder(">")), id="big-endian"),
        pytest.param(np.asfortranarray, id="fortran"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "int64", "uint16", "float16"])
def test_other_layouts_roundtrip_to_native_c_order(make, dtype):
    a = make(_sample(dtype))
    b = deserialize(serialize(a))
    assert b.dtype == np.dtype(dtype) and b.flags.c_contiguous
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "strings",
    [
        pytest.param(np.array(["a", "héllo", "", "𝄞x", "日本語"]), id="unicode"),
        pytest.param(np.array([["a", "bb"], ["ccc", ""]]), id="2d"),
        pytest.param(np.array([b"ab", b"", b"xyz"]), id="bytes"),
        pytest.param(np.array(["x", "yz"], dtype=object), id="object"),
        pytest.param(np.array([], dtype="<U3"), id="empty"),
        pytest.param(np.array("scalar"), id="0-d"),
    ],
)
def test_string_roundtrip(strings):
    b = deserialize(serialize(strings))
    assert b.dtype.kind == STRING_KIND
    assert b.shape == strings.shape
    assert b.tolist() == strings.astype(str).tolist()


def test_dict_roundtrip_every_dtype():
    d = {dtype: _sample(dtype) for dtype in NUMERIC}
    d["string"] = np.array(["α", "β", "γ"])
    d[""] = np.zeros(2, np.int8)  # empty names are fine in a map
    out = deserialize(serialize(d))
    assert isinstance(out, dict) and set(out) == set(d)
    for name, value in d.items():
        if value.dtype.kind == "U":
            assert out[name].tolist() == value.tolist()
        else:
            _roundtrip_equal(value, out[name])


def test_empty_dict():
    blob = serialize({})
    assert len(blob) == 16
    assert deserialize(blob) == {}


def test_map_bytes_do_not_depend_on_insertion_order():
    a = np.arange(3.0)
    s = np.array(["q"])
    assert serialize({"a": a, "s": s, "b": a}) == serialize({"b": a, "s": s, "a": a})


def test_documented_example_bytes():
    # docs/serialization.md: an int32 tensor of shape [2] holding [1, -1].
    expected = (
        b"NEUROPOD"
        + struct.pack("<HHI", 1, 0, 1)
        + struct.pack("<IIIQQ", 0, 6, 1, 2, 8)
        + bytes(20)
        + struct.pack("<ii", 1, -1)
    )
    assert len(expected) == 72
    assert serialize(np.array([1, -1], np.int32)) == expected
    _roundtrip_equal(np.array([1, -1], np.int32), deserialize(expected))


def _entry(name: bytes, code: int, dims, payload: bytes, offset: int) -> bytes:
    head = struct.pack("<I", len(name)) + name + struct.pack("<II", code, len(dims))
    head += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<Q", len(payload))
    pad = (64 - (offset + len(head)) % 64) % 64
    return head + bytes(pad) + payload


def _map_blob(entries):
    blob = b"NEUROPOD" + struct.pack("<HHI", 1, 1, len(entries))
    for name, code, dims, payload in entries:
        blob += _entry(name, code, dims, payload, len(blob))
    return blob


def _string_payload(strings):
    data = [s.encode() for s in strings]
    return b"".join(struct.pack("<Q", len(d)) for d in data) + b"".join(data)


def test_hand_built_map_matches_layout():
    # Built from the document, in an order the writer would not use.
    words = ["zéro", "", "two"]
    entries = [
        (b"words", 13, [3], _string_payload(words)),
        (b"flags", 12, [2, 2], bytes([1, 0, 0, 1])),
        (b"f16", 1, [3], np.array([1.5, -2.0, 0.25], "<f2").tobytes()),
    ]
    out = deserialize(_map_blob(entries))
    assert out["words"].tolist() == words
    np.testing.assert_array_equal(out["flags"], [[True, False], [False, True]])
    np.testing.assert_array_equal(out["f16"], np.array([1.5, -2.0, 0.25], np.float16))
    # The writer sorts by name, so its bytes differ only in entry order.
    rewritten = serialize({k: out[k] for k in ("words", "flags", "f16")})
    assert rewritten == _map_blob(sorted(entries))


def test_payloads_are_64_byte_aligned():
    blob = serialize({"a": np.arange(3, dtype=np.int8), "bb": np.arange(5.0)})
    out = deserialize(blob)
    start = np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    for arr in out.values():
        assert (arr.__array_interface__["data"][0] - start) % 64 == 0


def test_large_array_is_read_in_place():
    a = np.random.default_rng(0).random(16 * 1024 * 1024, dtype=np.float32)  # 64 MiB
    blob = serialize(a)
    assert isinstance(blob, bytes) and len(blob) == a.nbytes + 64
    arr = deserialize(blob)
    start = np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    ptr = arr.__array_interface__["data"][0]
    assert start <= ptr < start + len(blob)
    assert ptr - start == 64
    assert ptr + arr.nbytes == start + len(blob)
    np.testing.assert_array_equal(arr[:1000], a[:1000])
    assert arr[-1] == a[-1]
    # The array keeps the bytes object alive.
    del blob
    gc.collect()
    assert arr[12345] == a[12345] and arr[-7] == a[-7]


def test_dict_arrays_share_one_blob():
    blob = serialize({"a": np.arange(100, dtype=np.int64), "b": np.ones((10, 10))})
    out = deserialize(blob)
    start = np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    for arr in out.values():
        assert start <= arr.__array_interface__["data"][0] < start + len(blob)
    del blob
    gc.collect()
    assert out["a"].tolist() == list(range(100)) and out["b"].sum() == 100


def test_bytearray_and_memoryview_are_accepted():
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    blob = serialize(a)
    _roundtrip_equal(a, deserialize(bytearray(blob)))
    _roundtrip_equal(a, deserialize(memoryview(blob)))
    _roundtrip_equal(a, deserialize(np.frombuffer(blob, np.uint8)))


def test_a_mutable_buffer_is_copied():
    # A bytearray may change after the call: the arrays must not see it.
    a = np.arange(64, dtype=np.float64)
    data = bytearray(serialize(a))
    out = deserialize(data)
    data[:] = bytes(len(data))
    _roundtrip_equal(a, out)


@settings(max_examples=60, deadline=None, database=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in NUMERIC]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_roundtrip_property(a):
    b = deserialize(serialize(a))
    assert b.dtype == a.dtype and b.shape == a.shape
    assert a.tobytes() == b.tobytes()  # bit-exact, NaNs included


@settings(max_examples=40, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=6), max_size=5), max_size=4))
def test_string_dict_property(d):
    blob = serialize({k: np.array(v, dtype=object) if v else np.array([], "<U1") for k, v in d.items()})
    out = deserialize(blob)
    assert set(out) == set(d)
    for k, v in d.items():
        # Variable-width strings keep every character; numpy 1.x's '<U'
        # drops trailing NULs, so compare as it would store them there.
        expected = v if STRING_KIND == "T" else np.array(v, dtype="<U7").tolist()
        assert out[k].tolist() == expected if v else out[k].size == 0


# ------------------------------------------------------------ malformed input


def _good_blob():
    return serialize({"a": np.arange(5.0), "s": np.array(["xy", "z"]), "t": np.array([True, False])})


def test_every_truncation_is_rejected():
    blob = _good_blob()
    for n in range(len(blob)):
        with pytest.raises(neuropods_native.SerializationError):
            deserialize(blob[:n])


def test_random_corruption_never_crashes():
    blob = bytearray(_good_blob())
    rng = random.Random(1234)
    outcomes = {"error": 0, "ok": 0}
    for _ in range(3000):
        corrupt = bytearray(blob)
        for _ in range(rng.randint(1, 3)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        try:
            deserialize(bytes(corrupt))
        except neuropods_native.SerializationError:
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1  # e.g. a payload byte changed: still valid
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"", "shorter than the 16-byte header"),
        (lambda b: b"garbage!" + b[8:], "bad magic"),
        (lambda b: b[:8] + struct.pack("<H", 2) + b[10:], "unsupported format version 2"),
        (lambda b: b[:10] + struct.pack("<H", 7) + b[12:], "unknown kind 7"),
        (lambda b: b[:12] + struct.pack("<I", 2) + b[16:], "must have 1 entry"),
        (lambda b: b + b"\0", "trailing garbage"),
        (lambda b: b[:20] + struct.pack("<I", 99) + b[24:], "unknown dtype code 99"),
        (lambda b: b[:44] + b"\1" + b[45:], "padding"),
        (lambda b: b[:36] + struct.pack("<Q", 11) + b[44:], "payload"),
    ],
)
def test_specific_corruptions(mutate, message):
    blob = serialize(np.array([1, -1, 7], np.int32))
    with pytest.raises(neuropods_native.SerializationError, match=message) as info:
        deserialize(mutate(blob))
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("cannot deserialize:")


def test_bad_bool_byte():
    blob = bytearray(serialize(np.array([True, False, True])))
    blob[-2] = 2
    with pytest.raises(neuropods_native.SerializationError, match="bool element 1 is 2"):
        deserialize(bytes(blob))


# Guards a bug this suite found (since fixed), as it was: serialize writes numpy bool arrays
# byte for byte, but numpy does not guarantee 0/1 bytes (np.frombuffer(..., bool), .view(bool));
# the blob then fails its own deserialize ('bool element 1 is 2, not 0 or 1'). tensor_from_numpy
# (crates/neuropods-py/src/convert.rs) borrows such arrays as DType::Bool, whose invariant
# (tensor.rs: 'every producer (numpy bool...) guarantees it') is false.
def test_bool_array_with_non_canonical_bytes_roundtrips():
    a = np.frombuffer(bytes([0, 2, 1, 255]), dtype=bool)
    assert a.tolist() == [False, True, True, True]
    try:
        blob = serialize(a)
    except neuropods_native.NeuropodError:
        return  # refusing such an array would be consistent too
    out = deserialize(blob)
    assert out.tolist() == [False, True, True, True]


def test_duplicate_names_in_map():
    entry = (b"a", 8, [1], b"\x05")
    with pytest.raises(neuropods_native.SerializationError, match="duplicate name 'a'"):
        deserialize(_map_blob([entry, entry]))


def test_absurd_entry_count_fails_fast():
    blob = b"NEUROPOD" + struct.pack("<HHI", 1, 1, 0xFFFFFFFF)
    with pytest.raises(neuropods_native.SerializationError, match="claims 4294967295 entries"):
        deserialize(blob)


def test_absurd_shape_fails_without_allocating():
    blob = b"NEUROPOD" + struct.pack("<HHI", 1, 0, 1) + struct.pack("<IIIQQQ", 0, 7, 2, 2**40, 2**40, 8)
    with pytest.raises(neuropods_native.SerializationError):
        deserialize(blob + bytes(64))


def test_invalid_utf8_string_element():
    payload = struct.pack("<Q", 2) + b"\xff\xfe"
    blob = _map_blob([(b"s", 13, [1], payload)])
    with pytest.raises(neuropods_native.SerializationError, match="not valid UTF-8"):
        deserialize(blob)


@pytest.mark.parametrize("value", ["text", None, 1.5, {"a": 1}])
def test_deserialize_non_bytes(value):
    with pytest.raises(neuropods_native.InputTypeError, match="deserialize takes a bytes-like object") as info:
        deserialize(value)
    assert isinstance(info.value, TypeError)


# Guards a bug this suite found (since fixed), as it was: deserialize(int) is not refused: the
# fallback in crates/neuropods-py/src/serde.rs calls builtins.bytes(data), and bytes(n)
# allocates n zero bytes, so deserialize(123) fails later with 'bad magic' and
# deserialize(10**11) would try to allocate 100 GB. Lists/iterables of ints are likewise turned
# into bytes. Only bytes-like objects (buffer protocol) should be accepted; anything else should
# be InputTypeError.
def test_deserialize_int_is_input_type_error():
    with pytest.raises(neuropods_native.InputTypeError, match="deserialize takes a bytes-like object, got int"):
        deserialize(123)


@pytest.mark.parametrize(
    "value, message",
    [
        ([1, 2], "expected a numpy array, got list"),
        ({1: np.zeros(1)}, "keys must be str"),
        ({"a": [1]}, "'a': expected a numpy array"),
        (np.zeros(2, np.complex128), "complex128 is not supported"),
        (np.array(["a", 1], dtype=object), "element 1 is int"),
        (np.array([b"\xff"]), "not valid UTF-8"),
    ],
)
def test_serialize_refuses(value, message):
    with pytest.raises(neuropods_native.InputTypeError, match=message):
        serialize(value)
