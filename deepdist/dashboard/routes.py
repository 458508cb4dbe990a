"""The dashboard's HTTP side: its two routes, and the gate that lets a login cookie reach them.

* ``GET /``: the live page. ``/?token=T`` exchanges a one-time token for a session cookie and
  redirects to ``/`` (the token leaves the address bar and the history).
* ``GET /dashboard/data?after=N&generation=G&mark=M``: the metric history after point N (and
  the epoch marks from mark M on), the status, the partitions and the parameters, as JSON
  (what the page polls).

Both also answer a request that carries the context's secret as a bearer, like every route.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from flask import Response, jsonify, request
from werkzeug.http import parse_cookie

PAGE, DATA = "/", "/dashboard/data"
_PATHS = frozenset({PAGE, DATA})
_LOGIN = "deepdist.dashboard.login"   # the environ key of a session the gate just opened
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def admit(dashboard, environ) -> bool:
    """May this request, which carries no bearer, read the dashboard? A GET of its page or data
    with a live session cookie, or of its page with an unused login token."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or environ.get("PATH_INFO") not in _PATHS:
        return False
    sid = parse_cookie(environ.get("HTTP_COOKIE", "")).get(dashboard.cookie)
    if sid and dashboard.sessions.valid(sid):
        return True
    if environ["PATH_INFO"] == PAGE:
        token = parse_qs(environ.get("QUERY_STRING", "")).get("token")
        sid = dashboard.sessions.exchange(token[0]) if token else None
        if sid:
            environ[_LOGIN] = sid
            return True
    return False


def register(app, dashboard) -> None:
    """Add the dashboard's routes to the server's Flask ``app``."""

    def page():
        sid = request.environ.get(_LOGIN)
        if sid:
            response = Response(status=303, headers={"Location": PAGE, **_NO_STORE})
            response.set_cookie(dashboard.cookie, sid, max_age=int(dashboard.sessions.lifetime), path="/",
                                httponly=True, samesite="Strict", secure=request.scheme == "https")
            return response
        html, policy = dashboard.page()
        return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy, **_NO_STORE})

    def data():
        try:
            after, mark = int(request.args.get("after", 0)), int(request.args.get("mark", 0))
            generation = request.args.get("generation")
            generation = None if generation is None else int(generation)
        except ValueError:
            response = jsonify({"error": "after, mark and generation must be integers"})
            response.status_code = 400
            return response
        response = jsonify(dashboard.data(after, generation, mark))
        response.headers.update(_NO_STORE)
        return response

    app.get(PAGE, endpoint="dashboard_page")(page)
    app.get(DATA, endpoint="dashboard_data")(data)
