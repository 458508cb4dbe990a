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
import threading

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from .direct_routes import ROUTES, DirectRoutes
from .httpd import WSGIServer
from .store import ParameterStore

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
    direct = DirectRoutes(store, secret, max_body_bytes, dashboard)
    _Handlers(store, max_body_bytes, direct).register(app)
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
    app.direct_routes = direct
    return app


class _Handlers:
    """The Flask routes: health, status, and the binary routes, which :class:`DirectRoutes`
    answers here too (one implementation; the HTTP server hands it authenticated requests for
    them before Flask sees them, and Flask keeps them for ``direct=None`` and the test client)."""

    def __init__(self, store: ParameterStore, max_body_bytes: int, routes: DirectRoutes):
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.routes = routes

    def register(self, app: Flask) -> None:
        app.register_error_handler(RequestEntityTooLarge, self.too_large)
        app.register_error_handler(HTTPException, self.http_error)
        app.get("/health")(self.health)
        app.get("/status")(self.status)
        for (method, path), route in ROUTES.items():
            app.add_url_rule(path, endpoint=route, view_func=functools.partial(self.binary, route),
                             methods=[method])

    # -- errors --------------------------------------------------------------------------------
    @staticmethod
    def http_error(err: HTTPException):
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

    def binary(self, route: str):
        """``POST /update``, ``GET /changes``, ``GET /model`` or ``POST /model`` (see the module)."""
        body = _FlaskBody()
        status, headers, chunks = self.routes.answer(route, request.args.to_dict(), body, body)
        return Response(b"".join(chunks), status=int(status.split(" ", 1)[0]), headers=headers)


class _FlaskBody:
    """The current Flask request as :meth:`DirectRoutes.answer` reads one: its body's length and
    one read of the body (413 beyond ``MAX_CONTENT_LENGTH``, werkzeug's checks when chunked)."""

    def __init__(self):
        self._data = None

    @property
    def length(self) -> int:
        return request.content_length if request.content_length is not None else len(self.read(0))

    def read(self, size: int, view: bool = False) -> bytes:  # noqa: ARG002 - the whole body, once
        if self._data is None:
            self._data = _body()
        return self._data


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
