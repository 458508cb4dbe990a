"""A real Spark standalone cluster on 127.0.0.1, for tests, benchmarks and fault drills.

:class:`LocalCluster` starts one standalone Master and N Workers as separate JVM processes
bound to 127.0.0.1, from the Spark that the installed pyspark carries, waits until every
worker has registered, and stops them by PID. Executors then run in their own JVMs with
their own Python workers, so what only a cluster shows (executors that are not the driver,
shipping code, losing an executor) shows here too.

    >>> from deepdist.testing import LocalCluster
    >>> with LocalCluster(workers=2, cores=1) as cluster:            # doctest: +SKIP
    ...     spark = SparkSession.builder.master(cluster.url).getOrCreate()
    ...     cluster.kill_executor(0)                                   # SIGKILL, as a lost node
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .errors import DeepDistError
from .procstat import descendants

__all__ = ["LocalCluster", "bare_python", "spark_home", "free_port"]

log = logging.getLogger(__name__)


class ClusterError(DeepDistError, RuntimeError):
    """The local cluster (or the bare Python for it) could not be set up as asked."""


class ClusterTimeoutError(DeepDistError, TimeoutError):
    """The local cluster did not reach the state waited for in time."""


def spark_home() -> str:
    """The Spark distribution inside the installed pyspark (``SPARK_HOME`` if set)."""
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    import pyspark

    return os.path.dirname(pyspark.__file__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_python(directory: str) -> str:
    """A Python that has this one's packages (numpy, numba, gensim, ...) but not deepdist.

    A virtual environment whose only site directory entry lists this interpreter's
    site-packages as plain paths: ``.pth`` files there are not run, so an editable or
    path-hooked deepdist stays invisible, as on executors where only the dependencies were
    installed. Returns the interpreter's path.
    """
    import site
    import venv

    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(directory)
    python = os.path.join(directory, "bin", "python")
    target = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(target, "dependencies.pth"), "w") as f:
        f.write("\n".join(ours) + "\n")
    check = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('deepdist') is None, "
                            "u.find_spec('numpy') is not None)"], capture_output=True, text=True,
                           cwd=directory, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if check.stdout.split() != ["True", "True"]:
        raise ClusterError(f"{python} is not the bare Python wanted (no deepdist, numpy): {check.stdout}{check.stderr}")
    return python


def _die_with_parent() -> None:
    """In the child, before exec: take SIGKILL when the process that started the cluster dies,
    so a test run killed midway leaves no master or worker behind (Linux only; best effort)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class LocalCluster:
    """A Spark standalone Master and ``workers`` Workers of ``cores`` cores each, on 127.0.0.1.

    Parameters:
        workers, cores, memory: the workers and what each offers.
        env: extra environment of the master and worker JVMs (and so of the executors).
        port: the master's port (a free one by default).
        log_dir: where the daemons' logs and the workers' work directories go (a temp
            directory by default, removed on :meth:`stop`).
    """

    def __init__(self, workers: int = 2, cores: int = 1, memory: str = "3g", env: dict | None = None,
                 log_dir: str | None = None, timeout: float = 90.0, port: int = 0):
        self.workers, self.cores, self.memory, self.timeout = workers, cores, memory, timeout
        self.env = dict(env or {})
        self._own_dir = log_dir is None
        self.dir = Path(log_dir or tempfile.mkdtemp(prefix="deepdist-cluster-"))
        self.port, self.web_port = port or free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.master: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def _environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_CONF_DIR")}
        env.update(SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
                   # executors take their classpath and settings from the application, not from
                   # a conf directory of the repo's
                   SPARK_CONF_DIR=str(self.dir / "conf"))
        env.update(self.env)
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        out = open(self.dir / f"{name}.log", "ab")
        cmd = [os.path.join(spark_home(), "bin", "spark-class"), *args]
        proc = subprocess.Popen(cmd, env=self._environment(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        return proc

    def start(self) -> None:
        (self.dir / "conf").mkdir(parents=True, exist_ok=True)
        self.master = self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                  "--port", str(self.port), "--webui-port", str(self.web_port))
        try:
            self._wait(lambda state: state is not None, "the master to start")
            for i in range(self.workers):
                self.add_worker()
            self._wait(lambda state: state and self.alive_workers(state) >= self.workers,
                       f"{self.workers} workers to register")
        except BaseException:
            self.stop()
            raise
        log.info("standalone cluster %s: %d workers x %d cores (logs in %s)",
                 self.url, self.workers, self.cores, self.dir)

    def add_worker(self) -> subprocess.Popen:
        """Start one more worker (after a :meth:`kill_worker`, say)."""
        i = len(self.worker_procs)
        work = self.dir / f"work-{i}"
        work.mkdir(exist_ok=True)
        proc = self._spawn(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                           "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work),
                           "--webui-port", str(free_port()), self.url)
        self.worker_procs.append(proc)
        return proc

    def stop(self) -> None:
        procs = [p for p in self.worker_procs + [self.master] if p is not None]
        for proc in procs:
            for pid in [proc.pid] + descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
                log.warning("cluster process %d did not exit", proc.pid)
        self.worker_procs, self.master = [], None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- what a driver needs ----------------------------------------------------------------
    #: settings a driver of this cluster needs: executors call the driver on loopback too,
    #: and each takes a share of the workers' memory that leaves room for their Python
    driver_conf = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                   "spark.executor.memory": "1g", "spark.ui.enabled": "false"}

    def submit_args(self) -> list[str]:
        """``spark-submit`` arguments that aim a job at this cluster."""
        args = ["--master", self.url]
        for key, value in self.driver_conf.items():
            args += ["--conf", f"{key}={value}"]
        return args

    def driver_env(self) -> dict:
        """Environment for a driver process (``spark-submit`` or a Python script) of this cluster."""
        return {"SPARK_LOCAL_IP": "127.0.0.1"}

    def session(self, app_name: str = "deepdist", **conf):
        """A SparkSession in this process, on this cluster."""
        from pyspark.sql import SparkSession

        os.environ.update(self.driver_env())
        builder = SparkSession.builder.master(self.url).appName(app_name)
        for key, value in {**self.driver_conf, **conf}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict | None:
        """The master's JSON status page, or None while it is not up."""
        if self.master is not None and self.master.poll() is not None:
            raise ClusterError(f"the Spark master exited with {self.master.returncode}; "
                               f"see {self.dir / 'master.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/json/", timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    @staticmethod
    def alive_workers(state: dict) -> int:
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            state = self.state()
            if ready(state):
                return
            if time.monotonic() > deadline:
                raise ClusterTimeoutError(f"waited {self.timeout:.0f}s for {what}; logs in {self.dir}")
            time.sleep(0.25)

    def wait_for_workers(self, count: int | None = None) -> None:
        count = self.workers if count is None else count
        self._wait(lambda state: state and self.alive_workers(state) >= count, f"{count} live workers")

    # -- executors and faults -------------------------------------------------------------------
    def executor_pids(self, worker: int | None = None) -> list[int]:
        """PIDs of the executor JVMs (CoarseGrainedExecutorBackend) under one worker, or all."""
        procs = self.worker_procs if worker is None else [self.worker_procs[worker]]
        return [pid for proc in procs for pid in descendants(proc.pid)
                if "CoarseGrainedExecutorBackend" in _cmdline(pid)]

    def python_worker_pids(self, worker: int | None = None) -> list[int]:
        """PIDs of the Python processes (daemon and workers) under one worker, or all."""
        procs = self.worker_procs if worker is None else [self.worker_procs[worker]]
        return [pid for proc in procs for pid in descendants(proc.pid)
                if "python" in os.path.basename(_cmdline(pid).split(" ")[0])]

    def kill_executor(self, worker: int) -> list[int]:
        """SIGKILL the executor JVM under ``worker`` and its Python processes: a lost executor.

        The worker stays and the master starts a new executor on it, as on a real cluster
        after an executor died of an out-of-memory kill. Returns the PIDs killed.
        """
        pids = []
        for executor in self.executor_pids(worker):
            pids += [executor] + descendants(executor)
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def kill_worker(self, worker: int) -> list[int]:
        """SIGKILL a whole worker (its JVM, its executors and their Python): a lost node."""
        proc = self.worker_procs[worker]
        pids = [proc.pid] + descendants(proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        return pids

    def executors_used(self, app_id: str) -> list[str]:
        """Executor ids that ran tasks of application ``app_id`` (from the master's view)."""
        state = self.state() or {}
        for app in state.get("activeapps", []) + state.get("completedapps", []):
            if app.get("id") == app_id:
                return [str(e) for e in app.get("executors", [])]
        return []


def main(argv=None) -> None:
    """``python -m deepdist.testing``: run a standalone cluster on 127.0.0.1 until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description="A Spark standalone cluster on 127.0.0.1, until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores each worker offers")
    parser.add_argument("--memory", default="3g", help="memory each worker offers")
    parser.add_argument("--port", type=int, default=7077, help="the master's port (0: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with LocalCluster(args.workers, args.cores, args.memory, port=args.port) as cluster:
        print(f"{cluster.url}  (master UI http://127.0.0.1:{cluster.web_port}; drivers: "
              f"SPARK_LOCAL_IP=127.0.0.1 spark-submit --master {cluster.url} ...)", flush=True)
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
