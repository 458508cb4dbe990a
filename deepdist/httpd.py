"""A threaded HTTP/1.1 WSGI server whose connections stay open between requests.

werkzeug's development server closes the connection after every response, so each pull and
push of a task costs a new TCP connection and a new server thread; after each response it
also waits up to 10 ms for stray body bytes. A Downpour task makes hundreds of round trips
per epoch, and at that rate a client host also piles up sockets in TIME_WAIT. This server
keeps one connection (and one thread) per client session instead:

* a request's body is whatever its ``Content-Length`` says; what the app leaves unread is
  skipped, so the next request starts where it should (a body too large to skip closes the
  connection instead, as does a chunked request body, which deepdist clients never send);
* the response is written with a ``Content-Length``, so the client knows where it ends;
* an idle connection closes after ``idle_timeout`` seconds, and ``shutdown`` closes them all;
* the accept loop sleeps until a client connects or ``shutdown`` wakes it. socketserver's loop
  wakes every ``poll_interval`` to look for a shutdown request; on a driver whose cores run
  samplers, each of those wake-ups (50 a second at the 20 ms a prompt shutdown needs) preempts
  a sampler and costs it its warm caches.

Example::

    >>> from flask import Flask
    >>> app = Flask("demo")
    >>> server = WSGIServer(("127.0.0.1", 0), app)            # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()   # doctest: +SKIP
"""

from __future__ import annotations

import http.server
import logging
import selectors
import socket
import sys
import threading
from urllib.parse import unquote

log = logging.getLogger(__name__)

#: Unread request bytes up to this many are skipped to keep the connection; beyond, it closes.
MAX_SKIP_BYTES = 16 << 20


class _Body:
    """``wsgi.input``: the request body, ``Content-Length`` bytes and not one more."""

    def __init__(self, stream, length: int):
        self._stream = stream
        self.remaining = length

    def _allowed(self, size) -> int:
        return self.remaining if size is None or size < 0 else min(size, self.remaining)

    def read(self, size: int = -1) -> bytes:
        size = self._allowed(size)
        data = self._stream.read(size) if size > 0 else b""
        self.remaining -= len(data)
        if len(data) < size:
            self.remaining = 0  # the client went away mid-body
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self._allowed(size)
        data = self._stream.readline(size) if size > 0 else b""
        self.remaining -= len(data)
        return data

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def skip(self) -> bool:
        """Read past what the app left unread; False when too much is left to bother."""
        if self.remaining > MAX_SKIP_BYTES:
            return False
        while self.remaining > 0:
            if not self.read(min(self.remaining, 1 << 20)):
                return False
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.timeout = self.server.idle_timeout  # socketserver applies it to the connection
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # headers and body go out in separate writes: without this, Nagle's algorithm holds
            # the body until the client's delayed ACK of the headers (40 ms on Linux)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.closed(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _wsgi(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.send_error(411, "chunked request bodies are not supported: send a Content-Length")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self.send_error(400, "bad Content-Length")
            return
        body = _Body(self.rfile, length)
        status_headers: list = []

        def start_response(status, headers, exc_info=None):
            if exc_info and status_headers:
                raise exc_info[1].with_traceback(exc_info[2])
            status_headers[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list = []
        try:
            result = self.server.app(self._environ(body, length), start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:  # noqa: BLE001 - the app failed: answer 500 and drop the connection
            # nothing was written yet (the response goes out below), so a clean 500 is possible
            # even when the app had started its response
            log.exception("error while serving %s %s", self.command, self.path)
            self.close_connection = True
            self.send_error(500)
            return
        status, headers = status_headers
        if not body.skip():
            self.close_connection = True
        self._respond(status, headers, chunks)

    def _respond(self, status: str, headers: list, chunks: list) -> None:
        size = sum(memoryview(c).nbytes for c in chunks)
        lines = [f"{self.protocol_version} {status}\r\n"]
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length":
                has_length = True
            elif lowered == "connection" and value.lower() == "close":
                self.close_connection = True
            lines.append(f"{name}: {value}\r\n")
        if not has_length:
            lines.append(f"Content-Length: {size}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        self.wfile.write("".join(lines).encode("latin-1"))
        if self.command != "HEAD":
            for chunk in chunks:
                self.wfile.write(chunk)
        self.wfile.flush()

    def _environ(self, body: _Body, length: int) -> dict:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_LENGTH": str(length) if length else "",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _wsgi


class WSGIServer(http.server.ThreadingHTTPServer):
    """Serve the WSGI ``app`` on ``address``, one thread per open connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, app, idle_timeout: float = 60.0):
        self.app = app
        self.idle_timeout = idle_timeout
        self._open: set = set()
        self._open_lock = threading.Lock()
        if ":" in str(address[0]):
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self._wake, self._waker = socket.socketpair()
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self, poll_interval=None) -> None:  # noqa: ARG002 - nothing polls
        """Accept connections until :meth:`shutdown`, sleeping in between (no polling)."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select():
                        if key.fileobj is self._wake:
                            self._wake.recv(64)
                        elif not self._stopping:
                            self._handle_request_noblock()
        finally:
            self._stopping = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has returned."""
        self._stopping = True
        if not self._stopped.is_set():  # not serving (or stopped already): nothing to wake
            self._waker.send(b"\0")
            self._stopped.wait()

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client went away: nothing to report
            log.debug("connection from %s ended: %r", client_address, error)
        else:
            log.exception("error on a connection from %s", client_address)

    def opened(self, connection) -> None:
        with self._open_lock:
            self._open.add(connection)

    def closed(self, connection) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def server_close(self) -> None:
        """Stop listening and close the connections still open (their threads then end)."""
        super().server_close()
        self._wake.close()
        self._waker.close()
        with self._open_lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
