"""The PNAS reader (deepdist.datasets.pnas) and the DNT held-out scores (deepdist.dnt.evaluate)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from deepdist.datasets.pnas import (normalize_rows, pnas_directory, read_dat, read_pnas,
                                    read_vocabulary)
from deepdist.dnt.evaluate import (paper_score, paper_scores, similarities, spherical_kmeans,
                                   vmf_loglik)
from deepdist.errors import ConfigurationError, CorpusError

PNAS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pnas"
needs_pnas = pytest.mark.skipif(not (PNAS / "pnas_vocab.text").is_file(),
                                reason=f"the PNAS data set is not at {PNAS}")

# documents per epoch, from the count lines of T{1..10}_train.dat (T1 … T10)
TRAIN_PER_EPOCH = [1188, 1596, 1105, 1235, 2560, 6469, 12915, 19847, 24139, 738]


def _log_vmf_normalizer():
    try:
        from deepdist.dnt.vmf import log_vmf_normalizer
    except ImportError:  # pragma: no cover - written while vmf.py was being written
        pytest.skip("deepdist.dnt.vmf.log_vmf_normalizer is not available")
    return log_vmf_normalizer


# --- the reader on small hand-written files --------------------------------------------------

def _write(directory: Path, train: str, vocab=("a", "b", "c", "d")) -> Path:
    (directory / "pnas_vocab.text").write_text("\n".join(vocab) + "\n")
    (directory / "T1_train.dat").write_text(train)
    return directory


def test_small_directory_reads_counts_bows_tokens_and_subsets(tmp_path):
    _write(tmp_path, "3\n2 0 1 2 3\n1 3 2\n0\n")
    (tmp_path / "T2_train.dat").write_text("1 1 1\n")  # no count line, like the authors' later test files
    data = read_pnas(tmp_path, epochs=[1, 2], drop_empty=False)
    assert data.n_docs == 4 and data.n_words == 4 and data.epochs.tolist() == [1, 1, 1, 2]
    assert data.bows() == [[(0, 1), (2, 3)], [(3, 2)], [], [(1, 1)]]
    assert data.tokens()[0] == ["a", "c", "c", "c"]
    assert data.id2word() == {0: "a", 1: "b", 2: "c", 3: "d"}
    kept = read_pnas(tmp_path, epochs=[1, 2])          # drop_empty leaves the "0" line out
    assert kept.bows() == [[(0, 1), (2, 3)], [(3, 2)], [(1, 1)]] and kept.epochs.tolist() == [1, 1, 2]
    picked = data.subset([3, 0])
    assert picked.bows() == [[(1, 1)], [(0, 1), (2, 3)]] and picked.epochs.tolist() == [2, 1]
    indptr, indices, counts = data.csr()
    assert indptr.tolist() == [0, 2, 3, 3, 4] and counts.tolist() == [1, 3, 2, 1]


def test_normalized_tf_has_unit_rows_and_zero_empty_rows(tmp_path):
    _write(tmp_path, "3\n2 0 3 1 4\n1 3 2\n0\n")
    indptr, indices, data = read_pnas(tmp_path, epochs=1, drop_empty=False).normalized_tf()
    assert data.dtype == np.float64
    np.testing.assert_allclose(data, [0.6, 0.8, 1.0])
    assert indptr.tolist() == [0, 2, 3, 3]
    assert normalize_rows([0, 0], [], [])[2].size == 0


@pytest.mark.parametrize("body, line, words", [
    ("3\n1 0 1\n1 1 1\n", 1, "count line says 3 documents, the file holds 2"),
    ("2\n2 0 1\n1 1 1\n", 2, "says 2 distinct words, so 5 numbers, but holds 3"),
    ("2\n1 0 1\n1 4 1\n", 3, "word id 4 outside the vocabulary [0, 4)"),
    ("2\n1 0 1\n1 -1 1\n", 3, "word id -1 outside"),
    ("2\n1 0 x\n1 1 1\n", 2, "not an integer"),
    ("2\n2 0 1 0 1\n1 1 1\n", 2, "a word id appears twice"),
    ("2\n1 0 0\n1 1 1\n", 2, "count 0 below 1"),
    ("3\n1 0 1\n\n1 1 1\n", 3, "blank line"),
    ("two\n1 0 1\n", 1, "not an integer"),
])
def test_malformed_files_name_file_and_line(tmp_path, body, line, words):
    _write(tmp_path, body)
    with pytest.raises(CorpusError) as err:
        read_pnas(tmp_path, epochs=[1])
    message = str(err.value)
    assert "T1_train.dat" in message and f"line {line}:" in message and words in message


def test_bad_vocabulary_and_missing_files(tmp_path):
    _write(tmp_path, "1\n1 0 1\n", vocab=("a", "b", "a"))
    with pytest.raises(CorpusError, match=r"pnas_vocab.text, line 3: word 'a' repeats line 1"):
        read_vocabulary(tmp_path / "pnas_vocab.text")
    _write(tmp_path, "1\n1 0 1\n")
    with pytest.raises(CorpusError, match=r"T2_test.dat: missing"):
        read_pnas(tmp_path, epochs=[2], split="test")
    with pytest.raises(ConfigurationError, match="split"):
        read_pnas(tmp_path, split="dev")
    with pytest.raises(ConfigurationError, match="epochs"):
        read_pnas(tmp_path, epochs=[11])


def test_pnas_directory_uses_the_environment_and_explains_absence(tmp_path, monkeypatch):
    _write(tmp_path, "1\n1 0 1\n")
    monkeypatch.setenv("DEEPDIST_PNAS_DIR", str(tmp_path))
    assert pnas_directory() == tmp_path
    with pytest.raises(CorpusError, match="DEEPDIST_PNAS_DIR") as err:
        pnas_directory(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


# --- the reader on the paper's files ---------------------------------------------------------

@needs_pnas
def test_pnas_train_and_test_counts():
    train = read_pnas(PNAS, split="train")
    assert train.n_words == 36901 and train.n_docs == sum(TRAIN_PER_EPOCH)
    assert np.bincount(train.epochs, minlength=11)[1:].tolist() == TRAIN_PER_EPOCH
    for epoch, n in enumerate(TRAIN_PER_EPOCH, start=1):
        _, _, _, header = read_dat(PNAS / f"T{epoch}_train.dat", 36901)
        assert header == n
    test = read_pnas(PNAS, split="test")
    # the authors' pooled ALL_test.dat is the ten test files without their three empty titles
    indptr, indices, counts, header = read_dat(PNAS / "ALL_test.dat", 36901)
    assert test.n_docs == header == 7981 and read_pnas(PNAS, split="test", drop_empty=False).n_docs == 7984
    assert np.array_equal(test.indptr, indptr) and np.array_equal(test.indices, indices)
    assert np.array_equal(test.counts, counts)
    _, _, data = test.normalized_tf()
    rows = np.repeat(np.arange(test.n_docs), np.diff(test.indptr))
    np.testing.assert_allclose(np.bincount(rows, weights=data * data), 1.0, rtol=1e-12)


@needs_pnas
def test_centroid_and_kmeans_paper_scores_on_pnas():
    train, test = read_pnas(PNAS, split="train"), read_pnas(PNAS, split="test")
    x_train, x_test = train.normalized_tf(), test.normalized_tf()
    centroid = np.bincount(x_train[1], weights=x_train[2], minlength=train.n_words)
    # the reference point for the data's centroid alone: 1,061
    score = paper_score(x_test, centroid[None, :])
    assert abs(score - 1061) < 0.005 * 1061
    one, _ = spherical_kmeans(x_train, 50, iterations=1, seed=0)
    five, _ = spherical_kmeans(x_train, 50, iterations=5, seed=0)
    # training objective (mean best cosine) never falls; held-out score far above the centroid's
    assert paper_score(x_train, five) >= paper_score(x_train, one)
    assert paper_score(x_test, five) > 2.5 * score


# --- the scores, by hand ----------------------------------------------------------------------

X_SMALL = (np.array([0, 2, 3]), np.array([0, 1, 2]), np.array([0.6, 0.8, 1.0]))  # V = 3
MEANS_SMALL = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 3.0]])  # rescaled to unit rows inside


def test_paper_score_by_hand():
    # doc 0: cosines 0.6 and 0.8/√2 → 0.6; doc 1: cosines 0 and 1/√2 → 1/√2
    assert paper_scores(X_SMALL, MEANS_SMALL, beta=10).tolist() == pytest.approx([6.0, 10 / math.sqrt(2)])
    assert paper_score(X_SMALL, MEANS_SMALL, beta=10) == pytest.approx((6.0 + 10 / math.sqrt(2)) / 2)
    # with posteriors, z is their argmax even where another node is closer
    post = np.array([[0.1, 0.9], [0.7, 0.3]])
    assert paper_scores(X_SMALL, MEANS_SMALL, beta=10, posteriors=post).tolist() == pytest.approx(
        [8 / math.sqrt(2), 0.0])
    assert paper_score(X_SMALL, MEANS_SMALL) == pytest.approx(1e4 * (0.6 + 1 / math.sqrt(2)) / 2)


def test_vmf_loglik_by_hand():
    _log_vmf_normalizer()
    # on S² the vMF normaliser is C_3(κ) = κ / (4π sinh κ)
    def c3(kappa):
        return kappa / (4 * math.pi * math.sinh(kappa))
    cos = [[0.6, 0.8 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]
    w, kappa = [0.25, 0.75], [2.0, 5.0]
    expected = [math.log(sum(w[k] * c3(kappa[k]) * math.exp(kappa[k] * cos[d][k]) for k in range(2)))
                for d in range(2)]
    np.testing.assert_allclose(vmf_loglik(X_SMALL, MEANS_SMALL, kappa, w), expected, rtol=1e-9)
    same = [math.log(sum(0.5 * c3(3.0) * math.exp(3.0 * cos[d][k]) for k in range(2))) for d in range(2)]
    np.testing.assert_allclose(vmf_loglik(X_SMALL, MEANS_SMALL, 3.0), same, rtol=1e-9)
    with pytest.raises(ConfigurationError, match="weights"):
        vmf_loglik(X_SMALL, MEANS_SMALL, 3.0, [0.5, 0.6])


def test_vmf_loglik_is_finite_in_the_papers_dimension():
    log_c = _log_vmf_normalizer()
    dim = 36901
    x = (np.array([0, 2]), np.array([0, 1]), np.array([0.6, 0.8]))
    means = np.zeros((1, dim))
    means[0, :2] = [0.6, 0.8]
    # one component, x on its mean: log C_D(κ) + κ
    got = vmf_loglik(x, means, 1e4)
    assert np.isfinite(got[0]) and got[0] == pytest.approx(float(log_c(dim, 1e4)) + 1e4, rel=1e-12)


def test_scores_refuse_bad_input():
    with pytest.raises(CorpusError, match="no words"):
        paper_score((np.array([0, 0, 1]), np.array([0]), np.array([1.0])), np.eye(2))
    with pytest.raises(ConfigurationError, match="unit L2 norm"):
        paper_score((np.array([0, 2]), np.array([0, 1]), np.array([1.0, 1.0])), np.eye(2))
    with pytest.raises(ConfigurationError, match=r"word ids outside \[0, 2\)"):
        paper_score(X_SMALL, np.eye(2))
    with pytest.raises(ConfigurationError, match="shape"):
        paper_score(X_SMALL, np.ones((2, 2, 3)))
    with pytest.raises(ConfigurationError, match="nonzero"):
        paper_score(X_SMALL, np.zeros((1, 3)))


def test_similarities_match_a_dense_product():
    rng = np.random.default_rng(3)
    n_docs, n_words, k = 300, 50, 7
    dense = rng.random((n_docs, n_words)) * (rng.random((n_docs, n_words)) < 0.1)
    dense[np.arange(n_docs), rng.integers(0, n_words, n_docs)] += 1.0  # no empty row
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    indptr = np.concatenate([[0], np.cumsum((dense > 0).sum(axis=1))])
    indices = np.nonzero(dense)[1]
    x = (indptr, indices, dense[dense > 0])
    means = rng.random((k, n_words))
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    got = np.empty((n_docs, k))
    seen = np.zeros(n_docs, dtype=int)
    for rows, block in similarities(x, means):
        got[rows] = block
        seen[rows] += 1
    assert (seen == 1).all()
    np.testing.assert_allclose(got, dense @ unit.T, rtol=1e-12)
    np.testing.assert_allclose(paper_scores(x, means, beta=1.0), (dense @ unit.T).max(axis=1), rtol=1e-12)


def test_spherical_kmeans_recovers_planted_clusters():
    # three clusters on disjoint words: each document holds its cluster's three core words and
    # two of its seven others
    rng = np.random.default_rng(0)
    n_words, per = 30, 40
    truth = np.repeat(np.arange(3), per)
    indptr, indices, values = [0], [], []
    for c in truth:
        words = np.concatenate([10 * c + np.arange(3), 10 * c + 3 + rng.choice(7, size=2, replace=False)])
        counts = rng.integers(1, 4, size=5).astype(float)
        indices.extend(words)
        values.extend(counts / np.linalg.norm(counts))
        indptr.append(len(indices))
    x = (np.array(indptr), np.array(indices), np.array(values))
    # k-means++ puts two of its three seeds in one cluster now and then (a local optimum no
    # iteration leaves), so the planted partition must come out for most seeds, not all
    recovered = 0
    for seed in range(8):
        centroids, assignments = spherical_kmeans(x, 3, iterations=10, seed=seed, n_words=n_words)
        pairs = set(zip(truth.tolist(), assignments.tolist()))
        recovered += len(pairs) == 3 and len({a for _, a in pairs}) == 3
    assert recovered >= 6
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0)
    assert paper_score(x, centroids) > paper_score(x, centroids.sum(axis=0)[None, :])
    with pytest.raises(ConfigurationError, match="k must be"):
        spherical_kmeans(x, 0)
