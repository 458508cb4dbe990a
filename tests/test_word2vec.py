"""word2vec on deepdist: the Wikipedia reader, the evaluators and Downpour training on local[2]."""

import bz2
import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest
from gensim.corpora import WikiCorpus
from gensim.models import KeyedVectors, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from gensim.test.utils import datapath

from deepdist import DeepDist
from deepdist.errors import ConfigurationError, CorpusError, NotFittedError
from deepdist.sparse import SparseRows
from deepdist.datasets.wikipedia import read_articles, sentences, split_heldout
from deepdist.word2vec import AddDeltas, DistributedWord2Vec, RowAdaGrad, count_vocabulary
from deepdist.word2vec.training import _Gradient, _jobs_of, _Rows, _Served
from deepdist.word2vec.evaluate import HeldoutSGNSLoss

PARAMS = ["w2v.wv.vectors", "w2v.syn1neg", "words_done", "updates_in", "updates_out", "task_totals"]
DUMP = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


@pytest.fixture(scope="module")
def articles(sc):
    """The shipped dump's articles, read by Spark: (title, tokens)."""
    return read_articles(sc, DUMP, partitions=4).collect()


@pytest.fixture(scope="module")
def corpus(articles):
    """A small slice: 30 articles as sentences of <= 1000 tokens, and 4 held-out articles."""
    chosen = sorted(articles)[:34]
    train = [tokens[i:i + 1000] for _, tokens in chosen[:30] for i in range(0, len(tokens), 1000)]
    heldout = [tokens for _, tokens in chosen[30:]]
    return train, heldout


# -- reading ---------------------------------------------------------------------------------
def test_dump_reader_matches_gensim_wikicorpus(articles):
    corpus = WikiCorpus(DUMP, dictionary={}, processes=1)
    corpus.metadata = True
    expected = {title: tokens for tokens, (_, title) in corpus.get_texts()}
    assert dict(articles) == expected


_LOCAL_DUMP = """\
<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="de">
  <siteinfo>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Diskussion</namespace>
      <namespace key="6" case="first-letter">Datei</namespace>
      <namespace key="14" case="first-letter">Kategorie</namespace>
    </namespaces>
  </siteinfo>
  <page>
    <title>Berlin</title><ns>0</ns><id>1</id>
    <revision><text>Berlin ist die Hauptstadt. [[Datei:Bild.jpg|mini|Das Brandenburger Tor]]
Die Stadt liegt an der [[Spree|Spree]]. [[Kategorie:Ort]]</text></revision>
  </page>
  <page>
    <title>Hauptstadt Deutschlands</title><ns>0</ns><id>2</id><redirect title="Berlin" />
    <revision><text>#WEITERLEITUNG [[Berlin]] Berlin Berlin Berlin</text></revision>
  </page>
  <page>
    <title>Diskussion:Berlin</title><ns>1</ns><id>3</id>
    <revision><text>Eine Diskussion über Berlin und die Stadt</text></revision>
  </page>
</mediawiki>
"""


def test_dump_reader_uses_the_dumps_own_namespaces(sc, tmp_path):
    path = tmp_path / "dewiki-test-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(_LOCAL_DUMP.encode("utf-8")))
    got = read_articles(sc, str(path), min_tokens=1).collect()
    assert [title for title, _ in got] == ["Berlin"]          # no redirect, no talk page
    tokens = got[0][1]
    # the localized category link is gone; of the localized file link only the caption is left
    assert tokens == ["berlin", "ist", "die", "hauptstadt", "das", "brandenburger", "tor",
                      "die", "stadt", "liegt", "an", "der", "spree"]


def test_text_directory_one_article_per_line(sc, tmp_path):
    (tmp_path / "part-0.txt").write_text("Один два три четыре\nshort\n", encoding="utf-8")
    (tmp_path / "part-1.txt").write_text("Ein zwei drei vier fünf\n", encoding="utf-8")
    got = read_articles(sc, str(tmp_path), min_tokens=3).collect()
    assert sorted(tokens for _, tokens in got) == [["ein", "zwei", "drei", "vier", "fünf"],
                                                     ["один", "два", "три", "четыре"]]
    train, heldout = split_heldout(sc.parallelize(got), fraction=0.5, seed=3)
    assert train.count() + heldout.count() == 2
    assert sentences(sc.parallelize(got), max_length=2).count() == 5


