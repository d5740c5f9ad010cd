"""TFDataset.get_state / set_state: tf.data's iterator checkpoint plus the batches read ahead."""

import json
import os
import warnings

import numpy as np
import pytest

import keras_trainloop as ktl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")

N = 20
X = np.arange(N, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(N, dtype=np.int64)


def _slices():
    return tf.data.Dataset.from_tensor_slices((X, Y))


def _unknown_rank(x, y):
    """`x` with an unknown rank (parse_tensor), so TFDataset reads one batch per call."""
    return tf.io.parse_tensor(tf.io.serialize_tensor(x), tf.float32), y


# name -> (pipeline factory, whether reset() is part of the compared ops). A pipeline that
# repeat()s a reshuffling shuffle draws each pass's seeds while prefetching, so its passes
# after reset() depend on timing, in any run: those are compared without reset().
PIPELINES = {
    "shuffled-short-last-batch": (lambda: _slices().shuffle(N, seed=1).batch(3), True),
    "static-shapes": (lambda: _slices().batch(4, drop_remainder=True).prefetch(2), True),
    "shuffled-repeat": (
        lambda: _slices().shuffle(N, seed=2).repeat().batch(4, drop_remainder=True),
        False,
    ),
    "repeat-batch-map": (lambda: _slices().repeat().batch(3).map(lambda x, y: (x * 2, y)), True),
    "unknown-rank": (lambda: _slices().shuffle(N, seed=3).batch(3).map(_unknown_rank), True),
    "cached-shuffled-prefetched": (
        lambda: _slices().cache().shuffle(N, seed=4).batch(5).prefetch(tf.data.AUTOTUNE),
        True,
    ),
}


def _ops(rng, count, with_reset):
    kinds = ["batch", "batch", "batches"] + (["reset"] if with_reset else [])
    return [(kind, int(rng.integers(1, 10))) for kind in rng.choice(kinds, size=count)]


def _apply(ds, ops):
    """What `ds` returns for each op: arrays as lists, None (fused read refused) or "EOF"."""
    out = []
    for kind, n in ops:
        if kind == "reset":
            ds.reset()
            continue
        try:
            batch = ds.yield_batch() if kind == "batch" else ds.yield_batches(n)
        except EOFError:
            out.append("EOF")
            continue
        if batch is None:
            out.append(None)
        else:
            out.append([(a.shape, a.tolist()) for a in [*batch[1], *batch[2]]])
    return out


def _round_trip(state):
    return json.loads(json.dumps(state))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_restored_dataset_yields_exactly_the_next_batches(pipeline, seed):
    make, with_reset = PIPELINES[pipeline]
    rng = np.random.default_rng(seed)
    ds1 = ktl.TFDataset(make())
    _apply(ds1, _ops(rng, int(rng.integers(0, 15)), with_reset))
    state = _round_trip(ds1.get_state())
    assert state["saved"] is True
    ds2 = ktl.TFDataset(make())
    _apply(ds2, _ops(rng, int(rng.integers(0, 4)), with_reset))  # Its history is overridden.
    ds2.set_state(state)
    after = _ops(rng, 25, with_reset)
    assert _apply(ds2, after) == _apply(ds1, after)


def _drain_then_reset(ds, passes):
    out = []
    for _ in range(passes):
        while True:
            try:
                out.append(ds.yield_batch()[2][0].tolist())
            except EOFError:
                break
        ds.reset()
    return out


@pytest.mark.parametrize("ds2_passes", [0, 2], ids=["fresh", "used"])
@pytest.mark.parametrize("reads", [0, 1, 3, 4])
def test_later_passes_of_a_reshuffling_pipeline_follow_the_saved_run(reads, ds2_passes):
    # A batch op that has read the end of its input drops its shuffle's seeds from tf.data's
    # checkpoint: the next pass's iterator, saved unread, carries them.
    def make():
        return _slices().shuffle(N, seed=6).batch(8)

    ds1 = ktl.TFDataset(make())
    for _ in range(min(reads, 3)):
        ds1.yield_batch()
    if reads == 4:
        assert ds1.yield_batches(2) is None  # Read to the end: the EOFError is held.
    state = _round_trip(ds1.get_state())
    ds2 = ktl.TFDataset(make())
    _drain_then_reset(ds2, ds2_passes)
    ds2.set_state(state)
    assert _drain_then_reset(ds2, 4) == _drain_then_reset(ds1, 4)


@pytest.mark.parametrize(
    "pipeline, with_reset",
    [
        (lambda: _slices().shuffle(N, seed=5).batch(3), True),
        (lambda: _slices().shuffle(N, seed=5).repeat().batch(3), False),
    ],
    ids=["finite", "endless"],
)
def test_get_state_does_not_change_what_the_dataset_yields(pipeline, with_reset):
    ops = _ops(np.random.default_rng(0), 30, with_reset)
    plain = _apply(ktl.TFDataset(pipeline()), ops)
    observed, ds = [], ktl.TFDataset(pipeline())
    ds.get_state()  # Before any read: it makes the pass's iterator, which reset() keeps.
    ds.reset()
    for op in ops:
        ds.get_state()
        observed += _apply(ds, [op])
    assert observed == plain


def test_position_inside_a_chunk_counts_the_batches_returned_not_read_ahead():
    x = np.arange(80, dtype=np.float32)[:, None]
    make = lambda: tf.data.Dataset.from_tensor_slices((x, x[:, 0])).batch(4)
    ds1 = ktl.TFDataset(make())
    for _ in range(3):  # One chunk of 8 read, 3 returned.
        ds1.yield_batch()
    ds2 = ktl.TFDataset(make())
    ds2.set_state(ds1.get_state())
    np.testing.assert_array_equal(ds2.yield_batch()[2][0], [12, 13, 14, 15])
    _, _, (labels,) = ds2.yield_batches(6)  # Crosses into the next chunk.
    np.testing.assert_array_equal(labels.reshape(-1), np.arange(16, 40))


def test_batches_read_ahead_one_by_one_are_restored_whole():
    def make():  # Unknown rank: read one batch per call, kept by a BatchStacker.
        return _slices().batch(3).map(_unknown_rank)

    ds1 = ktl.TFDataset(make())
    for _ in range(5):
        ds1.yield_batch()
    assert ds1.yield_batches(4) is None  # Reads [15, 16, 17] and [18, 19]: they do not stack.
    ds2 = ktl.TFDataset(make())
    ds2.set_state(_round_trip(ds1.get_state()))
    for ds in (ds1, ds2):
        assert [ds.yield_batch()[1][0][:, 0].tolist() for _ in range(2)] == [
            [15.0, 16.0, 17.0],
            [18.0, 19.0],
        ]
        with pytest.raises(EOFError):
            ds.yield_batch()


def test_state_at_the_end_of_a_pass_ends_the_restored_pass_then_resets():
    def make():
        return _slices().shuffle(N, seed=6).batch(8)

    ds1 = ktl.TFDataset(make())
    for _ in range(3):
        ds1.yield_batch()
    assert ds1.yield_batches(2) is None  # Reads ahead to the end: the EOFError is held.
    state = _round_trip(ds1.get_state())
    assert state["ended"] is True
    ds2 = ktl.TFDataset(make())
    ds2.set_state(state)
    for ds in (ds1, ds2):
        with pytest.raises(EOFError, match="call reset"):
            ds.yield_batch()
        ds.reset()
    ops = _ops(np.random.default_rng(1), 20, True)
    assert _apply(ds2, ops) == _apply(ds1, ops)


def test_from_tfds_resumes_exactly(tfds_digits_dir):
    def make(**kwargs):
        return ktl.from_tfds(
            "digits_local",
            split="train",
            batch_size=64,
            data_dir=tfds_digits_dir,
            shuffle=True,
            seed=0,
            download=False,
            **kwargs,
        )

    for kwargs, with_reset in (({}, True), ({"loop_forever": True}, False)):
        rng = np.random.default_rng(2)
        ds1 = make(**kwargs)
        _apply(ds1, _ops(rng, 13, with_reset))
        state = _round_trip(ds1.get_state())
        ds2 = make(**kwargs)
        ds2.set_state(state)
        after = _ops(rng, 40, with_reset)
        assert _apply(ds2, after) == _apply(ds1, after), kwargs


@pytest.mark.parametrize(
    "make_saved, make_other, match, next_labels",
    [
        (
            lambda: ktl.TFDataset(_slices().batch(4)),
            lambda: ktl.TFDataset(_slices().map(lambda x, y: (x[:2], y)).batch(4), name="other"),
            (
                r"'other' cannot take a state saved from a pipeline with another element_spec.*"
                r"Fix: build the pipeline"
            ),
            [4, 5, 6, 7],
        ),
        (
            lambda: ktl.TFDataset(_slices().shuffle(N, seed=0).batch(4)),
            lambda: ktl.TFDataset(_slices().batch(4).map(lambda x, y: (x, y)), name="other"),
            (
                r"'other' cannot take this state: tf.data could not restore the iterator.*"
                r"Fix: build the pipeline"
            ),
            [4, 5, 6, 7],
        ),
        (  # Restored into shard 1, shard 0's tf.data checkpoint would read shard 0's batches.
            lambda: ktl.TFDataset(_slices().batch(2), shard=(0, 2)),
            lambda: ktl.TFDataset(_slices().batch(2), shard=(1, 2), name="other"),
            (
                r"'other' cannot take a state saved from another shard of the data: shard=\(0, 2\) "
                r"in the state but shard=\(1, 2\) here.*Fix: restore each process's own"
            ),
            [6, 7],
        ),
    ],
    ids=["element-spec", "other-ops", "other-shard"],
)
def test_a_state_of_another_pipeline_is_refused_unchanged(
    make_saved, make_other, match, next_labels
):
    saved, other = make_saved(), make_other()
    saved.yield_batch()
    other.yield_batch()
    with pytest.raises(ValueError, match=match):
        other.set_state(saved.get_state())
    np.testing.assert_array_equal(other.yield_batch()[2][0], next_labels)


def test_a_sharded_dataset_takes_its_own_shards_state_only():
    shard1 = ktl.TFDataset(_slices().batch(2), shard=(1, 2))
    shard1.yield_batch()
    with pytest.raises(ValueError, match=r"shard=None in the state but shard=\(1, 2\)"):
        shard1.set_state(ktl.TFDataset(_slices().batch(2)).get_state())
    resumed = ktl.TFDataset(_slices().batch(2), shard=(1, 2))
    resumed.set_state(_round_trip(shard1.get_state()))
    np.testing.assert_array_equal(resumed.yield_batch()[2][0], [6, 7])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: [s], r"takes the dict that TFDataset.get_state\(\) returns"),
        (lambda s: s | {"dataset": "ArrayDataset"}, r"Received: state=\{'dataset'"),
        (lambda s: s | {"version": 0}, r"version=0, expected 2"),
        (
            lambda s: s | {"pending": {"sides": [[1, 1]], "npz": "eA=="}},
            r"its pending batches are not readable",
        ),
        (lambda s: s | {"iterator": {".index": "not base64!"}}, r"cannot take this state"),
    ],
    ids=["not-a-dict", "other-dataset", "version", "pending", "iterator"],
)
def test_malformed_states_are_refused_with_the_fix(change, match):
    ds = ktl.TFDataset(_slices().batch(4))
    ds.yield_batch()
    with pytest.raises(ValueError, match=match) as info:
        ds.set_state(change(ds.get_state()))
    assert "Fix:" in str(info.value)
    np.testing.assert_array_equal(ds.yield_batch()[2][0], [4, 5, 6, 7])


