"""The worker side of :mod:`deepdist.httpd`: a bounded pool of threads, each running the WSGI
app for one request at a time and sending its answer.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from urllib.parse import unquote

from .http_request import Request, RequestBody, send_all, send_parts

log = logging.getLogger(__name__)


class WorkerPool:
    """At most ``size`` worker threads, started as requests need them."""

    def __init__(self, size: int, handler):
        self.size, self._handler = size, handler
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._idle = 0  # waiting workers not yet called
        self.threads = 0
        self._stopping = False

    def submit(self, job) -> None:
        with self._cond:
            self._jobs.append(job)
            if self._idle:
                self._idle -= 1
                self._cond.notify()
            elif self.threads < self.size:
                self.threads += 1
                try:
                    threading.Thread(target=self._work, name=f"deepdist-http-{self.threads}", daemon=True).start()
                except RuntimeError as err:  # no thread to be had: the running ones take the job in turn
                    self.threads -= 1
                    log.warning("cannot start another server thread (%s); %d serve", err, self.threads)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._idle += 1
                    self._cond.wait()
                if self._stopping:
                    self.threads -= 1
                    return
                job = self._jobs.popleft()
            self._handler(*job)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()


def run_app(app, environ: dict, request: Request):
    """Run the WSGI ``app``; ``(status, headers, chunks, close)``: a failing app gets a clean 500."""
    status_headers: list = []
    chunks: list = []

    def start_response(status, headers, exc_info=None):
        if exc_info and status_headers:
            raise exc_info[1].with_traceback(exc_info[2])
        status_headers[:] = [status, headers]
        return chunks.append

    try:
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    except Exception:  # noqa: BLE001 - the app failed: answer 500 and drop the connection
        # nothing was written yet (the response goes out below), so a clean 500 is possible
        log.exception("error while serving %s %s", request.method, request.target)
        return "500 Internal Server Error", [("Content-Type", "text/plain")], [b"internal error"], True
    status, headers = status_headers
    return status, headers, chunks, False


def run_direct(direct, request: Request, body: RequestBody):
    """``direct(request, body)`` as :func:`run_app`'s ``(status, headers, chunks, close)``, or None
    when it leaves the request to the app; a failing handler gets a clean 500."""
    try:
        answer = direct(request, body)
    except Exception:  # noqa: BLE001 - as run_app: answer 500 and drop the connection
        log.exception("error while serving %s %s", request.method, request.target)
        return "500 Internal Server Error", [("Content-Type", "text/plain")], [b"internal error"], True
    return None if answer is None else (*answer, False)


def respond(sock, request: Request, status: str, headers: list, chunks: list, close: bool,
            allowance) -> None:
    """Send the answer, within ``allowance(size)`` seconds for all of it."""
    size = sum(memoryview(c).nbytes for c in chunks)
    lines = [f"HTTP/1.1 {status}\r\n"]
    has_length = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length":
            has_length = True
        elif lowered == "connection":
            close = close or value.lower() == "close"
            continue
        lines.append(f"{name}: {value}\r\n")
    if not has_length:
        lines.append(f"Content-Length: {size}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    deadline = time.monotonic() + allowance(size)
    if request.method == "HEAD" or not chunks:
        send_all(sock, head, deadline)
    elif size <= (64 << 10):
        send_all(sock, head + b"".join(chunks), deadline)
    else:
        send_parts(sock, [head, *chunks], deadline)


def make_environ(server_address, scheme: str, address, request: Request, body: RequestBody) -> dict:
    """The WSGI environ of ``request`` from the client at ``address``."""
    path, _, query = request.target.partition("?")
    host, port = server_address[:2]
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, "latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": str(host),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": request.version,
        "REMOTE_ADDR": str(address[0]) if address else "",
        "REMOTE_PORT": str(address[1]) if address else "",
        "CONTENT_LENGTH": str(request.length) if request.length else "",
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            environ[key] = value
    return environ
