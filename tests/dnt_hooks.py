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


class HoldFitState:
    """``DNT._fit_hook``: keep the fit state (the server, the shards) for a callback to look at."""

    def __call__(self, fit_state):
        self.fit = fit_state
