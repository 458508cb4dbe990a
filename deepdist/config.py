"""Settings of the model server and its clients, with their defaults, in one place.

:class:`ServerConfig` is how the server listens, queues and applies updates; the constants
below are the clients' timeouts and retries and the driver's own waits. ``DeepDist``'s and
``ModelClient``'s signatures take their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

STALENESS_POLICIES = ("apply", "scale", "drop")

#: the longest a pull may wait on the server for the model to reach a state (seconds); the
#: client's read timeout must exceed it
MAX_WAIT_SECONDS = 300.0
#: how long a task's pull waits, by default, for the model to reach a state (``train(wait_timeout=)``)
WAIT_TIMEOUT = 60.0

#: without ``max_body_bytes``, the largest request is this many models plus ``BODY_SLACK_BYTES``
BODY_MODELS = 2
BODY_SLACK_BYTES = 16 << 20

# -- a ModelClient (what tasks use) ---------------------------------------------------------
#: seconds to open a connection, and to wait for an answer
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
#: retries of a request the network lost, the first after BACKOFF seconds, doubling
RETRIES = 5
BACKOFF = 0.5
#: seconds a push keeps retrying while the server's update queue is full
BACKPRESSURE_WAIT = 1800.0

# -- the driver's own calls to its server ---------------------------------------------------
#: seconds DeepDist waits for its freshly started server to answer
STARTUP_TIMEOUT = 10.0
#: the client options of that wait's probes (tried again until STARTUP_TIMEOUT)
STARTUP_PROBE = {"connect_timeout": 1.0, "read_timeout": 5.0, "retries": 0}
#: the client options of ``check_reachable``'s task, which runs on an executor
REACHABLE_PROBE = {"connect_timeout": 5.0, "read_timeout": 30.0, "retries": 2}
#: seconds ``DeepDist.close`` waits for queued updates before it stops the applier
CLOSE_DRAIN_TIMEOUT = 600.0


@dataclass
class ServerConfig:
    """How the model server listens, queues and applies updates.

    Attributes:
        host: address to bind; ``None`` asks Spark where the driver lives
            (``spark.driver.bindAddress``, then ``spark.driver.host``).
        port: port to bind; 0 picks a free one.
        max_body_bytes: largest request body accepted (413 beyond); ``None``
            means twice the model's size plus 16 MiB (:meth:`body_limit`).
        queue_size: updates waiting for ``descent`` before POSTs block
            (back-pressure).  Each waiting update holds its arrays in driver memory.
        backpressure_timeout: seconds a POST waits for queue room before
            answering 503 (the client then retries with backoff).
        staleness: ``"apply"`` every update as is, ``"scale"`` its step by
            1/staleness, or ``"drop"`` updates staler than ``max_staleness``.
        max_staleness: bound used by the ``"drop"`` policy.
    """

    host: str | None = None
    port: int = 0
    max_body_bytes: int | None = None
    queue_size: int = 32
    backpressure_timeout: float = 10.0
    staleness: str = "apply"
    max_staleness: int | None = None

    def validate(self) -> None:
        if self.staleness not in STALENESS_POLICIES:
            raise ConfigurationError(
                f"staleness must be one of {STALENESS_POLICIES}, got {self.staleness!r}")
        if self.staleness == "drop" and (self.max_staleness is None or self.max_staleness < 0):
            raise ConfigurationError(
                f"staleness='drop' needs max_staleness >= 0, got {self.max_staleness!r}")
        if self.queue_size < 1:
            raise ConfigurationError(f"queue_size must be >= 1, got {self.queue_size}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be in [0, 65535], got {self.port}")

    def body_limit(self, model_nbytes: int) -> int:
        """The largest request body for a model of ``model_nbytes`` bytes."""
        return self.max_body_bytes or BODY_MODELS * model_nbytes + BODY_SLACK_BYTES
