"""Hostile and unlucky updates against a live model server on loopback (issue 24, items 1, 2, 5, 6).

Every refusal must be a 4xx that names the problem, and must leave the model as it was: an
update is checked in the parameter's own dtype and range before it is queued, a malformed frame
is a 400 whatever part of it is malformed, and a push over ``max_body_bytes`` fails at once,
saying so, instead of being re-sent and blamed on the network.
"""

import http.client
import json
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepdist import ModelClient, wire
from deepdist.errors import InvalidUpdateError, UpdateTooLargeError, WireFormatError
from deepdist.optim import add
from deepdist.params import ModelSpec
from deepdist.server import ServerThread, create_app
from deepdist.sparse import SparseRows
from deepdist.store import ParameterStore

SECRET = "hardening-secret"
AUTH = {"Authorization": f"Bearer {SECRET}", "Content-Type": wire.CONTENT_TYPE}
LIMIT = 1 << 20


class _CountingApp:
    """The real app, counting the POST /update requests that reach it (to prove nothing is re-sent)."""

    def __init__(self, app):
        self.app, self.updates = app, 0

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/update":
            self.updates += 1
        return self.app(environ, start_response)


class Live:
    def __init__(self, max_body_bytes=LIMIT):
        self.initial = {"w": np.arange(12, dtype=np.float32).reshape(4, 3),
                        "c": np.arange(5, dtype=np.int32)}
        self.store = ParameterStore({n: a.copy() for n, a in self.initial.items()})
        self.store.set_descent(add)
        self.store.start()
        self.app = _CountingApp(create_app(self.store, SECRET, max_body_bytes))
        self.thread = ServerThread(self.app, "127.0.0.1", 0)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.thread.port}"

    def client(self, **kwargs):
        return ModelClient(self.url, SECRET, **kwargs)

    def assert_untouched(self):
        self.store.drain(timeout=10)
        assert self.store.version == 0
        for name, array in self.initial.items():
            np.testing.assert_array_equal(self.store.model[name], array)
            assert self.store.model[name].dtype == array.dtype

    def stop(self):
        self.thread.stop()
        self.store.stop()


@pytest.fixture
def live():
    server = Live()
    yield server
    server.stop()


def _meta(seq=0):
    return wire.UpdateMeta(version=0, partition=0, seq=seq)


# -- items 1 and 2: an update is checked in the parameter's dtype and range -------------------------

@pytest.mark.parametrize("update", [
    {"w": np.full((4, 3), 1e300)},
    {"w": np.full((4, 3), -1e39)},
    {"w": SparseRows(np.array([2]), np.array([[0.0, 4e38, 1.0]]), (4, 3))},
], ids=["dense 1e300", "dense -1e39", "sparse 4e38"])
def test_a_float64_update_that_overflows_a_float32_parameter_is_refused(live, update):
    with pytest.raises(InvalidUpdateError) as caught:
        live.client().push(update, _meta())
    message = str(caught.value)
    assert ": 400 " in message and "'w'" in message and "float32" in message and "overflow" in message
    live.assert_untouched()
    assert live.store.status()["rejected_by_reason"] == {"invalid": 1}


@pytest.mark.parametrize("values", [np.full(5, 2**40 + 7), np.array([0, 0, 2**31, 0, 0]),
                                    np.array([0, -2**31 - 1, 0, 0, 0])],
                         ids=["2**40+7", "2**31", "-2**31-1"])
def test_an_int64_update_that_would_wrap_in_an_int32_parameter_is_refused(live, values):
    client = live.client()
    with pytest.raises(InvalidUpdateError) as caught:
        client.push({"c": values.astype(np.int64)}, _meta())
    message = str(caught.value)
    assert ": 400 " in message and "'c'" in message and "int32" in message and "wrap" in message
    with pytest.raises(InvalidUpdateError, match="wrap"):
        worst = values[np.argmax(np.abs(values))]
        client.push({"c": SparseRows(np.array([1]), np.array([worst], np.int64), (5,))}, _meta(1))
    live.assert_untouched()


