"""The preloading worker daemon (deepdist.daemon), as spark-conf/ configures it for the tests."""

import json
import logging
import os
import struct
import subprocess
import sys

from deepdist import daemon
from deepdist.lda import _delta_kernels, _kernels

_FRESH_PRELOAD = """
import json, sys
from deepdist import daemon
before = {name: name in sys.modules for name in daemon.PRELOAD}
failed = daemon.preload()
after = {name: name in sys.modules for name in daemon.PRELOAD}
print(json.dumps({"before": before, "after": after, "failed": failed}))
"""


def test_preload_imports_every_module_into_a_fresh_interpreter():
    """In a fresh interpreter (as the daemon starts) the heavy ones are not loaded; after preload all are."""
    out = subprocess.run([sys.executable, "-c", _FRESH_PRELOAD], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failed"] == []
    # numpy and deepdist.worker come with `import deepdist`; the model families' modules do not
    heavy = [name for name in result["before"] if name.startswith(("gensim", "deepdist.lda", "deepdist.word2vec"))]
    assert len(heavy) == 5 and not any(result["before"][name] for name in heavy), result["before"]
    assert all(result["after"].values()), result["after"]


def test_preload_compiles_the_gibbs_kernels():
    assert daemon.preload() == []
    for kernel in (_kernels.sweep, _delta_kernels.sparse_delta, _delta_kernels.apply_sparse_delta,
                   _delta_kernels.take_table_delta, _delta_kernels.add_sparse,
                   _kernels.random_topics, _kernels.doc_topic_counts):
        assert kernel.signatures, kernel


def test_a_failing_import_is_logged_and_skipped(tmp_path, monkeypatch, caplog):
    (tmp_path / "breaks_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="deepdist.daemon"):
        failed = daemon.preload(("numpy", "no_such_module_here", "breaks_on_import", "json"))
    assert failed == ["no_such_module_here", "breaks_on_import"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "no_such_module_here" in warnings[0] and "ModuleNotFoundError" in warnings[0]
    assert "breaks_on_import" in warnings[1] and "RuntimeError: no GPU here" in warnings[1]
    assert "json" in sys.modules   # the modules after a failure are still imported


_DAEMON_WITH_A_MISSING_MODULE = """
from deepdist import daemon
preload = daemon.preload
daemon.preload = lambda: preload(("numpy", "no_such_module_here"))
daemon.main()
"""


def test_the_daemon_starts_and_serves_despite_a_failing_import():
    """It logs the failure, then does what PySpark's daemon does: listens, and tells Spark the port."""
    proc = subprocess.Popen([sys.executable, "-c", _DAEMON_WITH_A_MISSING_MODULE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "SPARK_REUSE_WORKER": "1"})
    try:
        (port,) = struct.unpack(">i", proc.stdout.read(4))   # PySpark's write_int: the listening port
        assert 0 < port < 65536
        proc.stdin.close()                # Spark going away: the daemon exits (1, as PySpark's does)
        proc.wait(timeout=60)
        errors = proc.stderr.read().decode()
        assert "not preloading no_such_module_here" in errors and "ModuleNotFoundError" in errors, errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _parent_command(_):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        yield f.read().replace(b"\0", b" ").decode()


def test_spark_forks_the_python_workers_from_the_preloading_daemon(sc):
    assert sc.getConf().get("spark.python.daemon.module") == "deepdist.daemon"
    commands = sc.parallelize(range(2), 2).mapPartitions(_parent_command).collect()
    assert all("deepdist.daemon" in c for c in commands), commands
