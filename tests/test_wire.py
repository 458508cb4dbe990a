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
    # an equal but distinct dtype instance sends np.add.at down a generic loop ~25x slower,
    # which was most of the server's CPU applying Gibbs count deltas
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


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_refused_cleanly(garbage):
    try:
        wire.decode(garbage)
    except WireFormatError:
        pass


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
    update = _validate({"w": np.ones((10, 3), np.float32),
                        "counts": SparseRows(np.array([1, 3]), np.ones((2, 2), np.int32), (4, 2))})
    assert set(update) == {"w", "counts"}


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
