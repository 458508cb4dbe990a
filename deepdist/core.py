"""``DeepDist``: the model server on the driver and the Downpour training loop.

    with DeepDist(model) as dd:            # starts the model server
        dd.train(rdd, gradient, descent, epochs=3, batch_size=256)
    trained = dd.model

Each epoch is one Spark job, ``rdd.mapPartitions(PartitionTrainer).collect()``:
tasks pull the model over HTTP, compute updates with ``gradient`` and push
them; one applier thread on the driver calls ``descent`` on them in arrival
order (Downpour SGD, Dean et al. 2012, as in the original DeepDist).
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid

from .checkpoint import Checkpointer
from .client import ModelClient
from .addresses import driver_addresses, is_loopback, is_wildcard
from .dashboard import Dashboard
from .dashboard.context import DashboardMethods
from . import config as _config
from .config import MAX_WAIT_SECONDS, ServerConfig
from .errors import (ConfigurationError, DeepDistError, ModelShapeError, ServerUnreachableError, TrainingFailedError,
                     find_tagged_error)
from .params import DictAdapter, ModelSpec, adapter_for
from .progress import ProgressLine
from . import tls as _tls
from .server import ServerThread, create_app
from .shard_server import ShardGroup
from .sharded_context import ShardedServers
from .shards import ShardedClient, ShardLayout
from .validation import check_int
from .session import spark_context, use_driver_python  # noqa: F401  (spark_context: its old home)
from .executors import ensure_executors, failure_cause
from .store import ParameterStore
from .worker import PartitionTrainer, TaskChannel

log = logging.getLogger(__name__)

__all__ = ["DeepDist", "TrainingFailedError", "driver_addresses", "is_loopback"]


class DeepDist(ShardedServers, DashboardMethods):
    """A parameter server on the Spark driver for asynchronous (Downpour) training.

    Parameters:
        model: a dict of named numpy arrays, or any object whose parameter
            arrays ``params`` names.  Everything else about an object model is
            static: it reaches executors once, by Spark broadcast.
        params: attribute paths of the parameter arrays of an object model
            (``["wv.vectors", "syn1neg"]``) or a :class:`~deepdist.ParamAdapter`.
        spark: a SparkSession or SparkContext; the active one by default.
        host, port: where the server listens; by default where Spark says the
            driver lives (loopback in local mode) on a free port.
        staleness: ``"apply"``, ``"scale"`` (step / staleness) or ``"drop"``
            (updates staler than ``max_staleness``).
        queue_size: updates waiting for ``descent`` before clients are slowed down.
        max_body_bytes: largest request accepted; by default twice the model plus 16 MiB.
        checkpoint: a :class:`~deepdist.Checkpointer`, or a directory for one
            that writes at every epoch end.
        resume: load the latest checkpoint on entry and skip completed epochs.
        progress: show a progress line on the driver while training.
        tls: serve HTTPS with a self-signed certificate made for this context, which executors
            pin by its SHA-256 fingerprint (it travels with the secret in the task closure; no
            CA). ``None`` (default): TLS unless the server is on loopback; ``True``/``False``
            force it on or off.
        dashboard: serve the live dashboard on ``GET /`` (:mod:`deepdist.dashboard`); the
            driver logs its login URL once, at start, and :meth:`dashboard_url` mints another.
        report: a path to write the dashboard's report to (:meth:`save_report`) when the
            context closes.
        servers: split every parameter by rows over this many model servers (shards), each
            a process of its own with its own port, ledger and applier, on the driver's host;
            tasks send each shard its rows, in parallel (:mod:`deepdist.shards`). Shard 0 is
            the driver's own server. The descent runs in each shard on that shard's rows
            (``{name: rows}``), so it must work row by row; one that needs the whole model says
            so with an attribute ``needs_whole_model = True`` and is refused here.

    Attributes:
        url: the server's base URL (set on entry).
        secret: this context's secret; every request carries
            ``Authorization: Bearer <secret>``.
        fingerprint: SHA-256 (hex) of the server's TLS certificate, None over plain HTTP.
        model: the (trained) model.

    Example::

        >>> import numpy as np
        >>> from deepdist import DeepDist
        >>> from deepdist.optim import SGD
        >>> rdd = spark.sparkContext.parallelize(rows, 4)          # doctest: +SKIP
        >>> def gradient(model, batch):                             # doctest: +SKIP
        ...     X, y = np.array([r[0] for r in batch]), np.array([r[1] for r in batch])
        ...     return {"w": X.T @ (X @ model["w"] - y) / len(batch)}
        >>> with DeepDist({"w": np.zeros(3)}) as dd:                # doctest: +SKIP
        ...     dd.train(rdd, gradient, SGD(lr=0.1), epochs=5, batch_size=64)
    """

    def __init__(self, model, *, params=None, spark=None, host: str | None = ServerConfig.host,
                 port: int = ServerConfig.port, staleness: str = ServerConfig.staleness,
                 max_staleness: int | None = ServerConfig.max_staleness, queue_size: int = ServerConfig.queue_size,
                 max_body_bytes: int | None = ServerConfig.max_body_bytes, checkpoint=None, resume: bool = False,
                 progress: bool = True, client_options: dict | None = None, tls: bool | None = None,
                 dashboard: bool = True, report: str | None = None, servers: int = 1):
        self._model = model
        self.params = params
        self.spark = spark
        self.config = ServerConfig(host=host, port=port, max_body_bytes=max_body_bytes,
                                   queue_size=queue_size, staleness=staleness,
                                   max_staleness=max_staleness)
        self.checkpoint = checkpoint
        self.resume = resume
        self.progress = progress
        self.client_options = dict(client_options or {})
        if tls not in (None, True, False):
            raise ConfigurationError(f"tls must be None (auto: on off loopback), True or False, got {tls!r}")
        self.tls = tls
        self.dashboard = dashboard
        self.report = report
        self.servers = check_int("servers", servers)
        self._shards: ShardGroup | None = None
        self._layout: ShardLayout | None = None
        self._urls: list = []
        self._shard_versions = 0
        self._dashboard = None
        self.url: str | None = None
        self.secret: str | None = None
        self.fingerprint: str | None = None
        self.store: ParameterStore | None = None
        self._server = None
        self._skeleton = None
        self._epochs_done = 0        # restored from a checkpoint: the next train() call skips them
        self._epochs_completed = 0   # restored plus run in this context: what checkpoints record
        self._checked_reachable = False
        # a caller's epoch numbers repeat (each train() call counts from 0; Gibbs numbers its
        # jobs): on the wire every epoch gets its own serial, so the server's per-attempt
        # bookkeeping of one call never answers for the next, and a settled one stays closed
        self._wire_epochs: dict = {}
        self._serial = 0

    @property
    def model(self):
        return self._model

    @property
    def client(self) -> ModelClient:
        """A client for this context's server (what executors use)."""
        self._require_open()
        return self._client(**self.client_options)

    def _client(self, **options):
        if self._layout is None:
            return ModelClient(self.url, self.secret, fingerprint=self.fingerprint, **options)
        return ShardedClient([ModelClient(url, self.secret, fingerprint=self.fingerprint, **options)
                              for url in self._urls], self._layout)

    @property
    def spec(self) -> ModelSpec:
        """The whole model's parameter shapes and dtypes (over every shard)."""
        return self._spec

    # -- context ---------------------------------------------------------------------
    def __enter__(self) -> "DeepDist":
        self.config.validate()
        self.sc = spark_context(self.spark)
        use_driver_python(self.sc)
        ensure_executors(self.sc)
        adapter = adapter_for(self._model, self.params)
        checkpointer = self.checkpoint
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            checkpointer = Checkpointer(checkpointer)
        self.checkpointer = checkpointer
        self._adapter = adapter
        self._spec = ModelSpec.of(adapter.get(self._model))
        self._open_store(adapter, checkpointer)
        self._job_group = f"deepdist-{uuid.uuid4().hex[:12]}"
        # a failed descent makes the rest of the epoch pointless: stop its tasks now
        self.store.on_error = lambda exc: self.sc.cancelJobGroup(self._job_group)
        if self.resume:
            self._resume()
        max_body = self.config.body_limit(self._spec.nbytes)
        bind, advertise = driver_addresses(self.sc, self.config.host)
        self.secret = secrets.token_urlsafe(32)
        self._context_id = uuid.uuid4().hex
        self._dashboard = None
        if self.dashboard:
            self._dashboard = Dashboard(self.store, name=self._context_id[:12])
        app = create_app(self.store, self.secret, max_body, dashboard=self._dashboard)
        if is_wildcard(bind):
            log.warning("the model server listens on every interface (%r, as spark.driver.bindAddress or "
                        "host asks); executors call %s. Every request needs the context's secret%s",
                        bind, advertise, "" if self.tls is False else ", over TLS")
        use_tls = self.tls if self.tls is not None else not (is_loopback(bind) and is_loopback(advertise))
        ssl_context = pem = None
        self.fingerprint = None
        if use_tls:
            cert, key, self.fingerprint = _tls.self_signed(advertise)
            ssl_context = _tls.server_context(cert, key)
            pem = (cert, key)
        try:
            self._server = ServerThread(app, bind, self.config.port, ssl_context=ssl_context)
        except OSError as err:
            raise ConfigurationError(f"cannot start the model server on {bind}:{self.config.port}: {err}") from err
        host = f"[{advertise}]" if ":" in advertise else advertise
        scheme = "https" if use_tls else "http"
        self.url = f"{scheme}://{host}:{self._server.port}"
        self._urls = [self.url]
        self.store.start()
        self._server.start()
        self._open_shards(max_body, bind, pem, scheme, host)
        self._wait_until_up()
        log.info("DeepDist model server at %s (%d parameters, %.1f MB%s)", self.url,
                 len(self._spec), self._spec.nbytes / 1e6,
                 f"; {self.servers} shards: {', '.join(self._urls)}" if self._layout is not None else "")
        if self._dashboard is not None:
            self._dashboard.start(self.url)
            self._dashboard.announce(tty_too=self.progress)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is None and self.store.error is not None:
            raise self.store.error
        return False

    def close(self) -> None:
        """Apply pending updates, then stop the server and the applier thread."""
        if self._server is None:
            return
        try:
            self.store.drain(timeout=_config.CLOSE_DRAIN_TIMEOUT)
            self._drain_shards()
        finally:
            self.store.stop()
            self._server.stop()
            self._server = None
            self._stop_shards()
            if self._dashboard is not None:
                self._dashboard.stop()
                if self.report:
                    try:
                        self.save_report(self.report)
                    except OSError as err:  # the fit is done: a report that cannot be written must not undo it
                        log.error("could not write the dashboard's report to %s: %s", self.report, err)
            if self._skeleton is not None:
                self._skeleton.unpersist()
                self._skeleton = None

    def _wait_until_up(self, timeout: float = _config.STARTUP_TIMEOUT) -> None:
        probe = self._client(**_config.STARTUP_PROBE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe.health()
                return
            except ServerUnreachableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _require_open(self) -> None:
        if self._server is None:
            raise ConfigurationError("the DeepDist server is not running; use `with DeepDist(model) as dd:`")

    def _resume(self) -> None:
        if self.checkpointer is None:
            raise ConfigurationError("resume=True needs checkpoint=... (a Checkpointer or a directory)")
        frame = self.checkpointer.latest()
        if frame is None:
            log.info("no checkpoint in %s; starting fresh", self.checkpointer.directory)
            return
        params = self._adapter.get(self._model)   # the whole model: shards start from it
        for name, spec in self._spec.items():
            array = frame.arrays.get(name)
            if array is None or array.shape != spec.shape:
                raise ModelShapeError(f"checkpoint in {self.checkpointer.directory} does not fit the model: "
                                      f"parameter {name!r} is {getattr(array, 'shape', 'missing')}, "
                                      f"the model has {spec.shape}")
            params[name][...] = array
        self.store.version = int(frame.meta.get("version", 0))
        self._epochs_done = self.checkpointer.epochs_completed = int(frame.meta.get("epochs_completed", 0))
        self._epochs_completed = self._epochs_done
        log.info("resumed from checkpoint version %s (%s epochs complete)", self.store.version, self._epochs_done)

    # -- training ---------------------------------------------------------------------
    def _broadcast_skeleton(self):
        if self._skeleton is None and not isinstance(self._adapter, DictAdapter):
            with self._adapter.stripped(self._model) as skeleton:
                self._skeleton = self.sc.broadcast(skeleton)
        return self._skeleton

    def check_reachable(self) -> None:
        """Run one tiny Spark task that calls the server, to fail early and clearly."""
        client = self._client(**_config.REACHABLE_PROBE)

        def probe(iterator):
            # a task that leaves its input unread cannot give its Python worker back for
            # reuse: the next job would fork a fresh one and import everything again
            for _ in iterator:
                pass
            try:
                client.health()
            except DeepDistError as err:
                # the same error, tagged for the driver; chained, Spark's failure text would
                # hold it twice (once untagged)
                raise type(err)(err.tagged()) from None
            return [True]

        self._collect(lambda: self.sc.parallelize([0], 1).mapPartitions(probe).collect())
        self._checked_reachable = True

    def _collect(self, action):
        self.sc.setJobGroup(self._job_group, "deepdist training", interruptOnCancel=True)
        try:
            return action()
        except Exception as err:  # py4j / pyspark errors: translate once, here
            if self.store.error is not None:
                # the job failed because the failed descent cancelled it: Spark's error says only that
                raise self.store.error from None
            text = str(err)
            tagged = find_tagged_error(text)
            if tagged is not None:
                raise tagged from err
            raise TrainingFailedError(f"a Spark task failed:\n{failure_cause(text)}") from err

    def train(self, rdd, gradient, descent, *, epochs: int = 1, batch_size: int | None = None,
              fetch_every: int = 1, push_every: int = 1, additive: bool = False, rows=None,
              check_reachable: bool = True, wait_for=None,
              wait_timeout: float = _config.WAIT_TIMEOUT, skip_completed: bool = True) -> list:
        """Train on ``rdd`` for ``epochs`` passes; return each epoch's task reports.

        Parameters:
            gradient: ``gradient(model, batch) -> update``, run on executors.
                ``batch`` is a list of elements (the whole partition when
                ``batch_size`` is None); the update is ``{name: ndarray | SparseRows}``.
            descent: ``descent(model, update)``, run on the driver by one thread
                in arrival order; it updates the model in place.
            fetch_every: pull the model every this many mini-batches.
            push_every: push every this many mini-batches, summing in between.
            additive: updates add up (counts, gradient sums): the model then ends
                every epoch exactly as if each partition had run once, whatever
                Spark retried.
            rows: optional ``rows(batch) -> {name: row indices}``; tasks then pull
                only the rows their next ``fetch_every`` batches need.
            wait_for: optional ``wait_for(n) -> (name, minimum) | None`` (needs ``rows``):
                before the pull for its ``n``-th mini-batch (from 0) a task waits until
                the model's ``name[0] >= minimum``, e.g. a count of synchronisation
                rounds the driver keeps: stale-synchronous training. The server holds
                the request, without polling, for at most ``wait_timeout`` seconds; after
                a timeout the task logs a warning and stops waiting.
            skip_completed: after ``resume=True``, the first call skips the epochs the
                checkpoint completed (``train(epochs=10)`` finishes what a killed run began).
                A loop of one-epoch calls passes False and starts from :attr:`epochs_completed`::

                    for epoch in range(dd.epochs_completed, 10):
                        dd.train(shuffled(rdd, epoch), gradient, descent, skip_completed=False)
        """
        self._require_open()
        for name, value in (("epochs", epochs), ("fetch_every", fetch_every), ("push_every", push_every)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigurationError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        if wait_for is not None and (rows is None or not callable(wait_for)):
            raise ConfigurationError("wait_for must be callable and needs rows (the wait rides on the row pull)")
        if not (isinstance(wait_timeout, (int, float)) and 0 < wait_timeout <= MAX_WAIT_SECONDS):
            raise ConfigurationError(f"wait_timeout must be in (0, {MAX_WAIT_SECONDS:g}] seconds, got {wait_timeout!r}")
        if not callable(gradient):
            raise ConfigurationError(f"gradient must be callable, got {type(gradient).__name__}")
        self.set_descent(descent, additive=additive)
        if not check_reachable:
            self._checked_reachable = True
        skeleton = self._broadcast_skeleton()
        reports = []
        first, self._epochs_done = (self._epochs_done if skip_completed else 0), 0
        for epoch in range(first, epochs):
            trainer = PartitionTrainer(
                channel=self.channel(epoch), context_id=self._context_id, spec=self._spec,
                adapter=self._adapter, skeleton=skeleton, gradient=gradient, batch_size=batch_size,
                fetch_every=fetch_every, push_every=push_every, rows=rows, wait_for=wait_for,
                wait_timeout=wait_timeout)
            reports.append(self.run_epoch(epoch, lambda: rdd.mapPartitions(trainer).collect(),
                                          label=f"epoch {epoch + 1}/{epochs}"))
        return reports

    def channel(self, epoch: int) -> TaskChannel:
        """A :class:`~deepdist.worker.TaskChannel` for the tasks of ``epoch`` (custom loops)."""
        self._require_open()
        return TaskChannel(self._client(**self.client_options), self._wire_epoch(epoch))

    def _wire_epoch(self, epoch: int) -> int:
        """The serial that tags ``epoch``'s pushes until :meth:`run_epoch` settles it."""
        if epoch not in self._wire_epochs:
            self._serial += 1
            self._wire_epochs[epoch] = self._serial
        return self._wire_epochs[epoch]

    def run_epoch(self, epoch: int, action, label: str | None = None, describe=None) -> list:
        """Run one epoch's Spark ``action`` and settle its updates exactly.

        ``action()`` runs the Spark job and returns the task reports
        (``TaskChannel.report()`` dicts, one per partition).  Spark failures are
        translated into deepdist errors; pending updates are drained; in
        additive mode only the attempt whose report Spark returned stays
        applied; a checkpoint is written if configured.  The descent must have
        been set (``train`` does it, or :meth:`set_descent`).
        """
        self._require_open()
        if not self._checked_reachable:
            self.check_reachable()
        wire_epoch = self._wire_epoch(epoch)
        self.store.epoch = wire_epoch
        self._set_shard_epoch(wire_epoch)
        started = time.perf_counter()
        if self._dashboard is not None:
            self._dashboard.epoch_started(label or f"epoch {epoch + 1}")
        with ProgressLine(self.sc, self.store, label or f"epoch {epoch + 1}", enabled=self.progress,
                          describe=describe):
            results = self._collect(action)
            winners = {r["partition"]: (r["attempt"], r["pushed"]) for r in results}
            self._wire_epochs.pop(epoch, None)
            self._end_epoch(wire_epoch, winners)
            if self._dashboard is not None:
                self._dashboard.epoch_ended(label or f"epoch {epoch + 1}", wire_epoch, results)
        if self.store.error is not None:
            raise self.store.error
        self._epochs_completed += 1
        if self.checkpointer is not None:
            self.checkpointer.write(self._checkpoint_source(), epochs_completed=self._epochs_completed)
        log.info("%s done in %.2fs: %d partitions, %d updates, model version %d",
                 label or f"epoch {epoch + 1}", time.perf_counter() - started, len(results),
                 sum(r["pushed"] for r in results), self.version)
        return results

    @property
    def epochs_completed(self) -> int:
        """Epochs complete: those a checkpoint restored (``resume=True``) plus those run since."""
        return self._epochs_completed
