"""What the executors' Python has, and what a failed Spark job was really about.

Two things a cluster does that ``local[*]`` hides:

* The executors run their own Python (``PYSPARK_PYTHON``), which may lack deepdist. A
  task that references deepdist then dies unpickling its function, in a stack of Java.
  :func:`ensure_executors` asks an executor once per SparkContext, with a function that
  needs nothing but the standard library, and when deepdist is missing ships the
  installed package as a zip (``addPyFile``); a missing numpy, or a worker daemon
  configured to need deepdist, fails at once with the fix named.
* A failed job reaches the driver as a Py4J error whose message is mostly JVM stack.
  :func:`failure_cause` digs out the cause a user can act on: the task's Python
  traceback, a missing module, a lost block, an executor that ran out of memory.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import zipfile

from .errors import ConfigurationError

__all__ = ["ExecutorEnvironmentError", "ensure_executors", "failure_cause", "package_zip"]

log = logging.getLogger(__name__)

#: what every deepdist task imports / what some model families import
_REQUIRED = ("numpy",)
_OPTIONAL = {"numba": "Gibbs LDA", "gensim": "word2vec and online LDA"}

_checked: dict = {}     # id of the JVM SparkContext -> the executors' answer
_lock = threading.Lock()


class ExecutorEnvironmentError(ConfigurationError):
    """The executors' Python cannot run deepdist's tasks; the message names the fix."""


def package_zip() -> str:
    """A zip of the installed deepdist package, as ``--py-files`` wants it (made once a process)."""
    import deepdist

    root = os.path.dirname(os.path.abspath(deepdist.__file__))
    path = os.path.join(tempfile.gettempdir(), f"deepdist-{deepdist.__version__}-{os.getpid()}.zip")
    if not os.path.exists(path):
        partial = path + ".part"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for name in files:
                    if name.endswith(".py"):
                        full = os.path.join(folder, name)
                        archive.write(full, os.path.join("deepdist", os.path.relpath(full, root)))
        os.replace(partial, path)
    return path


def ensure_executors(sc) -> dict:
    """Make sure the executors' Python can run deepdist; ship it there if it lacks only deepdist.

    Runs one tiny task per SparkContext (cached after). Raises
    :class:`ExecutorEnvironmentError` when the executors cannot be fixed from here.
    Returns what the executor reported (its Python, and which modules it has).
    """
    def _inspect_python(iterator):
        # Runs on an executor where deepdist may not be importable: nested, so cloudpickle sends
        # it by value rather than as a reference to this module, and standard library only.
        import importlib.util
        import os as _os
        import sys as _sys

        for _ in iterator:
            pass
        found = {}
        for name in ("deepdist", "numpy", "numba", "gensim", "flask"):
            try:
                found[name] = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found[name] = False
        yield {"python": _sys.executable, "version": list(_sys.version_info[:2]), "modules": found,
               "host": _os.uname().nodename, "pid": _os.getpid()}

    key = id(sc._jsc)
    with _lock:
        if key in _checked:
            return _checked[key]
        try:
            info = sc.parallelize([0], 1).mapPartitions(_inspect_python).collect()[0]
        except Exception as err:  # a Python that cannot even start a worker
            cause = failure_cause(str(err), python=sc.pythonExec)
            if "daemon.module" not in cause:
                cause += ("\nSet PYSPARK_PYTHON (or spark.pyspark.python) to a Python that exists on every "
                          "executor and has numpy, numba, flask and gensim.")
            # from None: the cause is already in the message, read out of Spark's failure; chained,
            # the traceback would print the JVM's stack and Py4J's text, the noise this error replaces
            raise ExecutorEnvironmentError(
                f"the executors could not run a Python task with {sc.pythonExec!r}: {cause}") from None
        modules, python = info["modules"], info["python"]
        missing = [m for m in _REQUIRED if not modules.get(m)]
        if missing:
            raise ExecutorEnvironmentError(
                f"the executors' Python ({python} on {info['host']}) lacks {', '.join(missing)}: install "
                f"deepdist's dependencies there (pip install numpy numba flask gensim) or set PYSPARK_PYTHON "
                "to a Python that has them")
        for name, needed_by in _OPTIONAL.items():
            if not modules.get(name):
                log.warning("the executors' Python (%s) lacks %s, which %s needs", python, name, needed_by)
        if not modules.get("deepdist"):
            # a deepdist daemon could not have started here: that case failed above, by its cause
            zipped = package_zip()
            sc.addPyFile(zipped)
            log.info("the executors' Python (%s) lacks deepdist: shipped %s to them", python, zipped)
            info["shipped"] = zipped
        _checked[key] = info
        return info


def _daemon_message(python: str) -> str:
    return (f"spark.python.daemon.module is deepdist.daemon, but the executors' Python ({python}) lacks "
            "deepdist, so no Python worker can start there. Install deepdist in that Python "
            "(pip install deepdist), or drop the setting (--conf spark.python.daemon.module=pyspark.daemon): "
            "deepdist then ships itself to the tasks")


_TRACEBACK = re.compile(r"(Traceback \(most recent call last\):.*?)(?:\n\s+at |\n\n|$)", re.S)
_NO_MODULE = re.compile(r"No module named '?([\w.]+)'?")
_LOST_BLOCK = re.compile(r"(CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND|Checkpoint block \S+ not found|"
                         r"FetchFailed|Failed to get \S+ of \S+|BlockNotFoundException)")
_OOM = re.compile(r"(java\.lang\.OutOfMemoryError[^\n]*|MemoryError|exit code 137|exited with code 137|"
                  r"killed by the OS|exceeding memory limits)")
_EXECUTOR_LOST = re.compile(r"ExecutorLostFailure[^\n]*")
_STAGE = re.compile(r"Job aborted due to stage failure: ([^\n]*)")


def failure_cause(text: str, python: str = "PYSPARK_PYTHON") -> str:
    """What a failed Spark job's error text says went wrong, without the JVM stack."""
    module = _NO_MODULE.search(text)
    if module and ("ModuleNotFoundError" in text or "ImportError" in text or "Error while finding module" in text):
        name = module.group(1)
        if name.split(".")[0] == "deepdist" and "daemon" in text:
            return _daemon_message(python)
        return (f"the executors' Python has no module {name!r}: install it there, or set PYSPARK_PYTHON to a "
                "Python that has it" + (" (or ship deepdist with --py-files deepdist.zip)"
                                        if name.split(".")[0] == "deepdist" else ""))
    if _OOM.search(text):
        return (f"an executor ran out of memory ({_OOM.search(text).group(1).strip()}): give executors more "
                "(spark.executor.memory, spark.executor.pyspark.memory, spark.executor.memoryOverhead) or "
                "split the data into more partitions")
    traceback = _TRACEBACK.search(text)
    if traceback:
        return traceback.group(1).strip()
    lost = _LOST_BLOCK.search(text)
    if lost:
        return (f"a cached or checkpointed block was lost with its executor ({lost.group(1)}); a reliable "
                "checkpoint directory (sc.setCheckpointDir on storage every node reads) lets Spark restore it")
    executor = _EXECUTOR_LOST.search(text)
    if executor:
        return f"an executor was lost: {executor.group(0).strip()}"
    stage = _STAGE.search(text)
    if stage:
        return stage.group(1).strip()[:2000]
    first = next((line for line in text.splitlines() if line.strip()), text)
    return first[:2000]