def test_updates_of_a_wider_dtype_that_fit_the_parameter_are_applied(live):
    client = live.client()
    client.push({"w": np.full((4, 3), 3e38)}, _meta(0))                              # float32's max is 3.4e38
    client.push({"c": np.array([2**31 - 5, -2**31 + 1, 0, 0, 0], np.int64)}, _meta(1))
    client.push({"c": np.array([1, 0, 0, 0, 0], np.int64)}, _meta(2))
    live.store.drain(timeout=10)
    assert live.store.version == 3
    np.testing.assert_array_equal(live.store.model["w"], live.initial["w"] + np.float32(3e38))
    assert live.store.model["c"].tolist() == [2**31 - 4, -2**31 + 2, 2, 3, 4]
    assert live.store.model["c"].dtype == np.int32


# -- item 6: every malformed frame is a 400 that says what is wrong -----------------------------------

def _frame(header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<4sI", b"DDW1", len(raw)) + raw + b"\0" * (-len(raw) % 8) + data


def _entry(shape, **extra):
    return {"name": "w", "kind": "dense", "dtype": "float32", "shape": shape, **extra}


MALFORMED = {
    "shape [0, 2**63]": (_frame({"meta": {"version": 0}, "entries": [_entry([0, 2**63])]}), "shape"),
    "shape [2**63, 0]": (_frame({"meta": {"version": 0}, "entries": [_entry([2**63, 0])]}), "shape"),
    "shape [0, 2**62, 2**62]": (_frame({"meta": {"version": 0}, "entries": [_entry([0, 2**62, 2**62])]}), "shape"),
    "sparse rows of width 2**64": (_frame({"meta": {"version": 0}, "entries": [
        {"name": "w", "kind": "rows", "dtype": "float32", "shape": [4, 2**64], "rows": 0,
         "index_dtype": "int32"}]}), "shape"),
    "rows 2**70": (_frame({"meta": {"version": 0}, "entries": [
        {"name": "w", "kind": "rows", "dtype": "float32", "shape": [4, 3], "rows": 2**70,
         "index_dtype": "int32"}]}), "truncated"),
    "JSON nested 100,000 deep": (_frame(b"[" * 100_000 + b"]" * 100_000), "nest"),
    "meta nested 5,000 deep": (_frame(b'{"entries":[],"meta":' + b'{"a":' * 5000 + b"1" + b"}" * 5001), "nest"),
    "10**400 in a metric": (_frame({"meta": {"version": 0, "metrics": {"loss": 10**400}},
                                    "entries": [_entry([4, 3])]}, b"\0" * 48), "metrics"),
    "10**400 as the version": (_frame({"meta": {"version": 10**400}, "entries": [_entry([4, 3])]},
                                      b"\0" * 48), "version"),
    "2**63 as the epoch": (_frame({"meta": {"version": 0, "epoch": 2**63}, "entries": [_entry([4, 3])]},
                                  b"\0" * 48), "epoch"),
    "NaN in the header": (_frame(b'{"meta":{"version":NaN},"entries":[]}'), "NaN"),
    "Infinity in a metric": (_frame(b'{"meta":{"version":0,"metrics":{"x":-Infinity}},"entries":[]}'),
                             "Infinity"),
    "a 5,000-digit integer": (_frame(b'{"meta":{"version":' + b"9" * 5000 + b'},"entries":[]}'), "JSON"),
    "header length 2**32-1": (struct.pack("<4sI", b"DDW1", 2**32 - 1), "header"),
    "float shape": (_frame({"meta": {"version": 0}, "entries": [_entry([4.0, 3])]}), "shape"),
    "object dtype": (_frame({"meta": {"version": 0}, "entries": [_entry([4, 3], dtype="object")]}), "dtype"),
}


META_CASES = {"10**400 in a metric", "10**400 as the version", "2**63 as the epoch"}


@pytest.mark.parametrize("label", list(MALFORMED))
def test_a_malformed_frame_is_a_400_naming_the_problem(live, label):
    body, word = MALFORMED[label]
    conn = http.client.HTTPConnection("127.0.0.1", live.thread.port, timeout=30)
    try:
        for path in ("/update", "/update?then=rows", "/model"):
            conn.request("POST", path, body=body, headers=AUTH)
            response = conn.getresponse()
            answer = response.read()
            assert response.status == 400, (label, path, response.status, answer[:300])
            error = json.loads(answer)["error"]
            # an update's meta means nothing to POST /model, which refuses these frames for their entries
            if path != "/model" or label not in META_CASES:
                assert word.lower() in error.lower(), (label, path, error)
    finally:
        conn.close()
    live.assert_untouched()
    assert live.thread.alive and live.client().health()["ok"]


# -- item 5: a push over max_body_bytes fails at once, naming the size and the limit ----------------

@pytest.mark.parametrize("megabytes", [2, 40], ids=["skipped by the server", "closed on by the server"])
def test_a_push_over_max_body_bytes_raises_at_once_without_re_sending(live, megabytes):
    client = live.client(retries=3, backoff=0.5)
    update = {"w": np.zeros(megabytes << 18, np.float32)}
    size = len(wire.encode(update, _meta().to_json()))
    started = time.monotonic()
    with pytest.raises(UpdateTooLargeError) as caught:
        client.push(update, _meta())
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert isinstance(caught.value, InvalidUpdateError)
    assert f"{size:,} bytes" in message and "max_body_bytes" in message and f"{LIMIT:,}" in message, message
    assert live.app.updates == 1, "the body was sent more than once"
    assert elapsed < 0.5 + 5, elapsed        # a single backoff (0.5 s) would already show a retry
    # the client stays usable: the next push goes through
    client.push({"c": np.ones(5, np.int32)}, _meta(1))
    live.store.drain(timeout=10)
    assert live.store.model["c"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(live.store.model["w"], live.initial["w"])


# -- the probes as a test: fuzzed frames against POST /update ---------------------------------------

def _valid_bodies():
    rows = SparseRows(np.array([0, 3], np.int32), np.ones((2, 3), np.float32), (4, 3))
    meta = {"version": 0, "epoch": 0, "partition": 1, "attempt": 0, "seq": 0, "metrics": {"loss": 0.5}}
    return [wire.encode({"w": np.ones((4, 3), np.float32)}, meta),
            wire.encode({"w": rows, "c": np.ones(5, np.int64)}, meta),
            wire.encode({"c": SparseRows(np.array([4]), np.array([2], np.int32), (5,)),
                         "pull:w": np.array([1, 2], np.int32)}, meta)]


VALID = _valid_bodies()

# JSON values chosen to hit every conversion the decoder and validation make
HOSTILE_SCALARS = st.one_of(
    st.integers(-2**64, 2**64),
    st.sampled_from([2**63, 2**63 - 1, -2**63 - 1, 2**31, -1, 0, 10**400, 1e308, -0.0, 0.5, float("nan"),
                     float("inf"), True, False, None, "", "float32", "int64", "object", "rows", "dense",
                     "w", "c", "pull:w", "\ud800", "\x00"]))
JSON_VALUES = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["name", "kind", "dtype", "shape", "rows", "index_dtype", "version", "epoch", "partition",
         "attempt", "seq", "metrics", "loss"]), inner, max_size=3)), max_leaves=6)


