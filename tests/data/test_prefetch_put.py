"""DevicePrefetcher(put=...): batches placed by a trainer's own function (its batch layout)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import keras_trainloop as ktl
from keras_trainloop.data import maybe_prefetch_to_device
from keras_trainloop.data._prefetch import DevicePrefetcher

X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.arange(10, dtype=np.int32)


class Placer:
    """A `put` that records its calls and lays every array out on a 1-device mesh."""

    def __init__(self):
        self.calls = []
        mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("batch",))
        self.sharding = NamedSharding(mesh, PartitionSpec("batch"))

    def __call__(self, spec, inputs, labels):
        self.calls.append((spec, len(inputs), len(labels)))
        return jax.device_put((inputs, labels), self.sharding)


def test_put_places_each_batch_ahead():
    put = Placer()
    ds = DevicePrefetcher(ktl.ArrayDataset(X, Y, batch_size=4, spec="s"), size=2, put=put)
    spec, inputs, labels = ds.yield_batch()
    assert spec == "s" and len(put.calls) == 3  # The batch yielded and the two in flight.
    assert put.calls[0] == ("s", 1, 1)
    assert all(a.sharding == put.sharding for a in inputs + labels)
    np.testing.assert_array_equal(np.asarray(inputs[0]), X[:4])


def test_state_keeps_the_batches_in_flight_without_reading_the_device():
    put = Placer()
    ds = DevicePrefetcher(ktl.ArrayDataset(X, Y, batch_size=2), size=2, put=put)
    ds.yield_batch()
    with jax.transfer_guard_device_to_host("disallow"):
        state = json.loads(json.dumps(ds.get_state()))
    resumed = DevicePrefetcher(ktl.ArrayDataset(X, Y, batch_size=2), size=2, put=put)
    resumed.set_state(state)
    for expected in (X[2:4], X[4:6], X[6:8]):
        _, inputs, _ = resumed.yield_batch()
        assert inputs[0].sharding == put.sharding
        np.testing.assert_array_equal(np.asarray(inputs[0]), expected)


def test_put_must_be_callable():
    with pytest.raises(TypeError, match="put must be a function"):
        DevicePrefetcher(ktl.ArrayDataset(X, Y, batch_size=2), put="trainer")


def test_maybe_prefetch_passes_put_on_accelerators(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    put = Placer()
    ds = maybe_prefetch_to_device(ktl.ArrayDataset(X, Y, batch_size=2), put=put)
    assert isinstance(ds, DevicePrefetcher)
    ds.yield_batch()
    assert put.calls
