"""TLS on the model server: a per-context self-signed certificate, pinned by fingerprint.

A relay on 127.0.0.1 between client and server records every byte both ways: what a passive
reader of the network would see.
"""

import socket
import threading

import numpy as np
import pytest

from deepdist import AuthenticationError, DeepDist, ModelClient, ServerError, ServerUnreachableError, tls, wire
from deepdist.optim import add
from deepdist.server import ServerThread, create_app
from deepdist.store import ParameterStore

SECRET = "tls-test-secret-0123456789abcdef"
PATTERN = np.full(4096, 1234.5678, np.float32)  # a recognisable payload


class Relay:
    """Forwards TCP connections to ``port`` and keeps a copy of everything that crosses."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def _serve(use_tls: bool):
    store = ParameterStore({"w": np.tile(PATTERN, (4, 1))})
    store.set_descent(add)
    store.start()
    ctx, fp = None, None
    if use_tls:
        cert, key, fp = tls.self_signed("127.0.0.1")
        ctx = tls.server_context(cert, key)
    thread = ServerThread(create_app(store, SECRET, 1 << 24), "127.0.0.1", 0, ssl_context=ctx)
    thread.start()
    return store, thread, fp


def _exchange(client):
    version, arrays = client.pull()
    assert np.array_equal(arrays["w"][0], PATTERN)
    client.push({"w": np.tile(PATTERN, (4, 1))}, wire.UpdateMeta(version=version))
    client.pull(after=None)


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain-control", "tls"])
def test_a_passive_reader_sees_neither_the_secret_nor_the_arrays(use_tls):
    store, thread, fp = _serve(use_tls)
    relay = Relay(thread.port)
    try:
        scheme = "https" if use_tls else "http"
        client = ModelClient(f"{scheme}://127.0.0.1:{relay.port}", SECRET, fingerprint=fp)
        _exchange(client)
        store.drain()
        client._drop_connection()
    finally:
        relay.close()
        thread.stop()
        store.stop()
    captured = bytes(relay.captured)
    assert len(captured) > 4 * PATTERN.nbytes  # the arrays crossed the relay, both ways
    seen = {"secret": SECRET.encode() in captured, "array": PATTERN.tobytes()[:64] in captured,
            "route": b"/update" in captured}
    if use_tls:
        assert seen == {"secret": False, "array": False, "route": False}
    else:  # the control: the capture does see plain HTTP
        assert seen == {"secret": True, "array": True, "route": True}


def test_a_server_with_another_certificate_gets_no_request():
    store, thread, _ = _serve(True)
    relay = Relay(thread.port)
    try:
        _, _, other = tls.self_signed("127.0.0.1")
        client = ModelClient(f"https://127.0.0.1:{relay.port}", SECRET, fingerprint=other, retries=0)
        with pytest.raises(AuthenticationError, match="not the one of this DeepDist context"):
            client.health()
        assert store.status()["updates_received"] == 0
    finally:
        relay.close()
        thread.stop()
        store.stop()
    assert SECRET.encode() not in relay.captured and b"/health" not in relay.captured


def test_https_without_a_fingerprint_is_refused_and_plain_http_to_tls_fails():
    store, thread, fp = _serve(True)
    try:
        with pytest.raises(ServerError, match="fingerprint"):
            ModelClient(f"https://127.0.0.1:{thread.port}", SECRET).health()
        # a plain-HTTP client talking to the TLS port gets no answer, and the server lives on
        with pytest.raises(ServerUnreachableError):
            ModelClient(f"http://127.0.0.1:{thread.port}", SECRET, retries=0, connect_timeout=2,
                        read_timeout=2).health()
        assert ModelClient(f"https://127.0.0.1:{thread.port}", SECRET, fingerprint=fp).health()["ok"]
    finally:
        thread.stop()
        store.stop()


def test_deepdist_tls_option(sc):
    rdd = sc.parallelize(range(8), 2)

    def count(model, batch):
        return {"n": np.array([float(len(batch))])}

    with DeepDist({"n": np.zeros(1)}, spark=sc, tls=True, progress=False) as dd:
        assert dd.url.startswith("https://127.0.0.1:") and len(dd.fingerprint) == 64
        assert dd.client.fingerprint == dd.fingerprint
        dd.train(rdd, count, add, epochs=2, additive=True)
        assert dd.model["n"][0] == 16.0
    with DeepDist({"n": np.zeros(1)}, spark=sc, progress=False) as dd:  # auto: loopback stays plain
        assert dd.url.startswith("http://127.0.0.1:") and dd.fingerprint is None
    with pytest.raises(Exception, match="tls must be"):
        DeepDist({"n": np.zeros(1)}, spark=sc, tls="yes")


def test_tls_is_on_by_default_off_loopback():
    from deepdist.core import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("10.0.0.5") and not is_loopback("driver.example.com") and not is_loopback("0.0.0.0")


def test_a_wildcard_bind_address_is_honoured_with_a_warning_and_tls(sc, caplog):
    with caplog.at_level("WARNING", logger="deepdist.core"):
        with DeepDist({"n": np.zeros(1)}, spark=sc, host="0.0.0.0", progress=False) as dd:
            assert dd.url.startswith("https://") and dd.client.health()["ok"]
    assert any("every interface" in r.getMessage() for r in caplog.records)
