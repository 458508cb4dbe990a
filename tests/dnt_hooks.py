"""Test hooks of the DNT estimator, shared by its test files."""

import os


class FailOnce:
    """``DNT._task_hook``: fail a partition's first attempt right after it pushed, in the given jobs."""

    def __init__(self, marker_dir, jobs, partition):
        self.marker_dir, self.jobs, self.partition = marker_dir, set(jobs), partition

    def __call__(self, *, job, partition, attempt, event):
        marker = os.path.join(self.marker_dir, f"failed-{job}-{partition}")
        if job in self.jobs and partition == self.partition and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure after a push")


class FailFirstProposal:
    """``DNT._structure_hook``: the first structure task of partition 1 fails once it has made its
    proposals (model-parallel births)."""

    def __init__(self, marker_dir):
        self.marker_dir = marker_dir

    def __call__(self, *, partition, records):
        marker = os.path.join(self.marker_dir, f"failed-{partition}")
        if partition == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected failure in the structure phase")


class HoldFitState:
    """``DNT._fit_hook``: keep the fit state (the server, the shards) for a callback to look at."""

    def __call__(self, fit_state):
        self.fit = fit_state
