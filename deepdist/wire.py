"""The binary container that carries named arrays over HTTP.

Layout of a frame (all integers little-endian)::

    offset 0   4 bytes   magic  b"DDW1"
    offset 4   4 bytes   uint32 H, the header length
    offset 8   H bytes   UTF-8 JSON header: {"meta": {...}, "entries": [...]}
               padding   zero bytes up to a multiple of 8
    data       the entries' bytes, in header order, each padded to a multiple of 8

Each entry is one named array:

* ``{"name", "kind": "dense", "dtype", "shape"}``: a C-order array of ``shape``.
* ``{"name", "kind": "rows", "dtype", "shape", "rows", "index_dtype"}``: ``rows``
  row indices (``index_dtype``) followed by ``rows`` rows of a parameter whose
  full shape is ``shape``; the values block has shape ``(rows,) + shape[1:]``.

``dtype`` is one of ``float32 float64 int32 int64``; the frame must end exactly
after the last entry.  ``meta`` carries the model version, the sender's epoch,
partition, attempt and sequence number, and worker metrics.

Decoding only parses JSON and takes ``np.frombuffer`` views: it never executes
code, so a hostile body can at worst be refused.  :func:`validate_update` then
checks a decoded update against the model before anything touches it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidUpdateError, WireFormatError
from .params import ALLOWED_DTYPES, ModelSpec
from .sparse import SparseRows

MAGIC = b"DDW1"
CONTENT_TYPE = "application/x-deepdist-frame"
_PREFIX = struct.Struct("<4sI")
_ALIGN = 8
MAX_HEADER_BYTES = 1 << 20
MAX_ENTRIES = 4096
MAX_NDIM = 8
#: An entry may declare at most this many bytes, counting zero-length axes as 1: numpy refuses
#: shapes whose size overflows its index type even when the array is empty, as ``(0, 2**63)`` is
MAX_DECLARED_BYTES = 1 << 62
#: integer fields of an update's meta must fit an int64, as they do in Spark
_INT64 = 1 << 63
_INDEX_DTYPES = ("int32", "int64")


@dataclass
class Frame:
    """A decoded frame: ``meta`` plus ``{name: ndarray | SparseRows}``."""

    meta: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


def _pad(n: int) -> int:
    return -n % _ALIGN


def _le(dtype) -> np.dtype:
    # spelt "<i4", not newbyteorder("<"): on a little-endian host the former is numpy's own int32
    # instance, the latter an equal copy for which np.add.at (the server's count updates) falls
    # back to a much slower generic loop
    return np.dtype("<" + np.dtype(dtype).str[1:])


def encode_parts(arrays: dict, meta: dict | None = None) -> list:
    """Encode ``arrays`` as a list of buffers whose concatenation is one frame.

    The parts are views of the arrays: joining them is the only copy.
    """
    entries, blocks = [], []
    for name, part in arrays.items():
        if isinstance(part, SparseRows):
            values = np.ascontiguousarray(part.values, dtype=_le(part.values.dtype))
            indices = np.ascontiguousarray(part.indices)
            if indices.dtype.name not in _INDEX_DTYPES:
                indices = indices.astype("<i8")
            indices = indices.astype(_le(indices.dtype), copy=False)
            entries.append({
                "name": name, "kind": "rows", "dtype": values.dtype.name,
                "shape": list(part.shape), "rows": int(len(indices)),
                "index_dtype": indices.dtype.name,
            })
            blocks.extend([indices, values])
        else:
            array = np.asarray(part)
            # not ascontiguousarray: that turns 0-d arrays into 1-d ones
            array = array.astype(_le(array.dtype), order="C", copy=False)
            entries.append({"name": name, "kind": "dense", "dtype": array.dtype.name,
                            "shape": list(array.shape)})
            blocks.append(array)
    header = json.dumps({"meta": meta or {}, "entries": entries}, separators=(",", ":"),
                        allow_nan=False).encode()
    parts = [_PREFIX.pack(MAGIC, len(header)), header, b"\0" * _pad(len(header))]
    for block in blocks:
        raw = memoryview(block).cast("B") if block.size else b""
        parts.append(raw)
        if _pad(block.nbytes):
            parts.append(b"\0" * _pad(block.nbytes))
    return parts


def encode(arrays: dict, meta: dict | None = None) -> bytes:
    """Encode ``arrays`` (``{name: ndarray | SparseRows}``) and ``meta`` as one frame."""
    return b"".join(encode_parts(arrays, meta))


def decode(body, max_header_bytes: int = MAX_HEADER_BYTES) -> Frame:
    """Parse a frame; raise :class:`WireFormatError` saying what is wrong with it.

    Arrays are read-only views into ``body``. ``max_header_bytes`` bounds what a request can make
    the server parse; files the process wrote itself (:mod:`deepdist.persist`) may carry more.
    """
    view = memoryview(body).cast("B")
    if len(view) < _PREFIX.size:
        raise WireFormatError(f"frame truncated: {len(view)} bytes is shorter than the 8-byte prefix")
    magic, header_len = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise WireFormatError(f"not a deepdist frame: bad magic {bytes(magic)!r}")
    if header_len > max_header_bytes:
        raise WireFormatError(f"header of {header_len} bytes exceeds the {max_header_bytes}-byte limit")
    data_start = _PREFIX.size + header_len
    if len(view) < data_start:
        raise WireFormatError("frame truncated inside its header")
    header = _parse_header(bytes(view[_PREFIX.size:data_start]))
    if not isinstance(header, dict) or not isinstance(header.get("entries"), list):
        raise WireFormatError("header must be a JSON object with an 'entries' list")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise WireFormatError("header 'meta' must be a JSON object")
    entries = header["entries"]
    if len(entries) > MAX_ENTRIES:
        raise WireFormatError(f"{len(entries)} entries exceed the limit of {MAX_ENTRIES}")

    offset = data_start + _pad(data_start)
    arrays = {}
    for entry in entries:
        name, kind, dtype, shape = _entry_fields(entry)
        if name in arrays:
            raise WireFormatError(f"entry {name!r} appears twice")
        if kind == "dense":
            arrays[name], offset = _take(view, offset, dtype, shape, name)
        else:
            rows = entry.get("rows")
            index_dtype = entry.get("index_dtype")
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                raise WireFormatError(f"entry {name!r}: 'rows' must be a non-negative integer")
            if index_dtype not in _INDEX_DTYPES:
                raise WireFormatError(f"entry {name!r}: index dtype {index_dtype!r} is not one of {_INDEX_DTYPES}")
            if not shape:
                raise WireFormatError(f"entry {name!r}: sparse rows need a shape with at least one dimension")
            indices, offset = _take(view, offset, np.dtype(index_dtype), (rows,), name)
            values, offset = _take(view, offset, dtype, (rows,) + shape[1:], name)
            arrays[name] = SparseRows(indices, values, shape)
    if offset != len(view):
        raise WireFormatError(f"frame has {len(view) - offset} unexpected bytes after its last entry"
                              if offset < len(view) else "frame truncated")
    return Frame(meta, arrays)


def _refuse_constant(name):
    raise WireFormatError(f"header holds {name}, which is not JSON (frames are written with allow_nan=False)")


def _parse_header(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except WireFormatError:
        raise
    except (UnicodeDecodeError, ValueError) as err:  # ValueError: also integers beyond Python's digit limit
        raise WireFormatError(f"header is not valid UTF-8 JSON: {err}") from err
    except RecursionError as err:
        # json's parser recurses once per level: a header of nested brackets exhausts the limit
        raise WireFormatError("header JSON nests too deeply (a frame's header needs 4 levels)") from err


def _entry_fields(entry):
    if not isinstance(entry, dict):
        raise WireFormatError("each header entry must be a JSON object")
    name, kind, dtype, shape = (entry.get(k) for k in ("name", "kind", "dtype", "shape"))
    if not isinstance(name, str) or not name:
        raise WireFormatError("an entry has no name")
    if kind not in ("dense", "rows"):
        raise WireFormatError(f"entry {name!r}: kind {kind!r} is not 'dense' or 'rows'")
    if dtype not in ALLOWED_DTYPES:
        raise WireFormatError(f"entry {name!r}: dtype {dtype!r} is not one of {ALLOWED_DTYPES}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise WireFormatError(f"entry {name!r}: shape must be a list of at most {MAX_NDIM} non-negative integers")
    dtype = np.dtype(dtype)
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize > MAX_DECLARED_BYTES:
        raise WireFormatError(f"entry {_shown(name)}: shape {_shown(shape)} declares more than 2**62 bytes of {dtype}")
    return name, kind, dtype, tuple(shape)


def _take(view, offset, dtype, shape, name):
    count = math.prod(shape)
    nbytes = count * _le(dtype).itemsize
    end = offset + nbytes
    if end > len(view):
        raise WireFormatError(f"frame truncated: entry {name!r} needs {nbytes} bytes, "
                              f"{max(0, len(view) - offset)} remain")
    array = np.frombuffer(view[offset:end], dtype=_le(dtype), count=count).reshape(shape)
    return array, end + _pad(nbytes)


def validate_update(frame: Frame, spec: ModelSpec) -> dict:
    """Check a decoded update against the model; return ``{name: ndarray | SparseRows}``.

    Raises :class:`InvalidUpdateError` naming the first problem: unknown name,
    dtype that cannot be added to the parameter, wrong shape, row index out of
    range, a value that is NaN or infinite, or one the parameter's dtype cannot hold
    (beyond float32's range, or an integer that would wrap in int32).
    """
    if not frame.arrays:
        raise InvalidUpdateError("the update holds no arrays")
    checked = {}
    for name, part in frame.arrays.items():
        param = spec.get(name)
        if param is None:
            raise InvalidUpdateError(f"unknown parameter {name!r}; the model has {sorted(spec)}")
        values = part.values if isinstance(part, SparseRows) else part
        if param.is_integer and not np.issubdtype(values.dtype, np.integer):
            raise InvalidUpdateError(f"parameter {name!r} holds {param.dtype}; "
                                     f"a {values.dtype} update cannot be added to it")
        if isinstance(part, SparseRows):
            if tuple(part.shape) != param.shape:
                raise InvalidUpdateError(f"sparse rows for {name!r} claim shape {part.shape}, "
                                         f"the parameter is {param.shape}")
            if len(part.indices) and (part.indices.min() < 0 or part.indices.max() >= param.shape[0]):
                raise InvalidUpdateError(f"row index out of range for {name!r}: rows must be in "
                                         f"[0, {param.shape[0]}), got [{part.indices.min()}, {part.indices.max()}]")
        elif values.shape != param.shape:
            raise InvalidUpdateError(f"update for {name!r} has shape {values.shape}, "
                                     f"the parameter is {param.shape}")
        _check_representable(name, values, param)
        checked[name] = part
    return checked


def _check_representable(name: str, values: np.ndarray, param) -> None:
    """Refuse values that the parameter's own dtype cannot hold.

    Checking in the update's dtype is not enough: descent casts to the parameter's dtype
    afterwards, where a finite float64 becomes ``inf`` in float32 and an int64 wraps in int32.
    Casting is monotonic, so the extremes decide for every value (and NaN propagates to both).
    """
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if param.is_integer:
        info = np.iinfo(param.dtype)
        if low < info.min or high > info.max:
            raise InvalidUpdateError(
                f"update for {name!r} holds integers in [{low}, {high}]; the parameter is {param.dtype}, "
                f"whose range is [{info.min}, {info.max}]: they would wrap around")
        return
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InvalidUpdateError(f"update for {name!r} contains NaN or infinite values")
    with np.errstate(over="ignore"):
        cast = np.array([low, high]).astype(param.dtype)
    if not np.isfinite(cast).all():
        largest = max(abs(float(low)), abs(float(high)))
        raise InvalidUpdateError(
            f"update for {name!r} holds values up to {largest:.6g} in magnitude; the parameter is "
            f"{param.dtype}, whose largest finite value is {np.finfo(param.dtype).max:.6g}: "
            f"they would overflow to infinity")


def validate_row_request(frame: Frame, spec: ModelSpec) -> dict:
    """Check a request for selected rows: ``{name: 1-D int array of row indices}``."""
    wanted = {}
    for name, rows in frame.arrays.items():
        param = spec.get(name)
        if param is None:
            raise InvalidUpdateError(f"unknown parameter {name!r}; the model has {sorted(spec)}")
        if isinstance(rows, SparseRows) or rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise InvalidUpdateError(f"rows of {name!r} must be a 1-D integer array")
        if len(rows) and (rows.min() < 0 or rows.max() >= param.shape[0]):
            raise InvalidUpdateError(f"row index out of range for {name!r}: rows must be in [0, {param.shape[0]})")
        wanted[name] = rows
    return wanted


#: Entries of an update frame named ``PULL_PREFIX + name`` request rows of ``name`` (``?then=rows``).
PULL_PREFIX = "pull:"


def split_row_request(frame: Frame) -> tuple[Frame, Frame]:
    """Split an update frame into the update and the row request its ``pull:`` entries carry."""
    update = {n: a for n, a in frame.arrays.items() if not n.startswith(PULL_PREFIX)}
    pull = {n[len(PULL_PREFIX):]: a for n, a in frame.arrays.items() if n.startswith(PULL_PREFIX)}
    return Frame(frame.meta, update), Frame({}, pull)


@dataclass(frozen=True)
class UpdateMeta:
    """Who sent an update and from which model version it was computed."""

    version: int
    epoch: int = 0
    partition: int = -1
    attempt: int = 0
    seq: int = 0
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"version": self.version, "epoch": self.epoch, "partition": self.partition,
                "attempt": self.attempt, "seq": self.seq, "metrics": self.metrics}


def parse_update_meta(meta: dict) -> UpdateMeta:
    """Check an update's header fields; raise :class:`InvalidUpdateError` if malformed."""
    values = {}
    for key, default in (("version", None), ("epoch", 0), ("partition", -1), ("attempt", 0), ("seq", 0)):
        value = meta.get(key, default)
        low = -_INT64 if key == "partition" else 0
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value < _INT64:
            kind = "an int64" if key == "partition" else "a non-negative int64"
            raise InvalidUpdateError(f"update header field {key!r} must be {kind}, got {_shown(value)}")
        values[key] = value
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and _finite_number(v) for k, v in metrics.items()
    ):
        raise InvalidUpdateError("update header 'metrics' must map names to finite numbers")
    return UpdateMeta(metrics=metrics, **values)


def _shown(value, limit: int = 80) -> str:
    """``repr(value)``, cut short: a hostile header's values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _finite_number(value) -> bool:
    # an int beyond float range (10**400) is valid JSON but cannot be averaged as a float
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
