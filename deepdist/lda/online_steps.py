"""The two halves of one online VB step of :class:`~deepdist.lda.online.OnlineLDA`.

* :class:`_EStep` runs on the executors: gensim's E-step on one chunk, against the λ rows of
  the chunk's words, naming its chunk so the driver can sort it into its round;
* :class:`_MStep` is the driver's ``descent``: it merges the statistics of each block of rounds
  and blends the block into the model with gensim's M-step, blocks in order;
* :class:`_Rounds` is the tasks' ``wait_for``: which M-step a chunk waits for;
* :class:`_Shell` and :class:`_LdaParams` are what the DeepDist server holds and serves.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..errors import ConfigurationError
from ..params import ParamAdapter
from ..sparse import SparseRows

#: Documents of each chunk whose variational bound estimates the perplexity on the progress line.
_PERPLEXITY_DOCS = 128


class _Shell:
    """What the DeepDist server holds: a gensim ``LdaModel`` plus two small training arrays.

    Attributes:
        lda: the gensim model; ``lda.state.sstats`` (K × V) is the parameter the server
            serves, transposed to V × K.
        sstats_sum: Σ_w sstats[k, w] per topic (float64, servers × K), kept exact after every
            M-step so an executor can normalise the few λ rows it pulls. Row s is the sum over the
            words of model server s (one row on one server); readers add the rows up.
        eta_weight: 1.0 when ``expElogbeta`` includes the prior η, as after any M-step;
            0.0 for a new model, whose first ``expElogbeta`` gensim computes from the
            random initial statistics alone (float64, 1).
        msteps: M-steps blended so far (float64, 1): what tasks wait for.
        chunk_docs: documents received per (partition, chunk), flat ``partition × rounds +
            chunk`` (float64); an update names its chunk by the one entry it sends, and the
            sum is the documents whose statistics have been merged.
        chunk_pass: per (partition, chunk), flat as ``chunk_docs``: the pass (from 1) in which
            that chunk's statistics were last merged. A task retried after its executor died
            reads it to skip the E-steps of chunks its lost attempt already delivered.
    """

    def __init__(self, lda, partitions: int = 1, rounds: int = 1, servers: int = 1):
        from ..params import ModelSpec
        from ..shards import ShardLayout

        self.lda = lda
        sstats_t = lda.state.sstats.T
        # each server's rows of λ as DeepDist(servers=N) will split them
        edges = ShardLayout(ModelSpec.of({"sstats_t": sstats_t}), servers).edges["sstats_t"]
        self.sstats_sum = np.stack([sstats_t[lo:hi].T.sum(axis=1, dtype=np.float64)
                                    for lo, hi in zip(edges[:-1], edges[1:])])
        self.eta_weight = np.array([0.0 if lda.num_updates == 0 else 1.0])
        self.msteps = np.zeros(1, np.float64)
        self.partitions = max(1, partitions)
        self.rounds = max(1, rounds)
        self.chunk_docs = np.zeros(self.partitions * self.rounds, np.float64)
        self.chunk_pass = np.zeros(self.partitions * self.rounds, np.float64)


class _LdaParams(ParamAdapter):
    """The parameter arrays of a :class:`_Shell`: ``sstats_t`` is ``lda.state.sstats.T`` (V × K)."""

    #: with servers > 1 (:class:`deepdist.shards.ShardLayout`): λ's rows are split, each server's
    #: descent keeps its own partial topic sums, and the bookkeeping every descent reads is whole
    #: on every server
    sharding = {"replicated": ("eta_weight", "msteps", "chunk_docs", "chunk_pass"), "per_shard": ("sstats_sum",)}

    def __init__(self):
        super().__init__(["sstats_t", "sstats_sum", "eta_weight", "msteps", "chunk_docs", "chunk_pass"])

    def get(self, shell) -> dict:
        return {"sstats_t": shell.lda.state.sstats.T, "sstats_sum": shell.sstats_sum,
                "eta_weight": shell.eta_weight, "msteps": shell.msteps,
                "chunk_docs": shell.chunk_docs, "chunk_pass": shell.chunk_pass}

    def set(self, shell, params: dict) -> None:
        for name, array in params.items():
            if name == "sstats_t":
                shell.lda.state.sstats = array.T
            else:
                setattr(shell, name, array)

    @contextlib.contextmanager
    def stripped(self, shell):
        """The shell as broadcast: no parameters, no K × V ``expElogbeta``, no vocabulary."""
        lda = shell.lda
        saved = lda.expElogbeta, lda.id2word
        with super().stripped(shell):
            lda.expElogbeta, lda.id2word = None, None
            try:
                yield shell
            finally:
                lda.expElogbeta, lda.id2word = saved


def _flatten(chunk):
    """Word ids, counts and document offsets of a chunk of bag-of-words documents."""
    lengths = np.fromiter((len(doc) for doc in chunk), np.int64, count=len(chunk))
    total = int(lengths.sum())
    words = np.fromiter((w for doc in chunk for w, _ in doc), np.int64, count=total)
    counts = np.fromiter((c for doc in chunk for _, c in doc), np.float64, count=total)
    offsets = np.zeros(len(chunk) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return words, counts, offsets


def _check_words(words, num_terms):
    if len(words) and (words.min() < 0 or words.max() >= num_terms):
        raise ConfigurationError(
            f"word id out of range: the model has {num_terms} terms (ids 0..{num_terms - 1}), the corpus "
            f"holds ids {words.min()}..{words.max()}; was the corpus made with the model's id2word?")


def _block(chunk: int, update_every: int) -> int:
    """The M-step block of a partition's ``chunk``-th chunk: ``update_every`` rounds per block."""
    return chunk // update_every if update_every else 0


