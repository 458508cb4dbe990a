"""The HTTP face of the parameter store: a Flask app and its server thread.

Routes (every one needs ``Authorization: Bearer <secret>``):

* ``GET /model``: the latest snapshot as a wire frame; ``?names=a,b`` limits
  it to some parameters; ``?after=EPOCH:PARTITION:ATTEMPT:SEQ`` (here and on
  ``POST /model``) first waits until that task's update SEQ has been applied.  ``POST /model`` with a frame of row indices
  (``{name: int array}``) answers those rows only, as sparse rows.
  ``?wait=NAME&at_least=X&timeout=T`` holds the answer until the parameter's first
  element reaches X (bounded staleness: e.g. an M-step count), at most T seconds;
  the frame's meta says ``"ready": false`` when the time ran out first.
* ``POST /update``: a wire frame holding an update and its header
  (base version, epoch, partition, attempt, sequence number, metrics).
  With ``?since=V`` the 202 answer is the ``/changes`` frame for V (saves a round trip).
  With ``?then=rows`` the frame also holds a row request, its entries named
  ``pull:<name>``: once this update is applied, the 202 answer is those rows, as
  ``POST /model`` would send them (a task's push and its next pull in one round trip).
  202 when queued; 400 when invalid; 409 when a newer task attempt owns the
  partition; 503 when the queue stayed full (retry later) or descent failed.
* ``GET /changes?since=V&partition=P&attempt=A`` (additive models): the
  the other tasks' updates after version V, as sparse rows, or ``"full": true``
  in the frame's meta when the task must pull the model instead.
* ``GET /status``: counters as JSON.
* ``GET /health``: ``{"ok": true}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from . import wire
from .config import MAX_WAIT_SECONDS
from .errors import (ConfigurationError, DescentFailedError, InvalidUpdateError,
                     SupersededAttemptError, WireFormatError)
from .httpd import WSGIServer
from .store import ParameterStore, QueueFullError

log = logging.getLogger(__name__)


def _error(status: int, message: str, **headers):
    response = jsonify({"error": message})
    response.status_code = status
    response.headers.update(headers)
    return response


class BearerAuth:
    """WSGI middleware: refuse a request without ``Authorization: Bearer <secret>`` (401) or with
    a wrong one (403) on its headers alone, never touching ``wsgi.input``."""

    def __init__(self, app, secret: str):
        self.app = app
        self._expected = f"Bearer {secret}".encode()

    def __call__(self, environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION")
        if header and hmac.compare_digest(header.encode("latin-1", "replace"), self._expected):
            return self.app(environ, start_response)
        if not header:
            status, extra = "401 UNAUTHORIZED", [("WWW-Authenticate", "Bearer")]
            message = "missing Authorization header; send 'Bearer <secret>' (DeepDist.secret)"
        else:
            status, extra, message = "403 FORBIDDEN", [], "wrong secret"
        body = json.dumps({"error": message}).encode()
        start_response(status, [("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body))), *extra])
        return [body]


def create_app(store: ParameterStore, secret: str, max_body_bytes: int) -> Flask:
    """Build the Flask app serving ``store``, guarded by ``secret``.

    Example::

        >>> import numpy as np
        >>> store = ParameterStore({"w": np.zeros(3)})
        >>> app = create_app(store, secret="s3cret", max_body_bytes=1 << 20)
        >>> app.test_client().get("/health").status_code    # no secret
        401
    """
    app = Flask("deepdist")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # checked on the headers, before Flask (or anything) reads the body: an unauthenticated
    # request commits no memory and no body byte is read (the server skips or drops it)
    app.wsgi_app = BearerAuth(app.wsgi_app, secret)

    @app.errorhandler(HTTPException)
    def _http_error(err):
        return _error(err.code or 500, err.description or err.name)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err):
        # the limit travels as a number too: the client names it when it refuses to re-send
        response = jsonify({"error": f"the request body of {request.content_length or 0:,} bytes is over "
                                     f"max_body_bytes ({max_body_bytes:,} bytes)",
                            "max_body_bytes": max_body_bytes})
        response.status_code = 413
        return response

    @app.get("/health")
    def health():
        return jsonify({"ok": True, "version": store.version})

    @app.get("/status")
    def status():
        return jsonify(store.status())

    @app.get("/model")
    def get_model():
        names = request.args.get("names")
        wanted = names.split(",") if names else None
        unknown = [n for n in wanted or () if n not in store.spec]
        if unknown:
            return _error(400, f"unknown parameter(s) {unknown}; the model has {sorted(store.spec)}")
        _wait_for_own_updates(request.args, store)
        version, body = store.snapshot(wanted)
        return _frame_response(body, version)

    @app.post("/model")
    def get_rows():
        try:
            wanted = wire.validate_row_request(wire.decode(_body()), store.spec)
        except (WireFormatError, InvalidUpdateError) as err:
            return _error(400, str(err))
        _wait_for_own_updates(request.args, store)
        ready = True
        if "wait" in request.args:
            ready = store.wait_for(*_wait_args(request.args, store))
        version, body = store.rows(wanted, ready=ready)
        return _frame_response(body, version)

    @app.get("/changes")
    def get_changes():
        try:
            since, partition, attempt = (int(request.args[k]) for k in ("since", "partition", "attempt"))
        except (KeyError, ValueError):
            return _error(400, "/changes needs integer since, partition and attempt")
        version, body = store.changes(since, partition, attempt)
        return _frame_response(body, version)

    @app.post("/update")
    def post_update():
        body = _body()
        then = request.args.get("then")
        if then not in (None, "rows"):
            return _error(400, f"then must be 'rows', got {then!r}")
        try:
            frame = wire.decode(body)
            meta = wire.parse_update_meta(frame.meta)
            frame, pull = wire.split_row_request(frame) if then else (frame, None)
            update = wire.validate_update(frame, store.spec)
            wanted = None if pull is None else wire.validate_row_request(pull, store.spec)
        except (WireFormatError, InvalidUpdateError) as err:
            store._count_rejected("invalid")
            log.warning("refused an update: %s", err)
            return _error(400, str(err))
        since = request.args.get("since")
        try:
            since = None if since is None else int(since)
        except ValueError:
            return _error(400, f"since must be an integer, got {since!r}")
        try:
            store.submit(update, meta, nbytes=len(body))
        except SupersededAttemptError as err:
            return _error(409, str(err))
        except QueueFullError as err:
            return _error(503, f"{err}; retry later", **{"Retry-After": "1"})
        except DescentFailedError as err:
            return _error(503, str(err))
        except ConfigurationError as err:
            return _error(409, str(err))
        if wanted is not None:  # the sender's next pull, after its own update (read your own writes)
            _wait_until_applied(store, meta.epoch, meta.partition, meta.attempt, meta.seq)
            version, rows = store.rows(wanted)
            return _frame_response(rows, version, status=202)
        if since is not None:  # the sender's /changes in the same round trip
            version, changes = store.changes(since, meta.partition, meta.attempt)
            return _frame_response(changes, version, status=202)
        return jsonify({"queued": True, "version": store.version}), 202

    def _frame_response(body: bytes, version: int, status: int = 200):
        store.count_bytes_out(len(body))
        response = Response(body, status=status, mimetype=wire.CONTENT_TYPE)
        response.headers["X-DeepDist-Version"] = str(version)
        return response

    return app


def _wait_for_own_updates(args, store: ParameterStore) -> None:
    """``?after=EPOCH:PARTITION:ATTEMPT:SEQ``: answer once that sender's update SEQ is applied."""
    after = args.get("after")
    if after is None:
        return
    try:
        epoch, partition, attempt, seq = (int(part) for part in after.split(":"))
    except ValueError:
        raise BadRequest("after must be EPOCH:PARTITION:ATTEMPT:SEQ (integers)") from None
    _wait_until_applied(store, epoch, partition, attempt, seq)


