"""The executor side of the wire: pull the model, push updates.

A :class:`ModelClient` carries configuration only (URL, secret, timeouts), so
it pickles cleanly into Spark closures; its keep-alive HTTP connection is
created lazily, once per executor process and thread.  HTTP and connection
errors are translated into deepdist errors here and nowhere else.

The transport is the standard library's ``http.client``: a Gibbs task makes
hundreds of round trips a job, and ``requests`` spends many times more CPU on
each (header merging, URL parsing, hooks), on the same cores the samplers need.
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import select
import threading
import time
from urllib.parse import urlencode, urlsplit

import numpy as np

from . import config, tls, wire
from .errors import (AuthenticationError, DescentFailedError, InvalidUpdateError, ServerError,
                     ServerUnreachableError, SupersededAttemptError, UpdateTooLargeError)
from .sparse import copy_rows

log = logging.getLogger(__name__)

_connections: dict = {}
_connections_lock = threading.Lock()


@atexit.register
def _close_connections() -> None:
    """Close the kept-alive connections when the process exits (left to the garbage collector,
    each would warn of an unclosed socket)."""
    with _connections_lock:
        for conn in _connections.values():
            conn.close()
        _connections.clear()


class _Response:
    """A finished HTTP exchange: status, headers (case-insensitive) and the whole body."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers, content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Did the server close this idle keep-alive connection? (It is then readable, at EOF.)"""
    if conn.sock is None:
        return False
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose server is the one holding the certificate with this SHA-256 fingerprint: checked
    right after the handshake, before a request (and its bearer secret) is sent."""

    def __init__(self, host, port, fingerprint: str, url: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=tls.client_context())
        self._fingerprint, self._url = fingerprint, url

    def connect(self):
        super().connect()
        try:
            tls.check_pinned(self.sock, self._fingerprint, self._url)
        except AuthenticationError:
            self.close()
            raise


class ModelClient:
    """Talks to a DeepDist model server.

    Example::

        >>> client = ModelClient(dd.url, dd.secret)          # doctest: +SKIP
        >>> version, params = client.pull()                  # doctest: +SKIP
        >>> client.push({"w": grad}, wire.UpdateMeta(version=version))  # doctest: +SKIP
    """

    def __init__(self, url: str, secret: str, connect_timeout: float = config.CONNECT_TIMEOUT,
                 read_timeout: float = config.READ_TIMEOUT, retries: int = config.RETRIES,
                 backoff: float = config.BACKOFF, backpressure_wait: float = config.BACKPRESSURE_WAIT,
                 fingerprint: str | None = None):
        self.url = url.rstrip("/")
        self.secret = secret
        #: SHA-256 of the server's TLS certificate (``https://`` URLs): pinned, no CA involved
        self.fingerprint = fingerprint
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.backpressure_wait = backpressure_wait

    def __repr__(self) -> str:
        return f"ModelClient({self.url!r})"

    @property
    def _connection(self) -> http.client.HTTPConnection:
        # one connection per process and thread: kept alive across tasks, never shared by threads
        key = (self.url, os.getpid(), threading.get_ident())
        with _connections_lock:
            conn = _connections.get(key)
            if conn is None or _dropped(conn):
                if conn is not None:
                    conn.close()
                parts = urlsplit(self.url)
                if parts.scheme == "https":
                    if not self.fingerprint:
                        raise ServerError(f"{self.url}: an https model server needs the fingerprint of its "
                                          "certificate (ModelClient(..., fingerprint=dd.fingerprint))")
                    conn = _PinnedHTTPSConnection(parts.hostname, parts.port or 443, self.fingerprint,
                                                  self.url, timeout=self.connect_timeout)
                elif parts.scheme == "http":
                    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.connect_timeout)
                else:
                    raise ServerError(f"{self.url}: the model server speaks http or https, not {parts.scheme!r}")
                _connections[key] = conn
            return conn

    def _drop_connection(self) -> None:
        with _connections_lock:
            conn = _connections.pop((self.url, os.getpid(), threading.get_ident()), None)
        if conn is not None:
            conn.close()

    def _exchange(self, method: str, target: str, data, headers: dict, timeout: float) -> _Response:
        conn = self._connection
        if conn.sock is None:
            conn.connect()  # under connect_timeout
        conn.sock.settimeout(timeout)
        try:
            conn.request(method, target, body=data, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # a server refusing a body (413) answers, then closes while the body is still
            # arriving; its answer is already in our receive buffer and says more than the
            # broken pipe, which would be retried and blamed on the network
            answer = self._answer_after_broken_send(conn, timeout)
            if answer is None:
                raise
            return answer
        response = conn.getresponse()
        try:
            content = response.read()
        except http.client.IncompleteRead as err:
            self._drop_connection()
            raise ServerError(f"{self.url}: the answer arrived truncated ({len(err.partial)} of "
                              f"{response.getheader('Content-Length')} bytes)") from err
        if response.will_close:
            self._drop_connection()
        return _Response(response.status, response.headers, content)

    def _answer_after_broken_send(self, conn: http.client.HTTPConnection, timeout: float) -> _Response | None:
        """The answer a server sent before it cut our request short, or None if it sent none."""
        try:
            # the connection is reset: what the server sent is read at once, or never
            conn.sock.settimeout(min(timeout, 5.0))
            response = conn.getresponse()
            return _Response(response.status, response.headers, response.read())
        except (OSError, http.client.HTTPException):
            return None
        finally:
            self._drop_connection()

    def _request(self, method: str, path: str, data=None, params=None, timeout=None) -> _Response:
        headers = {"Authorization": f"Bearer {self.secret}"}
        if data is not None:
            headers["Content-Type"] = wire.CONTENT_TYPE
        target = path + ("?" + urlencode(params) if params else "")
        url = self.url + target
        backpressure_deadline = time.monotonic() + self.backpressure_wait
        attempt = 0
        while True:
            try:
                response = self._exchange(method, target, data, headers, timeout or self.read_timeout)
            except AuthenticationError:  # a server with another certificate: retrying cannot help
                self._drop_connection()
                raise
            except (OSError, http.client.HTTPException) as err:
                self._drop_connection()  # its state is unknown: the next try starts a fresh one
                attempt += 1
                if attempt > self.retries:
                    raise ServerUnreachableError(self._unreachable_message(err)) from err
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if response.status_code == 503 and "Retry-After" in response.headers:
                # back-pressure: the server's queue is full; wait, nothing was dropped
                if time.monotonic() > backpressure_deadline:
                    raise ServerError(f"{url}: the update queue stayed full for {self.backpressure_wait}s")
                time.sleep(float(response.headers.get("Retry-After", 1)))
                continue
            if response.status_code == 413:
                self._raise_too_large(response, data)
            if response.status_code >= 400:
                self._raise_for(response)
            return response

    def _unreachable_message(self, err) -> str:
        host = urlsplit(self.url).hostname
        port = urlsplit(self.url).port
        return (f"cannot reach the DeepDist model server at {self.url} after {self.retries} retries "
                f"({type(err).__name__}). The server runs on the Spark driver: check that the driver is "
                f"still running, that executors can resolve and reach the driver host {host!r} "
                f"(spark.driver.host / spark.driver.bindAddress), and that no firewall blocks port {port}.")

    def _raise_too_large(self, response, data) -> None:
        try:
            limit = int(response.json()["max_body_bytes"])
        except (ValueError, KeyError, TypeError, AttributeError):
            limit = None
        size = len(data) if data is not None else 0
        over = f"the server's max_body_bytes ({limit:,} bytes)" if limit else "the server's max_body_bytes"
        raise UpdateTooLargeError(
            f"{self.url}: 413 a request body of {size:,} bytes is over {over}; sending it again cannot "
            "help: push smaller updates (sparse rows, more often) or start DeepDist with a larger "
            "max_body_bytes")

    def _raise_for(self, response) -> None:
        try:
            message = response.json().get("error", response.text)
        except (ValueError, AttributeError):
            message = response.text[:500]
        status = response.status_code
        text = f"{self.url}: {status} {message}"
        if status in (401, 403):
            raise AuthenticationError(f"{text} (is the secret that of this DeepDist context?)")
        if status == 409:
            raise SupersededAttemptError(text)
        if status in (400, 413):
            raise InvalidUpdateError(text)
        if status == 503 and "descent failed" in message:
            raise DescentFailedError(text)
        raise ServerError(text)

    def _frame(self, response: _Response) -> wire.Frame:
        return wire.decode(response.content)

    # -- public API ------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/health").json()

    def status(self) -> dict:
        return self._request("GET", "/status").json()

    def pull(self, names=None, after=None) -> tuple[int, dict]:
        """The latest model: ``(version, {name: read-only array})``.

        ``after=(epoch, partition, attempt, seq)``: once that sender's update ``seq`` is applied.
        """
        params = _after(after)
        if names:
            params["names"] = ",".join(names)
        frame = self._frame(self._request("GET", "/model", params=params))
        return int(frame.meta["version"]), frame.arrays

    def pull_into(self, target: dict, names=None, after=None) -> int:
        """Copy the latest model into ``target``'s arrays; return its version."""
        version, arrays = self.pull(names, after)
        for name, array in arrays.items():
            np.copyto(target[name], array)
        return version

    def _pull_rows(self, rows: dict, params=None, timeout=None) -> wire.Frame:
        request = _row_request(rows)
        return self._frame(self._request("POST", "/model", data=wire.encode(request), params=params,
                                         timeout=timeout))

    def pull_rows(self, rows: dict, after=None) -> tuple[int, dict]:
        """Selected rows ``{name: indices}``: ``(version, {name: SparseRows})`` (``after``: see :meth:`pull`)."""
        frame = self._pull_rows(rows, params=_after(after))
        return int(frame.meta["version"]), frame.arrays

    def pull_rows_when(self, rows: dict, name: str, at_least: float, timeout: float,
                       after=None) -> tuple[int, dict, bool]:
        """:meth:`pull_rows` once the model's ``name[0] >= at_least``: ``(version, arrays, ready)``.

        The server holds the answer (no polling) for at most ``timeout`` seconds; ``ready`` is
        False when it ran out of time and sent the rows as they were.
        """
        frame = self._pull_rows(rows, params={"wait": name, "at_least": repr(float(at_least)),
                                              "timeout": repr(float(timeout)), **_after(after)},
                                timeout=self.read_timeout + timeout)
        return int(frame.meta["version"]), frame.arrays, bool(frame.meta.get("ready", True))

    def pull_rows_into(self, target: dict, rows: dict, after=None) -> int:
        """Copy selected rows of the latest model into ``target``; return its version."""
        version, arrays = self.pull_rows(rows, after)
        copy_rows(target, arrays)
        return version

    def pull_changes(self, since: int, partition: int, attempt: int):
        """``(version, {name: SparseRows})``: the other tasks' updates after ``since``.

        The arrays are None when the server cannot tell (pull the model instead).
        """
        frame = self._frame(self._request("GET", "/changes", params={
            "since": since, "partition": partition, "attempt": attempt}))
        return int(frame.meta["version"]), None if frame.meta.get("full", True) else frame.arrays

    def push(self, update: dict, meta: wire.UpdateMeta) -> int:
        """Send an update; return its size in bytes.  Blocks under back-pressure."""
        body = wire.encode(update, meta.to_json())
        self._request("POST", "/update", data=body)
        return len(body)

    def push_pull_rows(self, update: dict, meta: wire.UpdateMeta, rows: dict):
        """:meth:`push`, then, once it is applied, :meth:`pull_rows` of ``rows`` in the same
        round trip: ``(bytes, version, {name: SparseRows})``."""
        request = _row_request(rows, wire.PULL_PREFIX)
        body = wire.encode({**update, **request}, meta.to_json())
        frame = self._frame(self._request("POST", "/update", data=body, params={"then": "rows"}))
        return len(body), int(frame.meta["version"]), frame.arrays

    def push_pull_changes(self, update: dict, meta: wire.UpdateMeta, since: int):
        """:meth:`push`, then :meth:`pull_changes` in the same round trip: ``(bytes, version, arrays)``."""
        body = wire.encode(update, meta.to_json())
        frame = self._frame(self._request("POST", "/update", data=body, params={"since": since}))
        return len(body), int(frame.meta["version"]), None if frame.meta.get("full", True) else frame.arrays


def _row_request(rows: dict, prefix: str = "") -> dict:
    """``{prefix + name: row indices}``, as int32 when they fit (half the bytes of int64)."""
    request = {}
    for name, idx in rows.items():
        idx = np.asarray(idx)
        small = idx.size == 0 or (idx.dtype.kind in "iu" and int(idx.max()) < 2 ** 31 and int(idx.min()) >= 0)
        request[prefix + name] = idx.astype(np.int32 if small else np.int64, copy=False)
    return request


def _after(after) -> dict:
    return {} if after is None else {"after": ":".join(str(int(part)) for part in after)}

