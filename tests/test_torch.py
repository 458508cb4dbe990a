"""PyTorch modules trained by Downpour SGD: adapter, descents, plumbing exactness, checkpoints.

Where the outcome is deterministic (one partition: pushes are applied in the order they were
computed, and every pull reads the task's own writes) the tests compare with plain PyTorch
exactly; with several partitions they compare accuracy.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from pyspark import TaskContext  # noqa: E402

from deepdist import Checkpointer, DeepDist, SGD, AdaGrad  # noqa: E402
from deepdist.descent_checkpoint import DescentCheckpointer  # noqa: E402
from deepdist.optim import add  # noqa: E402
from deepdist.optim_adaptive import Adam, AdamW, Momentum  # noqa: E402
from deepdist.sparse import SparseRows  # noqa: E402
from deepdist.torch import (default_collate, evaluate, module_params, shuffle_within_partitions,  # noqa: E402
                            torch_gradient, use_task_cpus)


def small_net(seed=0, features=6, classes=3):
    torch.manual_seed(seed)
    # no bias before batch norm: its gradient is zero up to rounding, which Adam would amplify into
    # steps of size lr in directions that differ with the rounding (no test could compare them)
    return torch.nn.Sequential(torch.nn.Linear(features, 16, bias=False), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                               torch.nn.Linear(16, classes))


def blobs(n=600, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    X = (centers[y] + rng.normal(size=(n, features))).astype(np.float32)
    return X, y.astype(np.int64)


def copy_of(net):
    return pickle.loads(pickle.dumps(net))


def assert_same_module(a, b, atol=1e-6):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        if name.endswith("num_batches_tracked"):
            continue  # a counter batch norm with a momentum never reads: it does not travel
        np.testing.assert_allclose(sa[name].numpy(), sb[name].numpy(), atol=atol, rtol=1e-5, err_msg=name)


# -- adapter -------------------------------------------------------------------------------------

def test_adapter_names_params_and_batch_norm_buffers_as_zero_copy_views():
    net = small_net()
    adapter = module_params(net)
    assert adapter.names == ["0.weight", "1.weight", "1.bias", "3.weight", "3.bias",
                             "1.running_mean", "1.running_var"]   # num_batches_tracked: unused with momentum
    arrays = adapter.get(net)
    arrays["1.running_mean"][:] = 7.0
    arrays["1.bias"][0] = 3.0
    assert float(net[1].running_mean[0]) == 7.0 and float(net[1].bias[0].detach()) == 3.0
    cumulative = torch.nn.BatchNorm1d(4, momentum=None)   # reads its counter: the counter travels
    assert "num_batches_tracked" in module_params(cumulative).names
    assert module_params(small_net(), buffers=False).names[-1] == "3.bias"


def test_stripped_module_ships_without_data_and_works_on_arrays_it_is_given():
    net = small_net()
    adapter = module_params(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with adapter.stripped(net) as shipped:
        blob = pickle.dumps(shipped)
    copy = pickle.loads(blob)                         # what an executor's broadcast value is
    assert isinstance(copy, torch.nn.Sequential) and copy[0].weight.numel() == 0
    assert len(blob) < 10_000
    for k, v in net.state_dict().items():             # the driver's module is untouched
        assert torch.equal(v, before[k])
    arrays = {name: np.array(a) for name, a in adapter.get(net).items()}
    adapter.set(copy, arrays)
    arrays["3.bias"][:] = 0.5                          # the copy reads the arrays' memory
    assert torch.equal(copy[3].bias, torch.full((3,), 0.5))
    x = torch.randn(5, 6)
    net[3].bias.data[:] = 0.5
    net.eval(), copy.eval()
    assert torch.allclose(net(x), copy(x))


def test_a_module_class_of_the_drivers_script_reaches_executors(sc):
    # plain pickle (Spark's broadcast) sends a class by name; executors cannot import __main__'s
    source = ("import torch\nclass Twice(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.lin = torch.nn.Linear(2, 1)\n    def forward(self, x):\n        return 2 * self.lin(x)\n")
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<driver script>", "exec"), namespace)
    net = namespace["Twice"]()
    X = np.ones((8, 2), np.float32)
    rdd = sc.parallelize([(x, np.float32(1.0)) for x in X], 2)
    with DeepDist(net, params=module_params(net), spark=sc, progress=False) as dd:
        dd.train(rdd, torch_gradient(lambda out, y: F.mse_loss(out.squeeze(1), y)), SGD(lr=0.01), batch_size=4)
    with torch.no_grad():
        expected = float(net(torch.from_numpy(X)).mean())
    assert evaluate(net, rdd, lambda out, y: (float(out.sum()), len(y))) == pytest.approx(expected, rel=1e-5)


def test_refuses_half_precision():
    from deepdist import ConfigurationError

    with pytest.raises(ConfigurationError, match="float16"):
        module_params(torch.nn.Linear(2, 2).half())


def test_default_collate_keeps_structure():
    x, y = default_collate([(np.zeros(3), 1), (np.ones(3), 0)])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (2, 3)
    d = default_collate([{"f": [1.0, 2.0], "label": True}, {"f": [3.0, 4.0], "label": False}])
    assert d["f"].shape == (2, 2) and d["label"].tolist() == [1, 0]
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import Row

    r = default_collate([Row(features=Vectors.dense([1.0, 2.0]), label=3), Row(features=Vectors.dense([0.0, 1.0]), label=4)])
    assert r["features"].dtype == torch.float32 and r["features"].tolist() == [[1, 2], [0, 1]] and r["label"].tolist() == [3, 4]


def test_gradient_returns_torch_gradients_and_buffer_moves():
    X, y = blobs(n=16)
    net, reference = small_net(7), small_net(7)
    batch = list(zip(X, y))
    update = torch_gradient(F.cross_entropy)(net, batch)
    reference.train()
    F.cross_entropy(reference(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(update[name], p.grad.numpy(), rtol=1e-5, atol=1e-7)
    moved = reference[1].running_mean.numpy() - small_net(7)[1].running_mean.numpy()
    np.testing.assert_allclose(update["1.running_mean"], moved, rtol=1e-5, atol=1e-7)
    for name, p in net.named_parameters():     # the task's copy does not move without local_lr
        assert torch.equal(p, dict(small_net(7).named_parameters())[name]) and p.grad is None

    clipped = torch_gradient(F.cross_entropy, max_grad_norm=1e-3)(small_net(7), batch)
    norm = np.sqrt(sum(float((clipped[n] ** 2).sum()) for n, _ in net.named_parameters()))
    assert norm == pytest.approx(1e-3, rel=1e-3)

    local = small_net(7)
    step = torch_gradient(F.cross_entropy, local_lr=0.5)(local, batch)
    np.testing.assert_allclose(local[3].weight.detach().numpy(),
                               small_net(7)[3].weight.detach().numpy() - 0.5 * step["3.weight"], rtol=1e-5)


# -- descents against torch.optim ----------------------------------------------------------------

RULES = [
    (lambda: Momentum(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda: Momentum(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (lambda: Adam(lr=1e-2, weight_decay=1e-3), lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)),
    (lambda: AdamW(lr=1e-2, weight_decay=0.1), lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)),
    (lambda: AdaGrad(lr=0.1, eps=1e-20), lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10)),
]


@pytest.mark.parametrize("ours,theirs", RULES, ids=["momentum", "nesterov", "adam", "adamw", "adagrad"])
def test_descents_take_torch_optims_steps(ours, theirs):
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(12)]
    w = torch.nn.Parameter(torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32)))
    model = {"w": w.detach().numpy().copy()}
    rule, optimizer = ours(), theirs([w])
    for i, g in enumerate(grads):
        if i == 6:  # a checkpoint and a restart half way: the rule continues from its state
            arrays, meta = rule.state_dict()
            rule = ours()
            rule.load_state_dict(arrays, meta)
        rule(model, {"w": g})
        w.grad = torch.from_numpy(g)
        optimizer.step()
    np.testing.assert_allclose(model["w"], w.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sparse_rows_move_only_their_rows_and_state():
    rule = Adam(lr=0.1)
    model = {"E": np.ones((5, 2), np.float32)}
    rule(model, {"E": SparseRows(np.array([1, 3]), np.ones((2, 2), np.float32), (5, 2))})
    assert np.all(model["E"][[0, 2, 4]] == 1) and np.all(model["E"][[1, 3]] < 1)
    assert np.all(rule.state["m"]["E"][[0, 2, 4]] == 0)


def test_loading_another_rules_state_is_refused():
    from deepdist import ConfigurationError

    adam = Adam()
    adam({"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)})
    with pytest.raises(ConfigurationError, match="Adam"):
        Momentum().load_state_dict(*adam.state_dict())


# -- training on Spark ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blob_data(sc):
    X, y = blobs()
    rdd = sc.parallelize(list(zip(X[:480], y[:480])), 1).cache()
    test = sc.parallelize(list(zip(X[480:], y[480:])), 2).cache()
    rdd.count(), test.count()
    yield X, y, rdd, test
    rdd.unpersist(), test.unpersist()


def plain_torch(net, X, y, optimizer, epochs, batch_size, local_steps=1):
    """The reference: the same batches, in the same order, in one process."""
    loss_fn = F.cross_entropy
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            xb, yb = torch.from_numpy(X[start:start + batch_size]), torch.from_numpy(y[start:start + batch_size])
            net.train()
            optimizer.zero_grad()
            loss_fn(net(xb), yb).backward()
            optimizer.step()
    return net


@pytest.mark.parametrize("rule", ["sgd", "adam", "nesterov"])
def test_one_partition_is_exactly_plain_pytorch_with_batch_norm(sc, blob_data, rule):
    X, y, rdd, _ = blob_data
    net, reference = small_net(1), small_net(1)
    descent, optimizer = {
        "sgd": (SGD(lr=0.1), torch.optim.SGD(reference.parameters(), lr=0.1)),
        "adam": (Adam(lr=1e-2), torch.optim.Adam(reference.parameters(), lr=1e-2)),
        "nesterov": (Momentum(lr=0.05, nesterov=True), torch.optim.SGD(reference.parameters(), lr=0.05,
                                                                       momentum=0.9, nesterov=True)),
    }[rule]
    with DeepDist(net, params=module_params(net), spark=sc, progress=False) as dd:
        dd.train(rdd, torch_gradient(F.cross_entropy), descent, epochs=2, batch_size=32)
        assert dd.status()["updates_applied"] == 2 * 15
    plain_torch(reference, X[:480], y[:480], optimizer, epochs=2, batch_size=32)
    assert_same_module(net, reference, atol=2e-5)   # weights and running statistics


def test_local_sgd_pushes_replay_the_local_trajectory(sc, blob_data):
    X, y, rdd, _ = blob_data
    net, reference = small_net(2), small_net(2)
    with DeepDist(net, params=module_params(net), spark=sc, progress=False) as dd:
        reports = dd.train(rdd, torch_gradient(F.cross_entropy, local_lr=0.1), SGD(lr=0.1), epochs=1,
                           batch_size=32, fetch_every=5, push_every=5)
        assert dd.status()["updates_applied"] == 3
    assert reports[0][0]["pulls"] == 3
    plain_torch(reference, X[:480], y[:480], torch.optim.SGD(reference.parameters(), lr=0.1), 1, 32)
    assert_same_module(net, reference, atol=2e-5)


def test_two_partitions_learn_as_well_as_plain_pytorch(sc):
    X, y = blobs(n=1200, seed=4)
    rdd = sc.parallelize(list(zip(X[:1000], y[:1000])), 2)
    test = sc.parallelize(list(zip(X[1000:], y[1000:])), 2)
    net, reference = small_net(3), small_net(3)
    with DeepDist(net, params=module_params(net), spark=sc, progress=False) as dd:
        dd.train(rdd, torch_gradient(F.cross_entropy), Adam(lr=1e-2), epochs=3, batch_size=25)
    plain_torch(reference, X[:1000], y[:1000], torch.optim.Adam(reference.parameters(), lr=1e-2), 3, 50)
    reference.eval()
    expected = float((reference(torch.from_numpy(X[1000:])).argmax(1).numpy() == y[1000:]).mean())
    got = evaluate(net, test)
    assert expected > 0.85 and got >= expected - 0.03, (got, expected)


def test_dataframe_rows_train_and_evaluate(spark):
    X, y = blobs(n=400, seed=5)
    df = spark.createDataFrame([(x.tolist(), int(t)) for x, t in zip(X, y)], "features array<float>, label long")
    rows = df.rdd.coalesce(2).cache()
    net = small_net(4)
    options = dict(inputs="features", target="label")
    with DeepDist(net, params=module_params(net), spark=spark, progress=False) as dd:
        dd.train(rows, torch_gradient(F.cross_entropy, **options), Adam(lr=2e-2), epochs=2, batch_size=20)
    net.eval()
    with torch.no_grad():
        expected = float((net(torch.from_numpy(X)).argmax(1).numpy() == y).mean())
    assert evaluate(net, rows, "accuracy", **options) == pytest.approx(expected)
    assert expected > 0.9
    rows.unpersist()


def test_evaluate_matches_the_driver(sc, blob_data):
    X, y, _, test = blob_data
    net = small_net(5)
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(X[480:]))
    expected = float((out.argmax(1).numpy() == y[480:]).mean())
    from deepdist.torch import mean_loss
    scores = evaluate(net, test, {"acc": "accuracy", "loss": mean_loss(F.cross_entropy)}, batch_size=7)
    assert scores["acc"] == pytest.approx(expected)
    assert scores["loss"] == pytest.approx(float(F.cross_entropy(out, torch.from_numpy(y[480:]))), rel=1e-5)


def test_torch_threads_follow_the_task_cpus(sc):
    def threads(iterator):
        list(iterator)
        yield use_task_cpus(), torch.get_num_threads(), TaskContext.get().cpus()

    for used, got, cpus in sc.parallelize(range(4), 2).mapPartitions(threads).collect():
        assert used == got == cpus == int(sc.getConf().get("spark.task.cpus", "1"))


def test_shuffle_within_partitions_permutes_each_partition_in_place(sc):
    rdd = sc.parallelize(range(40), 2)
    first, again = (shuffle_within_partitions(rdd, 0, 1).glom().collect() for _ in range(2))
    other = shuffle_within_partitions(rdd, 0, 2).glom().collect()
    assert first == again                                           # fixed by (seed, epoch, partition)
    assert [sorted(p) for p in first] == rdd.glom().collect()       # no element changes partition
    assert first != other and first != rdd.glom().collect()


# -- retries -----------------------------------------------------------------------------------

def _flaky_forward(flag):
    """loss = sum(w): every push is a gradient of ones. Partition 0's first attempt fails after 3 pushes."""
    def forward(model, batch):
        task = TaskContext.get()
        forward.calls += 1
        if task.partitionId() == 0 and task.attemptNumber() == 0 and forward.calls == 4:
            flag.touch()
            raise RuntimeError("injected failure")
        return model.weight.sum()
    forward.calls = 0
    return forward


