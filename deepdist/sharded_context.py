"""The sharded half of a :class:`~deepdist.DeepDist` context (``servers=N``), mixed into it.

The context's own server is shard 0; :class:`~deepdist.shard_server.ShardGroup` runs the others.
This part lays the model out over them (:class:`~deepdist.shards.ShardLayout`), settles an epoch
on all of them at once, copies their rows back into the user's model, passes the driver's
rewrites and a descent's own steps to every shard, and sums their versions and counters. With
``servers=1`` each method does what the single server needs.
"""

from __future__ import annotations

import contextlib
import logging

from . import config as _config
from .errors import ConfigurationError, ShardError, TrainingFailedError
from .params import DictAdapter
from .shard_server import ShardGroup
from .shards import WHOLE_BELOW_ROWS, ShardLayout, flat_aliases
from .store import ParameterStore

__all__ = ["ShardedServers"]

log = logging.getLogger("deepdist.core")


class ShardedServers:
    """Shard handling of a context: ``_layout`` (None on one server), ``_shards`` (the group of
    shards 1 … N−1), ``_shard_versions`` (their versions' sum at the last gather)."""

    def _open_store(self, adapter, checkpointer) -> None:
        """The layout over ``servers`` and the driver's store: the whole model, or shard 0's rows."""
        params = adapter.get(self._model)
        # a model's adapter may give parameters roles in the split (ShardLayout: replicated, per_shard)
        roles = getattr(adapter, "sharding", {})
        self._layout = (ShardLayout(self._spec, self.servers, aliases=flat_aliases(params),
                                    replicated=roles.get("replicated", ()), per_shard=roles.get("per_shard", ()))
                        if self.servers > 1 else None)
        if self._layout is not None and self._layout.used == 1:
            log.warning("servers=%d, but every parameter has fewer than %d rows and stays whole on shard 0: "
                        "running one server", self.servers, WHOLE_BELOW_ROWS)
            self._layout = None
        if self._layout is None:
            self.store = ParameterStore(self._model, adapter, self.config, checkpointer)
            return
        # shard 0's store holds views of the user's arrays: its rows train in place. Its
        # periodic checkpoints would hold one shard: epoch-end ones hold the whole model
        if checkpointer is not None and (checkpointer.every_updates or checkpointer.every_seconds):
            log.warning("servers=%d: checkpoints are written at epoch ends only (every_updates and "
                        "every_seconds would catch the shards at different instants)", self.servers)
        self.store = ParameterStore(self._layout.slices(params, 0), DictAdapter(), self.config, None)

    def _open_shards(self, max_body: int, bind: str, pem, scheme: str, host: str) -> None:
        """Start shards 1 … N−1 beside the driver's running server (nothing on one server)."""
        if self._layout is None:
            return
        self._shards = ShardGroup(self._layout, self._adapter.get(self._model), self.config, self.secret,
                                  max_body, bind, pem)
        try:
            self._shards.start()
        except BaseException:
            self._shards = None
            self.store.stop()
            self._server.stop()
            self._server = None
            raise
        self._urls += self._shards.urls(scheme, host)

    def _drain_shards(self) -> None:
        """At close: apply what the shards hold queued and copy their rows into the model."""
        if self._shards is None:
            return
        try:
            self._shards.drain(_config.CLOSE_DRAIN_TIMEOUT)
            self._shards.gather()
        except ShardError as err:
            log.error("%s; the model keeps that shard's rows as they were at the last epoch's end", err)

    def _stop_shards(self) -> None:
        if self._shards is not None:
            self._shards.stop()
            self._shards = None

    def _set_shard_epoch(self, wire_epoch: int) -> None:
        if self._shards is not None:
            self._shards.set_epoch(wire_epoch)

    def _end_epoch(self, wire_epoch: int, winners: dict) -> None:
        """Settle the epoch on every shard (all at once), then copy the shards' rows into the model."""
        if self._shards is None:
            self.store.end_epoch(wire_epoch, winners)
            return
        self._shards.send_end_epoch(wire_epoch, winners)
        self.store.end_epoch(wire_epoch, winners)
        errors = self._shards.finish_end_epoch()
        self._shard_versions = self._shards.gather()
        for shard, error in enumerate(errors, start=1):
            if error is not None and self.store.error is None:
                raise TrainingFailedError(f"the descent failed on model server shard {shard}: {error}")

    def _checkpoint_source(self):
        """What an epoch-end checkpoint reads: the store, or the whole model gathered from the shards."""
        return self.store if self._shards is None else _WholeModel(self)

    def rewrote(self, *names: str) -> None:
        """Tell the servers that the driver rewrote parameters ``names`` of the model in place
        between epochs (a repair, a restore): tasks read the new values, and with ``servers > 1``
        every shard takes its rows of them.

        Example::

            >>> with DeepDist({"n": counts}, servers=2) as dd:      # doctest: +SKIP
            ...     dd.train(rdd, count, add)
            ...     counts[bad] = exact[bad]                        # fixed on the driver
            ...     dd.rewrote("n")
        """
        self._require_open()
        unknown = sorted(set(names) - set(self._spec))
        if unknown:
            raise ConfigurationError(f"unknown parameters {unknown}; the model has {sorted(self._spec)}")
        if self._shards is not None:
            self._shard_versions = self._shards.load(names)
        self.store.rewritten()

    def call_descent(self, method: str, *args) -> bool:
        """Between epochs, run ``descent.method(model, *args)`` where the descent runs: on the
        server, and with ``servers > 1`` in every shard on its rows (a descent's own step, such as
        blending statistics it merged). True if it changed the model anywhere."""
        self._require_open()
        changed = bool(self.store.call_descent(method, *args))
        if self._shards is not None and any(self._shards.call_descent(method, *args)):
            self._shard_versions = self._shards.gather()   # dd.model holds every shard's rows between epochs
            changed = True
        return changed

    @property
    def version(self) -> int:
        """The model's version: how many changes it has seen (summed over the shards)."""
        if self._shards is None:
            return self.store.version
        return self.store.version + self._shard_versions

    def set_descent(self, descent, additive: bool = False) -> None:
        """Set the driver's ``descent(model, update)`` for the epochs that follow."""
        self._require_open()
        if self._shards is not None and getattr(descent, "needs_whole_model", False):
            raise ConfigurationError(f"{type(descent).__name__} needs the whole model in one place "
                                     f"(needs_whole_model = True): use servers=1, not {self.servers}")
        self.store.set_descent(descent, additive=additive)
        if self._shards is not None:
            self._shards.set_descent(descent, additive)

    def status(self) -> dict:
        """The server's counters (as ``GET /status`` returns them); with shards, each one's in ``shards``."""
        self._require_open()
        if self._shards is None:
            return self.store.status()
        shards = [self.store.status()] + self._shards.status()
        return {**shards[0], "version": sum(s["version"] for s in shards), "shards": shards}


class _WholeModel:
    """What a checkpoint reads of a sharded model: the user's arrays, every shard's rows copied in.

    It is read at an epoch's end, once the shards are drained and gathered: nothing else writes
    those arrays then, so there is no lock to take."""

    def __init__(self, dd):
        self.lock = contextlib.nullcontext()
        self.version = dd.version
        self.params = dd._adapter.get(dd._model)
