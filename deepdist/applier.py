"""The bounded queue of validated updates and the one thread that applies them in arrival order.

:class:`Applier` also counts the updates taken and not yet finished, which is what
:meth:`~Applier.drain` waits on, and keeps the epochs that are settled: a push of one is refused
at the door, under the same lock as that count, so an epoch's drain never misses a push
that got in, and a push that did not get in leaves no trace.
"""

from __future__ import annotations

import queue
import threading
import time

from .errors import DrainTimeoutError

_STOP = object()

class Applier:
    """Calls ``apply(item)`` on the items :meth:`put` in order, in one thread (``name``).

    An item's life: :meth:`enter` (counted as pending), then :meth:`put` (queued), or
    :meth:`finish_one` if it is refused before that; the thread finishes it after ``apply``.
    """

    def __init__(self, size: int, apply, name: str = "deepdist-applier"):
        self.size = size
        self._apply = apply
        self._name = name
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._pending = 0
        self._idle = threading.Condition()
        self._settled: set = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Apply what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Updates queued and not yet taken by the thread."""
        return self._queue.qsize()

    # -- the door ------------------------------------------------------------------------------
    def enter(self, epoch: int) -> bool:
        """Count one more pending update of ``epoch``; False (nothing counted) if it is settled."""
        with self._idle:
            if epoch in self._settled:
                return False
            self._pending += 1
            return True

    def settle(self, epoch: int) -> None:
        """Let no further update of ``epoch`` in (those in already are drained as usual)."""
        with self._idle:
            self._settled.add(epoch)

    def settled(self, epoch: int) -> bool:
        return epoch in self._settled

    def put(self, item, timeout: float) -> None:
        """Queue an entered item; ``queue.Full`` after ``timeout`` seconds without room."""
        self._queue.put(item, timeout=timeout)

    def finish_one(self) -> None:
        """One pending update is done (applied, refused, or never queued)."""
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every pending update is finished (:class:`DrainTimeoutError` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DrainTimeoutError(f"{self._pending} updates still pending after {timeout}s")
                self._idle.wait(remaining if remaining is not None else 1.0)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._apply(item)
            finally:
                self.finish_one()