@pytest.mark.parametrize("additive", [False, True], ids=["gradients", "additive"])
def test_what_a_retried_task_does_to_its_pushes(sc, tmp_path, additive):
    rdd = sc.parallelize(range(40), 2)             # 2 partitions x 5 batches of 4
    flag = tmp_path / "failed"
    net = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    gradient = torch_gradient(forward=_flaky_forward(flag))
    # SGD(lr=1) on a gradient of ones subtracts one per applied push; add() adds one per push
    descent = add if additive else SGD(lr=1.0)
    with DeepDist(net, params=module_params(net), spark=sc, progress=False) as dd:
        dd.train(rdd, gradient, descent, batch_size=4, additive=additive)
        applied = dd.status()["updates_applied"]
    assert flag.exists(), "the failure was not injected"
    pushes = float(net.weight[0, 0]) * (1 if additive else -1)
    if additive:
        # the failed attempt's 3 pushes were applied, then rolled back: each batch counts once
        assert pushes == 10 and applied == 13  # 13 pushes applied; the correction is not counted as one
    else:
        # gradient pushes are not rolled back: the failed attempt's 3 stay, and the retry pushes all 5 again
        assert pushes == 13 and applied == 13


# -- checkpoints -------------------------------------------------------------------------------

def _train(sc, rdd, net, descent, checkpoint, epochs, resume=False):
    with DeepDist(net, params=module_params(net), spark=sc, progress=False, checkpoint=checkpoint,
                  resume=resume) as dd:
        dd.train(rdd, torch_gradient(F.cross_entropy), descent, epochs=epochs, batch_size=32)
    return net