def _generated():
    def gen():
        for i in range(0, N, 4):
            yield X[i : i + 4], Y[i : i + 4]

    return tf.data.Dataset.from_generator(
        gen,
        output_signature=(tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64)),
    )


@pytest.mark.parametrize(
    "make",
    [
        _generated,
        lambda: (
            _slices().batch(4).map(lambda x, y: (tf.py_function(lambda v: v, [x], tf.float32), y))
        ),
    ],
    ids=["from_generator", "py_function"],
)
def test_unsaveable_pipeline_warns_once_that_the_data_order_restarts(make):
    ds1 = ktl.TFDataset(make(), name="gen")
    ds1.yield_batch()
    state = _round_trip(ds1.get_state())
    assert state["saved"] is False and "stateful" in state["reason"]
    assert ds1.get_state()["reason"] == state["reason"]  # Known now: not tried again.
    np.testing.assert_array_equal(ds1.yield_batch()[2][0], [4, 5, 6, 7])  # ds1 unaffected.
    ds2 = ktl.TFDataset(make(), name="gen")
    ds2.yield_batch()
    with pytest.warns(UserWarning, match=r"TFDataset 'gen'.*data order restarts"):
        ds2.set_state(state)
    np.testing.assert_array_equal(ds2.yield_batch()[2][0], [0, 1, 2, 3])  # A fresh pass.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds2.set_state(state)  # Warned once.


def test_state_is_plain_json():
    ds = ktl.TFDataset(_slices().shuffle(N, seed=0).batch(3))
    ds.yield_batches(2)
    state = ds.get_state()
    assert json.loads(json.dumps(state)) == state
    assert {"dataset", "version", "element_spec", "saved", "iterator", "pending", "ended"} <= set(
        state
    )
    assert all(isinstance(v, str) for v in state["iterator"].values())