class _Rounds:
    """``wait_for(n)``: before its n-th chunk a task waits for M-step block b(n) − 1 − staleness."""

    def __init__(self, update_every: int, max_staleness: int, msteps_before: float):
        self.update_every = update_every
        self.max_staleness = max_staleness
        self.msteps_before = msteps_before

    def __call__(self, chunk: int):
        needed = _block(chunk, self.update_every) - self.max_staleness
        return None if needed <= 0 else ("msteps", self.msteps_before + needed)


class _EStep:
    """``gradient(shell, chunk)`` run on the executors: gensim's E-step on one chunk.

    Carries configuration only (it travels in the task closure): the seed and the pass, from
    which each partition derives its own random state, ``partitions`` and ``rounds`` (most
    chunks in a partition), by which it names its chunks in ``chunk_docs``, and ``marker``,
    the ``chunk_pass`` value of a chunk merged in this pass: a retried task skips those
    chunks (returns no update), since its lost attempt's statistics for them are in.
    """

    def __init__(self, seed: int, pass_: int, num_topics: int, num_terms: int, partitions: int = 1,
                 rounds: int = 1, marker: float | None = None, servers: int = 1):
        self.seed = seed
        self.servers = servers
        self.pass_ = pass_
        self.marker = marker
        self.num_topics = num_topics
        self.num_terms = num_terms
        self.partitions = max(1, partitions)
        self.rounds = max(1, rounds)
        self._random = {}
        self._chunks = {}  # (partition, attempt) -> chunks done
        self._flat = None  # (chunk, its flat arrays): rows() and __call__ see the same chunk

    def flatten(self, chunk):
        """:func:`_flatten` of ``chunk``, computed once for ``rows`` and ``__call__``."""
        if self._flat is None or self._flat[0] is not chunk:
            self._flat = (chunk, _flatten(chunk))
        return self._flat[1]

    def rows(self, chunk) -> dict:
        """The rows a chunk needs: λ of its words, all K topic sums, the weight of η and
        whether the chunk was merged in this pass already (by an attempt that died)."""
        words = np.unique(self.flatten(chunk)[0])
        _check_words(words, self.num_terms)
        wanted = {"sstats_t": words, "sstats_sum": np.arange(self.servers),
                  "eta_weight": np.zeros(1, np.int64)}
        if self.marker is not None:
            wanted["chunk_pass"] = np.array([self._slot(self._task_key())], np.int64)
        return wanted

    def _slot(self, key) -> int:
        """The ``chunk_docs`` entry of the task's next chunk (chunks are numbered as they come)."""
        return key[0] * self.rounds + min(self._chunks.get(key, 0), self.rounds - 1)

    @staticmethod
    def _task_key():
        from pyspark import TaskContext

        task = TaskContext.get()
        return (task.partitionId(), task.attemptNumber()) if task else (0, 0)

    def random_state(self):
        """This partition's random state, derived from (seed, pass, partition, attempt)."""
        key = self._task_key()
        state = self._random.get(key)
        if state is None:
            sequence = np.random.SeedSequence([self.seed, self.pass_, key[0], key[1]])
            state = self._random[key] = np.random.RandomState(sequence.generate_state(4))
        return state

    def __call__(self, shell, chunk):
        from scipy.special import psi

        from ..worker import report

        lda = shell.lda
        key = self._task_key()
        chunk_no = self._chunks.get(key, 0)
        if (self.marker is not None and chunk_no < self.rounds
                and shell.chunk_pass[self._slot(key)] >= self.marker):
            # merged in this pass by an attempt whose executor died: its E-step would be
            # wasted, as the driver merges each chunk once a pass
            self._chunks[key] = chunk_no + 1
            self._flat = None
            return {}
        words, counts, offsets = self.flatten(chunk)
        self._flat = None
        ids, local = np.unique(words, return_inverse=True)
        # λ for the chunk's words only, and exactly gensim's expElogbeta[:, ids]
        eta, weight = lda.eta, float(shell.eta_weight[0])
        if eta.ndim == 1:
            lam = shell.lda.state.sstats.T[ids] + weight * eta[ids, None]
            eta_sum = weight * float(eta.sum(dtype=np.float64))
        else:
            lam = shell.lda.state.sstats.T[ids] + weight * eta[:, ids].T
            eta_sum = weight * eta.sum(axis=1, dtype=np.float64)
        elog = (psi(lam.astype(np.float64)) - psi(shell.sstats_sum.sum(axis=0) + eta_sum)).T
        lda.expElogbeta = np.exp(elog).astype(lda.dtype)
        lda.random_state = self.random_state()
        local_chunk = [list(zip(local[a:b].tolist(), counts[a:b].tolist()))
                       for a, b in zip(offsets[:-1], offsets[1:])]
        gamma, sstats = lda.inference(local_chunk, collect_sstats=True)
        bound, scored = _chunk_bound(lda.alpha, gamma, elog, local, counts, offsets, _PERPLEXITY_DOCS)
        if scored:
            report(perplexity=math.exp(-bound / scored))
        self._chunks[key] = chunk_no + 1
        if chunk_no >= self.rounds:
            raise ConfigurationError(f"partition {key[0]} has more than the {self.rounds} chunks counted before "
                                     "the pass: the input RDD must give the same documents every time (cache it, "
                                     "or make it deterministic)")
        slot = np.array([key[0] * self.rounds + chunk_no], np.int64)
        return {"sstats_t": SparseRows(ids.astype(np.int32), sstats.T, (self.num_terms, self.num_topics)),
                "chunk_docs": SparseRows(slot, np.array([len(chunk)], np.float64), (self.partitions * self.rounds,))}


