"""The unfused feed on accelerators prefetches each batch in the trainer's own layout."""

from __future__ import annotations

import jax
import keras
import numpy as np
from jax.sharding import NamedSharding
from loop_helpers import linear_model_fn

import keras_trainloop as ktl
from keras_trainloop.data._prefetch import DevicePrefetcher

X = np.arange(60, dtype=np.float32).reshape(20, 3)
Y = X.sum(axis=1, keepdims=True)


def _trainer(distribution=None):
    keras.utils.set_random_seed(0)
    return ktl.Trainer(
        linear_model_fn, "mean_squared_error", keras.optimizers.SGD(0.01), distribution=distribution
    )


def _run(trainer, monkeypatch, prefetch: bool):
    seen, losses = [], []
    step = trainer.train_step

    def train_step(spec, inputs, labels):
        seen.append(inputs[0])
        return step(spec, inputs, labels)

    trainer.train_step = train_step
    if prefetch:
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    loop = ktl.Loop(trainer, max_fused_steps=1)
    loop.on_step("loss", 0, lambda lp, m: losses.append(float(m[0])))
    ds = ktl.ArrayDataset(X, Y, batch_size=4, loop_forever=True)
    loop.run_steps(ds, 6)
    monkeypatch.undo()
    return loop, ds, seen, losses


def test_prefetched_batches_have_the_distributions_batch_layout(monkeypatch):
    distribution = keras.distribution.DataParallel(devices=jax.local_devices()[:1])
    trainer = _trainer(distribution)
    loop, ds, seen, losses = _run(trainer, monkeypatch, prefetch=True)
    assert isinstance(loop._feeds[ds], DevicePrefetcher)
    expected = trainer._placement.put_batch._shardings  # The step's own shardings.
    ((input_shardings, _),) = expected.values()
    for x in seen:
        assert isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
        assert x.sharding == input_shardings[0]
    _, _, _, plain = _run(_trainer(distribution), monkeypatch, prefetch=False)
    assert losses == plain


def test_put_batch_before_the_first_step_uses_the_distribution_it_will_fix():
    distribution = keras.distribution.DataParallel(devices=jax.local_devices()[:1])
    trainer = _trainer(distribution)
    inputs, labels = trainer.put_batch(None, [X[:4]], [Y[:4]])
    assert isinstance(inputs[0].sharding, NamedSharding)
    assert inputs[0].sharding.spec[0] == distribution.batch_dim_name
    trainer.train_step(None, inputs, labels)  # The step takes the placed batch as it is.
    assert trainer.global_step == 1


def test_put_batch_without_a_distribution_is_the_default_device():
    inputs, labels = _trainer().put_batch(None, [X[:4]], [Y[:4]])
    assert isinstance(inputs[0], jax.Array) and isinstance(labels[0], jax.Array)
    assert inputs[0].devices() == {jax.local_devices()[0]}
    in_device = _trainer().in_device(0)
    (x,), _ = in_device.put_batch(None, [X[:4]], [Y[:4]])
    assert x.devices() == {jax.local_devices()[0]}
