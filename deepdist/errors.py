"""The one exception hierarchy of deepdist.

Every error a user can see derives from :class:`DeepDistError`.  Leaves also
inherit the matching builtin (``ValueError``, ``ConnectionError`` …) so callers
can catch either.  Errors from lower libraries (http.client, werkzeug, py4j) are
translated at exactly one boundary each: the client for HTTP, ``DeepDist.train``
for Spark.
"""

from __future__ import annotations

import re

# Executors raise our errors inside Python workers; Spark hands the driver only
# a string.  This marker lets the driver find and re-raise the original class.
_MARKER = "DeepDistError[{name}]: "
_MARKER_RE = re.compile(r"DeepDistError\[(\w+)\]: (.*)")


class DeepDistError(Exception):
    """Root of every deepdist error."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return super().__str__()

    def tagged(self) -> str:
        """The message with a marker the driver can parse out of a Spark failure."""
        return _MARKER.format(name=type(self).__name__) + str(self)


class ConfigurationError(DeepDistError, ValueError):
    """A parameter or a Spark setting is invalid; the message says which and why."""


class WireFormatError(DeepDistError, ValueError):
    """A body is not a well-formed deepdist wire frame."""


class InvalidUpdateError(DeepDistError, ValueError):
    """A well-formed update does not fit the model (name, dtype, shape, rows, values)."""


class UpdateTooLargeError(InvalidUpdateError):
    """A push is larger than the server's ``max_body_bytes``; sending it again cannot help."""


class ModelShapeError(DeepDistError, ValueError):
    """A model's arrays do not have the shapes or dtypes the server expects."""


class AuthenticationError(DeepDistError, PermissionError):
    """The server refused the request's secret."""


class ServerUnreachableError(DeepDistError, ConnectionError):
    """The model server could not be reached (dead, firewalled, wrong address)."""


class ServerError(DeepDistError, RuntimeError):
    """The model server answered with an error."""


class ShardError(DeepDistError, RuntimeError):
    """A model server shard's process (``DeepDist(servers=N)``) died, or refused what the driver asked."""


class TrainingFailedError(DeepDistError, RuntimeError):
    """A Spark task failed while training; the message holds the task's Python error."""


class SupersededAttemptError(DeepDistError, RuntimeError):
    """A newer attempt of the same Spark task has taken over this partition."""


class DescentFailedError(ServerError):
    """The driver's ``descent`` raised; training cannot continue."""


class QueueFullError(DeepDistError):
    """No room in the server's update queue within the back-pressure timeout (a 503: retry later)."""


class DrainTimeoutError(DeepDistError, TimeoutError):
    """Updates were still waiting to be applied when a drain's time ran out."""


class NotFittedError(DeepDistError, AttributeError):
    """A model was used before ``fit``."""


def _all_error_classes() -> dict[str, type[DeepDistError]]:
    found = {}
    stack = [DeepDistError]
    while stack:
        cls = stack.pop()
        found[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return found


def find_tagged_error(text: str) -> DeepDistError | None:
    """Rebuild the deepdist error an executor raised, from Spark's failure text.

    Returns ``None`` if ``text`` holds no tagged deepdist error.
    """
    match = _MARKER_RE.search(text)
    if match is None:
        return None
    cls = _all_error_classes().get(match.group(1), DeepDistError)
    return cls(match.group(2).strip())


class CorpusError(DeepDistError, ValueError):
    """An input corpus cannot be read or yields no document; the message says what was seen and why it was dropped.

    ``counts`` holds the same numbers as the message (``{"pages": …, "redirect": …}``) for callers
    that act on them; it is empty when the error was rebuilt from an executor's message.
    """

    def __init__(self, message: str, counts: dict | None = None):
        # one argument only: find_tagged_error rebuilds errors from their message
        super().__init__(message)
        self.counts = dict(counts or {})