def _chunk_bound(alpha, gamma, elog_beta, local, counts, offsets, max_docs):
    """gensim's per-document variational bound, summed over the first ``max_docs`` documents.

    ``elog_beta`` holds E[log β] for the chunk's words (K × words); returns
    ``(bound, words scored)``. The corpus-level term for β is left out: this estimates
    the perplexity of the documents, not of the topics.
    """
    from scipy.special import gammaln, logsumexp, psi

    docs = min(max_docs, len(offsets) - 1)
    stop = int(offsets[docs])
    if stop == 0:
        return 0.0, 0.0
    gamma = gamma[:docs].astype(np.float64)
    alpha = np.asarray(alpha, np.float64)
    elog_theta = psi(gamma) - psi(gamma.sum(axis=1, keepdims=True))
    doc_of = np.repeat(np.arange(docs), np.diff(offsets[:docs + 1]))
    cts = counts[:stop]
    score = float(cts @ logsumexp(elog_theta[doc_of] + elog_beta[:, local[:stop]].T, axis=1))
    score += float(np.sum((alpha - gamma) * elog_theta) + np.sum(gammaln(gamma) - gammaln(alpha)))
    score += float(np.sum(gammaln(alpha.sum()) - gammaln(gamma.sum(axis=1))))
    return score, float(cts.sum())


class _Merged:
    """A block's merged statistics: λ's rows (as the server holds them) and its documents."""

    def __init__(self, like: np.ndarray):
        self.sstats_t = np.zeros_like(like)
        self.numdocs = 0.0


def _params(model) -> dict:
    """The arrays the descent steps: a :class:`_Shell`'s (one server), or a shard's rows of them."""
    return model if isinstance(model, dict) else _LdaParams().get(model)


