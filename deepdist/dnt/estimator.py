"""The DNT estimator: a topic tree grown by memoized variational inference on Spark.

The model and the updates are in :mod:`deepdist.dnt.variational`, the batches and memos in
:mod:`deepdist.dnt.memo`, the passes in :mod:`deepdist.dnt.fit`, births and merges in
:mod:`deepdist.dnt.moves`.

**Where the state lives.** The summed statistics S (Σλx as a V × ``max_nodes`` float64 array, Σλ
and the entropies) are parameters of the DeepDist server; tasks push ΔS = S_b,new − S_b,old
with ``additive=True``, so the server's ledger keeps exactly one attempt of each partition's
pushes whatever Spark retries. The batches and their memos (each document's responsibilities)
are a cached RDD, one shard per partition. The driver recomputes the sticks and the means after
every round and publishes β A(η) µ (``weights``, V × ``max_nodes``), of which a task pulls only
the rows of its batch's words.

**A tree that changes shape in arrays that do not.** The server's arrays have a fixed capacity
of ``max_nodes`` slots; a birth takes a free slot, a merge frees one (:mod:`deepdist.dnt.tree`).
A merge's renumbering reaches the memos as an operation that every task of the next job replays
on all of its batches, so memos and server stay indexed alike; the fitted model numbers the
nodes breadth first.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigurationError
from ..estimator import Estimator
from ..executors import ensure_executors
from ..session import spark_context
from ..validation import check_bool, check_choice, check_int, check_mapping, check_one_server, check_real
from ..vocabulary import Vocabulary, build_vocabulary, vocabulary_from_id2word
from . import fit as fit_
from . import variational as vi
from .corpus import collect_summaries, make_shards, term_frequencies
from .tree import Tree

__all__ = ["DNT"]

log = logging.getLogger("deepdist.dnt")


class DNT(Estimator):
    """A tree of topics on the unit sphere (Hu et al., ICML 2015), fitted on Spark.

    Documents are L2-normalised term-frequency vectors x; each node of a tree has a mean
    direction, and x ~ vMF(µ_z, β) for the node z a tree-structured stick-breaking process
    picks. The tree starts as its root and grows by births and shrinks by merges, each
    accepted only if the evidence lower bound rises; between moves, memoized variational
    inference raises it monotonically.

    Parameters (keyword-only):
        alpha: ν ~ Beta(1, α), the stick of stopping at a node (larger: documents go deeper).
        gamma: ψ ~ Beta(1, γ), the sticks among siblings (larger: more, more even children).
        kappa0: the root's concentration about the data's normalised centroid.
        kappa1: each child's concentration about its parent's mean.
        beta: the documents' concentration about their node's mean (fixed; the paper's 10⁴).
        max_nodes: the tree's capacity (the server's arrays have this many node columns).
        max_depth: at most this many levels (the root is level 1; the model's ``depth_`` counts
            the root as 0), for births and moves alike.
        max_children: at most this many children per node.
        epochs: passes over the data (formerly ``passes``).
        grow_epochs: structure moves follow passes up to this one (None: two thirds of ``epochs``);
            the passes after it only refine the tree they leave.
        batches_per_partition: batches of memoized VI per partition: a pass is this many Spark
            jobs, each visiting one batch of every partition, with a global step after each.
        birth_every, merge_every: try births / merges after every this many passes (0: never).
        births_per_pass: nodes (drawn ∝ mass) that may each get a child after a birth pass.
        birth_children: children a birth proposes at once (a tree grows by up to this many times
            a pass; more than 1 for large corpora, where a pass is costly).
        birth_docs: documents collected per birth target (a random subset of its documents).
        merge_candidates: most similar pairs whose merge is tried after a merge pass.
        move_candidates: nodes that may move (with their subtrees) under a sibling or their
            grandparent after a merge pass, when their mean is closer to it than to their parent's.
        mean_sweeps: top-down sweeps of the means' coordinate ascent per global step.
        verify: ``"sketch"`` (compare a linear sketch of S with the memos' after every job and
            rebuild S from the memos on a mismatch) or ``"full"`` (compare all of S every job).
        structure: where a pass's births are proposed: ``"driver"`` (one after the other, each on
            the tree the last left), ``"parallel"`` (model-parallel: Spark tasks each propose the
            births of the targets they own against the same base, the driver confirms them in
            target order, :mod:`deepdist.dnt.parallel`) or ``"batch"`` (the same proposals made on
            the driver: what ``"parallel"`` equals).
        history: None for one tree of all the documents; an integer h for a tree per epoch, each
            dependent on the last (Hu et al., section 2): a node's mean is drawn about
            κ₁·(its parent's mean) + κ₂·(its own mean at t−1), and its sticks count the documents
            it held in epochs t−h … t−1 (0: the means depend, the sticks do not).
        kappa2: with ``history``, each node's concentration about its own mean of the last epoch.
        smooth: with ``history``, passes per epoch of a backward sweep after the forward one
            (0: none, the paper's online inference). Each epoch is refined again, from the next
            epoch's refined tree, with both neighbours' means as priors: the smoothing posterior,
            in which an epoch also learns from the documents after it and holds every node of the
            last epoch's tree (:func:`deepdist.dnt.timeline._smooth`).
        id2word: the vocabulary when documents are word ids or bags of words (also a ``fit``
            argument); otherwise Spark builds it from the tokens with ``min_count``, ``max_df``,
            ``stop_words``, ``max_vocab``.
        seed: seeds births (targets, subsets, initial children).
        spark, server_options, progress, callbacks: as every deepdist estimator
            (``callbacks=[f(estimator, record)]`` after every pass).

    Attributes:
        model_: the fitted :class:`~deepdist.dnt.model.DNTModel`.
        history_: one record per pass: ``epoch``, ``elbo`` (after the pass's global steps),
            ``elbo_after_moves``, ``nodes``, ``births``/``births_proposed``,
            ``merges``/``merges_proposed``, ``changed_docs`` (documents whose responsibilities
            moved), ``bytes_pushed``, ``bytes_pulled``, ``repaired``, ``seconds``, ``elapsed``,
            ``structure_seconds`` (the moves after the pass; ``birth_seconds`` of them the births),
            ``time`` (the epoch, in a fit with ``history``), ``sweep`` (``"forward"`` or
            ``"backward"``, in a fit with ``smooth``),
            and with held-out documents ``heldout_vmf`` and ``heldout_paper``.
        forward_model_: with ``smooth``, the timeline of the forward sweep alone (each epoch's
            tree as the documents up to it left it).
        elbo_trace_: the bound after every global step: ``(job, elbo, moved)``, ``moved`` when
            a structure move came before it.
        repairs_: times the server's statistics were rebuilt from the memos.

    Example (``local[2]``)::

        >>> from deepdist.dnt import DNT                                      # doctest: +SKIP
        >>> docs = spark.sparkContext.textFile("titles.txt").map(str.split)  # doctest: +SKIP
        >>> dnt = DNT(max_nodes=100, epochs=20, seed=0).fit(docs)              # doctest: +SKIP
        >>> print(dnt.model_.show_tree(num_words=5))                          # doctest: +SKIP
    """

    _renamed = {"passes": "epochs"}
    #: tests: ``_task_hook(job=, partition=, attempt=, event=)`` in the tasks after each push;
    #: ``_fit_hook(fit_state)`` on the driver once the server runs
    _task_hook = None
    _fit_hook = None
    #: tests: ``_structure_hook(partition=, records=)`` in the tasks of model-parallel births
    _structure_hook = None

    def __init__(self, *, alpha: float = 0.5, gamma: float = 0.5, kappa0: float = 100.0, kappa1: float = 30000.0,
                 beta: float = 1e4, max_nodes: int = 400, max_depth: int = 8, max_children: int = 50,
                 epochs: int = 20, grow_epochs: int | None = None, batches_per_partition: int = 2, birth_every: int = 1, merge_every: int = 2,
                 births_per_pass: int = 50, birth_children: int = 1, birth_docs: int = 2000,
                 merge_candidates: int = 20, move_candidates: int = 20,
                 mean_sweeps: int = 2, verify: str = "sketch", structure: str = "driver", history: int | None = None,
                 kappa2: float = 30000.0, smooth: int = 0, id2word=None, min_count: int = 1,
                 max_df: float = 1.0, stop_words=(), max_vocab: int | None = None, seed: int = 0, spark=None,
                 server_options: dict | None = None, progress: bool = True, callbacks=(), **renamed):
        self.alpha, self.gamma, self.kappa0, self.kappa1, self.beta = alpha, gamma, kappa0, kappa1, beta
        self.max_nodes, self.max_depth, self.max_children = max_nodes, max_depth, max_children
        self.epochs, self.grow_epochs, self.batches_per_partition = epochs, grow_epochs, batches_per_partition
        self.birth_every, self.merge_every, self.births_per_pass = birth_every, merge_every, births_per_pass
        self.birth_docs, self.merge_candidates, self.mean_sweeps = birth_docs, merge_candidates, mean_sweeps
        self.birth_children = birth_children
        self.move_candidates = move_candidates
        self.history, self.kappa2, self.smooth = history, kappa2, smooth
        self.structure = structure
        self.verify, self.id2word, self.min_count, self.max_df = verify, id2word, min_count, max_df
        self.stop_words, self.max_vocab, self.seed, self.spark = stop_words, max_vocab, seed, spark
        self.server_options, self.progress, self.callbacks = server_options, progress, callbacks
        self._init_renamed(renamed)

    def _validate(self) -> None:
        for name in ("alpha", "gamma", "beta"):
            check_real(name, getattr(self, name), above=0)
        check_int("history", self.history, minimum=0, none=True)
        for name in ("kappa0", "kappa1", "kappa2"):
            check_real(name, getattr(self, name), minimum=0)
        for name in ("max_nodes", "max_depth", "max_children", "epochs", "batches_per_partition", "mean_sweeps",
                     "births_per_pass", "birth_children", "birth_docs"):
            check_int(name, getattr(self, name))
        for name in ("birth_every", "merge_every", "merge_candidates", "move_candidates", "seed", "min_count",
                     "smooth"):
            check_int(name, getattr(self, name), minimum=0)
        check_int("grow_epochs", self.grow_epochs, minimum=0, none=True)
        check_real("max_df", self.max_df, above=0)
        check_choice("verify", self.verify, ("sketch", "full"))
        check_choice("structure", self.structure, ("driver", "parallel", "batch"))
        check_bool("progress", self.progress)
        options = check_mapping("server_options", self.server_options)
        check_one_server(options, "DNT", "the driver's global step and structure moves read every node's "
                                          "statistics over the whole vocabulary")
        if "spark" in options or "progress" in options:
            raise ConfigurationError("server_options must not hold spark or progress: they are DNT's own "
                                     f"parameters, got {sorted(options)}")

    def _vocabulary(self, docs_rdd, id2word) -> Vocabulary:
        if id2word is None:
            return build_vocabulary(docs_rdd, min_count=self.min_count, max_df=self.max_df,
                                    stop_words=self.stop_words, max_vocab=self.max_vocab)
        return vocabulary_from_id2word(id2word)

    def fit(self, docs_rdd, id2word=None, heldout=None) -> "DNT":
        """Grow the tree on ``docs_rdd``; return the estimator, the tree in ``model_``.

        ``docs_rdd`` holds token lists, or with ``id2word`` word-id lists, bags of words
        ``[(word_id, count), ...]`` or ``(doc_id, bag of words)`` (a local list is parallelised on
        ``spark``'s context); its partitions are the shards. ``heldout`` documents of the same kind
        (a local list) are scored after every pass (``heldout_vmf``, ``heldout_paper``).

        With ``history`` set, the fit is dependent over time: ``docs_rdd`` holds
        ``(epoch, document)`` pairs, or is a list of RDDs, one per epoch in order; each epoch's tree
        starts from the last one (:mod:`deepdist.dnt.timeline`), ``epochs`` passes an epoch, and
        ``model_`` is a :class:`~deepdist.dnt.timeline.DNTTimeline` (``heldout`` is then a
        mapping epoch -> documents).
        """
        self._validate()
        self._begin_fit()
        self.__dict__.pop("model_", None)
        self.repairs_, self.elbo_trace_ = 0, []
        self.__dict__.pop("forward_model_", None)
        if self.history is not None:
            from .timeline import fit_over_time

            return fit_over_time(self, docs_rdd, id2word if id2word is not None else self.id2word, heldout)
        if not hasattr(docs_rdd, "mapPartitions"):
            docs_rdd = spark_context(self.spark).parallelize(list(docs_rdd))
        ensure_executors(docs_rdd.context)
        vocabulary = self._vocabulary(docs_rdd, id2word if id2word is not None else self.id2word)
        fit = self._start(docs_rdd, vocabulary, heldout)
        try:
            self._run(fit, np.random.default_rng(self.seed))
        except BaseException:
            self.__dict__.pop("model_", None)
            raise
        return self

    def _run(self, fit: fit_.FitState, rng, time_label=None, extra=None) -> None:
        """The passes of one fit state (one epoch of a dependent fit) on a server of its own;
        sets ``model_`` to its snapshot. ``extra``: fields for every pass's record."""
        from ..core import DeepDist
        from .. import optim

        try:
            with DeepDist(fit.model, spark=fit.state.context, progress=self.progress,
                          **check_mapping("server_options", self.server_options)) as dd:
                dd.set_descent(optim.add, additive=True)
                fit.dd = dd
                if self._fit_hook is not None:
                    self._fit_hook(fit)
                fit_.global_step(self, fit, False, trace=False)
                while fit.done < self.epochs:
                    record = fit_.run_pass(self, fit, rng)
                    if time_label is not None:
                        record["time"] = time_label
                    record.update(extra or {})
                    if fit.heldout is not None:
                        model = self._snapshot(fit)
                        record["heldout_vmf"] = model.score(fit.heldout, kind="vmf")
                        record["heldout_paper"] = model.score(fit.heldout, kind="paper")
                    log.info("DNT %spass %d/%d: elbo %.8g, %d nodes (+%d births, -%d merges), %d documents moved, "
                             "%.2fs%s", "" if time_label is None else f"epoch {time_label} ", fit.done, self.epochs,
                             record["elbo"], record["nodes"], record["births"], record["merges"],
                             record["changed_docs"], record["seconds"],
                             f", held-out {record['heldout_vmf']:.6g}" if "heldout_vmf" in record else "")
                    if getattr(self, "_callbacks", ()):
                        self.model_ = self._snapshot(fit)
                    self._record(record)
                self.model_ = self._snapshot(fit)
                self.status_ = dd.status()
        finally:
            fit.dd = None
            self.repairs_ += fit.repairs
            self.elbo_trace_ += fit.elbo_trace
            fit.state.unpersist()

    def _start(self, docs_rdd, vocabulary: Vocabulary, heldout, warm=None) -> fit_.FitState:
        """The fit state of ``docs_rdd``: its shards, cached, and a tree (``warm``: the fit state
        of the previous epoch, whose tree, means and identities this one starts from)."""
        from pyspark import StorageLevel

        V, cap = len(vocabulary), self.max_nodes
        if V < 2:
            raise ConfigurationError(f"the vocabulary holds {V} words; a DNT needs at least 2")
        shards = make_shards(docs_rdd, vocabulary, V, self.batches_per_partition, cap).setName(
            "DNT shards").persist(StorageLevel.MEMORY_AND_DISK)
        centroid, num_docs = np.zeros(V), 0
        for n, words, sums in collect_summaries(shards):
            num_docs += n
            centroid[words] += sums
        if num_docs == 0:
            shards.unpersist()
            raise ConfigurationError("no document has a word of the vocabulary: nothing to fit")
        root_prior = centroid / np.linalg.norm(centroid)
        hyper = vi.Hyper(float(self.alpha), float(self.gamma), float(self.kappa0), float(self.kappa1),
                         float(self.beta), V, root_prior)
        if warm is None:
            tree = Tree(cap)
            q = vi.Globals.empty(cap, V)
            q.mu[0] = root_prior
        else:
            tree, q = warm.tree.copy(), warm.q.copy()
        stats = np.zeros((V, cap))
        weights = np.zeros((V, cap))
        model = {"stats": stats, "stats_flat": stats.reshape(-1), "mass": np.zeros(cap), "entropy": np.zeros(cap),
                 "weights": weights, "log_prior": np.full(cap, -np.inf)}
        fit = fit_.FitState(vocabulary, hyper, tree, q, model, shards, num_docs, shards.getNumPartitions())
        if warm is not None:
            fit.ids, fit.next_id, fit.warm = warm.ids.copy(), warm.next_id, True
        if heldout is not None:
            rows = [term_frequencies(d, vocabulary, V) for d in heldout]
            fit.heldout = _csr(rows, V)
        log.info("DNT: %d documents, %d words, %d partitions x %d batches, up to %d nodes", num_docs, V,
                 fit.partitions, self.batches_per_partition, cap)
        return fit

    def _snapshot(self, fit: fit_.FitState):
        from .model import DNTModel

        parents, slots = fit_.compact(fit)
        stats = fit_.effective_stats(fit, history=False)
        params = {name: getattr(self, name) for name in ("alpha", "gamma", "kappa0", "kappa1", "max_nodes",
                                                         "max_depth", "epochs", "seed")}
        # a node's Σλ is a sum of deltas: one that lost all its documents can sit a round-off below 0
        mass = np.maximum(stats.mass[slots], 0.0)
        return DNTModel(parents, fit.q.mu[slots], fit.q.eta[slots], fit.q.log_prior[slots], mass,
                        float(self.beta), fit.vocabulary.id2word, history=list(getattr(self, "history_", ())),
                        params=params)

    def transform(self, docs):
        """Node posteriors of ``docs`` (see :meth:`DNTModel.transform`)."""
        self._check_fitted()
        return self.model_.transform(docs)


def _csr(rows, num_words):
    """``(indptr, indices, data)`` of unit tf rows (empty documents keep an empty row)."""
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(w) for w, _ in rows], out=indptr[1:])
    indices = np.concatenate([w for w, _ in rows]) if rows else np.zeros(0, np.int64)
    data = np.concatenate([v for _, v in rows]) if rows else np.zeros(0)
    return indptr, indices.astype(np.int64), data
