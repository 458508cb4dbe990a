"""The reference points of issue 26 on the DNTs paper's PNAS split, from deepdist's own scores.

Trains on the pooled ten training epochs and scores the pooled held-out titles (the paper's
split; the three empty titles of ``T9_test.dat`` left out, as in the authors' ``ALL_test.dat``):

- the data's centroid alone: one node, the normalised sum of the training documents' x;
- flat spherical k-means (:func:`deepdist.dnt.evaluate.spherical_kmeans`, k-means++ seeding)
  with 50, 400 and 2,000 centroids.

Each row prints the paper's Table 3 score (:func:`~deepdist.dnt.evaluate.paper_score`: the
average of β·µ_zᵀx, β = 10⁴, z the node of largest cosine) on the held-out and on the training
titles, next to the number the issue quotes, and the properly normalised vMF mixture
log-likelihood per held-out title (:func:`~deepdist.dnt.evaluate.vmf_loglik`), weights the
clusters' shares of the training titles, once with κ = β and once with the maximum-likelihood
κ shared by all clusters (from their mean resultant length; its value is printed).

Usage::

    .venv/bin/python benchmarks/pnas_reference_scores.py                 # 50, 400, 2000 centroids
    .venv/bin/python benchmarks/pnas_reference_scores.py --ks 50 400 --iterations 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepdist.datasets.pnas import pnas_directory, read_pnas
from deepdist.dnt.evaluate import paper_score, spherical_kmeans, vmf_loglik

# the issue's reference points, in the paper's score
ISSUE = {1: 1061, 50: 2946, 400: 3718, 2000: 3877}
PAPER = {"PNAS VI (paper, Table 3)": "4,479 ± 103", "PNAS MCMC (paper, Table 3)": "4,562 ± 116"}


def _shared_ml_kappa(dim, x_train, centroids, assignments):
    """The maximum-likelihood κ shared by all clusters, and the clusters' sizes.

    One κ for all: a cluster of one title has r̄ = 1 and an infinite κ of its own.
    """
    from deepdist.dnt.vmf import kappa_from_resultant

    indptr, indices, data = x_train
    k = centroids.shape[0]
    # ‖Σ x‖ over a cluster is the projection of its sum on its own unit centroid
    doc = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    along = np.bincount(assignments[doc], weights=data * centroids[assignments[doc], indices], minlength=k)
    rbar = along.sum() / (len(indptr) - 1)
    return float(kappa_from_resultant(dim, rbar)), np.bincount(assignments, minlength=k)


def _row(name, issue, held, train, loglik_beta, loglik_ml, seconds, kappa=None):
    issue_text = f"{issue:,}" if isinstance(issue, int) else issue
    ll_b = f"{loglik_beta:,.0f}" if loglik_beta is not None else "-"
    ll_m = f"{loglik_ml:,.0f}" if loglik_ml is not None else "-"
    held_text = f"{held:,.0f}" if held is not None else "-"
    train_text = f"{train:,.0f}" if train is not None else "-"
    kappa_text = "" if kappa is None else f"{kappa:,.0f}"
    print(f"{name:<30} {issue_text:>12} {held_text:>9} {train_text:>9} {ll_b:>14} {ll_m:>14} {seconds:>8} "
          f"{kappa_text:>7}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="the PNAS directory (default: $DEEPDIST_PNAS_DIR or "
                   "<repo>/../shared/data/pnas)")
    p.add_argument("--ks", type=int, nargs="+", default=[50, 400, 2000], help="numbers of centroids")
    p.add_argument("--iterations", type=int, default=30, help="k-means rounds at most (stops when no "
                   "assignment changes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="k-means++", choices=["k-means++", "random"])
    p.add_argument("--beta", type=float, default=1e4, help="β of the paper's score")
    args = p.parse_args(argv)

    root = pnas_directory(args.data)
    train, test = read_pnas(root, split="train"), read_pnas(root, split="test")
    x_train, x_test = train.normalized_tf(), test.normalized_tf()
    dim = train.n_words
    print(f"PNAS at {root}: {train.n_docs:,} training titles, {test.n_docs:,} held-out titles, "
          f"V = {dim:,}")
    print(f"paper score = mean of β·µ_zᵀx with β = {args.beta:g}; vMF log-lik per held-out title, "
          f"κ = β and κ = the clusters' shared ML κ\n")
    print(f"{'model':<30} {'issue says':>12} {'held-out':>9} {'train':>9} {'vMF ll, κ=β':>14} "
          f"{'vMF ll, ML κ':>14} {'seconds':>8} {'ML κ':>7}")
    try:
        import deepdist.dnt.vmf  # noqa: F401
        have_vmf = True
    except ImportError:
        have_vmf = False

    start = time.perf_counter()
    centroid = np.bincount(x_train[1], weights=x_train[2], minlength=dim)[None, :]
    centroid /= np.linalg.norm(centroid)
    ll_b = ll_m = None
    if have_vmf:
        ll_b = vmf_loglik(x_test, centroid, args.beta).mean()
        kappa, _ = _shared_ml_kappa(dim, x_train, centroid, np.zeros(train.n_docs, dtype=np.int64))
        ll_m = vmf_loglik(x_test, centroid, kappa).mean()
    _row("data's centroid alone", ISSUE[1], paper_score(x_test, centroid, args.beta),
         paper_score(x_train, centroid, args.beta), ll_b, ll_m, f"{time.perf_counter() - start:.1f}",
         kappa if have_vmf else None)

    for k in args.ks:
        start = time.perf_counter()
        centroids, assignments = spherical_kmeans(x_train, k, args.iterations, args.seed, init=args.init,
                                                  n_words=dim)
        seconds = time.perf_counter() - start
        ll_b = ll_m = None
        if have_vmf:
            kappa, sizes = _shared_ml_kappa(dim, x_train, centroids, assignments)
            weights = sizes / sizes.sum()
            ll_b = vmf_loglik(x_test, centroids, args.beta, weights).mean()
            ll_m = vmf_loglik(x_test, centroids, kappa, weights).mean()
        _row(f"spherical k-means, k = {k:,}", ISSUE.get(k, "-"), paper_score(x_test, centroids, args.beta),
             paper_score(x_train, centroids, args.beta), ll_b, ll_m, f"{seconds:.1f}",
             kappa if have_vmf else None)
    for name, value in PAPER.items():
        _row(name, value, None, None, None, None, "")


if __name__ == "__main__":
    main()