# -- evaluation ---------------------------------------------------------------------------------
def test_heldout_loss_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    counts = {"a": 10, "b": 5, "c": 3, "d": 1}
    evaluator = HeldoutSGNSLoss(counts, [["a", "b", "x", "c", "d", "a"]], window=2, negative=3, seed=7)
    vectors, output = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    rows = np.arange(4)
    ids = [0, 1, 2, 3, 0]  # "x" is dropped before windowing
    expected, pair = 0.0, 0
    pairs = [(c, o) for off in (1, 2) for c, o in
             list(zip(ids[:-off], ids[off:])) + list(zip(ids[off:], ids[:-off]))]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    for (c, o), negatives in zip(pairs, evaluator.negatives):
        expected -= np.log(sig(vectors[c] @ output[o]))
        expected -= sum(np.log(sig(-vectors[c] @ output[n])) for n in negatives)
        pair += 1
    assert evaluator.pairs_ == pair == 14 and evaluator.words_ == 5
    assert evaluator.loss(vectors, output, rows) == pytest.approx(expected / 5)


def test_heldout_loss_refuses_what_it_cannot_score():
    with pytest.raises(CorpusError, match="no held-out word"):
        HeldoutSGNSLoss({"a": 3}, [["x", "y"]])
    hs = Word2Vec(vector_size=4, min_count=1, hs=1, negative=0)
    hs.build_vocab_from_freq({"a": 3, "b": 2})
    with pytest.raises(ConfigurationError, match="negative sampling"):
        HeldoutSGNSLoss({"a": 3, "b": 2}, [["a", "b"]])(hs)
    other = Word2Vec(vector_size=4, min_count=1)
    other.build_vocab_from_freq({"a": 3})
    with pytest.raises(ConfigurationError, match="1 evaluation words are not in the model's vocabulary"):
        HeldoutSGNSLoss({"a": 3, "b": 2}, [["a", "b"]])(other)


# -- training pieces ------------------------------------------------------------------------------
@pytest.mark.parametrize("partitions", [3, 12])  # counters merged on the driver; a shuffle
def test_vocabulary_is_counted_on_spark(sc, corpus, partitions):
    train, _ = corpus
    word_freq, total, n = count_vocabulary(sc.parallelize(train, partitions), min_count=5)
    from collections import Counter
    counts = Counter(w for s in train for w in s)
    assert word_freq == {w: c for w, c in counts.items() if c >= 5}
    assert total == sum(counts.values()) and n == len(train)


def test_jobs_follow_gensims_batching():
    vocab = {"a": 0, "b": 1}
    jobs = list(_jobs_of([["a", "z", "b"], ["b"] * 4, ["a"] * 9], vocab, job_words=8))
    assert [raw for raw, _ in jobs] == [7, 9]
    assert [list(a) for a in jobs[0][1]] == [[0, 1], [1, 1, 1, 1]]


def test_row_adagrad_scales_rows_and_leaves_others():
    model = Word2Vec(vector_size=4, min_count=1, seed=1)
    model.build_vocab_from_freq({"a": 3, "b": 2, "c": 1})
    served = _Served(model)
    before = model.wv.vectors.copy()
    rule = RowAdaGrad(lr=0.1)
    step = SparseRows(np.array([1]), np.full((1, 4), 2.0, np.float32), model.wv.vectors.shape)
    rule(served, {"w2v.wv.vectors": step, "words_done": np.array([5])})
    rule(served, {"w2v.wv.vectors": step, "words_done": np.array([5])})
    assert served.words_done[0] == 10
    np.testing.assert_array_equal(model.wv.vectors[[0, 2]], before[[0, 2]])
    # first step lr * 2 / sqrt(4), second lr * 2 / sqrt(8)
    expected = before[1] + 0.1 * (1 + 2 / np.sqrt(8))
    np.testing.assert_allclose(model.wv.vectors[1], expected, rtol=1e-5)
    assert rule.accumulators["w2v.wv.vectors"].shape == (3,)


