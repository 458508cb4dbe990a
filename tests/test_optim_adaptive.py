"""Stateful descents (Momentum, Adam, AdamW) and DescentCheckpointer, on numpy models (no torch needed)."""

import numpy as np
import pytest

from deepdist import AdaGrad, Adam, AdamW, ConfigurationError, DescentCheckpointer, Momentum, SGD
from deepdist.store import ParameterStore
from deepdist.wire import UpdateMeta


def _store(descent, checkpointer=None):
    store = ParameterStore({"w": np.zeros(3, np.float32), "b": np.ones(2)}, checkpointer=checkpointer)
    store.set_descent(descent)
    return store


@pytest.mark.parametrize("make", [lambda: Momentum(lr=0.1, nesterov=True), lambda: Adam(lr=0.1),
                                  lambda: AdamW(lr=0.1), lambda: AdaGrad(lr=0.1), lambda: SGD(lr=0.1, decay=0.5)],
                         ids=["nesterov", "adam", "adamw", "adagrad", "sgd"])
def test_a_resumed_rule_continues_as_if_never_stopped(tmp_path, make):
    rng = np.random.default_rng(0)
    updates = [{"w": rng.normal(size=3).astype(np.float32), "b": rng.normal(size=2)} for _ in range(8)]

    straight = _store(make())
    straight.start()
    for u in updates:
        straight.submit(u, UpdateMeta(version=0))
    straight.drain(), straight.stop()

    rule = make()
    first = _store(rule, DescentCheckpointer(tmp_path, rule))
    first.start()
    for u in updates[:5]:
        first.submit(u, UpdateMeta(version=0))
    first.drain(), first.stop()
    first.checkpointer.write(first, epochs_completed=1)

    rule = make()
    resumed = _store(rule, DescentCheckpointer(tmp_path, rule))
    frame = resumed.checkpointer.latest()           # what DeepDist(resume=True) calls: loads the rule's state
    assert sorted(frame.arrays) == ["b", "w"]       # the rule's arrays are not the model's
    for name, array in frame.arrays.items():
        resumed.params[name][...] = array
    resumed.start()
    for u in updates[5:]:
        resumed.submit(u, UpdateMeta(version=0))
    resumed.drain(), resumed.stop()
    for name in ("w", "b"):
        np.testing.assert_allclose(resumed.params[name], straight.params[name], rtol=1e-6)


def test_checkpointer_needs_a_rule_with_state():
    with pytest.raises(ConfigurationError, match="state_dict"):
        DescentCheckpointer("/tmp/unused", lambda model, update: None)


def test_a_plain_checkpoint_leaves_the_rule_fresh(tmp_path):
    from deepdist import Checkpointer

    store = _store(Adam())
    Checkpointer(tmp_path).write(store, epochs_completed=1)
    rule = Adam()
    assert DescentCheckpointer(tmp_path, rule).latest() is not None
    assert rule.steps == {} and rule.state == {"m": {}, "v": {}}


def test_bad_settings_are_refused():
    with pytest.raises(ConfigurationError):
        Momentum(momentum=1.0)
    with pytest.raises(ConfigurationError):
        Adam(betas=(0.9,))
    with pytest.raises(ConfigurationError):
        Adam(lr=0)
    with pytest.raises(ConfigurationError, match="float"):
        Adam()({"n": np.zeros(2, np.int64)}, {"n": np.ones(2, np.int64)})
