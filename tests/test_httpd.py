"""The keep-alive WSGI server under the model server, on a real loopback socket."""

import http.client
import os
import threading
import time

import numpy as np
import pytest

from deepdist import wire
from deepdist.server import ServerThread, create_app
from deepdist.store import ParameterStore

SECRET = "httpd-test-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture()
def server():
    store = ParameterStore({"w": np.arange(6.0).reshape(3, 2)})
    thread = ServerThread(create_app(store, SECRET, 1 << 20), "127.0.0.1", 0)
    thread.start()
    yield thread
    thread.stop()
    store.stop()


def _connection(server):
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)


def test_one_connection_serves_many_requests(server):
    conn = _connection(server)
    local_ports = set()
    for _ in range(5):
        conn.request("POST", "/model", body=wire.encode({"w": np.array([2], np.int32)}), headers=AUTH)
        response = conn.getresponse()
        frame = wire.decode(response.read())
        assert response.status == 200 and frame.arrays["w"].values.tolist() == [[4.0, 5.0]]
        local_ports.add(conn.sock.getsockname()[1])
    assert len(local_ports) == 1  # the same TCP connection every time
    conn.close()


def test_an_unread_body_does_not_spill_into_the_next_request(server):
    conn = _connection(server)
    conn.request("POST", "/update", body=b"x" * 5000)  # no secret: refused before the body is read
    response = conn.getresponse()
    assert response.status == 401
    response.read()
    conn.request("GET", "/health", headers=AUTH)
    response = conn.getresponse()
    assert response.status == 200 and b'"ok":true' in response.read().replace(b" ", b"")
    conn.close()


def test_chunked_request_bodies_are_refused_and_the_connection_closed(server):
    conn = _connection(server)
    conn.request("POST", "/update", body=iter([b"abc"]), headers={**AUTH, "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 411 and response.getheader("Connection") == "close"
    conn.close()


def test_stopping_the_server_closes_idle_connections(server):
    conn = _connection(server)
    conn.request("GET", "/health", headers=AUTH)
    conn.getresponse().read()
    closed = threading.Event()

    def wait_for_eof():
        if conn.sock.recv(1) == b"":
            closed.set()

    reader = threading.Thread(target=wait_for_eof)
    reader.start()
    server.stop()
    reader.join(5)
    assert closed.is_set()
    conn.close()


def _voluntary_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        return int(f.read().split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_the_accept_loop_sleeps_until_a_client_comes(server):
    # a polling loop wakes every few ms; on the driver each wake-up preempts a sampling task
    # (a loop that polls every 5-50 ms wakes 20-200 times a second; the bound of 3 leaves room
    # for start-up still settling and for the GIL hand-offs of a loaded CI machine)
    tid = server.native_id
    time.sleep(0.2)
    before = _voluntary_switches(tid)
    time.sleep(1.0)
    assert _voluntary_switches(tid) - before <= 3
    conn = _connection(server)  # and a client is still answered at once
    conn.request("GET", "/health", headers=AUTH)
    assert conn.getresponse().status == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5  # shutdown wakes the loop rather than waiting for a poll


def _raw_answer(server, data: bytes) -> bytes:
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(data)
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    return answer


def test_malformed_requests_get_4xx_and_a_closed_connection(server):
    assert _raw_answer(server, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _raw_answer(server, b"GET /health HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505")
    assert _raw_answer(server, b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    assert _raw_answer(server, huge).startswith(b"HTTP/1.1 431")


def test_pipelined_requests_are_answered_in_order(server):
    one = f"GET /health HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\n\r\n".encode()
    last = f"GET /status HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nConnection: close\r\n\r\n".encode()
    answer = _raw_answer(server, one + one + last)
    assert answer.count(b"HTTP/1.1 200") == 3 and b"updates_received" in answer.split(b"HTTP/1.1 200")[-1]


def test_expect_continue_is_answered_only_for_an_authenticated_request(server):
    import socket

    body = wire.encode({"w": np.array([1], np.int32)})
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"POST /model HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nExpect: 100-continue\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(body)
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()
