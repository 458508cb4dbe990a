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
* ``GET /`` and ``GET /dashboard/data``: the live dashboard and its data (:mod:`deepdist.dashboard`);
  these two also admit the dashboard's login token or session cookie instead of the bearer.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import threading

from flask import Flask, Response, abort, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from . import wire
from .config import MAX_WAIT_SECONDS
from .direct_routes import DirectRoutes
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
    a wrong one (403) on its headers alone, never touching ``wsgi.input``. ``admit(environ)``, if
    given, may let a request without the header through (the dashboard's cookie)."""

    def __init__(self, app, secret: str, admit=None):
        self.app = app
        self._expected = f"Bearer {secret}".encode()
        self._admit = admit

    def __call__(self, environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION")
        if header and hmac.compare_digest(header.encode("latin-1", "replace"), self._expected):
            return self.app(environ, start_response)
        if not header and self._admit is not None and self._admit(environ):
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


def create_app(store: ParameterStore, secret: str, max_body_bytes: int, dashboard=None) -> Flask:
    """Build the Flask app serving ``store``, guarded by ``secret`` (and ``dashboard``'s pages, if given).

    Example::

        >>> import numpy as np
        >>> store = ParameterStore({"w": np.zeros(3)})
        >>> app = create_app(store, secret="s3cret", max_body_bytes=1 << 20)
        >>> app.test_client().get("/health").status_code    # no secret
        401
    """
    app = Flask("deepdist")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    _Handlers(store, max_body_bytes, dashboard).register(app)
    admit = None
    if dashboard is not None:
        from .dashboard import routes as dashboard_routes

        dashboard_routes.register(app, dashboard)
        admit = functools.partial(dashboard_routes.admit, dashboard)
    # checked on the headers, before Flask (or anything) reads the body: an unauthenticated
    # request commits no memory and no body byte is read (the server skips or drops it)
    app.wsgi_app = BearerAuth(app.wsgi_app, secret, admit)
    # the binary routes a task calls every step, answered by the HTTP server without Flask (same
    # checks and answers; ServerThread hands them over)
    app.direct_routes = DirectRoutes(store, secret, max_body_bytes, dashboard)
    return app


def _refuse(status: int, message: str, **headers):
    """Stop the request with ``{"error": message}`` and ``status``."""
    abort(_error(status, message, **headers))


class _Handlers:
    """The routes' handlers, over what they share: the store and the request-size limit."""

    def __init__(self, store: ParameterStore, max_body_bytes: int, dashboard=None):
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.dashboard = dashboard   # told of every task's contact (its partitions table)

    def register(self, app: Flask) -> None:
        app.register_error_handler(RequestEntityTooLarge, self.too_large)
        app.register_error_handler(HTTPException, self.http_error)
        app.get("/health")(self.health)
        app.get("/status")(self.status)
        app.get("/model")(self.get_model)
        app.post("/model")(self.get_rows)
        app.get("/changes")(self.get_changes)
        app.post("/update")(self.post_update)

    # -- errors --------------------------------------------------------------------------------
    @staticmethod
    def http_error(err: HTTPException):
        if err.response is not None:   # a refusal that brought its own answer (_refuse)
            return err.response
        return _error(err.code or 500, err.description or err.name)

    def too_large(self, err: RequestEntityTooLarge):
        # the limit travels as a number too: the client names it when it refuses to re-send
        response = jsonify({"error": f"the request body of {request.content_length or 0:,} bytes is over "
                                     f"max_body_bytes ({self.max_body_bytes:,} bytes)",
                            "max_body_bytes": self.max_body_bytes})
        response.status_code = 413
        return response

    # -- routes --------------------------------------------------------------------------------
    def health(self):
        return jsonify({"ok": True, "version": self.store.version})

    def status(self):
        return jsonify(self.store.status())

    def get_model(self):
        """``GET /model[?names=a,b]``: the latest snapshot, or some of its parameters."""
        names = request.args.get("names")
        wanted = names.split(",") if names else None
        unknown = [n for n in wanted or () if n not in self.store.spec]
        if unknown:
            _refuse(400, f"unknown parameter(s) {unknown}; the model has {sorted(self.store.spec)}")
        self._wait_for_own_updates()
        version, body = self.store.snapshot(wanted)
        return self._frame(body, version)

    def get_rows(self):
        """``POST /model``: the rows the body's frame names, once the model is ready if asked."""
        wanted = self._decode(self._parse_rows, _body())
        self._wait_for_own_updates()
        ready = True
        if "wait" in request.args:
            ready = self.store.wait_for(*self._wait_args())
        version, body = self.store.rows(wanted, ready=ready)
        return self._frame(body, version)

    def get_changes(self):
        """``GET /changes?since=V&partition=P&attempt=A``: the other tasks' updates after V."""
        try:
            since, partition, attempt = (int(request.args[k]) for k in ("since", "partition", "attempt"))
        except (KeyError, ValueError):
            _refuse(400, "/changes needs integer since, partition and attempt")
        version, body = self.store.changes(since, partition, attempt)
        if self.dashboard is not None:
            self.dashboard.contacted(self.store.epoch, partition, attempt)
        return self._frame(body, version)

    def post_update(self):
        """``POST /update[?since=V|?then=rows]``: queue an update; answer with the sender's next read."""
        then = request.args.get("then")
        body = _body()
        if then not in (None, "rows"):
            _refuse(400, f"then must be 'rows', got {then!r}")
        meta, update, wanted = self._decode(self._parse_update, body, then, counted=True)
        since = _since()
        self._submit(update, meta, len(body))
        if self.dashboard is not None:
            self.dashboard.pushed(meta)
        if wanted is not None:  # the sender's next pull, after its own update (read your own writes)
            self._wait_until_applied(meta.epoch, meta.partition, meta.attempt, meta.seq)
            version, rows = self.store.rows(wanted)
            return self._frame(rows, version, status=202)
        if since is not None:  # the sender's /changes in the same round trip
            version, changes = self.store.changes(since, meta.partition, meta.attempt)
            return self._frame(changes, version, status=202)
        return jsonify({"queued": True, "version": self.store.version}), 202

    # -- helpers -------------------------------------------------------------------------------
    def _decode(self, parse, *args, counted: bool = False):
        """``parse(*args)``, with a malformed or unfitting body answered 400 (and counted as a
        refused update when ``counted``)."""
        try:
            return parse(*args)
        except (WireFormatError, InvalidUpdateError) as err:
            if counted:
                self.store.count_rejected("invalid")
                log.warning("refused an update: %s", err)
            _refuse(400, str(err))

    def _parse_rows(self, body: bytes) -> dict:
        return wire.validate_row_request(wire.decode(body), self.store.spec)

    def _parse_update(self, body: bytes, then: str | None):
        """``(meta, update, rows wanted after it or None)`` from an update frame."""
        frame = wire.decode(body)
        meta = wire.parse_update_meta(frame.meta)
        frame, pull = wire.split_row_request(frame) if then else (frame, None)
        update = wire.validate_update(frame, self.store.spec)
        wanted = None if pull is None else wire.validate_row_request(pull, self.store.spec)
        return meta, update, wanted

    def _submit(self, update: dict, meta: wire.UpdateMeta, nbytes: int) -> None:
        """Queue the update, or answer why not: 409 (superseded, no descent), 503 (full, failed)."""
        try:
            self.store.submit(update, meta, nbytes=nbytes)
        except SupersededAttemptError as err:
            _refuse(409, str(err))
        except QueueFullError as err:
            _refuse(503, f"{err}; retry later", **{"Retry-After": "1"})
        except DescentFailedError as err:
            _refuse(503, str(err))
        except ConfigurationError as err:
            _refuse(409, str(err))

    def _frame(self, body: bytes, version: int, status: int = 200):
        self.store.count_bytes_out(len(body))
        response = Response(body, status=status, mimetype=wire.CONTENT_TYPE)
        response.headers["X-DeepDist-Version"] = str(version)
        return response

    def _wait_for_own_updates(self) -> None:
        """``?after=EPOCH:PARTITION:ATTEMPT:SEQ``: answer once that sender's update SEQ is applied."""
        after = request.args.get("after")
        if after is None:
            return
        try:
            epoch, partition, attempt, seq = (int(part) for part in after.split(":"))
        except ValueError as err:
            raise BadRequest("after must be EPOCH:PARTITION:ATTEMPT:SEQ (integers)") from err
        self._wait_until_applied(epoch, partition, attempt, seq)

    def _wait_until_applied(self, epoch: int, partition: int, attempt: int, seq: int) -> None:
        """Hold the answer until that sender's update ``seq`` is applied (at most MAX_WAIT_SECONDS)."""
        if not self.store.wait_finished(epoch, partition, attempt, seq, MAX_WAIT_SECONDS):
            log.warning("update %d:%d:%d:%d was not applied within %gs; answering anyway",
                        epoch, partition, attempt, seq, MAX_WAIT_SECONDS)

    def _wait_args(self) -> tuple[str, float, float]:
        """``?wait=NAME&at_least=X&timeout=T``: answer once ``NAME[0] >= X``, or after T seconds."""
        args = request.args
        name = args["wait"]
        if name not in self.store.spec:
            raise BadRequest(f"wait: unknown parameter {name!r}; the model has {sorted(self.store.spec)}")
        try:
            at_least, timeout = float(args.get("at_least", "")), float(args.get("timeout", ""))
        except ValueError as err:
            raise BadRequest("wait needs numeric at_least and timeout query arguments") from err
        if not math.isfinite(at_least) or not 0.0 <= timeout <= MAX_WAIT_SECONDS:
            raise BadRequest(f"wait: at_least must be finite and timeout in [0, {MAX_WAIT_SECONDS:g}] seconds, "
                             f"got {at_least!r} and {timeout!r}")
        return name, at_least, timeout


def _since() -> int | None:
    """``?since=V`` of ``POST /update``, if given."""
    since = request.args.get("since")
    try:
        return None if since is None else int(since)
    except ValueError:
        _refuse(400, f"since must be an integer, got {since!r}")


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
        options.setdefault("direct", getattr(app, "direct_routes", None))  # direct=None: all through the app
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

    @property
    def server(self) -> WSGIServer:
        """The HTTP server itself (its limits, ``workers``, ``connections``)."""
        return self._server

    @property
    def native_id(self) -> int | None:
        """The OS id of the thread running the server's I/O loop (None before it starts)."""
        return self._thread.native_id
