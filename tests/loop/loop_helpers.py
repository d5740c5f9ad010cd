"""Test doubles and helpers shared by the Loop tests."""

from __future__ import annotations

import keras
import numpy as np

import keras_trainloop as ktl


class Batches:
    """A finite (or looping) dataset of small regression batches, counting its calls.

    A test double of the `ktl.Dataset` protocol that also records how it was
    used. `epoch_lengths` gives the number of batches of each pass (the last
    one repeats); `nan_at` makes the batch with that index (counted over all
    yields) carry NaN inputs, so the loss of that step is NaN.
    """

    def __init__(
        self,
        epoch_lengths=(5,),
        *,
        batch_size=4,
        loop_forever=False,
        nan_at=None,
        error_at=None,
        name="batches",
    ):
        self.name = name
        self.epoch_lengths = list(epoch_lengths)
        self.batch_size = batch_size
        self.loop_forever = loop_forever
        self.nan_at = nan_at
        self.error_at = error_at
        self.yields = 0  # batches returned, over all epochs
        self.resets = 0
        self._pass = 0
        self._index = 0
        rng = np.random.default_rng(0)
        self._x = rng.normal(size=(64, batch_size, 3)).astype(np.float32)
        self._y = self._x.sum(axis=-1, keepdims=True)

    def _length(self) -> int:
        return self.epoch_lengths[min(self._pass, len(self.epoch_lengths) - 1)]

    def yield_batch(self):
        if self._index >= self._length():
            if not self.loop_forever:
                raise EOFError
            self._index = 0
        if self.error_at is not None and self.yields == self.error_at:
            raise KeyError("broken record")
        x = self._x[self.yields % len(self._x)]
        y = self._y[self.yields % len(self._y)]
        if self.nan_at is not None and self.yields == self.nan_at:
            x = np.full_like(x, np.nan)
        self.yields += 1
        self._index += 1
        return None, [x], [y]

    def reset(self):
        self.resets += 1
        self._pass += 1
        self._index = 0


def linear_model_fn(ctx, spec, inputs):
    return [ctx.layer("dense", lambda: keras.layers.Dense(1))(inputs[0])]


class Recorder:
    """Hooks that append `(label, loop_step)` to `events`."""

    def __init__(self):
        self.events: list[tuple[str, int]] = []

    def hook(self, label):
        def fn(loop, arg):
            self.events.append((label, loop.loop_step))

        return fn

    def steps(self, label):
        return [step for name, step in self.events if name == label]

    def labels(self):
        return [name for name, _ in self.events]


# A real model with dropout, Adam, moving averages and an accuracy metric, and its data --------------------------
def classifier_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int32)
    return x, y


def classifier_trainer():
    keras.utils.set_random_seed(1)

    def model_fn(ctx, spec, inputs):
        h = ctx.layer("hidden", lambda: keras.layers.Dense(16, "relu"))(inputs[0])
        h = ctx.layer("dropout", lambda: keras.layers.Dropout(0.3))(h, training=ctx.training)
        return [ctx.layer("logits", lambda: keras.layers.Dense(2))(h)]

    return ktl.Trainer(
        model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        keras.optimizers.Adam(1e-2),
        train_metrics=[ktl.metrics.SparseCategoricalAccuracy()],
    )
