import json

import jax
import numpy as np
import pytest
from data_helpers import drain

import keras_trainloop as ktl
from keras_trainloop.data import maybe_prefetch_to_device
from keras_trainloop.data._prefetch import DevicePrefetcher

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
Y = np.arange(10, dtype=np.int32)


class Counting:
    """A Dataset that counts reads and can fail at a given batch."""

    name = "counting"

    def __init__(self, batches=5, fail_at=None):
        self.batches, self.fail_at = batches, fail_at
        self.reads = self.resets = self.position = 0

    def yield_batch(self):
        if self.position == self.fail_at:
            raise KeyError(f"bad batch {self.position}")
        if self.position >= self.batches:
            raise EOFError
        self.reads += 1
        self.position += 1
        return ("spec", self.position), [np.full((2,), self.position)], []

    def reset(self):
        self.resets += 1
        self.position = 0


def test_same_batches_as_the_wrapped_dataset_on_the_device():
    plain = drain(ktl.ArrayDataset([X, X * 2], Y, batch_size=4, shuffle=True, seed=0))
    wrapped = DevicePrefetcher(
        ktl.ArrayDataset([X, X * 2], Y, batch_size=4, shuffle=True, seed=0), size=2
    )
    assert isinstance(wrapped, ktl.Dataset) and wrapped.name == "array"
    prefetched = drain(wrapped)
    assert len(prefetched) == len(plain) == 3
    for (spec_a, inputs_a, labels_a), (spec_b, inputs_b, labels_b) in zip(plain, prefetched):
        assert spec_a == spec_b
        assert isinstance(inputs_b, list) and isinstance(labels_b, list)
        assert all(isinstance(a, jax.Array) for a in inputs_b + labels_b)
        for a, b in zip(inputs_a + labels_a, inputs_b + labels_b):
            np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_keeps_size_batches_in_flight(size):
    source = Counting(batches=10)
    ds = DevicePrefetcher(source, size=size)
    assert source.reads == 0  # Nothing is read before the first batch is asked for.
    spec, inputs, _ = ds.yield_batch()
    assert spec == ("spec", 1) and int(inputs[0][0]) == 1
    assert source.reads == 1 + size
    ds.yield_batch()
    assert source.reads == 2 + size


def test_eof_comes_after_the_last_batch_and_repeats():
    ds = DevicePrefetcher(Counting(batches=3), size=2)
    assert [int(b[1][0][0]) for b in drain(ds)] == [1, 2, 3]
    with pytest.raises(EOFError):
        ds.yield_batch()


def test_other_errors_reach_the_user_in_their_turn():
    ds = DevicePrefetcher(Counting(batches=10, fail_at=2), size=3)
    assert int(ds.yield_batch()[1][0][0]) == 1
    assert int(ds.yield_batch()[1][0][0]) == 2  # Read before the failure: still yielded.
    with pytest.raises(KeyError, match="bad batch 2"):
        ds.yield_batch()


def test_reset_drops_batches_in_flight_and_restarts():
    source = Counting(batches=4)
    ds = DevicePrefetcher(source, size=2)
    ds.yield_batch()
    ds.reset()
    assert source.resets == 1
    assert [int(b[1][0][0]) for b in drain(ds)] == [1, 2, 3, 4]
    ds.reset()
    assert [int(b[1][0][0]) for b in drain(ds)] == [1, 2, 3, 4]


def test_sharding_places_every_array():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[-1])
    ds = DevicePrefetcher(ktl.ArrayDataset(X, Y, batch_size=4), sharding=sharding)
    _, inputs, labels = ds.yield_batch()
    assert inputs[0].sharding == sharding and labels[0].sharding == sharding


def test_maybe_prefetch_returns_the_dataset_unchanged_on_cpu():
    assert jax.default_backend() == "cpu"
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    assert maybe_prefetch_to_device(ds) is ds


def test_maybe_prefetch_wraps_on_accelerators(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    wrapped = maybe_prefetch_to_device(ds, size=3)
    assert isinstance(wrapped, DevicePrefetcher) and wrapped.dataset is ds
    assert maybe_prefetch_to_device(wrapped) is wrapped


@pytest.mark.parametrize("size", [0, -1, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_size_raises(size):
    with pytest.raises(ValueError, match=f"size={size!r}.*Fix:"):
        maybe_prefetch_to_device(ktl.ArrayDataset(X, Y, batch_size=4), size=size)


def test_non_dataset_raises():
    with pytest.raises(TypeError, match="Received: dataset=.*Fix:"):
        maybe_prefetch_to_device([(X, Y)])


def test_prefetcher_state_counts_the_batches_in_flight_as_not_yielded():
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = np.arange(100, dtype=np.int32)

    def make():
        inner = ktl.ArrayDataset(x, y, batch_size=8, shuffle=True, seed=1, loop_forever=True)
        return DevicePrefetcher(inner, size=3)

    ds = make()
    for _ in range(5):
        ds.yield_batch()
    state = json.loads(json.dumps(ds.get_state()))
    expected = [np.asarray(ds.yield_batch()[2][0]) for _ in range(20)]
    resumed = make()
    resumed.set_state(state)
    got = [np.asarray(resumed.yield_batch()[2][0]) for _ in range(20)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