def test_buffers_and_adam_state_survive_a_kill_and_resume(sc, blob_data, tmp_path):
    X, y, rdd, test = blob_data
    straight = _train(sc, rdd, small_net(6), Adam(lr=1e-2), None, epochs=4)

    adam = Adam(lr=1e-2)
    _train(sc, rdd, small_net(6), adam, DescentCheckpointer(tmp_path / "a", adam), epochs=2)
    # the driver died after epoch 2: a new process, a fresh (differently initialised) net and rule
    adam = Adam(lr=1e-2)
    resumed = _train(sc, rdd, small_net(99), adam, DescentCheckpointer(tmp_path / "a", adam), epochs=4,
                     resume=True)
    assert adam.steps["0.weight"] == 4 * 15
    assert_same_module(resumed, straight, atol=2e-5)
    assert evaluate(resumed, test) == evaluate(straight, test)

    # the control: a checkpoint of the parameters alone restarts Adam from zero moments
    _train(sc, rdd, small_net(6), Adam(lr=1e-2), Checkpointer(tmp_path / "b"), epochs=2)
    params_only = _train(sc, rdd, small_net(99), Adam(lr=1e-2), Checkpointer(tmp_path / "b"), epochs=4, resume=True)
    for name in ("1.running_mean", "3.weight"):
        assert not np.allclose(params_only.state_dict()[name].numpy(), straight.state_dict()[name].numpy(),
                               atol=1e-4)


# -- optional dependency -----------------------------------------------------------------------

def test_deepdist_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"   # as if torch were not installed
            "import deepdist, deepdist.torch\n"
            "from deepdist import Adam, Momentum\n"
            "try:\n    deepdist.torch.module_params\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert "deepdist[torch]" in out.stdout
