"""Every estimator keeps one contract (deepdist.estimator): the same checks, run on each family.

A family that drifts (fit returning the model, a seed that defaults to None, a callback with
another signature, a history without passes counted) fails here by name.
"""

from __future__ import annotations

import inspect
import os
import warnings

import numpy as np
import pytest

from deepdist.errors import ConfigurationError, NotFittedError
from deepdist.estimator import Estimator


def _word2vec():
    from deepdist.word2vec import DistributedWord2Vec

    return DistributedWord2Vec


def _gibbs():
    from deepdist.lda import GibbsLDA

    return GibbsLDA


def _online():
    from deepdist.lda import OnlineLDA

    return OnlineLDA


def _dnt():
    from deepdist.dnt import DNT

    return DNT


FAMILIES = {"word2vec": _word2vec, "gibbs": _gibbs, "online": _online, "dnt": _dnt}
#: the concepts every family names the same way
SHARED = ("epochs", "seed", "spark", "server_options", "progress", "callbacks")


def _lee_sentences(n=300):
    from gensim.test.utils import datapath
    from gensim.utils import simple_preprocess

    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        return [simple_preprocess(line) for _, line in zip(range(n), f)]


def _synthetic(n_docs=200):
    from deepdist.lda.synthetic import synthetic_lda_corpus

    docs, _ = synthetic_lda_corpus(n_docs, 300, 5, 60, 0.1, 0.01, seed=3)
    return [[f"w{i}" for i in doc] for doc in docs]


def _small_fit(name, sc, **params):
    """A fit small enough for a contract test: (estimator, data)."""
    cls = FAMILIES[name]()
    if name == "word2vec":
        est = cls(vector_size=16, min_count=2, epochs=2, progress=False, **params)
        return est, sc.parallelize(_lee_sentences(), 2)
    tokens = _synthetic()
    if name == "dnt":
        est = cls(max_nodes=8, epochs=3, beta=100.0, births_per_pass=2, progress=False, **params)
        return est, sc.parallelize(tokens, 2)
    if name == "gibbs":
        est = cls(num_topics=5, epochs=3, progress=False, **params)
        return est, sc.parallelize(tokens, 2)
    from gensim.corpora import Dictionary

    dictionary = Dictionary(tokens)
    est = cls(num_topics=5, id2word=dictionary, epochs=2, chunksize=50, progress=False, **params)
    return est, sc.parallelize([dictionary.doc2bow(d) for d in tokens], 2)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parameters_are_keyword_only_with_shared_names_and_seed_zero(name):
    cls = FAMILIES[name]()
    assert issubclass(cls, Estimator)
    params = inspect.signature(cls.__init__).parameters
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional] == ["self"], f"{cls.__name__} takes positional parameters"
    missing = [n for n in SHARED if n not in params]
    assert not missing, f"{cls.__name__} lacks {missing}"
    assert params["seed"].default == 0
    assert params["spark"].default is None and params["server_options"].default is None
    assert params["progress"].default is True
    assert tuple(params["callbacks"].default or ()) == ()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parameters_are_stored_as_given_and_round_trip(name):
    cls = FAMILIES[name]()
    given = {"epochs": 7, "seed": 11, "server_options": {"queue_size": 8}, "progress": False}
    est = cls(**given)
    params = est.get_params()
    assert {k: params[k] for k in given} == given
    assert params["server_options"] is given["server_options"]  # as given, not copied
    keyword_only = {p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert set(params) == keyword_only
    assert est.set_params(epochs=3) is est and est.epochs == 3
    clone = cls(**est.get_params())
    assert clone.get_params() == est.get_params()
    assert repr(est).startswith(f"{cls.__name__}(") and "epochs=3" in repr(est)
    with pytest.raises(TypeError):
        est.set_params(no_such_parameter=1)
    with pytest.raises(TypeError):
        cls(no_such_parameter=1)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("bad", [True, 0, -1, 2.5, "3"])
def test_a_bad_epochs_is_refused_before_spark_runs(name, bad, sc):
    est, data = _small_fit(name, sc)
    est.set_params(epochs=bad)
    with pytest.raises(ConfigurationError, match="epochs"):
        est.fit(data)
    with pytest.raises(NotFittedError):
        est.model_
    assert not hasattr(est, "model_")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fit_returns_the_estimator_with_model_history_and_callbacks(name, sc, tmp_path):
    seen = []

    def callback(estimator, record):
        assert estimator.model_ is not None  # usable when the callback runs
        seen.append((estimator, record))
        record["from_callback"] = len(seen)

    est, data = _small_fit(name, sc, callbacks=[callback])
    assert est.fit(data) is est
    epochs = est.epochs
    assert est.n_iter_ == epochs
    assert [r["epoch"] for r in est.history_][-1] == epochs
    epochs_seen = [r["epoch"] for r in est.history_]
    assert epochs_seen == sorted(epochs_seen) and len(set(epochs_seen)) == len(epochs_seen)
    for record in est.history_:
        assert record["seconds"] >= 0 and record["elapsed"] >= record["seconds"] - 1e-6
    # each record reached every callback once, in order, with the estimator itself
    assert [r for _, r in seen] == est.history_ and all(e is est for e, _ in seen)
    assert [r["from_callback"] for r in est.history_] == list(range(1, len(seen) + 1))
    # the fitted model saves and loads with its own class's save/load
    path = os.path.join(tmp_path, "model")
    est.model_.save(path)
    loaded = type(est.model_).load(path)
    assert type(loaded) is type(est.model_)


@pytest.mark.parametrize("name,old,new,value", [
    ("gibbs", "iterations", "epochs", 4),
    ("online", "passes", "epochs", 4),
    ("dnt", "passes", "epochs", 4),
    ("word2vec", "deepdist_options", "server_options", {"queue_size": 8}),
])
def test_old_parameter_names_warn_and_still_work(name, old, new, value):
    cls = FAMILIES[name]()
    with pytest.warns(DeprecationWarning, match=old):
        est = cls(**{old: value})
    assert getattr(est, new) == value
    with pytest.warns(DeprecationWarning):
        assert getattr(est, old) == value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(**{new: value})  # the new name is silent
    with pytest.raises(TypeError, match="both"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cls(**{old: value, new: value})


def test_gibbs_fit_result_still_answers_as_the_model_with_a_warning(sc):
    est, data = _small_fit("gibbs", sc)
    model = est.fit(data)
    with pytest.warns(DeprecationWarning, match="model_"):
        topics = model.show_topics(num_words=3)
    assert topics == est.model_.show_topics(num_words=3)
    with pytest.warns(DeprecationWarning):
        assert np.array_equal(model.word_topic_, est.model_.word_topic_)
