"""PyDatasetSource: a keras.utils.PyDataset read through Keras' own adapter, as fit reads it."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from data_helpers import (
    array_reference,
    assert_same_weights,
    digits,
    drain,
    fused_sizes,
    train_digits,
)

import keras_trainloop as ktl
from keras_trainloop.data import PyDatasetSource

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int32)


class Batches(keras.utils.PyDataset):
    """Batches of `batch_size` rows of `x`, `y` (and `w`), recording the epoch callbacks."""

    def __init__(self, x=X, y=Y, w=None, *, batch_size=4, form="xy", **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.w, self.batch_size, self.form = x, y, w, batch_size, form
        self.events = []

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        x, y = self.x[part], self.y[part]
        return {
            "xy": lambda: (x, y),
            "xyw": lambda: (x, y, self.w[part]),
            "x": lambda: (x,),
            "dict": lambda: {"pixels": x, "first": x[:, :1]},
            "list": lambda: [x, y],
        }[self.form]()

    def on_epoch_begin(self):
        self.events.append("begin")

    def on_epoch_end(self):
        self.events.append("end")


def _ids(batches):
    return [b[2][0].tolist() for b in batches]


# Training the digits MLP ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2], ids=["in-thread", "two-workers"])
def test_trains_digits_exactly_as_array_dataset(workers):
    x, y, _, _ = digits()
    accuracy, weights, _ = train_digits(
        PyDatasetSource(Batches(x, y, batch_size=64, workers=workers))
    )
    reference_accuracy, reference_weights = array_reference()
    assert reference_accuracy > 0.8
    assert accuracy == reference_accuracy  # Keras' enqueuer keeps the batch order.
    assert_same_weights(weights, reference_weights)


def test_fused_and_single_steps_train_the_same():
    x, y, _, _ = digits()
    accuracy, weights, trainer = train_digits(
        PyDatasetSource(Batches(x, y, batch_size=64)), max_fused_steps=2
    )
    assert fused_sizes(trainer) == {2}
    single_accuracy, single_weights = array_reference()
    assert accuracy == pytest.approx(single_accuracy, abs=1e-6)
    for a, b in zip(weights, single_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# Passes, epoch callbacks, shuffling ---------------------------------------------------------------
def test_each_pass_calls_the_epoch_callbacks_and_ends_with_eof_until_reset():
    batches = Batches()
    ds = PyDatasetSource(batches, name="train")
    assert isinstance(ds, ktl.Dataset) and ds.name == "train" and len(ds) == 3
    assert ds.loop_forever is False and ds.py_dataset is batches
    ds.reset()  # Before anything is read: no callback.
    assert batches.events == []
    assert _ids(drain(ds)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches.events == ["begin", "end"]
    with pytest.raises(EOFError, match="reset"):
        ds.yield_batch()
    ds.reset()
    assert batches.events == ["begin", "end"]  # The pass had ended already.
    ds.yield_batch()
    ds.reset()  # Cut short: its end is called, as fit ends an epoch early.
    assert batches.events == ["begin", "end", "begin", "end"]
    assert _ids(drain(ds)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_shuffle_visits_every_batch_in_a_new_order_each_pass():
    ds = PyDatasetSource(
        Batches(np.repeat(X, 10, axis=0), np.arange(100), batch_size=5), shuffle=True
    )
    passes = []
    for _ in range(2):
        passes.append([ids[0] for ids in _ids(drain(ds))])
        ds.reset()
    assert sorted(passes[0]) == sorted(passes[1]) == list(range(0, 100, 5))
    assert passes[0] != list(range(0, 100, 5)) and passes[0] != passes[1]


def test_yield_batches_stacks_and_leaves_the_short_batch_to_yield_batch():
    ds = PyDatasetSource(Batches(batch_size=3))
    _, inputs, labels = ds.yield_batches(3)
    assert inputs[0].shape == (3, 3, 3) and labels[0].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert ds.yield_batches(2) is None
    assert _ids(drain(ds)) == [[9]]


@pytest.mark.parametrize(
    ("form", "num_inputs", "num_labels", "spec"),
    [
        ("xy", 1, 1, None),
        ("xyw", 1, 2, None),
        ("x", 1, 0, None),
        ("dict", 2, 0, ("pixels", "first")),
        ("list", 1, 1, None),
    ],
    ids=["x-y", "x-y-weights", "x-only", "dict", "list-is-a-tuple"],
)
def test_batches_are_read_as_fit_reads_them(form, num_inputs, num_labels, spec):
    w = np.linspace(0, 1, 10).astype(np.float32)
    got_spec, inputs, labels = PyDatasetSource(Batches(w=w, form=form)).yield_batch()
    assert (got_spec, len(inputs), len(labels)) == (spec, num_inputs, num_labels)
    assert all(isinstance(a, np.ndarray) for a in inputs + labels)
    if form == "xyw":
        np.testing.assert_array_equal(labels[1], w[:4])  # labels: [y, sample_weight]


class Endless(keras.utils.PyDataset):
    @property
    def num_batches(self):
        return None

    def __getitem__(self, i):
        return X[:2] + i, Y[:2]


def test_endless_py_dataset_is_declared_and_has_no_length():
    ds = PyDatasetSource(Endless())
    assert ds.loop_forever is True
    with pytest.raises(TypeError, match="endless"):
        len(ds)
    assert [float(ds.yield_batch()[1][0][0, 0]) for _ in range(3)] == [0.0, 1.0, 2.0]


def test_unbatched_items_are_refused_with_the_fix():
    class Examples(keras.utils.PyDataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return X[i], Y[i]

    with pytest.raises(ValueError, match=r"must be a batch.*element 0 of PyDataset.*Fix:"):
        PyDatasetSource(Examples()).yield_batch()


@pytest.mark.parametrize("value", [X, [(X, Y)]], ids=["array", "list"])
def test_other_objects_are_refused_with_the_fix(value):
    with pytest.raises(TypeError, match="takes a keras.utils.PyDataset.*Fix:"):
        PyDatasetSource(value)
