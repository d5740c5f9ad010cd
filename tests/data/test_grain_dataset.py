"""GrainDataset: grain MapDataset / IterDataset / DataLoader batches, fused steps, exact resume."""

from __future__ import annotations

import json
import warnings

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
from keras_trainloop.data import GrainDataset

grain = pytest.importorskip("grain")

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int32)


def _pairs(x=X, y=Y):
    """A MapDataset of (x[i], y[i]) examples."""
    return grain.MapDataset.source(np.arange(len(x))).map(lambda i: (x[i], y[i]))


def _digits_map_dataset(batch_size=64):
    x, y, _, _ = digits()
    return _pairs(x, y).batch(batch_size)


def _ids(batches):
    """The example ids (the labels) of each batch."""
    return [b[2][0].tolist() for b in batches]


# Training the digits MLP ------------------------------------------------------------------------
def test_map_dataset_trains_digits_exactly_as_array_dataset():
    array_accuracy, array_weights = array_reference()
    accuracy, weights, _ = train_digits(GrainDataset(_digits_map_dataset()))
    assert array_accuracy > 0.8
    assert accuracy == array_accuracy  # The same batches in the same order.
    assert_same_weights(weights, array_weights)


def test_fused_and_single_steps_train_the_same():
    accuracy, weights, trainer = train_digits(
        GrainDataset(_digits_map_dataset()), max_fused_steps=2
    )
    assert fused_sizes(trainer) == {2}  # Fusion happened.
    single_accuracy, single_weights = array_reference()  # One step per call, same batches.
    assert accuracy == pytest.approx(single_accuracy, abs=1e-6)
    for a, b in zip(weights, single_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["iter_dataset", "data_loader"])
def test_iter_dataset_and_data_loader_train_digits_like_array_dataset(kind):
    x, y, _, _ = digits()
    if kind == "iter_dataset":  # Unshuffled: the ArrayDataset's batches.
        accuracy, weights, _ = train_digits(GrainDataset(_digits_map_dataset().to_iter_dataset()))
        reference_accuracy, reference_weights = array_reference()
        assert accuracy == reference_accuracy
        assert_same_weights(weights, reference_weights)
        return
    loader = grain.DataLoader(  # Shuffled by grain's sampler: another order, a close accuracy.
        data_source=[(x[i], y[i]) for i in range(len(x))],
        sampler=grain.samplers.IndexSampler(len(x), shuffle=True, seed=0, num_epochs=1),
        operations=[grain.transforms.Batch(64)],
        worker_count=0,
    )
    accuracy, _, _ = train_digits(GrainDataset(loader))
    reference_accuracy, _ = array_reference(shuffle=True, seed=0)
    assert accuracy == pytest.approx(reference_accuracy, abs=0.04)


