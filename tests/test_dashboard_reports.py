"""The dashboard's report after real fits: the model families' own metrics are in it.

A Gibbs LDA fit (``server_options={"report": ...}``, as ``deepdist lda`` sets it) leaves a
report with one log-likelihood point per Spark job, and ``deepdist dnt`` leaves one in its
output folder with the tree's ELBO, size, births and merges per pass.
"""

import json

import numpy as np

from deepdist import cli
from deepdist.dnt.synthetic import synthetic_tree_corpus
from deepdist.lda import GibbsLDA
from deepdist.lda.synthetic import synthetic_lda_corpus


def _curve(report_json, name):
    with open(report_json, encoding="utf-8") as handle:
        data = json.load(handle)
    return [p["metrics"][name] for p in data["history"]["points"] if name in p["metrics"]], data


def test_a_gibbs_fit_reports_its_log_likelihood_per_job(sc, tmp_path):
    docs, _ = synthetic_lda_corpus(400, 200, 5, 40, alpha=0.1, beta=0.01, seed=1)
    path = tmp_path / "gibbs" / "report.html"
    lda = GibbsLDA(num_topics=5, id2word=[str(i) for i in range(200)], epochs=12, sweeps_per_job=4,
                   progress=False, seed=0, server_options={"report": str(path)})
    lda.fit(sc.parallelize([d.tolist() for d in docs], 2))
    lls, data = _curve(tmp_path / "gibbs" / "report.json", "ll_per_token")
    assert len(lls) == 3 and lls[-1] > lls[0]                 # one point per job of 4 sweeps, rising
    assert _curve(tmp_path / "gibbs" / "report.json", "repairs")[0] == [0.0, 0.0, 0.0]
    assert data["params"] and not data["live"]
    html = path.read_text(encoding="utf-8")
    assert "ll_per_token" in html and "connect-src 'none'" in html


def test_deepdist_dnt_writes_the_report_next_to_the_tree(tmp_path):
    counts = synthetic_tree_corpus(n_docs=300, vocab_size=200, kind="counts", seed=0).counts
    with open(tmp_path / "train.dat", "w") as f:
        f.write(f"{len(counts)}\n")
        for row in counts:
            ids = np.flatnonzero(row)
            f.write(" ".join([str(ids.size)] + [f"{i} {row[i]}" for i in ids]) + "\n")
    (tmp_path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(counts.shape[1])))
    out = tmp_path / "out"
    assert cli.main(["dnt", "--format", "pnas", "--input", str(tmp_path / "train.dat"), "--vocab",
                     str(tmp_path / "vocab.txt"), "--output", str(out), "--master", "local[2]", "--epochs", "4",
                     "--nodes", "12", "--partitions", "2", "--batches-per-partition", "1",
                     "--births-per-pass", "3", "--quiet"]) == 0
    assert (out / "report.html").is_file()
    for name in ("elbo", "nodes", "births", "merges"):
        values, _ = _curve(out / "report.json", name)
        assert len(values) == 4, (name, values)          # one point per pass
    nodes, _ = _curve(out / "report.json", "nodes")
    assert nodes[-1] >= 2
