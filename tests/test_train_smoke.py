import numpy as np

from deepdist import DeepDist
from deepdist.optim import SGD


def test_linear_sgd_smoke(sc):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=2000)
    rdd = sc.parallelize(list(zip(X, y)), 4)

    def gradient(model, batch):
        Xb = np.array([r[0] for r in batch]); yb = np.array([r[1] for r in batch])
        return {"w": Xb.T @ (Xb @ model["w"] - yb) / len(batch)}

    with DeepDist({"w": np.zeros(3)}, spark=sc) as dd:
        dd.train(rdd, gradient, SGD(lr=0.1), epochs=3, batch_size=50)
    print(dd.model["w"])
    assert np.allclose(dd.model["w"], [1, -2, 0.5], atol=0.05)
