"""Who may read the dashboard: one-time login tokens, exchanged for bounded cookie sessions.

The driver prints (or shows in Jupyter) a URL carrying a one-time token. The browser's first
request exchanges it for a random session id, set as an HttpOnly, SameSite=Strict cookie
scoped to the server's host; the cookie then admits GETs of the dashboard's page and data, and
nothing else (the model and update routes still need the context's secret as a bearer). A used
token is gone, and both tokens and sessions are bounded: past the bound the oldest is dropped.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time

#: One-time tokens not yet used; minting one more drops the oldest.
MAX_TOKENS = 16
#: Live cookie sessions; one more logs the least recently used out.
MAX_SESSIONS = 8
#: Seconds a session lives after its login, however busy.
SESSION_SECONDS = 24 * 3600.0


def _digest(value: str) -> bytes:
    # only digests are kept: the tables never hold a usable secret, and a dict lookup by a
    # digest tells a timing observer nothing about the secret's bytes
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


class SessionStore:
    """One-time tokens and the cookie sessions they were exchanged for.

    Example::

        >>> sessions = SessionStore()
        >>> token = sessions.mint()
        >>> sid = sessions.exchange(token)
        >>> sessions.exchange(token) is None          # one time only
        True
        >>> sessions.valid(sid)
        True
    """

    def __init__(self, max_tokens: int = MAX_TOKENS, max_sessions: int = MAX_SESSIONS,
                 lifetime: float = SESSION_SECONDS):
        self.max_tokens, self.max_sessions, self.lifetime = max_tokens, max_sessions, lifetime
        self._lock = threading.Lock()
        self._tokens: collections.OrderedDict = collections.OrderedDict()    # digest -> None
        self._sessions: collections.OrderedDict = collections.OrderedDict()  # digest -> expiry

    def mint(self) -> str:
        """A fresh one-time login token."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[_digest(token)] = None
            while len(self._tokens) > self.max_tokens:
                self._tokens.popitem(last=False)
        return token

    def exchange(self, token: str) -> str | None:
        """A new session id for an unused ``token`` (which is then used up); None otherwise."""
        with self._lock:
            key = _digest(token)
            if key not in self._tokens:
                return None
            del self._tokens[key]
            sid = secrets.token_urlsafe(32)
            self._sessions[_digest(sid)] = time.monotonic() + self.lifetime
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return sid

    def valid(self, sid: str) -> bool:
        """Is ``sid`` a live session? (Marks it recently used.)"""
        key = _digest(sid)
        with self._lock:
            expiry = self._sessions.get(key)
            if expiry is None:
                return False
            if expiry < time.monotonic():
                del self._sessions[key]
                return False
            self._sessions.move_to_end(key)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
