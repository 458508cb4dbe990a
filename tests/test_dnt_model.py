"""deepdist.dnt.model: the fitted DNT model on a hand-built tree (the synthetic corpus's true one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
from scipy.special import logsumexp

from deepdist import persist
from deepdist.datasets.pnas import normalize_rows
from deepdist.dnt import evaluate
from deepdist.dnt.model import FORMAT, DNTModel
from deepdist.dnt.synthetic import synthetic_tree_corpus
from deepdist.dnt.vmf import log_vmf_normalizer
from deepdist.errors import ConfigurationError

N, V, BETA = 300, 200, 200.0


@pytest.fixture(scope="module")
def corpus():
    return synthetic_tree_corpus(n_docs=N, vocab_size=V, kind="counts", seed=0)


def _model(corpus, **overrides):
    k = corpus.parents.size
    args = dict(parents=corpus.parents, means=corpus.node_means, kappas=np.linspace(50.0, 80.0, k),
                log_weights=np.log(corpus.node_masses), mass=corpus.node_masses * N, beta=BETA,
                id2word=[f"w{i}" for i in range(V)])
    args.update(overrides)
    return DNTModel(args.pop("parents"), args.pop("means"), args.pop("kappas"), args.pop("log_weights"),
                    args.pop("mass"), args.pop("beta"), args.pop("id2word"),
                    history=[{"epoch": 1, "elbo": -1.5, "bad": float("nan")}],
                    params={"alpha": 0.5, "gamma": 0.5, "kappa0": 100.0, "branching": (3, 2)}, **args)


@pytest.fixture(scope="module")
def model(corpus):
    return _model(corpus)


def _csr_counts(corpus):
    return scipy.sparse.csr_matrix(corpus.counts)


def test_tree_attributes(model, corpus):
    k = corpus.parents.size
    assert model.n_nodes_ == k and model.n_words_ == V
    np.testing.assert_array_equal(model.tree_, corpus.parents)
    np.testing.assert_array_equal(model.depth_, corpus.depths)
    assert model.children(0) == [1, 2, 3] and model.children(1) == [4, 5] and model.children(21) == []
    np.testing.assert_allclose(model.weights_, corpus.node_masses, rtol=1e-12)
    assert model.mass_.sum() == pytest.approx(N)
    assert repr(model) == f"DNTModel(n_nodes={k}, depth=3, vocabulary={V}, beta=200)"
    with pytest.raises(ConfigurationError):
        model.children(k)


def test_top_words_and_sparse_means(model, corpus):
    row = corpus.node_means[5]
    top = model.top_words(5, 4)
    assert [w for w, _ in top] == [f"w{i}" for i in np.argsort(-row, kind="stable")[:4]]
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    sparse = model.means_
    assert scipy.sparse.isspmatrix_csr(sparse) and sparse.shape == (model.n_nodes_, V)
    assert model.means_ is sparse  # cached
    dense = sparse.toarray()
    for e in range(model.n_nodes_):
        kept = np.flatnonzero(dense[e])
        full = corpus.node_means[e]
        np.testing.assert_array_equal(dense[e, kept], full[kept])
        share = np.sort(full[kept] ** 2)
        assert share.sum() >= 0.99 * (full @ full) - 1e-12
        # minimal: without its smallest kept entry the rest would fall short of 99%
        assert share[1:].sum() < 0.99 * (full @ full)
        # the kept ones are the largest entries
        assert full[kept].min() >= np.delete(full, kept).max()


def test_top_words_capped_at_1000():
    v = 3000
    means = np.ones((1, v)) / np.sqrt(v)
    m = DNTModel([-1], means, [1.0], [0.0], [1.0], 10.0, [str(i) for i in range(v)])
    assert m.means_.getnnz() == 1000


def test_transform_recovers_true_nodes(model, corpus):
    post = model.transform(corpus.tokens())
    assert post.shape == (N, model.n_nodes_) and post.dtype == np.float64
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(post >= 0)
    accuracy = float((post.argmax(axis=1) == corpus.doc_nodes).mean())
    assert accuracy >= 0.85  # measured 0.88 with beta = 200


def test_transform_matches_direct_softmax(model, corpus):
    x = corpus.documents[:20]
    logits = np.log(corpus.node_masses) + BETA * x @ corpus.node_means.T
    expected = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    np.testing.assert_allclose(model.transform(corpus.counts[:20]), expected, rtol=1e-10, atol=1e-300)


def test_all_input_forms_agree(model, corpus):
    counts = _csr_counts(corpus)
    bows = [[(int(w), int(c)) for w, c in zip(row.indices, row.data)] for row in counts]
    reference = model.transform(counts)
    triple = normalize_rows(counts.indptr, counts.indices, counts.data)
    forms = {
        "tokens": corpus.tokens(),
        "bow": bows,
        "bow shuffled, split": [list(reversed(b)) + [(w, 0) for w, _ in b[:2]] for b in bows],
        "(doc_id, bow)": list(enumerate(bows)),
        "word ids": [list(np.repeat(row.indices, row.data.astype(int))) for row in counts],
        "generator": (b for b in bows),
        "csc counts": counts.tocsc(),
        "dense counts": corpus.counts,
        "csr triple": triple,
    }
    for name, docs in forms.items():
        np.testing.assert_array_equal(model.transform(docs), reference, err_msg=name)
    # unknown tokens are dropped
    with_unknown = [t + ["no-such-word"] for t in corpus.tokens()]
    np.testing.assert_array_equal(model.transform(with_unknown), reference)


def test_empty_documents_get_the_prior(model, corpus):
    prior = np.exp(model.log_weights_ - logsumexp(model.log_weights_))
    post = model.transform([[], ["unknown"], corpus.tokens()[0], (7, [])])
    np.testing.assert_allclose(post[[0, 1, 3]], np.tile(prior, (3, 1)), rtol=1e-12)
    assert post[2].argmax() == corpus.doc_nodes[0]
    assert model.transform([]).shape == (0, model.n_nodes_)


def test_blocks_do_not_change_the_result(model, corpus, monkeypatch):
    reference = model.transform(corpus.counts)
    from deepdist.dnt import model as model_module
    monkeypatch.setattr(model_module, "_BLOCK_FLOATS", 7 * model.n_nodes_)  # blocks of 7 rows
    np.testing.assert_array_equal(model.transform(corpus.counts), reference)
    assert model.score(corpus.counts) == pytest.approx(model.scores(corpus.counts).mean(), rel=1e-15)


def test_vmf_score_is_the_mixture_loglik(model, corpus):
    docs = corpus.documents[:8]
    log_c = float(log_vmf_normalizer(V, BETA))
    direct = log_c + logsumexp(np.log(corpus.node_masses) + BETA * docs @ corpus.node_means.T, axis=1)
    per_doc = model.scores(corpus.counts[:8], kind="vmf")
    np.testing.assert_allclose(per_doc, direct, rtol=1e-12)
    assert model.score(corpus.counts[:8]) == pytest.approx(direct.mean(), rel=1e-12)
    # the evaluate module's mixture log-likelihood agrees too
    x = scipy.sparse.csr_matrix(corpus.documents)
    np.testing.assert_allclose(model.scores(corpus.counts),
                               evaluate.vmf_loglik(x, corpus.node_means, BETA, model.weights_), rtol=1e-12)


def test_paper_score_matches_evaluate(model, corpus):
    counts = _csr_counts(corpus)
    triple = normalize_rows(counts.indptr, counts.indices, counts.data)
    post = model.transform(counts)
    expected = evaluate.paper_score(triple, corpus.node_means, beta=BETA, posteriors=post)
    assert model.score(counts, kind="paper") == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model.scores(counts, kind="paper"),
                               evaluate.paper_scores(triple, corpus.node_means, BETA, post), rtol=1e-12)
    with pytest.raises(ConfigurationError):
        model.score(counts, kind="perplexity")


def test_scores_of_empty_documents(model, corpus):
    docs = [corpus.tokens()[0], [], ["unknown"]]
    values = model.scores(docs)
    assert np.isfinite(values[0]) and np.isnan(values[1:]).all()
    assert model.score(docs) == pytest.approx(values[0], rel=1e-15)


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "dnt.ddw"
    model.save(path)
    loaded = DNTModel.load(path)
    for name in ("tree_", "mean_directions_", "kappas_", "log_weights_", "mass_"):
        a, b = getattr(model, name), getattr(loaded, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name
    assert loaded.beta == model.beta and loaded.id2word == model.id2word
    assert loaded.history_ == [{"epoch": 1, "elbo": -1.5, "bad": None}]
    assert loaded.params_ == {"alpha": 0.5, "gamma": 0.5, "kappa0": 100.0, "branching": [3, 2]}
    _, meta = persist.read_frame(path, expect=FORMAT)
    assert meta["n_nodes"] == model.n_nodes_ and meta["n_words"] == V


def test_load_refuses_another_format(tmp_path):
    path = tmp_path / "other.ddw"
    persist.write_frame(path, {"x": np.zeros(2)}, {"format": "deepdist.lda.GibbsLDAModel/1"})
    with pytest.raises(ConfigurationError, match="DNTModel"):
        DNTModel.load(path)
    (tmp_path / "junk").write_bytes(b"not a frame")
    with pytest.raises(ConfigurationError):
        DNTModel.load(tmp_path / "junk")


def test_to_json(model, corpus):
    tree = json.loads(json.dumps(model.to_json(num_words=3)))
    seen = {}

    def walk(node, parent):
        seen[node["id"]] = parent
        assert len(node["words"]) == 3 and set(node) == {"id", "mass", "weight", "words", "children"}
        assert node["words"] == [w for w, _ in model.top_words(node["id"], 3)]
        assert [c["id"] for c in node["children"]] == model.children(node["id"])
        for child in node["children"]:
            walk(child, node["id"])

    walk(tree, -1)
    assert len(seen) == model.n_nodes_
    assert [seen[e] for e in range(model.n_nodes_)] == corpus.parents.tolist()
    assert tree["mass"] == pytest.approx(corpus.node_masses[0] * N)
    assert tree["weight"] == pytest.approx(corpus.node_masses[0])


def test_show_tree(model, corpus):
    lines = model.show_tree(num_words=5).split("\n")
    assert len(lines) == model.n_nodes_
    order = []
    for line in lines:
        body = line.lstrip(" ")
        node = int(body.split()[0])
        order.append(node)
        assert len(line) - len(body) == 2 * int(corpus.depths[node])
        assert f"({100 * corpus.node_masses[node]:.1f}%)" in body
        assert body.split()[2:] == [w for w, _ in model.top_words(node, 5)]
    # depth first, children in order
    assert order[:4] == [0, 1, 4, 10] and sorted(order) == list(range(model.n_nodes_))


def test_plot_tree(model):
    from matplotlib.figure import Figure

    fig = model.plot_tree(num_words=2)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted("\n".join(w for w, _ in model.top_words(e, 2)) for e in range(model.n_nodes_))
    # a parent sits over its children, one level above them
    pos = {t.get_gid(): t.get_position() for t in ax.texts}
    assert sorted(pos) == sorted(f"node-{e}" for e in range(model.n_nodes_))
    for t in ax.texts:
        e = int(t.get_gid().split("-")[1])
        assert t.get_text() == "\n".join(w for w, _ in model.top_words(e, 2))
        kids = model.children(e)
        if kids:
            xs = [pos[f"node-{c}"][0] for c in kids]
            assert pos[f"node-{e}"][0] == pytest.approx((xs[0] + xs[-1]) / 2)
            assert all(pos[f"node-{c}"][1] == pytest.approx(pos[f"node-{e}"][1] - 1) for c in kids)
        else:
            assert float(pos[f"node-{e}"][0]).is_integer()  # leaves on evenly spaced slots
    leaves = sorted(pos[f"node-{e}"][0] for e in range(model.n_nodes_) if not model.children(e))
    assert leaves == list(range(len(leaves)))
    sizes = ax.collections[-1].get_sizes()
    assert sizes.size == model.n_nodes_
    order = [int(t.get_gid().split("-")[1]) for t in ax.texts]  # markers and labels share the order
    big = sizes > 4.0
    np.testing.assert_allclose(sizes[big] / model.mass_[order][big], 600.0 / model.mass_.max(), rtol=1e-12)
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_plot_tree_max_nodes(model):
    fig = model.plot_tree(max_nodes=3)
    texts = fig.axes[0].texts
    heaviest = np.argsort(-model.mass_, kind="stable")[:3]
    shown = set()
    for e in heaviest:
        while e >= 0:
            shown.add(int(e))
            e = model.tree_[e]
    assert len(texts) == len(shown) < model.n_nodes_


@pytest.mark.parametrize("change, message", [
    (dict(means=np.zeros((22, V))), "unit rows"),
    (dict(means=np.ones((21, V)) / np.sqrt(V)), "shape"),
    (dict(kappas=np.ones(21)), "kappas"),
    (dict(log_weights=np.zeros(23)), "log_weights"),
    (dict(mass=np.ones((22, 1))), "mass"),
    (dict(mass=-np.ones(22)), "mass"),
    (dict(id2word=["a"] * (V - 1)), "id2word"),
    (dict(parents=np.r_[-1, np.zeros(21, int)][::-1]), "root"),
    (dict(parents=np.r_[-1, 2, np.zeros(20, int)]), "parent"),
    (dict(beta=0.0), "beta"),
    (dict(beta=float("nan")), "beta"),
])
def test_bad_arguments(corpus, change, message):
    with pytest.raises(ConfigurationError, match=message):
        _model(corpus, **change)


def test_bad_documents(model):
    with pytest.raises(ConfigurationError):
        model.transform([[(V, 1)]])
    with pytest.raises(ConfigurationError):
        model.transform(scipy.sparse.csr_matrix((2, V + 1)))
    with pytest.raises(ConfigurationError, match="L2-normalised"):
        model.transform((np.array([0, 1]), np.array([3]), np.array([2.0])))
    with pytest.raises(ConfigurationError):
        model.transform("one string")


def test_id2word_forms(corpus):
    words = [f"w{i}" for i in range(V)]
    as_dict = _model(corpus, id2word=dict(enumerate(words)))
    assert as_dict.id2word == words
    with pytest.raises(ConfigurationError):
        _model(corpus, id2word={i + 1: w for i, w in enumerate(words)})
    gensim = pytest.importorskip("gensim")
    dictionary = gensim.corpora.Dictionary([words])
    model = _model(corpus, id2word=dictionary)
    assert model.id2word == [dictionary[i] for i in range(V)]
