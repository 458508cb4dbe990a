"""Reading an HTTP/1.1 request: its head (request line and headers) and its body as ``wsgi.input``.

The I/O thread of :mod:`deepdist.httpd` collects a request's head and parses it here; the
body is read later, by the worker thread running the app, and only as far as the app reads it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

from .errors import DeepDistError

log = logging.getLogger(__name__)

#: Largest request line plus headers (431 beyond).
MAX_HEADER_BYTES = 64 << 10

REASONS = {400: "Bad Request", 411: "Length Required", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 505: "HTTP Version Not Supported"}


class MalformedRequest(DeepDistError):
    """A request the server cannot parse; ``status`` is the answer it gets (400, 411, 431, 505)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Request:
    """A parsed request line and its headers (names lower-cased)."""

    __slots__ = ("method", "target", "version", "headers", "length", "keep_alive", "expect_continue")


def parse_head(head: bytes) -> Request:
    """The request line and headers (``head`` ends before the blank line)."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError as err:
        raise MalformedRequest(400, "malformed request line") from err
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise MalformedRequest(505 if version.startswith("HTTP/") else 400, f"unsupported protocol {version[:20]!r}")
    if not method.isalpha() or not target.startswith("/"):
        raise MalformedRequest(400, "malformed request line")
    headers: dict = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise MalformedRequest(400, "folded header lines are not supported")
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise MalformedRequest(400, "malformed header line")
        value = value.strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    if "transfer-encoding" in headers:
        raise MalformedRequest(411, "chunked request bodies are not supported: send a Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit() or len(length) > 18:
        raise MalformedRequest(400, "bad Content-Length")
    request = Request()
    request.method, request.target, request.version = method, target, version
    request.headers = headers
    request.length = int(length)
    connection = headers.get("connection", "").lower()
    request.keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    request.expect_continue = "100-continue" in headers.get("expect", "").lower()
    return request


class RequestBody:
    """``wsgi.input``: the request body, ``Content-Length`` bytes and not one more, read from
    the socket only when the app asks, and within the body deadline."""

    def __init__(self, conn, length: int, expect_continue: bool, deadline: float):
        self._conn = conn
        self.remaining = length
        self.failed = False
        self._continue = expect_continue
        self._deadline = deadline

    def _allowed(self, size) -> int:
        return self.remaining if size is None or size < 0 else min(size, self.remaining)

    def read(self, size: int = -1, view: bool = False):
        """Up to ``size`` bytes (bytes; a read-only memoryview for reads over 1 MiB, or any with
        ``view``, which saves a copy of the body); fewer when the client stalls past the deadline
        or leaves."""
        size = self._allowed(size)
        if size <= 0:
            return b""
        if self._continue:  # the client waits for this before it sends the body
            self._continue = False
            send_all(self._conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n", self._deadline)
        as_view, buf = view, bytearray(size)
        view = memoryview(buf)
        got = 0
        pending = self._conn.buf
        if pending:  # bytes that arrived with the headers
            got = min(len(pending), size)
            view[:got] = pending[:got]
            del pending[:got]
        sock = self._conn.sock
        try:
            while got < size:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("body deadline passed")
                sock.settimeout(left)
                n = sock.recv_into(view[got:], size - got)
                if n == 0:
                    break
                got += n
        except OSError as err:
            log.debug("reading a body from %s: %r", self._conn.address, err)
            self.failed = True
        if got < size:
            self.failed = True
            self.remaining = 0
            del view
            return bytes(buf[:got])
        self.remaining -= got
        del view
        return memoryview(buf).toreadonly() if as_view or size > (1 << 20) else bytes(buf)

    def readline(self, size: int = -1) -> bytes:
        size = self._allowed(size)
        out = bytearray()
        while len(out) < size:
            byte = self.read(1)
            if not byte:
                break
            out += byte
            if byte == b"\n":
                break
        return bytes(out)

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


def _arm(sock, deadline: float) -> None:
    """Give ``sock`` what is left of ``deadline`` for its next send (socket.timeout once it passed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("the client did not take the answer in time")
    sock.settimeout(left)


def send_all(sock, data, deadline: float) -> None:
    """Send ``data`` by ``deadline`` (one deadline for the whole answer, not per send)."""
    view = memoryview(data).cast("B")
    sent = 0
    while sent < len(view):
        _arm(sock, deadline)
        sent += sock.send(view[sent:sent + (4 << 20)])


#: Buffers one ``sendmsg`` takes at most (the usual IOV_MAX).
_IOV_MAX = 1024


def send_parts(sock, parts, deadline: float) -> None:
    """Send the buffers ``parts`` one after the other by ``deadline``: one ``sendmsg`` for all of
    them where the socket allows (a frame's parts are sent without joining them, and without a
    system call each); a TLS socket, which has no ``sendmsg``, sends them one by one."""
    if isinstance(sock, ssl.SSLSocket):
        for part in parts:
            send_all(sock, part, deadline)
        return
    views = [view for view in (memoryview(part).cast("B") for part in parts) if view.nbytes]
    first = 0
    while first < len(views):
        _arm(sock, deadline)
        sent = sock.sendmsg(views[first:first + _IOV_MAX])
        while sent:  # drop what went, and cut the buffer it stopped in
            size = views[first].nbytes
            if sent >= size:
                sent -= size
                first += 1
            else:
                views[first] = views[first][sent:]
                sent = 0