# Batches, passes and stacking -------------------------------------------------------------------
def test_each_pass_reads_the_batches_then_raises_eof_until_reset():
    ds = GrainDataset(_pairs().batch(4), name="train")
    assert isinstance(ds, ktl.Dataset) and ds.name == "train" and len(ds) == 3
    spec, inputs, labels = ds.yield_batch()
    assert spec is None and inputs[0].shape == (4, 3) and labels[0].tolist() == [0, 1, 2, 3]
    assert _ids(drain(ds)) == [[4, 5, 6, 7], [8, 9]]
    with pytest.raises(EOFError, match="reset"):
        ds.yield_batch()
    with pytest.raises(EOFError):
        ds.yield_batch()  # Still the end, until reset().
    ds.reset()
    assert _ids(drain(ds)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    ds.reset()
    ds.yield_batch()
    ds.reset()  # Mid-pass: the next pass starts from its first batch.
    ds.reset()  # Twice: nothing more.
    assert ds.yield_batch()[2][0].tolist() == [0, 1, 2, 3]


def test_yield_batches_stacks_and_leaves_the_short_batch_to_yield_batch():
    ds = GrainDataset(_pairs().batch(3))
    _, inputs, labels = ds.yield_batches(2)
    assert inputs[0].shape == (2, 3, 3) and labels[0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert ds.yield_batches(2) is None  # [6, 7, 8] and the short [9]: kept, in order.
    assert _ids(drain(ds)) == [[6, 7, 8], [9]]
    assert ds.yield_batches(1) is None  # The pass is over.


def test_elements_are_read_as_fit_reads_them():
    w = np.linspace(0, 1, 10).astype(np.float32)
    weighted = GrainDataset(_pairs().map(lambda e: (e[0], e[1], w[e[1]])).batch(5))
    _, inputs, labels = weighted.yield_batch()
    assert len(inputs) == 1 and len(labels) == 2  # labels: [y, sample_weight]
    np.testing.assert_array_equal(labels[1], w[:5])
    named = GrainDataset(_pairs().map(lambda e: {"b": e[0], "a": e[0][:1]}).batch(5))
    spec, inputs, labels = named.yield_batch()  # grain's .batch() sorts a dict's keys.
    assert spec == ("a", "b") and [a.shape for a in inputs] == [(5, 1), (5, 3)] and labels == []
    spec, inputs, labels = named.yield_batches(1)
    assert spec == ("a", "b") and inputs[1].shape == (1, 5, 3)


def test_unbatched_elements_are_refused_with_the_fix():
    ds = GrainDataset(_pairs(), name="examples")
    with pytest.raises(
        ValueError,
        match=r"must be a batch.*element 0 of grain dataset "
        r"'examples'.*Fix:.*\.batch\(64\)",
    ):
        ds.yield_batch()


def test_endless_repeat_is_declared_and_has_no_length():
    ds = GrainDataset(_pairs().repeat().batch(4))
    assert ds.loop_forever is True
    with pytest.raises(TypeError, match="no known length"):
        len(ds)
    assert _ids([ds.yield_batch() for _ in range(3)]) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert GrainDataset(_pairs().batch(4)).loop_forever is False
    with pytest.raises(TypeError, match="no known length"):
        len(GrainDataset(_pairs().batch(4).to_iter_dataset()))


@pytest.mark.parametrize(
    "value",
    [X, [(X, Y)], "grain"],
    ids=["array", "list", "string"],
)
def test_other_objects_are_refused_with_the_fix(value):
    with pytest.raises(TypeError, match="GrainDataset takes a grain.MapDataset.*Fix:"):
        GrainDataset(value)


# Exact resume -----------------------------------------------------------------------------------
def _sources():
    shuffled = _pairs().shuffle(seed=3).repeat(2).batch(3)  # Two passes of 10, reshuffled.
    loader = grain.DataLoader(
        data_source=[(X[i], Y[i]) for i in range(10)],
        sampler=grain.samplers.IndexSampler(10, shuffle=True, seed=1, num_epochs=2),
        operations=[grain.transforms.Batch(3)],
        worker_count=0,
    )
    return {
        "map_dataset": shuffled,
        "iter_dataset": shuffled.to_iter_dataset(),
        "data_loader": loader,
    }


@pytest.mark.parametrize("kind", ["map_dataset", "iter_dataset", "data_loader"])
@pytest.mark.parametrize("read", [0, 1, 3, 7], ids=lambda n: f"read{n}")
def test_set_state_resumes_exactly_also_after_json(kind, read):
    ds = GrainDataset(_sources()[kind])
    expected_all = _ids(drain(GrainDataset(_sources()[kind])))
    for _ in range(read):
        ds.yield_batch()
    ds.yield_batches(4)  # None near the end: then the batches read ahead are kept, in the state.
    state = json.loads(json.dumps(ds.get_state()))
    rest = _ids(drain(ds))
    other = GrainDataset(_sources()[kind])
    other.set_state(state)
    assert _ids(drain(other)) == rest
    other.reset()
    assert _ids(drain(other)) == expected_all


def test_state_of_a_finished_pass_and_of_a_fresh_one():
    ds = GrainDataset(_pairs().batch(4))
    fresh = ds.get_state()
    drain(ds)
    ended = ds.get_state()
    other = GrainDataset(_pairs().batch(4))
    other.set_state(ended)
    with pytest.raises(EOFError):
        other.yield_batch()
    other.set_state(fresh)
    assert _ids(drain(other)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: "not a dict", "takes the dict that GrainDataset.get_state"),
        (lambda s: s | {"version": 99}, "version=99"),
        (lambda s: s | {"source": "DataLoader"}, "comes from a DataLoader"),
        (lambda s: s | {"iterator": {"nothing": 1}}, "cannot take this state"),
    ],
    ids=["not-a-dict", "version", "other-source", "bad-iterator"],
)
def test_malformed_states_are_refused_unchanged(change, match):
    ds = GrainDataset(_pairs().batch(4))
    ds.yield_batch()
    state = change(ds.get_state())
    with pytest.raises(ValueError, match=match):
        ds.set_state(state)
    assert ds.yield_batch()[2][0].tolist() == [4, 5, 6, 7]  # Position unchanged.


class _NoStateIterator(grain.DatasetIterator):
    def __init__(self):
        super().__init__()
        self._i = 0

    def __next__(self):
        if self._i == 3:
            raise StopIteration
        self._i += 1
        return X[:2] + self._i, Y[:2]

    def get_state(self):
        raise NotImplementedError

    def set_state(self, state):
        raise NotImplementedError


class _NoStateDataset(grain.IterDataset):
    def __iter__(self):
        return _NoStateIterator()


def test_iterator_without_state_warns_and_restarts_the_pass():
    ds = GrainDataset(_NoStateDataset(), name="nostate")
    ds.yield_batch()
    state = ds.get_state()
    assert state["saved"] is False
    other = GrainDataset(_NoStateDataset(), name="nostate")
    other.yield_batch()
    with pytest.warns(UserWarning, match="restarts from a fresh pass"):
        other.set_state(state)
    assert len(drain(other)) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.set_state(state)  # Warned once.
