"""Fixtures for the plot tests: a digits MLP trainer and datasets."""

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
    return x[:320], y[:320], x[1500:1700], y[1500:1700]


def _model_fn(ctx, spec, inputs):
    x = ctx.layer("hidden", lambda: keras.layers.Dense(16, activation="relu"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]


@pytest.fixture
def make_trainer():
    def make():
        return ktl.Trainer(
            _model_fn,
            ktl.losses.sparse_categorical_cross_entropy_logits,
            keras.optimizers.Adam(1e-2),
            train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()],
            eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()],
        )

    return make


@pytest.fixture
def make_train_ds(digits):
    def make():
        x, y, _, _ = digits
        return ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True, name="train")

    return make


@pytest.fixture
def test_ds(digits):
    _, _, x, y = digits
    return ktl.ArrayDataset(x, y, batch_size=100, name="test")
