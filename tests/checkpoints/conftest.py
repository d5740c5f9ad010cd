"""Fixtures for the checkpoint tests: digits MLP trainers and datasets."""

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
    return x[:320], y[:320]


def mlp_fn(hidden: int, layers: int = 1):
    """A model_fn with `layers` hidden layers of `hidden` units (sizes fixed by the closure)."""

    def model_fn(ctx, spec, inputs):
        x = inputs[0]
        for i in range(layers):
            name = "hidden" if i == 0 else f"hidden_{i}"
            x = ctx.layer(name, lambda: keras.layers.Dense(hidden, activation="relu"))(x)
        return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]

    return model_fn


@pytest.fixture
def make_trainer():
    """Fresh digits MLP trainers."""

    def make(hidden: int = 16, layers: int = 1, context=None):
        return ktl.Trainer(
            mlp_fn(hidden, layers),
            ktl.losses.sparse_categorical_cross_entropy_logits,
            keras.optimizers.Adam(1e-2),
            context=context,
        )

    return make


@pytest.fixture
def make_ds(digits):
    """A dataset of 10 batches per epoch, in a fixed order, looping forever."""

    def make():
        x, y = digits
        return ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True, name="train")

    return make
