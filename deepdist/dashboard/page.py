"""The dashboard's page: one HTML file with its script, style and data inline.

The same page serves two ways. Live, it polls ``/dashboard/data`` (same origin); as a report,
the metric history is embedded and nothing is fetched, so the file opens offline, from disk.
Either way the page loads nothing from the network: its Content-Security-Policy allows only
its own inline script and style (by their hashes), and, live, requests to its own server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib import resources

_STATIC = resources.files("deepdist.dashboard") / "static"
_cache: dict = {}


def _asset(name: str) -> str:
    if name not in _cache:
        _cache[name] = (_STATIC / name).read_text(encoding="utf-8")
    return _cache[name]


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def embed_json(value) -> str:
    """``value`` as JSON that cannot end the ``<script>`` element holding it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=float)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value):
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render(data: dict, *, live: bool, title: str = "DeepDist") -> tuple[str, str]:
    """``(html, content security policy)`` of the page showing ``data``; ``live`` pages poll for more."""
    script, style = _asset("dashboard.js"), _asset("dashboard.css")
    connect = "'self'" if live else "'none'"
    policy = (f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style)}; img-src data:; "
              f"connect-src {connect}; base-uri 'none'; form-action 'none'")
    values = {"POLICY": policy, "TITLE": _escape(title), "STYLE": style, "SCRIPT": script,
              "DATA": embed_json({"live": live, "data": _finite(data), "title": title})}
    # one pass: what one value holds is never taken for another's placeholder
    html = re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m.group(1)], _asset("dashboard.html"))
    return html, policy


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
