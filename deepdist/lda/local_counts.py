"""A Gibbs task's local copy of the shared counts, and the part of it not yet pushed.

A task samples against its own copy of n_wk and n_k. Between pushes the copy moves for two
reasons: the task's own sweeps, which it must push, and the other tasks' changes merged in,
which it must not push back. :class:`LocalCounts` keeps that apart in the cheaper of two ways:

* ``"tokens"``: keep the assignments as of the last push; the unpushed change is the count
  difference of the two assignments (:func:`.sampler.sparse_delta`, O(tokens));
* ``"table"``: keep the table as of the last push, with merged changes added to it too; the
  unpushed change is then the difference of the two tables (O(V·K), two sequential passes).

``"auto"`` picks the table when its cells, weighted by their relative cost, are fewer than the
partition's tokens: a table pass reads memory in order, a token comparison jumps between rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError
from . import _delta_kernels

# cost of a cell of the table difference, in units of a token's comparison (a sequential pass
# against a random row's update)
_TABLE_CELL_COST = 0.35


class LocalCounts:
    """n_wk (V, K) int32 and n_k (K,) int64 of one task, tracking its changes since the last push.

    Example::

        >>> import numpy as np
        >>> from deepdist.lda.local_counts import LocalCounts
        >>> words = np.array([0, 1, 1], np.int32)
        >>> topics = np.array([0, 1, 1], np.int32)
        >>> local = LocalCounts(words, topics, num_words=2, num_topics=2)
        >>> local.word_topic[...] = [[1, 0], [0, 2]]; local.topic_totals[...] = [1, 2]
        >>> local.mark_pushed()                   # the copy now equals what the server holds
        >>> topics[0] = 1; local.word_topic[0] = [0, 1]; local.topic_totals[...] = [0, 3]
        >>> local.take_unpushed()                 # flat (w*K + k) indices and their changes
        (array([0, 1]), array([-1,  1], dtype=int32))
    """

    def __init__(self, words, topics, *, num_words, num_topics, method="auto"):
        self.words, self.topics, self.K = words, topics, int(num_topics)
        self.word_topic = np.zeros((num_words, num_topics), np.int32)
        self.topic_totals = np.zeros(num_topics, np.int64)
        if method == "auto":
            method = "table" if self.word_topic.size * _TABLE_CELL_COST < words.size else "tokens"
        if method not in ("table", "tokens"):
            raise ConfigurationError(f"method must be 'auto', 'table' or 'tokens', got {method!r}")
        self.method = method
        self._pushed = None

    @property
    def arrays(self) -> dict:
        """The copy as the model's named parameters, to be filled by a pull."""
        return {"word_topic": self.word_topic, "topic_totals": self.topic_totals}

    def mark_pushed(self):
        """Declare the copy and the server equal (after the first pull)."""
        if self.method == "table":
            self._pushed = self.word_topic.reshape(-1).copy()
        else:
            self._pushed = self.topics.copy()

    def take_unpushed(self):
        """The task's own change of n_wk since the last push, as sorted flat COO; marks it pushed."""
        if self.method == "table":
            return _delta_kernels.take_table_delta(self.word_topic.reshape(-1), self._pushed)
        index, value = _delta_kernels.sparse_delta(self.words, self._pushed, self.topics, self.K)
        self._pushed = self.topics.copy()
        return index, value

    def merge(self, index, value):
        """Add other tasks' changes (flat COO: int32 or int64 indices, int32 values) to the copy;
        they are not ours to push."""
        _delta_kernels.apply_sparse_delta(self.word_topic, self.topic_totals, index, value)
        if self.method == "table":
            _delta_kernels.add_sparse(self._pushed, index, value)

    def rebase(self, pull) -> int:
        """Replace the copy by the server's counts (``pull(arrays)`` fills them and returns the
        version), keeping the unpushed change on top; returns the version."""
        if self.method == "table":  # it also sets the reference table, which the pull replaces below
            index, value = _delta_kernels.take_table_delta(self.word_topic.reshape(-1), self._pushed)
        else:  # the assignments as of the last push stay: the change is still unpushed
            index, value = _delta_kernels.sparse_delta(self.words, self._pushed, self.topics, self.K)
        version = pull(self.arrays)
        if self.method == "table":
            self._pushed[...] = self.word_topic.reshape(-1)
        _delta_kernels.apply_sparse_delta(self.word_topic, self.topic_totals, index, value)
        return version
