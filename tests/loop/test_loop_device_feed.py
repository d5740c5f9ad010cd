import jax
import numpy as np

import keras_trainloop as ktl
from keras_trainloop.data._prefetch import DevicePrefetcher


def _recording_trainer(trainer, seen):
    original = trainer.train_step

    def train_step(spec, inputs, labels):
        seen.append((type(inputs[0]), float(np.asarray(inputs[0]).sum())))
        return original(spec, inputs, labels)

    trainer.train_step = train_step
    return trainer


def _expected_sums(x, batch_size, count):
    return [float(x[i * batch_size : (i + 1) * batch_size].sum()) for i in range(count)]


def test_cpu_backend_feeds_the_dataset_itself(trainer):
    loop = ktl.Loop(trainer)
    ds = ktl.ArrayDataset(np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), batch_size=4)
    assert loop._device_feed(ds) is ds


def test_accelerator_backend_prefetches_and_keeps_read_ahead_batches_across_runs(
    make_trainer, monkeypatch
):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = x.sum(axis=1, keepdims=True)
    seen = []
    trainer = _recording_trainer(make_trainer(), seen)
    loop = ktl.Loop(trainer, max_fused_steps=1)  # One step per call: batches are prefetched.
    ds = ktl.ArrayDataset(x, y, batch_size=2, loop_forever=True)
    assert isinstance(loop._device_feed(ds), DevicePrefetcher)
    assert loop._device_feed(ds) is loop._device_feed(ds)
    loop.run_steps(ds, 3)
    loop.run_steps(ds, 3)  # continues with the batches read ahead by the first run
    assert all(kind is not np.ndarray for kind, _ in seen)  # device arrays were fed
    assert [s for _, s in seen] == _expected_sums(x, 2, 6)


def test_accelerator_backend_run_epochs_resets_the_prefetcher(make_trainer, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    seen = []
    trainer = _recording_trainer(make_trainer(), seen)
    loop = ktl.Loop(trainer, max_fused_steps=1)
    loop.run_epochs(ktl.ArrayDataset(x, x.sum(axis=1, keepdims=True), batch_size=4), 2)
    assert [s for _, s in seen] == _expected_sums(x, 4, 2) * 2
    assert loop.end_step == 4


def test_accelerator_backend_feeds_a_stackable_dataset_itself_when_steps_fuse(trainer, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    loop = ktl.Loop(trainer)
    ds = ktl.ArrayDataset(np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), batch_size=4)
    assert loop._device_feed(ds) is ds  # each fused chunk is one transfer
    assert isinstance(ktl.Loop(trainer, max_fused_steps=1)._device_feed(ds), DevicePrefetcher)
