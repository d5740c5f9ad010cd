import re
import subprocess
import sys
import timeit

import jax.numpy as jnp
import numpy as np
import pytest

import keras_trainloop as ktl


def _drain(ds, limit=10_000):
    """All batches until EOFError, as (spec, inputs, labels) triples."""
    batches = []
    for _ in range(limit):
        try:
            batches.append(ds.yield_batch())
        except EOFError:
            return batches
    raise AssertionError(f"no EOFError after {limit} batches")


def _example_ids(batches, side=1, index=0):
    """The concatenated values of one array across batches (arrays hold example ids)."""
    return np.concatenate([batch[side][index] for batch in batches])


X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int32)


def test_public_names_and_protocol():
    from keras_trainloop import data

    assert sorted(data.__all__) == sorted(
        [
            "ArrayDataset",
            "Dataset",
            "GeneratorDataset",
            "GrainDataset",
            "IterableDataset",
            "PyDatasetSource",
            "TFDataset",
            "as_dataset",
            "as_validation_data",
            "from_tfds",
            "maybe_prefetch_to_device",
            "process_shard",
        ]
    )
    assert ktl.Dataset is data.Dataset and ktl.ArrayDataset is data.ArrayDataset
    assert isinstance(ktl.ArrayDataset(X, Y, batch_size=4), ktl.Dataset)


def test_user_class_with_the_three_members_is_a_dataset():
    class Minimal:
        name = "m"

        def yield_batch(self):
            raise EOFError

        def reset(self):
            pass

    class NoReset:
        name = "n"

        def yield_batch(self):
            raise EOFError

    assert isinstance(Minimal(), ktl.Dataset)
    assert not isinstance(NoReset(), ktl.Dataset)


def test_batches_in_order_with_short_last_batch_then_eof():
    ds = ktl.ArrayDataset(X, Y, batch_size=4, spec="s", name="tiny")
    batches = _drain(ds)
    assert [b[1][0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(b[0] == "s" for b in batches)
    np.testing.assert_array_equal(_example_ids(batches, side=2), Y)
    np.testing.assert_array_equal(_example_ids(batches)[:, 0], Y)
    assert ds.name == "tiny" and len(ds) == 3 and ds.num_examples == 10
    with pytest.raises(EOFError, match="tiny"):
        ds.yield_batch()  # Stays at the end until reset().


def test_reset_starts_a_new_pass():
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    ds.yield_batch()
    ds.reset()
    np.testing.assert_array_equal(_example_ids(_drain(ds), side=2), Y)
    ds.reset()
    np.testing.assert_array_equal(_example_ids(_drain(ds), side=2), Y)


def test_drop_remainder_drops_short_last_batch():
    ds = ktl.ArrayDataset(X, Y, batch_size=4, drop_remainder=True)
    batches = _drain(ds)
    assert [len(b[2][0]) for b in batches] == [4, 4]
    assert len(ds) == 2


def test_labels_none_or_empty_give_empty_label_list():
    for labels in (None, []):
        spec, inputs, out_labels = ktl.ArrayDataset(X, labels, batch_size=4).yield_batch()
        assert spec is None and out_labels == [] and len(inputs) == 1


def test_lists_of_arrays_keep_their_order():
    ds = ktl.ArrayDataset([X, X * 2], [Y, Y + 100], batch_size=5, shuffle=True, seed=1)
    _, inputs, labels = ds.yield_batch()
    assert len(inputs) == 2 and len(labels) == 2
    np.testing.assert_array_equal(inputs[1], inputs[0] * 2)
    np.testing.assert_array_equal(labels[1], labels[0] + 100)
    np.testing.assert_array_equal(inputs[0][:, 0], labels[0])  # Same examples on both sides.


def test_dict_inputs_become_values_with_keys_as_default_spec():
    ds = ktl.ArrayDataset({"b": X, "a": Y}, Y, batch_size=4)
    spec, inputs, _ = ds.yield_batch()
    assert spec == ("b", "a")
    assert inputs[0].shape == (4, 3) and inputs[1].shape == (4,)
    assert ktl.ArrayDataset({"b": X}, Y, batch_size=4, spec="mine").yield_batch()[0] == "mine"


def test_shuffle_visits_every_example_once_per_pass_in_a_new_order():
    ds = ktl.ArrayDataset(X, Y, batch_size=3, shuffle=True, seed=0)
    first = _example_ids(_drain(ds), side=2)
    ds.reset()
    second = _example_ids(_drain(ds), side=2)
    assert sorted(first) == sorted(second) == list(range(10))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, Y)


def _epochs(ds, count):
    epochs = []
    for _ in range(count):
        epochs.append(_example_ids(_drain(ds), side=2))
        ds.reset()
    return np.stack(epochs)


def test_same_seed_gives_same_sequence_of_epochs_across_instances():
    a = _epochs(ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=7), 3)
    b = _epochs(ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=7), 3)
    c = _epochs(ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=8), 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_reset_without_reading_keeps_the_sequence():
    plain = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=3)
    extra = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=3)
    extra.reset()
    extra.reset()
    np.testing.assert_array_equal(_epochs(plain, 2), _epochs(extra, 2))


