"""An HTTP/1.1 WSGI server with bounded resources whose connections stay open between requests.

werkzeug's development server closes the connection after every response, so each pull and
push of a task costs a new TCP connection; a Downpour task makes hundreds of round trips per
epoch. This server keeps each client's connection open, and bounds what any client, slow,
idle or hostile, can hold:

* one I/O thread owns every connection that is not inside a request: it accepts, reads
  request headers without blocking and parks idle keep-alive connections. An idle or slow
  connection costs a file descriptor and a few bytes, never a thread;
* a request whose headers are complete goes to a **bounded pool** of worker threads
  (``max_workers``), which runs the WSGI app; the body is read only when the app reads
  ``wsgi.input``, so an app (deepdist's bearer check, :mod:`deepdist.server`) can refuse a
  request on its headers before one byte of its body is read or buffered;
* **deadlines, not per-recv timeouts**: headers must be complete ``header_timeout`` seconds
  after their first byte (one byte a minute does not keep a connection), a body must arrive
  within ``body_timeout`` plus one second per ``min_rate`` bytes, a response must be taken
  within the same allowance, and a connection idle between requests closes after
  ``idle_timeout``;
* a request's body is whatever its ``Content-Length`` says; what the app leaves unread (a 401,
  a 413) is skipped by the I/O thread, without a buffer per connection, when it is at most
  ``MAX_DISCARD_BYTES``; beyond that the connection closes (after the answer is sent, reading
  and dropping what still arrives for a moment, so the client reads the answer instead of a
  reset). A chunked request body is refused (411); deepdist clients never send one;
* the listen backlog is ``BACKLOG``; when the process is out of file descriptors the
  listening socket is set aside for ``FD_PAUSE`` seconds (or until a connection closes)
  instead of spinning on an ``accept`` that keeps failing: waiting clients stay in the
  backlog and are served when descriptors free up;
* ``direct``, if given, answers some requests itself before the WSGI app is called (see
  :class:`deepdist.direct_routes.DirectRoutes`): called in the worker with the parsed request
  and its unread body, it returns ``(status, headers, chunks)``, or None to pass the request on;
* with an ``ssl_context`` the server speaks TLS (the handshake is made by the I/O thread,
  under the header deadline);
* the I/O thread sleeps until a socket is ready or a deadline falls due; on a driver whose
  cores run samplers, polling wake-ups would preempt them.

This module is the I/O thread and the server's life cycle; a request's head is parsed and its
body read by :mod:`deepdist.http_request`, and the worker pool that runs the app and sends the
answer is :mod:`deepdist.http_workers`.

Example::

    >>> from flask import Flask
    >>> app = Flask("demo")
    >>> server = WSGIServer(("127.0.0.1", 0), app)            # doctest: +SKIP
    >>> threading.Thread(target=server.serve_forever).start()   # doctest: +SKIP
"""

from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import ssl
import threading
import time

from .http_request import MAX_HEADER_BYTES, REASONS, MalformedRequest, Request, RequestBody, parse_head
from .http_workers import WorkerPool, make_environ, respond, run_app, run_direct

log = logging.getLogger(__name__)

#: Unread request bytes up to this many are skipped to keep the connection; beyond, it closes.
MAX_DISCARD_BYTES = 1 << 20
#: Bytes read at a time while a request's headers arrive (at most this much of a body is buffered early).
HEADER_READ = 4096
#: Connections the kernel queues before the server accepts them.
BACKLOG = 1024
#: Seconds the listening socket rests when the process is out of file descriptors.
FD_PAUSE = 0.25
#: Seconds a closing connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 2.0

_HEADERS, _HANDSHAKE, _DISCARD, _LINGER = "headers", "handshake", "discard", "linger"
_FD_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _Conn:
    """A client connection and what the I/O thread knows about it."""

    __slots__ = ("sock", "address", "buf", "state", "deadline", "remaining", "started")

    def __init__(self, sock, address):
        self.sock, self.address = sock, address
        self.buf = bytearray()
        self.state = _HEADERS
        self.deadline = 0.0
        self.remaining = 0
        self.started = False  # the first byte of the current request's headers has arrived


