"""Model servers in processes of their own: shards 1 … N−1 of ``DeepDist(model, servers=N)``.

Shard 0 is the driver's own server (its store holds views of the user's arrays, so it updates
the model in place). Every other shard is a child process running :func:`main` with the driver's
interpreter and ``sys.path`` (forking a driver that runs a JVM gateway and
threads is unsafe, and ``multiprocessing``'s spawn would run a ``spark-submit`` script's top-level
code again in every child). A child
runs the same parts as the driver's server (a :class:`~deepdist.store.ParameterStore` with its
ledger and applier, the keep-alive HTTP server, the same secret and TLS certificate) over its
rows, on its own port, under its own GIL. The driver steers it over a pipe: the descent (pickled
by value, as Spark ships closures; the pipe is the driver's own, never the network), the running
epoch, settling an epoch with Spark's winning attempts, and copying its rows back into the model.
A shard starts from the user's arrays as they are, so after ``resume=True`` from the checkpoint.

Example::

    >>> group = ShardGroup(layout, params, config, secret, max_body, "127.0.0.1")  # doctest: +SKIP
    >>> group.start(); group.urls("http", "127.0.0.1")                              # doctest: +SKIP
    ['http://127.0.0.1:40111']
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

import numpy as np

from .config import STARTUP_TIMEOUT, ServerConfig
from .errors import ConfigurationError, ShardError

log = logging.getLogger(__name__)


def _serve(conn, shard: int, arrays: dict, aliases: dict, replicated: list, config: dict, secret: str,
           max_body: int, bind: str, pem, log_level: int) -> None:
    """The child process: serve ``arrays`` until the driver says stop (or goes away)."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s shard {shard} %(name)s %(levelname)s %(message)s")
    from . import tls
    from .params import DictAdapter
    from .server import ServerThread, create_app
    from .store import ParameterStore

    # pickling the driver's views copied each apart: a flat alias is made a view of its base again
    for flat, base in aliases.items():
        if flat in arrays:
            arrays[flat] = arrays[base].reshape(-1)
    store = ParameterStore(arrays, DictAdapter(), ServerConfig(**config))
    app = create_app(store, secret, max_body)
    server = ServerThread(app, bind, config["port"], ssl_context=tls.server_context(*pem) if pem else None)
    store.start()
    server.start()
    conn.send(("ok", server.port))
    # gathered from shard 0 only: an alias's rows come with its base, a replicated parameter's
    # copies are alike
    commands = _Commands(store, set(aliases) | set(replicated))
    try:
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):   # the driver is gone: nobody will ask for these rows again
                break
            if name == "stop":
                break
            try:
                conn.send(("ok", getattr(commands, name)(*args)))
            except Exception as exc:  # noqa: BLE001 - the driver re-raises it with the shard's number
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        try:
            store.drain(timeout=30)
        finally:
            store.stop()
            server.stop()
            try:
                conn.send(("ok", None))
            except OSError:
                pass


class _Commands:
    """What the driver may ask of a shard's process."""

    def __init__(self, store, not_gathered: set):
        self.store = store
        self.not_gathered = not_gathered

    def set_descent(self, blob: bytes, additive: bool) -> None:
        # the blob comes from the driver over the socket pair it started this process with;
        # nothing that arrives over HTTP is ever unpickled
        self.store.set_descent(pickle.loads(blob), additive=additive)

    def set_epoch(self, epoch: int) -> None:
        self.store.epoch = epoch

    def end_epoch(self, epoch: int, winners: dict):
        self.store.end_epoch(epoch, winners)
        return None if self.store.error is None else repr(self.store.error)

    def drain(self, timeout) -> None:
        self.store.drain(timeout)

    def params(self) -> tuple[int, dict]:
        with self.store.lock:
            return self.store.version, {name: np.array(a) for name, a in self.store.params.items()
                                        if name not in self.not_gathered}

    def call_descent(self, method: str, args: tuple):
        return self.store.call_descent(method, *args)

    def load(self, arrays: dict) -> int:
        """The driver rewrote these rows between epochs: take them; return the new version."""
        with self.store.lock:
            for name, array in arrays.items():
                np.copyto(self.store.params[name], array)
        self.store.rewritten()
        return self.store.version

    def status(self) -> dict:
        return self.store.status()


def main(argv=None) -> None:
    """The child's entry point, ``python -c "from deepdist.shard_server import main; main()" FD``
    (FD: its end of a socket pair). Not ``-m``: the package imports this module itself."""
    conn = Connection(int((argv or sys.argv[1:])[0]))
    _serve(conn, *conn.recv())


class _Shard:
    def __init__(self, shard: int, process, conn):
        self.shard = shard
        self.process = process
        self.conn = conn
        self.port = None

    def send(self, name: str, *args) -> None:
        try:
            self.conn.send((name, args))
        except (OSError, EOFError) as err:
            raise ShardError(self._gone(err)) from None

    def receive(self, timeout: float | None = None):
        try:
            if timeout is not None and not self.conn.poll(timeout):
                raise ShardError(f"model server shard {self.shard} did not answer within {timeout:g}s")
            status, value = self.conn.recv()
        except (OSError, EOFError) as err:
            raise ShardError(self._gone(err)) from None
        if status != "ok":
            raise ShardError(f"model server shard {self.shard}: {value}")
        return value

    def _gone(self, err) -> str:
        code = self.process.poll()
        return (f"model server shard {self.shard} (pid {self.process.pid}) is gone"
                f"{f' (exit code {code})' if code is not None else ''}: {err}")