def test_reset_mid_pass_reshuffles():
    ds = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=0)
    reference = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=0)
    ds.yield_batch()
    ds.reset()  # Second permutation of the generator.
    _drain(reference)
    reference.reset()
    np.testing.assert_array_equal(
        _example_ids(_drain(ds), side=2), _example_ids(_drain(reference), side=2)
    )


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_loop_forever_never_ends_and_batches_are_full(shuffle):
    ds = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=shuffle, seed=0, loop_forever=True)
    ids = np.concatenate([ds.yield_batch()[2][0] for _ in range(25)])  # 100 = 10 passes.
    assert len(ids) == 100
    passes = ids.reshape(10, 10)
    for each_pass in passes:
        assert sorted(each_pass) == list(range(10))
    if shuffle:
        assert len({tuple(p) for p in passes}) > 1  # Reshuffled between passes.
    else:
        np.testing.assert_array_equal(passes, np.tile(Y, (10, 1)))


def test_loop_forever_with_batch_larger_than_the_data():
    ds = ktl.ArrayDataset(X, Y, batch_size=25, loop_forever=True)
    ids = np.concatenate([ds.yield_batch()[2][0] for _ in range(2)])
    np.testing.assert_array_equal(ids, np.tile(Y, 5))


def test_jax_arrays_are_accepted_and_batches_are_numpy():
    ds = ktl.ArrayDataset(jnp.asarray(X), [jnp.asarray(Y)], batch_size=4, shuffle=True, seed=0)
    _, inputs, labels = ds.yield_batch()
    assert isinstance(inputs[0], np.ndarray) and isinstance(labels[0], np.ndarray)
    np.testing.assert_array_equal(inputs[0][:, 0], labels[0])


def test_unshuffled_batches_are_views_not_copies():
    _, inputs, _ = ktl.ArrayDataset(X, Y, batch_size=4).yield_batch()
    assert np.shares_memory(inputs[0], X)


def test_batch_costs_a_few_microseconds():
    x = np.random.default_rng(0).random((1797, 64), dtype=np.float32)
    y = np.arange(1797)
    ds = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0, loop_forever=True)
    seconds = min(timeit.repeat(ds.yield_batch, number=2000, repeat=3)) / 2000
    assert seconds < 50e-6, f"{seconds * 1e6:.1f} µs per batch"  # ~2-4 µs measured.


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inputs": None, "labels": Y}, TypeError, "Received: inputs=None"),
        ({"inputs": [], "labels": Y}, ValueError, "at least one input"),
        ({"inputs": "abc", "labels": Y}, TypeError, "Received: inputs='abc'"),
        ({"inputs": [X, [1, 2]], "labels": Y}, TypeError, re.escape("inputs[1]=[1, 2]")),
        ({"inputs": X, "labels": [1, 2]}, TypeError, re.escape("labels[0]=1")),
        ({"inputs": np.float32(1.0), "labels": None}, ValueError, "shape=()"),
        ({"inputs": X[:0], "labels": Y[:0]}, ValueError, "at least one example"),
        (
            {"inputs": np.array([[1], [1, 2]], dtype=object), "labels": None},
            TypeError,
            "dtype=object",
        ),
        (
            {"inputs": [X, X[:9]], "labels": Y},
            ValueError,
            re.escape("inputs[1] with 9 examples") + ".*" + re.escape("inputs[0] with 10"),
        ),
        ({"inputs": X, "labels": Y[:7]}, ValueError, re.escape("labels[0] with 7 examples")),
        ({"inputs": X, "labels": Y, "batch_size": 0}, ValueError, "batch_size=0"),
        ({"inputs": X, "labels": Y, "batch_size": -3}, ValueError, "batch_size=-3"),
        ({"inputs": X, "labels": Y, "batch_size": 2.5}, TypeError, "batch_size=2.5"),
        ({"inputs": X, "labels": Y, "batch_size": True}, TypeError, "batch_size=True"),
        (
            {"inputs": X, "labels": Y, "batch_size": 11, "drop_remainder": True},
            ValueError,
            "batch_size=11 for 10 examples",
        ),
        ({"inputs": X, "labels": Y, "name": 3}, TypeError, "name=3"),
    ],
    ids=[
        "inputs-none",
        "inputs-empty",
        "inputs-string",
        "inputs-list-element",
        "labels-list",
        "rank0",
        "zero-examples",
        "object-dtype",
        "mismatch-inputs",
        "mismatch-labels",
        "batch-zero",
        "batch-negative",
        "batch-float",
        "batch-bool",
        "drop-everything",
        "name-not-str",
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, match):
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(error, match=match) as info:
        ktl.ArrayDataset(kwargs.pop("inputs"), kwargs.pop("labels"), **kwargs)
    assert "Fix:" in str(info.value)