def test_stale_rows_get_a_share_of_their_delta():
    model = Word2Vec(vector_size=2, min_count=1, seed=1)
    model.build_vocab_from_freq({"a": 3, "b": 2, "c": 1})
    served = _Served(model)
    start = model.wv.vectors.copy()
    one = np.ones((2, 2), np.float32)
    rule = AddDeltas(stale_rows=True)
    # two tasks pulled rows 0 and 1 (row 1 also pushed once before): counts seen 0 and 1
    served.updates_in[1] = 1
    for seen in ([0, 1], [0, 1]):
        rule(served, {"w2v.wv.vectors": SparseRows(np.array([0, 1]), one, model.wv.vectors.shape),
                      "updates_in": SparseRows(np.array([0, 1]), np.array(seen), (3,))})
    # the first push is fresh (whole delta), the second finds both rows pushed once since its pull
    np.testing.assert_allclose(model.wv.vectors[:2] - start[:2], [[1.5, 1.5], [1.5, 1.5]])
    assert served.updates_in.tolist() == [2, 3, 0]
    np.testing.assert_array_equal(model.wv.vectors[2], start[2])


def test_validation_names_the_parameter():
    with pytest.raises(ConfigurationError, match="window"):
        DistributedWord2Vec(window=0)._validate()
    with pytest.raises(ConfigurationError, match="hs=1"):
        DistributedWord2Vec(hs=1, negative=5)._validate()
    with pytest.raises(ConfigurationError, match="descent"):
        DistributedWord2Vec(descent="adam")._validate()
    for bad in (dict(epochs=0), dict(vector_size=2.0), dict(seed=-1), dict(sg=2), dict(negative=0),
                dict(min_alpha=0.5), dict(negative_pool=0), dict(sync_epochs="yes"), dict(job_words=20_000),
                dict(server_options=[("queue_size", 8)]), dict(stale_rows=True, push_every=2)):
        name = "push_every" if "push_every" in bad else next(iter(bad))
        with pytest.raises(ConfigurationError, match=name):
            DistributedWord2Vec(**bad)._validate()
    DistributedWord2Vec(sg=True, hs=False, cbow_mean=0)._validate()  # gensim's 0/1 switches take booleans
    with pytest.raises(NotFittedError):
        DistributedWord2Vec().wv_


def test_epochs_true_is_refused_before_spark_runs():
    # True is an int to Python, but never one epoch: fit refuses it before any Spark work
    with pytest.raises(ConfigurationError, match="epochs must be an integer >= 1, got True"):
        DistributedWord2Vec(epochs=True, spark=object()).fit([["a", "b"]])


class _GensimStyle(CallbackAny2Vec):
    """A gensim callback object: records which hooks ran, and the vectors each epoch ended with."""

    def __init__(self):
        self.calls, self.vectors = [], []

    def on_train_begin(self, model):
        self.calls.append("train_begin")

    def on_epoch_end(self, model):
        self.calls.append("epoch_end")
        self.vectors.append(model.wv.vectors.copy())

    def on_train_end(self, model):
        self.calls.append("train_end")


def test_fit_returns_itself_and_calls_back_after_each_epoch(sc, corpus, monkeypatch):
    import deepdist.core

    train, _ = corpus
    real, options = deepdist.core.DeepDist, []
    monkeypatch.setattr(deepdist.core, "DeepDist", lambda model, **kw: options.append(kw) or real(model, **kw))
    seen = []

    def track(estimator, record):
        seen.append((estimator, record, estimator.model_.wv.vectors.copy()))

    gensim_style = _GensimStyle()
    with pytest.warns(DeprecationWarning, match="deepdist_options"):
        estimator = DistributedWord2Vec(vector_size=16, epochs=3, progress=False, callbacks=[track, gensim_style],
                                        deepdist_options={"queue_size": 8})
    assert estimator.server_options == {"queue_size": 8}
    assert estimator.fit(sc.parallelize(train, 2)) is estimator
    assert [o["queue_size"] for o in options] == [8]          # the renamed option reached the server
    assert estimator.sync_epochs_ is True                       # callbacks make one Spark job per epoch
    # each epoch's record, in order, with the estimator itself, when that epoch had ended
    assert [r["epoch"] for _, r, _ in seen] == [1, 2, 3] and estimator.n_iter_ == 3
    assert all(e is estimator for e, _, _ in seen) and [r for _, r, _ in seen] == estimator.history_
    elapsed = [r["elapsed"] for r in estimator.history_]
    assert elapsed == sorted(elapsed) and all(r["seconds"] > 0 for r in estimator.history_)
    assert not np.array_equal(seen[0][2], seen[1][2]) and not np.array_equal(seen[1][2], seen[2][2])
    np.testing.assert_array_equal(seen[-1][2], estimator.model_.wv.vectors)
    # the gensim object: its epoch hook each epoch, on that epoch's model, inside the train hooks
    assert gensim_style.calls == ["train_begin"] + ["epoch_end"] * 3 + ["train_end"]
    for ours, theirs in zip(seen, gensim_style.vectors):
        np.testing.assert_array_equal(ours[2], theirs)
    with pytest.warns(DeprecationWarning, match="history_"):
        assert estimator.epochs_ is estimator.history_


