import re

import jax.numpy as jnp
import numpy as np
import pytest

import keras_trainloop as ktl

BATCHES = [(np.full((2, 3), i, np.float32), np.full((2,), i, np.int32)) for i in range(3)]


def _labels_until_eof(ds):
    values = []
    while True:
        try:
            _, _, labels = ds.yield_batch()
        except EOFError:
            return values
        values.append(int(labels[0][0]))


def _batches():
    yield from BATCHES


def test_list_source_is_read_again_after_reset():
    ds = ktl.IterableDataset(BATCHES, name="listed", spec="s")
    assert isinstance(ds, ktl.Dataset) and ds.name == "listed"
    spec, inputs, labels = ds.yield_batch()
    assert spec == "s" and inputs[0] is BATCHES[0][0] and labels[0] is BATCHES[0][1]
    assert _labels_until_eof(ds) == [1, 2]
    with pytest.raises(EOFError, match="listed"):
        ds.yield_batch()
    ds.reset()
    assert _labels_until_eof(ds) == [0, 1, 2]


def test_generator_function_is_called_again_on_reset():
    calls = []

    def batches():
        calls.append(1)
        yield from BATCHES

    ds = ktl.IterableDataset(batches)
    assert calls == []  # Opened on first use.
    assert _labels_until_eof(ds) == [0, 1, 2]
    ds.reset()
    ds.reset()
    assert _labels_until_eof(ds) == [0, 1, 2]
    assert len(calls) == 2


def test_reset_mid_pass_restarts_from_the_beginning():
    ds = ktl.IterableDataset(_batches)
    ds.yield_batch()
    ds.yield_batch()
    ds.reset()
    assert _labels_until_eof(ds) == [0, 1, 2]


def test_generator_object_gives_one_pass_and_refuses_reset_after_use():
    ds = ktl.IterableDataset(_batches(), name="once")
    ds.reset()  # Nothing read yet: allowed (e.g. Trainer.eval resets first).
    assert _labels_until_eof(ds) == [0, 1, 2]
    with pytest.raises(ValueError, match="one-shot.*Fix: pass the generator function"):
        ds.reset()


def test_exhausted_empty_generator_object_refuses_reset():
    ds = ktl.IterableDataset(iter([]))
    with pytest.raises(EOFError):
        ds.yield_batch()
    with pytest.raises(ValueError, match="one-shot"):
        ds.reset()


@pytest.mark.parametrize(
    ("element", "inputs", "labels"),
    [
        (np.zeros((2, 1)), 1, 0),
        ([np.zeros((2, 1)), np.zeros((2, 4))], 2, 0),
        ((np.zeros((2, 1)), None), 1, 0),
        ((np.zeros((2, 1)), ()), 1, 0),
        (((np.zeros((2, 1)), np.zeros((2, 2))), [np.zeros(2), np.zeros(2)]), 2, 2),
        (({"a": np.zeros((2, 1)), "b": np.ones((2, 1))}, np.zeros(2)), 2, 1),
        ((jnp.zeros((2, 1)), jnp.zeros(2)), 1, 1),
    ],
    ids=["array", "list-of-inputs", "labels-none", "labels-empty", "tuples", "dict", "jax"],
)
def test_element_structures(element, inputs, labels):
    _, got_inputs, got_labels = ktl.IterableDataset([element]).yield_batch()
    assert isinstance(got_inputs, list) and isinstance(got_labels, list)
    assert (len(got_inputs), len(got_labels)) == (inputs, labels)


def test_dict_inputs_follow_key_order():
    element = ({"b": np.zeros((2, 1)), "a": np.ones((2, 1))}, np.zeros(2))
    _, inputs, _ = ktl.IterableDataset([element]).yield_batch()
    np.testing.assert_array_equal(inputs[1], np.ones((2, 1)))


@pytest.mark.parametrize(
    ("element", "error", "match"),
    [
        ((np.zeros(2), np.zeros(2), np.zeros(2)), TypeError, "tuple of 3 items in element 0"),
        ((np.zeros(2), [1, 2]), TypeError, re.escape("labels[0]=1")),
        (("text", np.zeros(2)), TypeError, "inputs='text'"),
        (None, ValueError, "at least one input"),
        (([], np.zeros(2)), ValueError, "at least one input"),
    ],
    ids=["three-tuple", "python-labels", "string-input", "none", "no-inputs"],
)
def test_bad_elements_raise_naming_the_element(element, error, match):
    ds = ktl.IterableDataset([element])
    with pytest.raises(error, match=match) as info:
        ds.yield_batch()
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize(
    "source",
    [42, None, "abc", {"x": 1}],
    ids=["int", "none", "string", "dict"],
)
def test_non_iterable_source_raises_at_construction(source):
    with pytest.raises(TypeError, match="Received: source=.*Fix:"):
        ktl.IterableDataset(source)


def test_factory_returning_a_non_iterable_raises_clearly():
    ds = ktl.IterableDataset(lambda: 3)
    with pytest.raises(TypeError, match="must return an iterator.*Fix:"):
        ds.yield_batch()


def test_other_exceptions_of_the_source_reach_the_user():
    def broken():
        yield BATCHES[0]
        raise KeyError("boom")

    ds = ktl.IterableDataset(broken)
    ds.yield_batch()
    with pytest.raises(KeyError, match="boom"):
        ds.yield_batch()