class ShardGroup:
    """Shards 1 … N−1 of a sharded model, each a server process over its rows of ``params``.

    Calls go to every shard at once and wait for all answers (a pipe each), so settling an epoch
    or copying the rows back costs one round, not N.
    """

    def __init__(self, layout, params: dict, config: ServerConfig, secret: str, max_body: int, bind: str,
                 pem: tuple | None = None):
        self.layout = layout
        self.params = params
        self.config = config
        self.secret = secret
        self.max_body = max_body
        self.bind = bind
        self.pem = pem
        self.shards: list = []

    def start(self) -> None:
        config = {name: getattr(self.config, name) for name in
                  ("port", "max_body_bytes", "queue_size", "backpressure_timeout", "staleness", "max_staleness")}
        # the child imports what the driver imports, from where the driver found it (--py-files,
        # a notebook's sys.path edits), as multiprocessing's spawn would
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            for shard in range(1, self.layout.n):
                ours, theirs = socket.socketpair()
                try:
                    process = subprocess.Popen([sys.executable, "-c", "from deepdist.shard_server import main; main()",
                                                str(theirs.fileno())],
                                               pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
                finally:
                    theirs.close()
                s = _Shard(shard, process, Connection(ours.detach()))
                self.shards.append(s)
                config_s = {**config, "port": self.config.port + shard if self.config.port else 0}
                # the slices are views of the user's arrays: pickling them copies their rows once
                s.conn.send((shard, self.layout.slices(self.params, shard), self.layout.aliases,
                             sorted(self.layout.replicated), config_s,
                             self.secret, self.max_body, self.bind, self.pem,
                             logging.getLogger("deepdist").getEffectiveLevel()))
            for s in self.shards:
                s.port = s.receive(STARTUP_TIMEOUT + 60)
        except BaseException as err:
            self.stop()
            if isinstance(err, ShardError):
                raise ConfigurationError(f"cannot start the model server shards: {err}") from None
            raise

    def urls(self, scheme: str, host: str) -> list:
        return [f"{scheme}://{host}:{s.port}" for s in self.shards]

    def _send_all(self, name: str, *args) -> None:
        for s in self.shards:
            s.send(name, *args)

    def _receive_all(self) -> list:
        return [s.receive() for s in self.shards]

    def _all(self, name: str, *args) -> list:
        """Ask every shard at once, then wait for every answer."""
        self._send_all(name, *args)
        return self._receive_all()

    def set_descent(self, descent, additive: bool) -> None:
        from pyspark import cloudpickle   # by value, as Spark ships a closure: __main__ functions too

        try:
            blob = cloudpickle.dumps(descent)
        except Exception as err:  # noqa: BLE001 - what cloudpickle raises varies
            raise ConfigurationError(f"servers > 1 sends the descent to each shard's process, but it cannot be "
                                     f"pickled: {err}") from None
        self._all("set_descent", blob, additive)

    def set_epoch(self, epoch: int) -> None:
        self._all("set_epoch", epoch)

    def send_end_epoch(self, epoch: int, winners: dict) -> None:
        """Settle ``epoch`` on every shard; :meth:`finish_end_epoch` waits (the driver settles
        shard 0 in between)."""
        self._send_all("end_epoch", epoch, winners)

    def finish_end_epoch(self) -> list:
        """Each shard's descent error (repr) or None, after :meth:`send_end_epoch`."""
        return self._receive_all()

    def drain(self, timeout: float | None = None) -> None:
        self._all("drain", timeout)

    def gather(self) -> int:
        """Copy every shard's rows into ``params`` (the user's arrays); return the shards' versions' sum."""
        total = 0
        for s, (version, arrays) in zip(self.shards, self._all("params")):
            total += version
            for name, array in arrays.items():
                lo, hi = self.layout.ranges(name)[s.shard]
                self.params[name][lo:hi] = array
        return total

    def call_descent(self, method: str, *args) -> list:
        """``descent.method(rows, *args)`` in every shard, each on its own rows; their results."""
        return self._all("call_descent", method, args)

    def load(self, names) -> int:
        """Send every shard its rows of ``names`` from ``params`` (the driver rewrote them between
        epochs); return the shards' versions' sum."""
        bases = sorted({self.layout.aliases.get(name, name) for name in names})
        for s in self.shards:
            slices = self.layout.slices({name: self.params[name] for name in bases}, s.shard)
            s.send("load", {name: np.ascontiguousarray(a) for name, a in slices.items()})
        return sum(self._receive_all())

    def status(self) -> list:
        return self._all("status")

    def stop(self) -> None:
        for s in self.shards:
            try:
                s.send("stop")
            except ShardError:
                pass
        for s in self.shards:
            try:
                s.process.wait(60)
            except subprocess.TimeoutExpired:
                log.warning("model server shard %d did not stop; terminating it", s.shard)
                s.process.terminate()
                s.process.wait(5)
            s.conn.close()
        self.shards = []