# built once: hypothesis validates a strategy each time one is constructed inside a draw
ENTRY_FIELDS = st.fixed_dictionaries({
    "name": st.sampled_from(["w", "c", "pull:w", "x", ""]),
    "kind": st.sampled_from(["dense", "rows", "sparse"]),
    "dtype": st.sampled_from(["float32", "float64", "int32", "int64", "uint8", "object"]),
    "shape": st.lists(st.one_of(st.integers(-2, 6), st.sampled_from([2**31, 2**62, 2**63, 2**64])), max_size=4),
    "rows": st.one_of(st.integers(-1, 6), st.sampled_from([2**63, 10**30])),
    "index_dtype": st.sampled_from(["int32", "int64", "float32"])})
REPLACED_FIELDS = st.dictionaries(st.sampled_from(["name", "kind", "dtype", "shape", "rows", "index_dtype"]),
                                  JSON_VALUES, max_size=2)
META = st.dictionaries(st.sampled_from(["version", "epoch", "partition", "attempt", "seq", "metrics"]),
                       st.one_of(st.integers(-1, 3), JSON_VALUES))
DEPTHS = st.sampled_from([0, 10, 900, 1100, 50_000])
DATA = st.sampled_from([b"", b"\0" * 48, b"\xff" * 64, b"\x01" * 8])


