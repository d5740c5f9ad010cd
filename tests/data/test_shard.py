"""Per-process shards: `shard=(index, count)` and `ktl.data.process_shard()`."""

from __future__ import annotations

import numpy as np
import pytest

import keras_trainloop as ktl

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int32)


def _labels(ds):
    out = []
    while True:
        try:
            out.extend(ds.yield_batch()[2][0].tolist())
        except EOFError:
            return out


def test_process_shard_is_this_process_of_all():
    assert ktl.data.process_shard() == (0, 1)  # One process: the whole data.


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_array_shards_are_disjoint_equal_and_cover_all_but_the_remainder(count):
    shards = [_labels(ktl.ArrayDataset(X, Y, batch_size=2, shard=(i, count))) for i in range(count)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 10 // count
    seen = sorted(v for s in shards for v in s)
    assert len(set(seen)) == len(seen) == (10 // count) * count
    assert shards[0] == list(range(0, (10 // count) * count, count))  # Every count-th example.


def test_array_shard_keeps_batch_size_per_process_and_shuffles_within_the_shard():
    ds = ktl.ArrayDataset(X, Y, batch_size=2, shard=(1, 2), shuffle=True, seed=0)
    assert ds.num_examples == 5 and ds.batch_size == 2 and len(ds) == 3
    assert sorted(_labels(ds)) == [1, 3, 5, 7, 9]
    ds.reset()
    state = ds.get_state()
    again = ktl.ArrayDataset(X, Y, batch_size=2, shard=(1, 2), shuffle=True, seed=5)
    again.set_state(state)
    assert _labels(again) == _labels(ds)


def test_array_shard_stacks_batches_for_fused_steps():
    ds = ktl.ArrayDataset(X, Y, batch_size=2, shard=(0, 2), loop_forever=True)
    _, (x,), (y,) = ds.yield_batches(2)
    assert x.shape == (2, 2, 3) and y.tolist() == [[0, 2], [4, 6]]


@pytest.mark.parametrize(
    "shard, error, match",
    [
        ((2, 2), ValueError, "0 <= index < count"),
        ((0, 0), ValueError, "0 <= index < count"),
        ((-1, 2), ValueError, "0 <= index < count"),
        (3, TypeError, "pair of ints"),
        ((0.5, 2), TypeError, "pair of ints"),
        ((True, 2), TypeError, "pair of ints"),
        ((0, 11), ValueError, "cannot give each of 11 shards an example"),
    ],
    ids=["index_too_big", "no_shards", "negative", "not_a_pair", "float", "bool", "too_many"],
)
def test_bad_shards_are_refused_with_the_fix(shard, error, match):
    with pytest.raises(error, match=match) as info:
        ktl.ArrayDataset(X, Y, batch_size=2, shard=shard)
    assert "Fix:" in str(info.value)


def test_tf_dataset_shards_batches_equally():
    tf = pytest.importorskip("tensorflow")
    pipeline = tf.data.Dataset.from_tensor_slices((X, Y)).batch(2)  # 5 batches
    shards = [ktl.TFDataset(pipeline, shard=(i, 2)) for i in range(2)]
    assert [_labels(s) for s in shards] == [[0, 1, 4, 5], [2, 3, 6, 7]]  # 2 batches each.
    assert int(shards[0].tf_dataset.cardinality()) == 2
    with pytest.raises(ValueError, match="0 <= index < count"):
        ktl.TFDataset(pipeline, shard=(2, 2))


def test_from_tfds_reads_equal_parts_of_the_split(tfds_digits_dir):
    pytest.importorskip("tensorflow_datasets")
    from _tfds_digits import DIGITS_NAME, NUM_TEST

    shards = [
        ktl.from_tfds(
            DIGITS_NAME,
            split="test",
            batch_size=50,
            data_dir=tfds_digits_dir,
            download=False,
            shard=(i, 3),
        )
        for i in range(3)
    ]
    labels = [_labels(s) for s in shards]
    assert [len(s) for s in labels] == [NUM_TEST // 3] * 3
    whole = ktl.from_tfds(
        DIGITS_NAME, split="test", batch_size=50, data_dir=tfds_digits_dir, download=False
    )
    assert NUM_TEST % 3 == 0  # So the three parts hold every example of the split.
    assert sorted(v for s in labels for v in s) == sorted(_labels(whole))
    with pytest.raises(TypeError, match="pair of ints"):
        ktl.from_tfds(
            DIGITS_NAME,
            split="test",
            batch_size=50,
            data_dir=tfds_digits_dir,
            download=False,
            shard="0/3",
        )
