"""The model server's binary routes, answered without the web framework.

Every step of a task goes through one of four routes: ``POST /update`` (a push, with
``?since=`` or ``?then=rows``), ``GET /changes``, ``GET /model`` and ``POST /model``. Served by
Flask, each builds a request context, matches the URL, wraps the environ in a ``Request`` and
the answer in a ``Response``: more CPU than decoding, checking and applying a Gibbs count
delta, on the one driver process that serves every partition. :class:`DirectRoutes` answers
these four from the request :mod:`deepdist.httpd` has already parsed, in the worker thread
that holds it.

The contract is the Flask routes' (:mod:`deepdist.server`): the same store methods and wire
checks, the same body limit (413 naming ``max_body_bytes``) and the same answers and codes
(400, 409, 503 with ``Retry-After`` when the queue stays full). Authentication is decided
on the headers before a byte of the body is read, as :class:`deepdist.server.BearerAuth`
does; only a request carrying the right secret is answered here. A request without it, or
for any other route, method or spelling of a path, goes to the Flask app untouched (its
body unread), which answers it as it always has (401, 403, 404, 405, ...).

Example::

    >>> import numpy as np
    >>> from deepdist.store import ParameterStore
    >>> routes = DirectRoutes(ParameterStore({"w": np.zeros(3)}), "s3cret", 1 << 20)
    >>> server = WSGIServer(("127.0.0.1", 0), app, direct=routes)   # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from http import HTTPStatus
from urllib.parse import parse_qsl

from . import wire
from .config import MAX_WAIT_SECONDS
from .errors import (ConfigurationError, DeepDistError, DescentFailedError, InvalidUpdateError,
                     QueueFullError, SupersededAttemptError, WireFormatError)

log = logging.getLogger(__name__)

ROUTES = {("POST", "/update"): "post_update", ("GET", "/changes"): "get_changes",
          ("GET", "/model"): "get_model", ("POST", "/model"): "get_rows"}


class Refusal(DeepDistError):
    """A request answered with ``{"error": message, **extra}`` and ``status``."""

    def __init__(self, status: int, message: str, headers: tuple = (), **extra):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, list(headers), extra


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase.upper()}"  # as werkzeug spells it


def _json(code: int, payload: dict, headers: tuple = ()):
    # as Flask's jsonify writes it: compact, keys sorted, a final newline
    body = (json.dumps(payload, separators=(",", ":"), sort_keys=True) + "\n").encode()
    return _status(code), [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                           *headers], [body]


def _query(query: str) -> dict:
    """The query's arguments, the first of repeated names winning (as werkzeug's ``args.get``)."""
    args: dict = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        args.setdefault(name, value)
    return args


class DirectRoutes:
    """``POST /update``, ``GET /changes``, ``GET /model`` and ``POST /model`` of ``store``, for
    :class:`deepdist.httpd.WSGIServer`'s ``direct``: called with a parsed request and its unread
    body, it returns ``(status, headers, chunks)``, or None to leave the request to the app.

    ``dashboard``, if given, is told of every push and ``/changes`` call, as the Flask routes tell it.
    """

    def __init__(self, store, secret: str, max_body_bytes: int, dashboard=None):
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.dashboard = dashboard
        self._expected = f"Bearer {secret}".encode()

    def __call__(self, request, body):
        path, _, query = request.target.partition("?")
        route = ROUTES.get((request.method, path))
        if route is None:
            return None
        header = request.headers.get("authorization")
        # the same comparison as BearerAuth; a refusal (and its wording) is left to it
        if not header or not hmac.compare_digest(header.encode("latin-1", "replace"), self._expected):
            return None
        return self.answer(route, _query(query), request, body)

    def answer(self, route: str, args: dict, request, body):
        """``(status, headers, chunks)`` of ``route`` (a value of :data:`ROUTES`) for a request
        already authenticated: ``request.length`` is its body's length, ``body.read(n, view=)``
        reads it. The Flask app's twins of these routes call this too (:mod:`deepdist.server`)."""
        try:
            return getattr(self, route)(args, request, body)
        except Refusal as refusal:
            return _json(refusal.status, {"error": refusal.message, **refusal.extra}, refusal.headers)

    # -- routes ----------------------------------------------------------------------------------
    def get_model(self, args: dict, request, body):
        names = args.get("names")
        wanted = names.split(",") if names else None
        unknown = [n for n in wanted or () if n not in self.store.spec]
        if unknown:
            raise Refusal(400, f"unknown parameter(s) {unknown}; the model has {sorted(self.store.spec)}")
        self._wait_for_own_updates(args)
        version, frame = self.store.snapshot(wanted)
        return self._frame(frame, version)

    def get_rows(self, args: dict, request, body):
        wanted = self._decode(self._parse_rows, self._body(request, body))
        self._wait_for_own_updates(args)
        ready = True
        if "wait" in args:
            ready = self.store.wait_for(*self._wait_args(args))
        version, frame = self.store.rows(wanted, parts=True, ready=ready)
        return self._frame(frame, version)

    def get_changes(self, args: dict, request, body):
        try:
            since, partition, attempt = (int(args[k]) for k in ("since", "partition", "attempt"))
        except (KeyError, ValueError):
            raise Refusal(400, "/changes needs integer since, partition and attempt") from None
        version, frame = self.store.changes(since, partition, attempt, parts=True)
        if self.dashboard is not None:
            self.dashboard.contacted(self.store.epoch, partition, attempt)
        return self._frame(frame, version)

    def post_update(self, args: dict, request, body):
        then = args.get("then")
        data = self._body(request, body)
        if then not in (None, "rows"):
            raise Refusal(400, f"then must be 'rows', got {then!r}")
        meta, update, wanted = self._decode(self._parse_update, data, then, counted=True)
        since = _since(args)
        self._submit(update, meta, len(data))
        if self.dashboard is not None:
            self.dashboard.pushed(meta)
        if wanted is not None:  # the sender's next pull, after its own update (read your own writes)
            self._wait_until_applied(meta.epoch, meta.partition, meta.attempt, meta.seq)
            version, rows = self.store.rows(wanted, parts=True)
            return self._frame(rows, version, status=202)
        if since is not None:  # the sender's /changes in the same round trip
            version, changes = self.store.changes(since, meta.partition, meta.attempt, parts=True)
            return self._frame(changes, version, status=202)
        return _json(202, {"queued": True, "version": self.store.version})

    # -- helpers ---------------------------------------------------------------------------------
    def _body(self, request, body) -> bytes:
        """The whole body (a 413 above ``max_body_bytes``, read or not; a 400 when it ends early)."""
        length = request.length
        if length > self.max_body_bytes:
            raise Refusal(413, f"the request body of {length:,} bytes is over max_body_bytes "
                               f"({self.max_body_bytes:,} bytes)", max_body_bytes=self.max_body_bytes)
        data = body.read(length, view=True)  # the frame's arrays are views of it: no copy
        if len(data) != length:
            raise Refusal(400, f"the body ended after {len(data)} of its {length} bytes")
        return data

    def _decode(self, parse, *args, counted: bool = False):
        try:
            return parse(*args)
        except (WireFormatError, InvalidUpdateError) as err:
            if counted:
                self.store.count_rejected("invalid")
                log.warning("refused an update: %s", err)
            raise Refusal(400, str(err)) from None

    def _parse_rows(self, data) -> dict:
        return wire.validate_row_request(wire.decode(data), self.store.spec)

    def _parse_update(self, data, then: str | None):
        frame = wire.decode(data)
        meta = wire.parse_update_meta(frame.meta)
        frame, pull = wire.split_row_request(frame) if then else (frame, None)
        update = wire.validate_update(frame, self.store.spec)
        wanted = None if pull is None else wire.validate_row_request(pull, self.store.spec)
        return meta, update, wanted

    def _submit(self, update: dict, meta, nbytes: int) -> None:
        try:
            self.store.submit(update, meta, nbytes=nbytes)
        except SupersededAttemptError as err:
            raise Refusal(409, str(err)) from None
        except QueueFullError as err:
            raise Refusal(503, f"{err}; retry later", headers=(("Retry-After", "1"),)) from None
        except DescentFailedError as err:
            raise Refusal(503, str(err)) from None
        except ConfigurationError as err:
            raise Refusal(409, str(err)) from None

    def _frame(self, frame, version: int, status: int = 200):
        """A frame's answer: ``frame`` is its bytes, or the list of buffers they join into."""
        chunks = frame if isinstance(frame, list) else [frame]
        size = sum(memoryview(c).nbytes for c in chunks)
        self.store.count_bytes_out(size)
        return _status(status), [("Content-Type", wire.CONTENT_TYPE), ("Content-Length", str(size)),
                                 ("X-DeepDist-Version", str(version))], chunks

    def _wait_for_own_updates(self, args: dict) -> None:
        after = args.get("after")
        if after is None:
            return
        try:
            epoch, partition, attempt, seq = (int(part) for part in after.split(":"))
        except ValueError:
            raise Refusal(400, "after must be EPOCH:PARTITION:ATTEMPT:SEQ (integers)") from None
        self._wait_until_applied(epoch, partition, attempt, seq)

    def _wait_until_applied(self, epoch: int, partition: int, attempt: int, seq: int) -> None:
        if not self.store.wait_finished(epoch, partition, attempt, seq, MAX_WAIT_SECONDS):
            log.warning("update %d:%d:%d:%d was not applied within %gs; answering anyway",
                        epoch, partition, attempt, seq, MAX_WAIT_SECONDS)

    def _wait_args(self, args: dict) -> tuple[str, float, float]:
        name = args["wait"]
        if name not in self.store.spec:
            raise Refusal(400, f"wait: unknown parameter {name!r}; the model has {sorted(self.store.spec)}")
        try:
            at_least, timeout = float(args.get("at_least", "")), float(args.get("timeout", ""))
        except ValueError:
            raise Refusal(400, "wait needs numeric at_least and timeout query arguments") from None
        if not math.isfinite(at_least) or not 0.0 <= timeout <= MAX_WAIT_SECONDS:
            raise Refusal(400, f"wait: at_least must be finite and timeout in [0, {MAX_WAIT_SECONDS:g}] seconds, "
                               f"got {at_least!r} and {timeout!r}")
        return name, at_least, timeout


def _since(args: dict) -> int | None:
    since = args.get("since")
    try:
        return None if since is None else int(since)
    except ValueError:
        raise Refusal(400, f"since must be an integer, got {since!r}") from None