def test_default_seed_is_zero_and_reproducible(sc, corpus):
    """With one partition the Downpour schedule is sequential, so a seed fixes the whole fit."""
    train, _ = corpus
    sentences = train[:40]   # a list: parallelized on spark's context

    def vectors(**params):
        estimator = DistributedWord2Vec(vector_size=16, epochs=2, partitions=1, progress=False, spark=sc, **params)
        return estimator.fit(sentences).model_.wv.vectors

    assert DistributedWord2Vec().seed == 0
    first = vectors()
    np.testing.assert_array_equal(vectors(), first)
    np.testing.assert_array_equal(vectors(seed=0), first)
    assert not np.allclose(vectors(seed=1), first)


def _disjoint_rdd(sc):
    # partition 0 speaks words a*, partition 1 words b*
    rng = np.random.default_rng(0)
    part = lambda p: [[f"{p}{i}" for i in rng.integers(0, 40, 200)] for _ in range(30)]  # noqa: E731
    return sc.parallelize(part("a") + part("b"), 2)


def test_negative_pool_draws_from_the_global_distribution():
    model = Word2Vec(vector_size=4, min_count=1, seed=1)
    model.build_vocab_from_freq({f"w{i}": 1000 // (i + 1) for i in range(50)})
    rows = _Rows(False, len(model.wv), pool=50.0, cum=SimpleNamespace(value=model.cum_table))
    batch = [(2000, [np.array([3, 1, 3, 12], dtype=np.int32)])]
    plan = rows.plan(batch)
    assert plan is rows.plan(batch) and plan.pool.sum() == 100_000
    assert plan.words.tolist() == [1, 3, 12] and set(plan.words) <= set(plan.out_rows)
    np.testing.assert_array_equal(plan.out_rows, np.flatnonzero(plan.pool + np.isin(np.arange(50), plan.words)))
    counts = np.array([model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key]) ** 0.75
    np.testing.assert_allclose(plan.pool / plan.pool.sum(), counts / counts.sum(), atol=0.004)
    assert rows.plan(batch, keep=False) is plan and rows.plan(batch, keep=False) is not plan


def test_tasks_pull_and_push_only_their_partitions_rows(sc):
    rdd = _disjoint_rdd(sc)
    estimator = DistributedWord2Vec(vector_size=16, min_count=1, epochs=1, progress=False)
    model = estimator.build_vocab(rdd)
    served = _Served(model)
    cum = sc.broadcast(model.cum_table)
    rows = _Rows(False, len(model.wv), pool=0.01, cum=cum)   # 20 negatives drawn per 2000-word job
    gradient = _Gradient(rows, sg=True, alpha=0.025, min_alpha=0.0001, total_words=estimator.corpus_words_,
                         concurrency=2, seed=1, adagrad=False, compute_loss=False)
    vocab = sc.broadcast(model.wv.key_to_index)
    jobs = rdd.mapPartitions(lambda part: _jobs_of(part, vocab.value, 2000))
    seen = []

    def recording(served_model, update):
        seen.append({name: part.indices.copy() for name, part in update.items() if isinstance(part, SparseRows)})
        AddDeltas()(served_model, update)

    words = np.array(model.wv.index_to_key)
    with DeepDist(served, params=PARAMS, spark=sc, progress=False) as dd:
        dd.train(jobs, gradient, recording, batch_size=1, rows=rows)
        status = dd.status()
    assert len(seen) == len(jobs.collect()) >= 4
    for update in seen:
        prefixes = {w[0] for w in words[update["w2v.wv.vectors"]]}
        assert len(prefixes) == 1                           # one partition's words only
        foreign = [w for w in words[update["w2v.syn1neg"]] if w[0] not in prefixes]
        assert len(foreign) <= 20                           # other words only through the negative pool
    dense = len(seen) * dd.store.spec.nbytes
    assert status["bytes_out"] < 0.8 * dense and status["bytes_in"] < 0.8 * dense
    assert served.words_done[0] == estimator.corpus_words_
    vocab.unpersist()
    cum.unpersist()


def test_learning_rate_follows_the_servers_global_progress(sc):
    rdd = _disjoint_rdd(sc)
    estimator = DistributedWord2Vec(vector_size=16, min_count=1, progress=False)
    sizes = {}
    for done in (0, 1_000_000):
        model = estimator.build_vocab(rdd)
        served = _Served(model)
        served.words_done[0] = done  # another task already processed this many words
        start = model.wv.vectors.copy()
        gradient = _Gradient(_Rows(False, len(model.wv), None), sg=True, alpha=0.025, min_alpha=0.0001,
                             total_words=1_000_000, concurrency=2, seed=1, adagrad=False, compute_loss=False)
        vocab = sc.broadcast(model.wv.key_to_index)
        jobs = rdd.mapPartitions(lambda part: _jobs_of(part, vocab.value, 2000))
        with DeepDist(served, params=PARAMS, spark=sc, progress=False) as dd:
            dd.train(jobs, gradient, AddDeltas(), batch_size=1, rows=gradient.rows)
        sizes[done] = np.abs(model.wv.vectors - start).sum()
        vocab.unpersist()
    assert gradient.alpha_at(0) == 0.025 and gradient.alpha_at(2_000_000) == 0.0001
    # at the end of the schedule tasks step with min_alpha = alpha / 250
    assert sizes[1_000_000] < sizes[0] / 50


# -- end to end -------------------------------------------------------------------------------------
def _similarity_agreement(wv, reference, top: int = 200) -> float:
    """Spearman correlation of the pairwise cosines of ``reference``'s ``top`` most frequent words in two models."""
    from scipy.stats import spearmanr

    words = [w for w in reference.index_to_key[:top] if w in wv.key_to_index]

    def cosines(kv):
        unit = kv[words] / np.linalg.norm(kv[words], axis=1, keepdims=True)
        return (unit @ unit.T)[np.triu_indices(len(words), 1)]

    return float(spearmanr(cosines(wv), cosines(reference)).correlation)


def gensim_epoch_alphas(model, epochs: int) -> list:
    """gensim's own schedule (``Word2Vec._get_next_alpha``), averaged over each epoch's words."""
    return [float(np.mean([model._get_next_alpha(p, epoch) for p in np.linspace(0, 1, 201)]))
            for epoch in range(epochs)]


@pytest.mark.parametrize("sync_epochs", [False, True], ids=["one-job", "job-per-epoch"])
def test_fit_trains_a_gensim_model_that_beats_untrained(sc, corpus, tmp_path, caplog, sync_epochs):
    train, heldout = corpus
    rdd = sc.parallelize(train, 4)
    epochs = 4
    estimator = DistributedWord2Vec(vector_size=50, epochs=epochs, seed=3, progress=True, spark=sc,
                                    sync_epochs=sync_epochs)
    untrained = estimator.build_vocab(rdd)
    evaluator = HeldoutSGNSLoss({w: untrained.wv.get_vecattr(w, "count") for w in untrained.wv.index_to_key},
                                heldout, window=5)
    initial = untrained.wv.vectors.copy()
    with caplog.at_level(logging.INFO, logger="deepdist"):
        estimator.fit(rdd)
    model = estimator.model_
    assert estimator.sync_epochs_ is sync_epochs
    assert isinstance(model, Word2Vec) and estimator.wv_ is model.wv
    assert model.wv.index_to_key == untrained.wv.index_to_key
    assert not np.allclose(model.wv.vectors, initial)
    trained_loss, untrained_loss = evaluator(model), evaluator(untrained)
    assert trained_loss < 0.9 * untrained_loss, (trained_loss, untrained_loss)

    # each record is its own epoch's, not a share of the whole run
    records, words = estimator.history_, estimator.corpus_words_
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert records[-1]["words_done"] == epochs * words
    assert sum(r["words"] for r in records) == epochs * words
    for k, record in enumerate(records, 1):
        assert record["words_done"] >= k * words and record["words"] == pytest.approx(words, rel=0.25)
        assert record["seconds"] > 0 and 0 < record["bytes_pulled"] < record["dense_bytes_pulled"]
        assert record["pushes"] >= 2 and record["gradient_seconds"] > 0
    assert len({r["seconds"] for r in records}) == epochs and len({r["words_done"] for r in records}) == epochs
    # the learning rate the tasks applied, epoch by epoch, is gensim's linear schedule (the tasks
    # read the global word count a round late, so theirs runs a little above it)
    expected = gensim_epoch_alphas(untrained, epochs)
    applied = [r["alpha_mean"] for r in records]
    step = (estimator.alpha - estimator.min_alpha) / epochs
    assert applied == pytest.approx(expected, abs=0.25 * step), (applied, expected)
    assert records[-1]["alpha"] == pytest.approx(0.0001)

    # the progress line names the epoch the tasks are in, of all epochs (not "epoch 1/1" per job)
    lines = [r.getMessage() for r in caplog.records if r.name == "deepdist" and " | tasks " in r.getMessage()]
    labels = [line.split(" | ")[0] for line in lines]
    assert labels[-1] == f"epoch {epochs}/{epochs}" and all(label.endswith(f"/{epochs}") for label in labels), labels
    if sync_epochs:  # each job's closing line names its epoch
        shown = [int(label.split()[1].split("/")[0]) for label in labels]
        assert shown == sorted(shown) and set(shown) == set(range(1, epochs + 1)), labels

    model.wv.save(str(tmp_path / "vectors.kv"))
    loaded = KeyedVectors.load(str(tmp_path / "vectors.kv"))
    np.testing.assert_array_equal(loaded.vectors, model.wv.vectors)
    assert loaded.index_to_key == model.wv.index_to_key
    # the vectors hold the corpus' similarity structure: the cosines among frequent words agree
    # with those of gensim's own skip-gram on the same sentences, where untrained vectors' do not
    reference = Word2Vec(train, vector_size=50, window=5, min_count=5, sg=1, negative=5, epochs=epochs, seed=3,
                         workers=1).wv
    agreement, chance = _similarity_agreement(loaded, reference), _similarity_agreement(untrained.wv, reference)
    assert agreement > 0.7 and abs(chance) < 0.15, (agreement, chance)


def test_progress_line_takes_the_epoch_the_tasks_report():
    from deepdist import wire
    from deepdist.progress import ProgressLine
    from deepdist.store import ParameterStore

    store = ParameterStore({"w": np.zeros(2)})
    store.set_descent(lambda model, update: None)
    sc = SimpleNamespace(statusTracker=lambda: SimpleNamespace(getActiveStageIds=lambda: []))
    line = ProgressLine(sc, store, "epoch 1/1", enabled=False)
    assert line.line().startswith("epoch 1/1 | ")
    store.start()
    try:
        store.submit({"w": np.ones(2)}, wire.UpdateMeta(version=0, metrics={"epoch": 3, "epochs": 5, "alpha": 0.01}))
        store.drain()
    finally:
        store.stop()
    text = line.line()
    assert text.startswith("epoch 3/5 | ") and "alpha 0.01" in text and "epochs" not in text, text


class _OwnRowTask:
    """gradient: each partition moves its own row by 1 a batch and flags a pull that lacks its own
    earlier pushes (``stale``). Element ``i`` is the task's ``i % per_partition``-th batch."""

    def __init__(self, call: int, per_partition: int):
        self.call, self.per_partition = call, per_partition

    def __call__(self, model, batch):
        from pyspark import TaskContext

        partition = TaskContext.get().partitionId()
        (element,) = batch
        own_pushes = self.call * self.per_partition + element % self.per_partition
        stale = float(model["x"][partition, 0] != own_pushes)
        return {"x": SparseRows(np.array([partition]), np.ones((1, 1)), model["x"].shape),
                "stale": np.array([stale])}


def _own_row(batch):
    from pyspark import TaskContext

    return {"x": np.array([TaskContext.get().partitionId()])}


def _slow_add(model, update):
    time.sleep(0.01)  # a pull that does not wait for the task's own push would overtake it
    update["x"].add_to(model["x"])
    model["stale"] += update["stale"]


def test_a_second_train_call_still_reads_its_own_writes(sc):
    """sync_epochs calls train() once per epoch on one context: each call's pulls must wait for the
    task's own pushes (the server's bookkeeping of the first call must not answer for the next)."""
    per_partition = 8
    rdd = sc.parallelize(range(2 * per_partition), 2)
    model = {"x": np.zeros((2, 1)), "stale": np.zeros(1)}
    with DeepDist(model, spark=sc, progress=False) as dd:
        for call in range(3):
            dd.train(rdd, _OwnRowTask(call, per_partition), _slow_add, batch_size=1, rows=_own_row)
            assert model["stale"][0] == 0, f"call {call + 1}: {model['stale'][0]:.0f} pulls lacked the task's own push"
            assert model["x"][:, 0].tolist() == [(call + 1) * per_partition] * 2


def _log_probability(model, sentences) -> float:
    """Log-probability per word of ``sentences`` under hierarchical softmax (gensim's ``Word2Vec.score``)."""
    words = sum(1 for s in sentences for w in s if w in model.wv.key_to_index)
    return float(np.sum(model.score(sentences, total_sentences=len(sentences)))) / words


def test_cbow_hs_learns_what_gensims_own_cbow_hs_learns(sc, corpus):
    train, _ = corpus
    # no subsampling, so gensim's score of the training text is the objective both trainers descend;
    # CBOW's usual rate (word2vec.c's 0.05) makes the gain large against the trainers' noise
    settings = dict(vector_size=32, window=5, min_count=5, sg=0, hs=1, negative=0, sample=0, alpha=0.05, epochs=5,
                    seed=1)
    estimator = DistributedWord2Vec(**settings, sync_epochs=False, progress=False).fit(sc.parallelize(train, 2))
    model = estimator.model_
    assert not len(getattr(model, "syn1neg", []))
    assert estimator.history_[-1]["words_done"] == settings["epochs"] * estimator.corpus_words_
    reference = Word2Vec(train, workers=1, **settings)   # gensim's own CBOW + hierarchical softmax
    untrained = Word2Vec(**settings)
    untrained.build_vocab_from_freq({w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key})
    # the objective: the corpus' log-probability gains as much as gensim's does (a trainer that loses the
    # inner nodes' deltas, or steps the wrong way, gains little or loses)
    ours, gensims, base = (_log_probability(m, train) for m in (model, reference, untrained))
    assert ours - base > 0.8 * (gensims - base) > 0, (ours, gensims, base)
    # and the vectors: their similarity structure is gensim's, where untrained vectors' is not
    agreement, chance = _similarity_agreement(model.wv, reference.wv), _similarity_agreement(untrained.wv, reference.wv)
    assert agreement > 0.6 and abs(chance) < 0.15, (agreement, chance)


def test_adagrad_descent_trains(sc, corpus):
    train, heldout = corpus
    estimator = DistributedWord2Vec(vector_size=32, epochs=1, sync_epochs=False, progress=False, descent="adagrad",
                                    adagrad_lr=0.05).fit(sc.parallelize(train, 2))
    model = estimator.model_
    counts = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}
    evaluator = HeldoutSGNSLoss(counts, heldout)
    untrained = Word2Vec(vector_size=32, min_count=5)
    untrained.build_vocab_from_freq(counts)
    assert evaluator(model) < 0.8 * evaluator(untrained), (evaluator(model), evaluator(untrained))
    assert estimator.history_[0]["words_done"] == estimator.corpus_words_


def test_stale_rows_average_the_deltas_of_rows_pushed_concurrently():
    model = Word2Vec(vector_size=2, min_count=1)
    model.build_vocab_from_freq({"a": 3, "b": 2, "c": 1})
    served = _Served(model)
    served.w2v.wv.vectors[:] = 0
    step = np.ones((2, 2), np.float32)

    def push(rows, seen):
        rows = np.array(rows)
        return {"w2v.wv.vectors": SparseRows(rows, step[: len(rows)], (3, 2)),
                "updates_in": SparseRows(rows, np.array(seen, np.int64), (3,))}

    descent = AddDeltas(stale_rows=True)
    descent(served, push([0, 1], [0, 0]))   # pulled fresh: whole step
    descent(served, push([0, 2], [0, 0]))   # pulled before the first push: row 0 is 1 push stale
    assert served.w2v.wv.vectors[:, 0].tolist() == [1.5, 1.0, 1.0]
    assert served.updates_in.tolist() == [2, 1, 1]
    AddDeltas()(served, push([0], [0]))     # the default adds the delta as it is, counting nothing
    assert served.w2v.wv.vectors[0, 0] == 2.5 and served.updates_in.tolist() == [2, 1, 1]
