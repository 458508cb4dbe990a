"""A live training dashboard, served by the model server, and the same page as a report.

While a :class:`~deepdist.DeepDist` context is open its server answers ``GET /`` with a page of
curves over time (the model's own metrics, updates/s, bytes in and out, queue depth), the
staleness histogram, a table of partitions (task attempt, retries, pushes, progress, last
contact) and the model's parameters. The driver logs a login URL with a one-time token once,
at start (``dd.dashboard_url()`` mints another); the page trades it for a cookie. After
training, ``dd.save_report("report.html")`` writes the same page with its history embedded.

Parts: :mod:`.sessions` (tokens and cookies), :mod:`.history` (the sampled metrics),
:mod:`.partitions` (what each partition's tasks did), :mod:`.routes` (HTTP), :mod:`.page`
(the HTML, script and style in ``static/``).

Example::

    with DeepDist(model) as dd:            # logs "DeepDist dashboard: http://127.0.0.1:PORT/?token=..."
        dd.train(rdd, gradient, descent, epochs=3)
    dd.save_report("out/report.html")      # and out/report.json, the metric history
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from .history import MetricHistory
from .page import _finite, render
from .partitions import PartitionBoard
from .sessions import SessionStore

__all__ = ["Dashboard", "MetricHistory", "PartitionBoard", "SessionStore", "render"]

log = logging.getLogger("deepdist")

#: Partitions the live page's table shows at most (the retried and longest silent first).
MAX_PARTITIONS_SHOWN = 200


class Dashboard:
    """The dashboard of one model server: its sessions, history and partitions board.

    Parameters:
        store: the :class:`~deepdist.store.ParameterStore` whose status it shows.
        name: distinguishes this server's cookie from another's on the same host (cookies
            ignore ports).
        interval: seconds between samples of the history.

    Example::

        >>> dashboard = Dashboard(store, name="a1b2c3")               # doctest: +SKIP
        >>> app = create_app(store, secret, 1 << 20, dashboard=dashboard)  # doctest: +SKIP
        >>> dashboard.start("http://127.0.0.1:8000"); dashboard.url()      # doctest: +SKIP
        'http://127.0.0.1:8000/?token=...'
    """

    def __init__(self, store, *, name: str, interval: float | None = None, title: str = "DeepDist"):
        self.store = store
        self.title = title
        self.cookie = f"deepdist-{name}"
        self.sessions = SessionStore()
        self.history = MetricHistory(store.status, **({} if interval is None else {"interval": interval}))
        self.partitions = PartitionBoard()
        self.base_url: str | None = None
        self.live = False

    # -- life cycle --------------------------------------------------------------------------
    def start(self, base_url: str) -> None:
        self.base_url = base_url
        self.live = True
        self.history.start()

    def stop(self) -> None:
        if self.live:
            self.live = False
            self.history.stop()

    def url(self) -> str:
        """The page's address with a fresh one-time login token."""
        if self.base_url is None:
            raise RuntimeError("the dashboard is not served yet")
        return f"{self.base_url}/?token={self.sessions.mint()}"

    def announce(self, tty_too: bool = True) -> str:
        """Log a login URL (and write it on a terminal's stderr with the progress line); return it."""
        url = self.url()
        log.info("DeepDist dashboard: %s", url)
        if tty_too and sys.stderr.isatty():
            sys.stderr.write(f"DeepDist dashboard: {url}\n")
            sys.stderr.flush()
        return url

    # -- what the server tells it ------------------------------------------------------------
    def pushed(self, meta) -> None:
        """A task's push was queued (``meta``: its :class:`~deepdist.wire.UpdateMeta`)."""
        self.partitions.contact(epoch=meta.epoch, partition=meta.partition, attempt=meta.attempt,
                                pushed=True, metrics=meta.metrics)

    def contacted(self, epoch: int, partition: int, attempt: int) -> None:
        """A task read from the server."""
        self.partitions.contact(epoch=epoch, partition=partition, attempt=attempt)

    def epoch_started(self, label: str) -> None:
        self.history.mark(label)

    def epoch_ended(self, label: str, epoch: int, results: list) -> None:
        """The epoch ``label`` (``epoch`` on the wire) ended with these task reports."""
        self.partitions.settled(epoch, {r["partition"]: r["attempt"] for r in results})
        self.history.end_mark(label)

    # -- what it shows -------------------------------------------------------------------------
    def data(self, after: int = 0, generation: int | None = None, mark: int = 0,
             max_partitions: int | None = MAX_PARTITIONS_SHOWN) -> dict:
        """Everything the page shows: the history after point ``after`` (and mark ``mark``), and the
        state now; at most ``max_partitions`` partitions, the retried and longest silent first."""
        status = self.store.status()
        params = [{"name": p.name, "shape": list(p.shape), "dtype": str(p.dtype), "bytes": p.nbytes}
                  for p in self.store.spec.values()]
        partitions = self.partitions.rows()
        shown = partitions
        if max_partitions is not None and len(partitions) > max_partitions:
            shown = sorted(partitions, key=lambda r: (-r["retries"], r["state"] == "done", r["last_contact"]))
            shown = sorted(shown[:max_partitions], key=lambda r: r["partition"])
        return {"history": self.history.since(after, generation, mark), "status": status,
                "partitions": shown, "partitions_total": len(partitions), "params": params, "live": self.live,
                "now": time.time(), "elapsed": self.history.now()}

    def page(self) -> tuple[str, str]:
        """The live page and its Content-Security-Policy."""
        return render({}, live=True, title=self.title)

    def report(self) -> str:
        """The page with the whole history embedded: it opens from a file, offline."""
        data = self.data(max_partitions=None)
        data["live"] = False
        return render(data, live=False, title=self.title)[0]

    def save_report(self, path: str) -> tuple[str, str]:
        """Write the report to ``path`` and the metric history as JSON beside it (``.json``)."""
        data = self.data(max_partitions=None)
        data["live"] = False
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        stem = path[:-5] if path.endswith(".html") else path
        json_path = stem + ".json"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(render(data, live=False, title=self.title)[0])
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(_finite(data), handle, default=float)
        return path, json_path
