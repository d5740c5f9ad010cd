"""TFDataset refuses unbatched pipelines by their ops, also when the shapes look batched."""

import os

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.data._tf_elements import BATCHED, UNBATCHED, batching

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")

# 8x8 images with 8-way one-hot labels: unbatched elements of shapes (8, 8) and (8,)
# look like batches of 8.
IMAGES = np.random.default_rng(0).random((32, 8, 8)).astype(np.float32)
ONE_HOT = np.eye(8, dtype=np.float32)[np.arange(32) % 8]


def _examples():
    return tf.data.Dataset.from_tensor_slices((IMAGES, ONE_HOT))


def _zip_of_slices():
    return tf.data.Dataset.zip(
        (tf.data.Dataset.from_tensor_slices(IMAGES), tf.data.Dataset.from_tensor_slices(ONE_HOT))
    )


@pytest.mark.parametrize(
    "make, source",
    [
        (_examples, "from_tensor_slices"),
        (
            lambda: _examples().shuffle(32, seed=0).map(lambda x, y: (x * 2, y)).prefetch(2),
            "from_tensor_slices",
        ),
        (lambda: _examples().cache().repeat().filter(lambda x, y: True), "from_tensor_slices"),
        (lambda: _examples().batch(4).unbatch(), r"unbatch\(\)"),
        (_zip_of_slices, "from_tensor_slices"),
        (lambda: tf.data.Dataset.range(32).map(lambda i: (IMAGES[0], ONE_HOT[0])), "range"),
    ],
    ids=[
        "8x8-one-hot",
        "shuffle-map-prefetch",
        "cache-repeat-filter",
        "unbatch",
        "zip",
        "range-map",
    ],
)
def test_unbatched_pipeline_with_agreeing_sizes_is_refused(make, source):
    ds = make()
    assert ds.element_spec[0].shape == (8, 8) and ds.element_spec[1].shape == (8,)
    with pytest.raises(
        ValueError,
        match=f"looks unbatched: its elements come from {source} "
        r"with no batch op.*Received: element_spec=\(Tensor"
        r"Spec\(shape=\(8, 8\).*Fix: .*ds\.batch\(64\)",
    ):
        ktl.TFDataset(ds)


def _padded_batch():
    return tf.data.Dataset.from_tensor_slices((IMAGES, ONE_HOT)).padded_batch(8)


def _ragged_batch():
    return _examples().ragged_batch(8)  # Uniform shapes: dense batches.


@pytest.mark.parametrize(
    "make",
    [
        lambda: _examples().batch(8),
        lambda: _examples().batch(8).map(lambda x, y: (x + 1, y)),
        lambda: _examples().batch(8).prefetch(tf.data.AUTOTUNE),
        lambda: _examples().batch(8).repeat(2),
        lambda: _examples().repeat(2).batch(8, drop_remainder=True),
        _padded_batch,
        _ragged_batch,
        lambda: _examples().batch(8, num_parallel_calls=2),
        lambda: _examples().batch(4).unbatch().batch(8),
        lambda: _examples().batch(16).rebatch(8),
        lambda: tf.data.Dataset.zip(
            (
                tf.data.Dataset.from_tensor_slices(IMAGES).batch(8),
                tf.data.Dataset.from_tensor_slices(ONE_HOT).batch(8),
            )
        ),
        lambda: _examples().batch(8).concatenate(_examples().batch(8)),
        lambda: (
            _examples().batch(8).cache().shuffle(4, seed=0).take(3).with_options(tf.data.Options())
        ),
    ],
    ids=[
        "batch",
        "batch-map",
        "batch-prefetch",
        "batch-repeat",
        "repeat-batch",
        "padded_batch",
        "ragged_batch",
        "parallel-batch",
        "unbatch-batch",
        "rebatch",
        "zip-of-batches",
        "concatenate",
        "batch-cache-shuffle-take-options",
    ],
)
def test_batched_pipelines_are_accepted_and_read_as_batches(make):
    ds = ktl.TFDataset(make())
    _, inputs, labels = ds.yield_batch()
    assert inputs[0].shape == (8, 8, 8) and labels[0].shape == (8, 8)
    assert batching(make())[0] == BATCHED


@pytest.mark.parametrize(
    "make",
    [
        # Each element already is a batch: these sources can yield either, so no verdict.
        lambda: tf.data.Dataset.from_tensors((IMAGES[:8], ONE_HOT[:8])).repeat(2),
        lambda: tf.data.Dataset.from_generator(
            lambda: iter([(IMAGES[:8], ONE_HOT[:8])]),
            output_signature=(tf.TensorSpec((8, 8, 8)), tf.TensorSpec((8, 8))),
        ),
        lambda: tf.data.Dataset.range(2).interleave(
            lambda i: tf.data.Dataset.from_tensor_slices((IMAGES, ONE_HOT)).batch(8)
        ),
        lambda: tf.data.Dataset.range(2).flat_map(
            lambda i: tf.data.Dataset.from_tensor_slices((IMAGES, ONE_HOT)).batch(8)
        ),
    ],
    ids=["from_tensors", "from_generator", "interleave-of-batches", "flat_map-of-batches"],
)
def test_sources_that_may_yield_batches_are_not_refused(make):
    assert batching(make()) == (None, "")
    _, inputs, _ = ktl.TFDataset(make()).yield_batch()
    assert inputs[0].shape == (8, 8, 8)


def test_from_tfds_pipelines_are_batched(tfds_digits_dir):
    for kwargs in ({}, {"shuffle": True, "seed": 0, "loop_forever": True}):
        ds = ktl.from_tfds(
            "digits_local",
            split="test",
            batch_size=8,
            data_dir=tfds_digits_dir,
            download=False,
            **kwargs,
        )
        assert batching(ds.tf_dataset)[0] == BATCHED
        assert ds.yield_batch()[1][0].shape == (8, 8, 8, 1)


def test_a_tensorflow_internals_change_gives_no_verdict(monkeypatch):
    ds = _examples().map(lambda x, y: (x, y))
    monkeypatch.setattr(type(ds), "_inputs", lambda self: 1 / 0)
    assert batching(ds) == (None, "")


def test_verdict_names():
    assert batching(_examples()) == (UNBATCHED, "from_tensor_slices")
