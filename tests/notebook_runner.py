"""Run a notebook of ``notebooks/`` under nbclient, as the notebook tests do (imported by them)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_notebook(notebook, **env) -> list:
    """Execute ``notebook`` (an nbformat notebook, filled in place) on ``local[2]`` with the repo's
    Spark configuration and ``env`` added to the kernel's environment; return the code cells'
    outputs. Raises nbclient's CellExecutionError if a cell fails."""
    import nbclient

    settings = dict(SPARK_MASTER="local[2]", SPARK_CONF_DIR=str(ROOT / "spark-conf"), PYSPARK_PYTHON=sys.executable,
                    PYSPARK_DRIVER_PYTHON=sys.executable, MPLBACKEND="Agg")
    settings.update(env)
    old = dict(os.environ)
    os.environ.update(settings)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT / "notebooks")}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
