"""Fixtures for the command-line tools: a small digits MLP and a fake clock."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_trainloop as ktl


@pytest.fixture(scope="session")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 64)
    y = d.target.astype(np.int32)
    return x[:1024], y[:1024], x[1500:], y[1500:]


def _model_fn(ctx, spec, inputs):
    x = ctx.layer("hidden", lambda: keras.layers.Dense(16, activation="relu"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]


@pytest.fixture
def trainer():
    return ktl.Trainer(
        _model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        keras.optimizers.Adam(1e-2),
        train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()],
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()],
    )


@pytest.fixture
def train_ds(digits):
    x, y, _, _ = digits
    return ktl.ArrayDataset(x, y, batch_size=64, loop_forever=True, name="train")


@pytest.fixture
def test_ds(digits):
    _, _, x, y = digits
    return ktl.ArrayDataset(x, y, batch_size=128, name="test")


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick_hook(self, seconds: float):
        """An on_step hook that advances the clock by `seconds` per step."""

        def tick(loop, metrics):
            self.now += seconds

        return tick


@pytest.fixture
def clock():
    return FakeClock()