class WSGIServer:
    """Serve the WSGI ``app`` on ``address`` with at most ``max_workers`` request threads."""

    def __init__(self, address, app, idle_timeout: float = 60.0, *, max_workers: int = 512,
                 header_timeout: float = 10.0, body_timeout: float = 30.0, min_rate: float = 1 << 20,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = BACKLOG, direct=None):
        self.app = app
        self.direct = direct
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.ssl_context = ssl_context
        family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(backlog)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.server_port = self.server_address[1]
        self._pool = WorkerPool(max_workers, self._serve)
        self._conns: set = set()  # every open connection, wherever it is
        self._conns_lock = threading.Lock()
        self._returned: collections.deque = collections.deque()  # from workers, back to the I/O thread
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._waker.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._scratch = bytearray(64 << 10)
        self._listening = True
        self._resume_accept = 0.0
        self._fd_warned = 0.0
        self._next_check = float("inf")
        self.accept_failures = 0
        self._stopping = False
        self._stopped = threading.Event()
        self._stopped.set()

    # -- limits ---------------------------------------------------------------------------------
    def allowance(self, nbytes: int) -> float:
        """Seconds a body (or an answer) of ``nbytes`` may take to cross."""
        return self.body_timeout + nbytes / self.min_rate

    @property
    def workers(self) -> int:
        return self._pool.threads

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- the I/O thread -------------------------------------------------------------------------
    def serve_forever(self, poll_interval=None) -> None:  # noqa: ARG002 - nothing polls
        """Accept and read requests until :meth:`shutdown`, sleeping in between (no polling)."""
        self._stopped.clear()
        selector = self._selector
        try:
            selector.register(self.socket, selectors.EVENT_READ, "listen")
            selector.register(self._wake, selectors.EVENT_READ, "wake")
            while not self._stopping:
                now = time.monotonic()
                wake_at = min(self._next_check, self._resume_accept if not self._listening else float("inf"))
                timeout = None if wake_at == float("inf") else max(0.0, wake_at - now)
                for key, _ in selector.select(timeout):
                    if self._stopping:
                        break
                    try:
                        if key.data == "listen":
                            self._accept()
                        elif key.data == "wake":
                            self._take_returned()
                        else:
                            self._on_readable(key.data)
                    except Exception:  # noqa: BLE001 - one connection's trouble must not stop the server
                        log.exception("error in the model server's I/O loop")
                        if isinstance(key.data, _Conn):
                            self._close(key.data)
                now = time.monotonic()
                if not self._listening and now >= self._resume_accept and not self._stopping:
                    self._listen_again()
                if now >= self._next_check:
                    self._expire(now)
        finally:
            self._stopping = False
            self._stopped.set()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in _FD_ERRORS:
                    self._pause_accept(err)
                    return
                log.debug("accept failed: %r", err)  # e.g. ECONNABORTED: that client is gone
                continue
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    # headers and body go out in separate writes: without this, Nagle's algorithm
                    # holds the body until the client's delayed ACK of the headers
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError as err:
                log.debug("setting up a connection from %s failed: %r", address, err)
                sock.close()
                continue
            conn = _Conn(sock, address)
            with self._conns_lock:
                self._conns.add(conn)
            if self.ssl_context is not None:
                conn.state = _HANDSHAKE
                self._set_deadline(conn, self.header_timeout)
                self._register(conn, selectors.EVENT_READ)
            else:
                self._await_request(conn)

    def _pause_accept(self, err: OSError) -> None:
        """Out of file descriptors: stop watching the listening socket (it stays readable, and
        each accept would fail at once) until one closes or FD_PAUSE passes."""
        self.accept_failures += 1
        now = time.monotonic()
        if now - self._fd_warned > 60:
            self._fd_warned = now
            log.warning("the model server is out of file descriptors (%s, %d connections open): new "
                        "clients wait in the listen backlog; raise the limit (ulimit -n) if this lasts",
                        err.strerror, len(self._conns))
        if self._listening:
            self._selector.unregister(self.socket)
            self._listening = False
        self._resume_accept = now + FD_PAUSE

    def _listen_again(self) -> None:
        if not self._listening:
            self._selector.register(self.socket, selectors.EVENT_READ, "listen")
            self._listening = True

    def _register(self, conn: _Conn, events: int) -> None:
        try:
            self._selector.modify(conn.sock, events, conn)
        except KeyError:
            self._selector.register(conn.sock, events, conn)

    def _set_deadline(self, conn: _Conn, seconds: float) -> None:
        conn.deadline = time.monotonic() + seconds
        self._next_check = min(self._next_check, conn.deadline)

    def _await_request(self, conn: _Conn) -> None:
        """Between requests: idle until the next one starts (or parse it, if it has arrived)."""
        conn.state = _HEADERS
        conn.started = bool(conn.buf)
        self._set_deadline(conn, self.header_timeout if conn.started else self.idle_timeout)
        self._register(conn, selectors.EVENT_READ)
        if conn.buf:
            self._parse(conn)

    def _take_returned(self) -> None:
        try:
            while self._wake.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._returned:
            conn, state, remaining = self._returned.popleft()
            if conn.sock.fileno() < 0:
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)
                continue
            if state == _HEADERS:
                self._await_request(conn)
                if conn.state == _HEADERS and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                    self._on_readable(conn)
            elif state == _DISCARD and remaining == 0:
                self._await_request(conn)
            elif state == _DISCARD:
                conn.state, conn.remaining = _DISCARD, remaining
                self._set_deadline(conn, self.allowance(remaining))
                self._register(conn, selectors.EVENT_READ)
            else:
                self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        conn.state = _LINGER
        conn.buf = bytearray()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.remaining = MAX_DISCARD_BYTES
        self._set_deadline(conn, LINGER_SECONDS)
        self._register(conn, selectors.EVENT_READ)

    def _on_readable(self, conn: _Conn) -> None:
        sock = conn.sock
        if conn.state == _HANDSHAKE:
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return self._register(conn, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._register(conn, selectors.EVENT_WRITE)
            except (OSError, ValueError) as err:
                log.debug("TLS handshake with %s failed: %r", conn.address, err)
                return self._close(conn)
            self._await_request(conn)
            return
        while True:  # a TLS socket can hold decrypted bytes the selector does not see
            try:
                # headers are read in small pieces: what comes after them (a body the app may refuse
                # unread) stays in the kernel's buffer, not in ours
                n = sock.recv_into(self._scratch, HEADER_READ if conn.state == _HEADERS else 0)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ValueError):
                return self._close(conn)
            if n == 0:
                return self._close(conn)
            if conn.state == _HEADERS:
                if not conn.started:
                    conn.started = True
                    self._set_deadline(conn, self.header_timeout)
                conn.buf += memoryview(self._scratch)[:n]
                if self._parse(conn):
                    return
            else:  # discard or linger: drop what arrives
                if n >= conn.remaining:
                    if conn.state == _LINGER:
                        return self._close(conn)
                    conn.buf += memoryview(self._scratch)[conn.remaining:n]
                    conn.remaining = 0
                    return self._await_request(conn)
                conn.remaining -= n
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def _parse(self, conn: _Conn) -> bool:
        """Dispatch the request in ``conn.buf`` once its headers are complete; True if it went."""
        buf = conn.buf
        while buf[:2] == b"\r\n":  # stray line breaks between requests are allowed
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                self._reject(conn, 431, f"request headers are over {MAX_HEADER_BYTES} bytes")
                return True
            return False
        head = bytes(buf[:end])
        del buf[:end + 4]
        try:
            request = parse_head(head)
        except MalformedRequest as err:
            self._reject(conn, err.status, str(err))
            return True
        conn.state = "request"
        self._selector.unregister(conn.sock)
        self._pool.submit((conn, request))
        return True

    def _reject(self, conn: _Conn, status: int, message: str) -> None:
        """A malformed request: answer it (best effort: it is small) and close."""
        body = message.encode("latin-1", "replace")
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
        try:
            conn.sock.send(head + body)
        except (OSError, ValueError):
            return self._close(conn)
        conn.buf.clear()
        self._linger(conn)

    def _expire(self, now: float) -> None:
        soonest = float("inf")
        for key in list(self._selector.get_map().values()):
            conn = key.data
            if not isinstance(conn, _Conn):
                continue
            if conn.deadline <= now:
                if conn.state == _HEADERS and conn.started:
                    log.debug("closing %s: request headers incomplete after %gs", conn.address,
                              self.header_timeout)
                self._close(conn)
            else:
                soonest = min(soonest, conn.deadline)
        self._next_check = soonest

    def _close(self, conn: _Conn) -> None:
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._forget(conn)
        if not self._listening:  # a descriptor is free again
            self._resume_accept = 0.0

    def _forget(self, conn: _Conn) -> None:
        """Close the connection's socket and drop it from the open set (either thread)."""
        try:
            conn.sock.close()
        except OSError:
            pass
        with self._conns_lock:
            self._conns.discard(conn)

    def _give_back(self, conn: _Conn, state: str, remaining: int = 0) -> None:
        self._returned.append((conn, state, remaining))
        try:
            self._waker.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending (or the server is closing)

    # -- worker threads -------------------------------------------------------------------------
    def _serve(self, conn: _Conn, request: Request) -> None:
        try:
            conn.sock.setblocking(True)
            body = RequestBody(conn, request.length, request.expect_continue,
                               time.monotonic() + self.allowance(request.length))
            answer = None if self.direct is None else run_direct(self.direct, request, body)
            if answer is None:
                scheme = "https" if self.ssl_context is not None else "http"
                environ = make_environ(self.server_address, scheme, conn.address, request, body)
                answer = run_app(self.app, environ, request)
            status, headers, chunks, close = answer
            close = close or not request.keep_alive or body.failed
            if body.remaining > MAX_DISCARD_BYTES:
                close = True
            respond(conn.sock, request, status, headers, chunks, close, self.allowance)
        except Exception as err:  # noqa: BLE001 - the client went away, or could not take the answer
            log.debug("connection from %s ended: %r", conn.address, err)
            self._shut(conn)
            return
        if close:
            self._give_back(conn, _LINGER)
        elif body.remaining:
            early = min(len(conn.buf), body.remaining)  # body bytes that came with the headers
            del conn.buf[:early]
            self._give_back(conn, _DISCARD, body.remaining - early)
        else:
            self._give_back(conn, _HEADERS)

    def _shut(self, conn: _Conn) -> None:
        """From a worker: end a connection now (the I/O thread no longer watches it)."""
        self._forget(conn)
        self._give_back(conn, "closed")

    # -- stopping -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has returned."""
        self._stopping = True
        if not self._stopped.is_set():  # not serving (or stopped already): nothing to wake
            try:
                self._waker.send(b"\0")
            except OSError:
                pass
            self._stopped.wait()

    def server_close(self) -> None:
        """Stop listening and close every connection (a worker inside a request then ends)."""
        self._pool.stop()
        self.socket.close()
        with self._conns_lock:
            connections, self._conns = list(self._conns), set()
        for conn in connections:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
            if conn.state != "request":
                try:
                    conn.sock.close()
                except OSError:
                    pass
        self._selector.close()
        self._wake.close()
        self._waker.close()