def test_importing_the_package_and_data_does_not_import_tensorflow():
    code = (
        "import sys, numpy, keras_trainloop, keras_trainloop.data\n"
        "keras_trainloop.ArrayDataset(numpy.ones((2, 1)), None, batch_size=1).yield_batch()\n"
        "print('tensorflow' in sys.modules, 'tensorflow_datasets' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_large_datasets_gather_batches_in_the_same_order_as_small_ones(monkeypatch):
    from keras_trainloop.data import _array

    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    y = np.arange(25)

    def batches():
        ds = ktl.ArrayDataset(x, y, batch_size=4, shuffle=True, seed=3, loop_forever=True)
        return [ds.yield_batch() for _ in range(15)]

    copied = batches()
    monkeypatch.setattr(_array, "_PASS_COPY_BYTES", 0)  # too big to copy: gather per batch
    gathered = batches()
    for (_, xi, yi), (_, xj, yj) in zip(copied, gathered):
        np.testing.assert_array_equal(xi[0], xj[0])
        np.testing.assert_array_equal(yi[0], yj[0])


def _stacked_like_yield_batch(make, n, calls):
    """Compares yield_batches(n) with n yield_batch() calls on twin datasets, `calls` times."""
    one, stacked = make(), make()
    for _ in range(calls):
        spec, inputs, labels = stacked.yield_batches(n)
        singles = [one.yield_batch() for _ in range(n)]
        assert spec == singles[0][0]
        for i, side in ((1, inputs), (2, labels)):
            assert len(side) == len(singles[0][i])
            for j, array in enumerate(side):
                np.testing.assert_array_equal(array, np.stack([b[i][j] for b in singles]))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("copy_passes", [True, False])
def test_yield_batches_stacks_what_yield_batch_would_return(shuffle, copy_passes, monkeypatch):
    if not copy_passes:
        monkeypatch.setattr("keras_trainloop.data._array._PASS_COPY_BYTES", 0)
    x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    y = np.arange(50)

    def make():
        return ktl.ArrayDataset(
            [x, x[:, 0]], y, batch_size=4, shuffle=shuffle, seed=5, loop_forever=True, spec="s"
        )

    _stacked_like_yield_batch(make, 4, 9)  # 144 examples: crosses pass boundaries twice


def test_yield_batches_of_unshuffled_data_are_views():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    _, (xs,), _ = ktl.ArrayDataset(x, None, batch_size=5).yield_batches(2)
    assert xs.shape == (2, 5, 2) and np.shares_memory(xs, x)


def test_yield_batches_returns_none_and_reads_nothing_when_the_pass_is_short():
    x = np.arange(10, dtype=np.float32)[:, None]
    ds = ktl.ArrayDataset(x, None, batch_size=3)
    assert ds.yield_batches(2)[1][0].shape == (2, 3, 1)
    assert ds.yield_batches(2) is None  # 4 examples left: one full batch, then a short one
    np.testing.assert_array_equal(ds.yield_batch()[1][0][:, 0], [6, 7, 8])
    np.testing.assert_array_equal(ds.yield_batch()[1][0][:, 0], [9])
    with pytest.raises(EOFError):
        ds.yield_batch()


@pytest.mark.parametrize("n", [0, -1, 2.0, None])
def test_yield_batches_rejects_a_bad_count(n):
    ds = ktl.ArrayDataset(np.zeros((8, 1)), None, batch_size=2)
    with pytest.raises((TypeError, ValueError), match="n must be a positive integer"):
        ds.yield_batches(n)