def _wait_until_applied(store: ParameterStore, epoch: int, partition: int, attempt: int, seq: int) -> None:
    """Hold the answer until that sender's update ``seq`` is applied (at most MAX_WAIT_SECONDS)."""
    if not store.wait_finished(epoch, partition, attempt, seq, MAX_WAIT_SECONDS):
        log.warning("update %d:%d:%d:%d was not applied within %gs; answering anyway",
                    epoch, partition, attempt, seq, MAX_WAIT_SECONDS)


def _wait_args(args, store: ParameterStore) -> tuple[str, float, float]:
    """``?wait=NAME&at_least=X&timeout=T``: answer once ``NAME[0] >= X``, or after T seconds."""
    name = args["wait"]
    if name not in store.spec:
        raise BadRequest(f"wait: unknown parameter {name!r}; the model has {sorted(store.spec)}")
    try:
        at_least, timeout = float(args.get("at_least", "")), float(args.get("timeout", ""))
    except ValueError:
        raise BadRequest("wait needs numeric at_least and timeout query arguments") from None
    if not math.isfinite(at_least) or not 0.0 <= timeout <= MAX_WAIT_SECONDS:
        raise BadRequest(f"wait: at_least must be finite and timeout in [0, {MAX_WAIT_SECONDS:g}] seconds, "
                         f"got {at_least!r} and {timeout!r}")
    return name, at_least, timeout


def _body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes (413 beyond)."""
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if length is None or not hasattr(stream, "read") or request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)  # chunked or unusual servers: werkzeug's own checks
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    # one buffered read in C: werkzeug's LimitedStream reads a large body in many
    # small Python-level chunks, which cost more CPU than decoding and applying it
    body = stream.read(length)
    if len(body) != length:
        raise BadRequest(f"the body ended after {len(body)} of its {length} bytes")
    return body


class ServerThread:
    """Serves a WSGI app with :class:`deepdist.httpd.WSGIServer` (keep-alive, bounded) in a background
    thread; over TLS with ``ssl_context`` (see :mod:`deepdist.tls`).

    Example::

        >>> thread = ServerThread(app, "127.0.0.1", 0)
        >>> thread.start(); thread.port > 0
        True
        >>> thread.stop()
    """

    def __init__(self, app, host: str, port: int = 0, ssl_context=None, **options):
        self._server = WSGIServer((host, port), app, ssl_context=ssl_context, **options)
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="deepdist-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
