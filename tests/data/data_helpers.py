"""Helpers shared by the dataset tests."""

from __future__ import annotations

import functools

import numpy as np


def drain(ds) -> list:
    """Every batch `ds` yields until `EOFError`."""
    batches = []
    while True:
        try:
            batches.append(ds.yield_batch())
        except EOFError:
            return batches


@functools.cache
def digits() -> tuple:
    """scikit-learn's digits: (x_train (1500, 64) float32, y_train int32, x_test, y_test)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32).reshape(-1, 64)
    y = data.target.astype(np.int32)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def digits_trainer():
    """A digits MLP (64-32-10, Adam) whose initial weights are the same in every call."""
    import keras

    import keras_trainloop as ktl

    def dense(units, seed, **kwargs):
        init = keras.initializers.GlorotUniform(seed=seed)
        return lambda: keras.layers.Dense(units, kernel_initializer=init, **kwargs)

    def model_fn(ctx, spec, inputs):
        hidden = ctx.layer("hidden", dense(32, 1, activation="relu"))(inputs[0])
        return [ctx.layer("logits", dense(10, 2))(hidden)]

    return ktl.Trainer(
        model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        keras.optimizers.Adam(1e-2),
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()],
    )


def train_digits(train_ds, *, epochs=3, max_fused_steps=1):
    """Trains a fresh `digits_trainer` on `train_ds`; returns (test accuracy, weights, trainer).

    One step per call by default (fused calls cost seconds of compilation on a small
    CPU); with `max_fused_steps > 1` and a dataset with `yield_batches`, steps run fused
    (not measured first: `measure_fusion=False`).
    """
    import keras_trainloop as ktl

    trainer = digits_trainer()
    loop = ktl.Loop(trainer, max_fused_steps=max_fused_steps, measure_fusion=False)
    loop.run_epochs(train_ds, epochs)
    _, _, x_test, y_test = digits()
    accuracy = trainer.eval(ktl.ArrayDataset(x_test, y_test, batch_size=256))[-1]
    return float(accuracy), trainer.model.get_weights(), trainer


@functools.cache
def array_reference(*, epochs=3, batch_size=64, shuffle=False, seed=None):
    """`train_digits` on the digits' `ktl.ArrayDataset` (computed once): (accuracy, weights)."""
    import keras_trainloop as ktl

    x, y, _, _ = digits()
    ds = ktl.ArrayDataset(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
    accuracy, weights, _ = train_digits(ds, epochs=epochs)
    return accuracy, weights


def fused_sizes(trainer) -> set:
    """The fused call sizes the trainer compiled (empty: every step ran alone)."""
    return {n for executor in trainer._cache.executors() for n in executor.fused_fns}


def assert_same_weights(a, b):
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
