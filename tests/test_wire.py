"""The wire format: round trips (hypothesis), malformed frames, update validation."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepdist import wire
from deepdist.errors import InvalidUpdateError, WireFormatError
from deepdist.params import ModelSpec
from deepdist.sparse import SparseRows

DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.int64])
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.0123456789", min_size=1, max_size=12)


@st.composite
def dense_arrays(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def sparse_rows(draw):
    dtype = draw(DTYPES)
    n_rows = draw(st.integers(1, 30))
    width = draw(st.integers(0, 5))
    k = draw(st.integers(0, 10))
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    indices = draw(hnp.arrays(index_dtype, (k,), elements=st.integers(0, n_rows - 1)))
    values = draw(hnp.arrays(dtype, (k, width)))
    return SparseRows(indices, values, (n_rows, width))


def assert_same(left, right):
    if isinstance(left, SparseRows):
        assert isinstance(right, SparseRows)
        assert right.shape == left.shape
        np.testing.assert_array_equal(right.indices, left.indices)
        np.testing.assert_array_equal(right.values, left.values)
        assert right.values.dtype == left.values.dtype
    else:
        assert right.dtype == left.dtype and right.shape == left.shape
        np.testing.assert_array_equal(right, left)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(NAMES, st.one_of(dense_arrays(), sparse_rows()), max_size=5),
       st.fixed_dictionaries({"version": st.integers(0, 2**40), "epoch": st.integers(0, 99)}))
def test_round_trip(arrays, meta):
    frame = wire.decode(wire.encode(arrays, meta))
    assert frame.meta == meta
    assert list(frame.arrays) == list(arrays)
    for name, array in arrays.items():
        assert_same(array, frame.arrays[name])


@pytest.mark.skipif(not np.little_endian, reason="the wire is little-endian: on a big-endian host decoded arrays keep a non-native dtype")
def test_decoded_arrays_carry_numpys_own_dtypes():
    # an equal but distinct dtype instance sends np.add.at down a much slower generic loop,
    # and the server applies Gibbs count deltas with it
    sent = {"n": SparseRows(np.array([1, 4], np.int32), np.array([2, -1], np.int32), (9,)),
            "w": np.ones(3, np.float64)}
    frame = wire.decode(wire.encode(sent))
    assert frame.arrays["n"].indices.dtype is np.dtype(np.int32)
    assert frame.arrays["n"].values.dtype is np.dtype(np.int32)
    assert frame.arrays["w"].dtype is np.dtype(np.float64)
    counts = np.zeros(9, np.int32)
    frame.arrays["n"].add_to(counts)
    assert counts.tolist() == [0, 2, 0, 0, -1, 0, 0, 0, 0]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(NAMES, st.one_of(dense_arrays(), sparse_rows()), min_size=1, max_size=4),
       st.data())
def test_every_truncation_is_refused(arrays, data):
    body = wire.encode(arrays, {"version": 1})
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(WireFormatError):
        wire.decode(body[:cut])


def _prefixed(header: bytes, header_len: int | None = None) -> bytes:
    return struct.pack("<4sI", wire.MAGIC, len(header) if header_len is None else header_len) + header


GARBAGE = {
    "empty": (b"", r"frame truncated: 0 bytes is shorter than the 8-byte prefix"),
    "short": (b"DDW", r"frame truncated: 3 bytes is shorter than the 8-byte prefix"),
    "bad magic": (b"GET / HTTP/1.1\r\n", r"not a deepdist frame: bad magic b'GET '"),
    "huge header": (_prefixed(b"", 1 << 31), r"header of 2147483648 bytes exceeds the \d+-byte limit"),
    "header cut short": (_prefixed(b"{}", 100), r"frame truncated inside its header"),
    "header not UTF-8": (_prefixed(b"\xff\xfe{}"), r"header is not valid UTF-8 JSON"),
    "header not JSON": (_prefixed(b"{entries: 1}"), r"header is not valid UTF-8 JSON"),
    "header NaN": (_prefixed(b'{"meta": {"x": NaN}, "entries": []}'), r"header holds NaN, which is not JSON"),
    "header nests deeply": (_prefixed(b"[" * 100_000), r"header JSON nests too deeply"),
    "header a list": (_prefixed(b"[]"), r"header must be a JSON object with an 'entries' list"),
    "entries not a list": (_prefixed(b'{"entries": {}}'), r"header must be a JSON object with an 'entries' list"),
    "entry not an object": (_prefixed(b'{"entries": [1]}'), r"each header entry must be a JSON object"),
}


@pytest.mark.parametrize("body, message", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_refused_with_what_is_wrong(body, message):
    with pytest.raises(WireFormatError, match=message):
        wire.decode(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_are_refused_as_wire_format_errors(garbage, with_magic):
    """Whatever the bytes (behind a valid magic or not), decode refuses them with a WireFormatError
    (no other exception type escapes) that says what is wrong."""
    body = wire.MAGIC + garbage if with_magic else garbage
    if body[:4] == wire.MAGIC and len(body) >= 8:
        # a valid prefix could announce an empty frame; make the header length point past the end
        body = body[:4] + struct.pack("<I", max(len(body), struct.unpack_from("<I", body, 4)[0])) + body[8:]
    with pytest.raises(WireFormatError) as refused:
        wire.decode(body)
    assert type(refused.value) is WireFormatError
    message = str(refused.value)
    assert message.startswith(("frame truncated", "not a deepdist frame", "header")), message


def _frame(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    pad = b"\0" * (-len(raw) % 8)
    return struct.pack("<4sI", b"DDW1", len(raw)) + raw + pad + data


@pytest.mark.parametrize("header, message", [
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "object", "shape": [1]}]}, "dtype"),
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "complex64", "shape": [1]}]}, "dtype"),
    ({"entries": [{"name": "w", "kind": "pickle", "dtype": "float32", "shape": [1]}]}, "kind"),
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "float32", "shape": [-1]}]}, "shape"),
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "float32", "shape": [2**20, 2**20]}]}, "truncated"),
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "float32", "shape": [2**40, 2**40]}]}, r"2\*\*62 bytes"),
    ({"entries": [{"name": "w", "kind": "dense", "dtype": "float32", "shape": [0, 2**63]}]}, r"2\*\*62 bytes"),
    ({"entries": [{"name": "w", "kind": "rows", "dtype": "int64", "shape": [4, 2**61], "rows": 0,
                   "index_dtype": "int32"}]}, r"2\*\*62 bytes"),
    ({"entries": [{"kind": "dense", "dtype": "float32", "shape": [1]}]}, "no name"),
    ({"entries": "nope"}, "entries"),
    ({"meta": [], "entries": []}, "meta"),
])
def test_malformed_headers(header, message):
    with pytest.raises(WireFormatError, match=message):
        wire.decode(_frame(header, b"\0" * 8))


def test_trailing_bytes_and_bad_magic():
    body = wire.encode({"w": np.zeros(2)})
    with pytest.raises(WireFormatError, match="unexpected bytes"):
        wire.decode(body + b"\0" * 8)
    with pytest.raises(WireFormatError, match="magic"):
        wire.decode(b"\x80\x04" + body[2:])


SPEC = ModelSpec.of({"w": np.zeros((10, 3), np.float32), "counts": np.zeros((4, 2), np.int32)})


def _validate(arrays):
    return wire.validate_update(wire.decode(wire.encode(arrays)), SPEC)


def test_validate_accepts_good_updates():
    w = np.arange(30, dtype=np.float32).reshape(10, 3) / 7
    counts = SparseRows(np.array([1, 3, 1]), np.array([[1, -2], [3, 4], [5, 6]], np.int32), (4, 2))
    update = _validate({"w": w, "counts": counts})
    assert list(update) == ["w", "counts"]
    assert isinstance(update["w"], np.ndarray) and update["w"].dtype == np.float32
    assert update["w"].shape == (10, 3)
    np.testing.assert_array_equal(update["w"], w)
    rows = update["counts"]
    assert isinstance(rows, SparseRows) and rows.shape == (4, 2)
    assert rows.values.dtype == np.int32 and rows.values.shape == (3, 2)
    assert rows.indices.tolist() == [1, 3, 1]                      # repeats are kept, in order
    np.testing.assert_array_equal(rows.values, counts.values)
    total = np.zeros((4, 2), np.int32)
    rows.add_to(total)
    assert total.tolist() == [[0, 0], [6, 4], [0, 0], [3, 4]]


@pytest.mark.parametrize("arrays, message", [
    ({"nope": np.zeros((10, 3), np.float32)}, "unknown parameter 'nope'"),
    ({"w": np.zeros((10, 4), np.float32)}, "shape"),
    ({"counts": np.zeros((4, 2), np.float32)}, "cannot be added"),
    ({"w": SparseRows(np.array([10]), np.zeros((1, 3), np.float32), (10, 3))}, "out of range"),
    ({"w": SparseRows(np.array([-1]), np.zeros((1, 3), np.float32), (10, 3))}, "out of range"),
    ({"w": SparseRows(np.array([0]), np.zeros((1, 3), np.float32), (11, 3))}, "claim shape"),
    ({"w": np.full((10, 3), np.nan, np.float32)}, "NaN"),
    ({"w": np.full((10, 3), np.inf, np.float32)}, "NaN or infinite"),
    ({}, "no arrays"),
])
def test_validate_refuses(arrays, message):
    with pytest.raises(InvalidUpdateError, match=message):
        _validate(arrays)


def test_update_meta_is_checked():
    assert wire.parse_update_meta({"version": 3, "partition": 2, "metrics": {"loss": 0.5}}).partition == 2
    for bad in ({}, {"version": -1}, {"version": "3"}, {"version": 1, "metrics": {"loss": "x"}},
                {"version": 1, "metrics": {"loss": float("nan")}}, {"version": True}):
        with pytest.raises(InvalidUpdateError):
            wire.parse_update_meta(bad)
