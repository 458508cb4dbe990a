"""Settings of the model server, with their defaults, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

STALENESS_POLICIES = ("apply", "scale", "drop")

#: the longest a pull may wait on the server for the model to reach a state (seconds); the
#: client's read timeout must exceed it
MAX_WAIT_SECONDS = 300.0


@dataclass
class ServerConfig:
    """How the model server listens, queues and applies updates.

    Attributes:
        host: address to bind; ``None`` asks Spark where the driver lives
            (``spark.driver.bindAddress``, then ``spark.driver.host``).
        port: port to bind; 0 picks a free one.
        max_body_bytes: largest request body accepted (413 beyond); ``None``
            means twice the model's size plus 16 MiB.
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