class _MStep:
    """``descent(shell, update)`` on the driver: gensim's merge per block of rounds, then its blend.

    A block is ``update_every`` rounds (all of a pass when it is 0); its M-step happens when
    every partition's chunks of the block have arrived, blocks in order. Each chunk is merged
    once a pass: a chunk that arrives again (from a task retried after its executor died, which
    starts its partition over) is dropped and counted in ``repeated``. Merging it again would
    give its documents twice the weight of the others in the topics.

    The merge and gensim's blend are done row by row on λ's rows as the server holds them, so
    with ``servers > 1`` each shard runs its own copy on its own rows: every shard sees every
    chunk's tag (a replicated parameter), so all make the same M-steps at the same arrivals.
    The copy a shard gets carries the gensim model's scalars, not the model.
    """

    def __init__(self, lda, *, chunksize: int, chunks, update_every: int, decay: float, offset: float):
        self.lda = lda
        self.chunksize = chunksize
        self.update_every = update_every
        self.decay = decay
        self.offset = offset
        self.rounds = max([1, *chunks])
        self.need: dict[int, int] = {}  # block -> chunks it waits for
        for count in chunks:
            for chunk in range(count):
                block = _block(chunk, update_every)
                self.need[block] = self.need.get(block, 0) + 1
        self.pass_ = 0
        self.msteps = 0
        self.rho = None
        self.repeated = 0  # chunks dropped because they had been merged in their pass already
        self.start_pass(0)

    def __getstate__(self):
        # shipped to a shard's process: the gensim model's scalars ρ and the blend need, not its K x V
        state = dict(self.__dict__)
        lda = state.pop("lda")
        if lda is not None:
            state["_num_updates"], state["_numdocs"] = lda.num_updates, lda.state.numdocs
        return {**state, "lda": None}

    @property
    def num_updates(self):
        """gensim's count of documents merged in the first pass: ρ's clock."""
        return self.lda.num_updates if self.lda is not None else self._num_updates

    @property
    def numdocs(self):
        """The corpus size gensim's blend stretches the statistics to."""
        return self.lda.state.numdocs if self.lda is not None else self._numdocs

    def start_pass(self, pass_: int) -> None:
        self.pass_ = pass_
        self.next_block = 0
        self.pending: dict = {}   # block -> _Merged
        self.arrived: dict = {}   # block -> {(partition, chunk)}
        self.merged: set = set()  # (partition, chunk) merged in this pass
        self.docs_merged = 0.0    # their documents

    def __call__(self, model, update):
        params = _params(model)
        tag = update["chunk_docs"]
        slot, docs = int(tag.indices[0]), float(tag.values[0])
        partition, chunk = divmod(slot, self.rounds)
        if (partition, chunk) in self.merged:
            self.repeated += 1
            return
        self.merged.add((partition, chunk))
        block = _block(chunk, self.update_every)
        other = self.pending.get(block)
        if other is None:
            other = self.pending[block] = _Merged(params["sstats_t"])
        part = update.get("sstats_t")   # a shard none of whose words the chunk has gets none
        if part is not None and len(part.indices):
            part = part.coalesce()
            other.sstats_t[part.indices] += part.values
        other.numdocs += docs
        self.docs_merged += docs
        params["chunk_docs"][slot] += docs
        params["chunk_pass"][slot] = self.pass_ + 1
        self.arrived.setdefault(block, set()).add((partition, chunk))
        while (self.next_block in self.pending
               and len(self.arrived.get(self.next_block, ())) >= self.need.get(self.next_block, 0)):
            self.mstep(params, self.pending.pop(self.next_block))
            self.arrived.pop(self.next_block, None)
            self.next_block += 1

    def flush(self, model) -> bool:
        """Blend what is merged but not yet blended (gensim does this at the end of each pass)."""
        params = _params(model)
        blended = False
        for block in sorted(self.pending):
            other = self.pending.pop(block)
            if other.numdocs > 0:
                self.mstep(params, other)
                blended = True
        self.arrived.clear()
        return blended

    def mstep(self, params: dict, other: _Merged) -> None:
        """gensim's ``LdaModel.do_mstep`` (``LdaState.blend`` to the model's corpus size) on the
        rows at hand, without its logging of topics and of the topic change."""
        rho = pow(self.offset + self.pass_ + self.num_updates / self.chunksize, -self.decay)
        sstats = params["sstats_t"]
        target = self.numdocs
        # the statistics held are at the target size already: gensim's first scale is 1
        sstats *= (1.0 - rho) * 1.0
        scale = 1.0 if other.numdocs == 0 or target == other.numdocs else 1.0 * target / other.numdocs
        sstats += rho * scale * other.sstats_t
        if self.pass_ == 0:  # gensim counts updates in the first pass only
            if self.lda is not None:
                self.lda.num_updates += other.numdocs
            else:
                self._num_updates += other.numdocs
        sums = params["sstats_sum"]   # this server's row (its words), and zeros in any others it holds
        sums[0] = sstats.T.sum(axis=1, dtype=np.float64)
        sums[1:] = 0.0
        params["eta_weight"][0] = 1.0  # expElogbeta now comes from λ = η + sstats
        params["msteps"][0] += 1
        self.msteps += 1
        self.rho = rho
