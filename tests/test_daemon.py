"""The preloading worker daemon (deepdist.daemon), as spark-conf/ configures it for the tests."""

import os

from deepdist import daemon
from deepdist.lda import _delta_kernels, _kernels


def test_preload_imports_everything_and_compiles_the_gibbs_kernels():
    assert daemon.preload() == []
    for kernel in (_kernels.sweep, _delta_kernels.sparse_delta, _delta_kernels.apply_sparse_delta,
                   _delta_kernels.take_table_delta, _delta_kernels.add_sparse,
                   _kernels.random_topics, _kernels.doc_topic_counts):
        assert kernel.signatures, kernel


def test_a_missing_module_is_skipped_not_fatal():
    assert daemon.preload(("numpy", "no_such_module_here")) == ["no_such_module_here"]


def _parent_command(_):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        yield f.read().replace(b"\0", b" ").decode()


def test_spark_forks_the_python_workers_from_the_preloading_daemon(sc):
    assert sc.getConf().get("spark.python.daemon.module") == "deepdist.daemon"
    commands = sc.parallelize(range(2), 2).mapPartitions(_parent_command).collect()
    assert all("deepdist.daemon" in c for c in commands), commands
