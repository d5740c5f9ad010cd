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
    return x[:1500], y[:1500], x[1500:], y[1500:]


def mlp_fn(hidden):
    def model_fn(ctx, spec, inputs):
        x = ctx.layer("hidden", lambda: keras.layers.Dense(hidden, activation="relu"))(inputs[0])
        return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]

    return model_fn


@pytest.fixture
def make_trainer():
    """A factory of small digits MLP trainers."""

    def make(hidden=32, **kwargs):
        kwargs.setdefault("eval_metrics", [ktl.metrics.SparseCategoricalAccuracy()])
        return ktl.Trainer(
            mlp_fn(hidden),
            ktl.losses.sparse_categorical_cross_entropy_logits,
            keras.optimizers.Adam(1e-2),
            **kwargs,
        )

    return make