@st.composite
def hostile_headers(draw):
    entry = {**draw(ENTRY_FIELDS), **draw(REPLACED_FIELDS)}
    header = json.dumps({"meta": draw(META), "entries": [entry] * draw(st.integers(0, 2))}).encode()
    depth = draw(DEPTHS)
    if depth:
        header = header[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
    return _frame(header, draw(DATA))


@st.composite
def mutated_frames(draw):
    body = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        at = draw(st.integers(0, len(body)))
        if op == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del body[at:at + draw(st.integers(1, 64))]
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            body[at:at + 8] = struct.pack("<q", draw(st.sampled_from([-1, 2**62, 2**63 - 1, 0x7FF0000000000000])))
    return bytes(body)


FRAMES = st.one_of(mutated_frames(), hostile_headers(), st.binary(max_size=256),
                   st.binary(max_size=64).map(lambda b: b"DDW1" + b))


MODEL_SPEC = ModelSpec.of({"w": np.zeros((4, 3), np.float32), "c": np.zeros(5, np.int32)})


@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=FRAMES)
def test_the_decoder_and_validation_raise_nothing_but_their_own_errors(body):
    """The same frames without HTTP: anything but a Frame or a WireFormatError/InvalidUpdateError is a bug."""
    try:
        frame = wire.decode(body)
        wire.parse_update_meta(frame.meta)
        update, pull = wire.split_row_request(frame)
        wire.validate_update(update, MODEL_SPEC)
        wire.validate_row_request(pull, MODEL_SPEC)
    except (WireFormatError, InvalidUpdateError):
        pass


def test_fuzzed_frames_get_no_5xx_and_leave_the_model_as_the_accepted_updates_make_it(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.thread.port, timeout=30)
    accepted, statuses = [], {}

    @settings(max_examples=1000, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=FRAMES, path=st.sampled_from(["/update", "/update?then=rows", "/update?since=0"]))
    def send(body, path):
        nonlocal conn
        conn.request("POST", path, body=body, headers=AUTH)
        response = conn.getresponse()
        answer = response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status < 500, (response.status, answer[:300], body[:200])
        if response.status == 202:
            accepted.append(body)
        if response.will_close:
            conn.close()

    try:
        send()
    finally:
        conn.close()
    assert sum(statuses.values()) >= 1000 and 400 in statuses and 202 in statuses, statuses
    assert live.thread.alive and live.store.alive and live.store.error is None
    live.store.drain(timeout=30)
    # the model must be the initial one plus the accepted updates, in order, bit for bit:
    # nothing that was refused may have touched it
    expected = {n: a.copy() for n, a in live.initial.items()}
    seen, applied = set(), 0
    for body in accepted:
        frame = wire.decode(body)
        meta = wire.parse_update_meta(frame.meta)
        update, _ = wire.split_row_request(frame)
        key = (meta.epoch, meta.partition, meta.attempt, meta.seq)
        if meta.partition >= 0 and key in seen:
            continue                               # the store drops a repeated (epoch, partition, attempt, seq)
        seen.add(key)
        add(expected, wire.validate_update(update, live.store.spec))
        applied += 1
    assert live.store.version == applied
    for name, array in expected.items():
        np.testing.assert_array_equal(live.store.model[name], array)
