import os
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import drain

import keras_trainloop as ktl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int64)


def _label_ids(ds):
    ids = []
    while True:
        try:
            _, _, labels = ds.yield_batch()
        except EOFError:
            return ids
        ids.extend(labels[0].tolist())


def test_tuple_elements_become_numpy_lists_until_eof():
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4))
    assert isinstance(ds, ktl.Dataset) and ds.name == "tf.data"
    spec, inputs, labels = ds.yield_batch()
    assert spec is None
    assert isinstance(inputs, list) and isinstance(labels, list)
    assert isinstance(inputs[0], np.ndarray) and inputs[0].shape == (4, 3)
    assert labels[0].dtype == np.int64
    assert _label_ids(ds) == list(range(4, 10))  # Short last batch included.
    with pytest.raises(EOFError, match="tf.data"):
        ds.yield_batch()


def test_reset_starts_a_fresh_pass():
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(3), name="t")
    ds.yield_batch()
    ds.reset()
    assert _label_ids(ds) == list(range(10))
    ds.reset()
    assert _label_ids(ds) == list(range(10))


def test_reset_reshuffles_a_reshuffling_pipeline():
    pipeline = tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(10, seed=0).batch(5)
    ds = ktl.TFDataset(pipeline)
    epochs = []
    for _ in range(4):
        epochs.append(tuple(_label_ids(ds)))
        ds.reset()
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert len(set(epochs)) > 1


def test_repeated_pipeline_never_ends():
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).repeat().batch(4))
    ids = [i for _ in range(10) for i in ds.yield_batch()[2][0].tolist()]
    assert ids == list(range(10)) * 4


def test_dict_inputs_keep_key_order_and_default_spec_is_the_keys():
    features = {"zeta": X, "alpha": Y}
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((features, Y)).batch(4))
    spec, inputs, labels = ds.yield_batch()
    assert spec == ("zeta", "alpha") == ds.spec
    assert inputs[0].shape == (4, 3) and inputs[1].shape == (4,)
    np.testing.assert_array_equal(inputs[1], labels[0])
    mine = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((features, Y)).batch(4), spec="m")
    assert mine.yield_batch()[0] == "m"


def test_tuple_inputs_dict_labels_and_empty_labels():
    pairs = tf.data.Dataset.from_tensor_slices(((X, X * 2), {"y": Y, "w": Y * 1.0})).batch(4)
    _, inputs, labels = ktl.TFDataset(pairs).yield_batch()
    assert len(inputs) == 2 and len(labels) == 2
    np.testing.assert_array_equal(inputs[1], inputs[0] * 2)
    unlabeled = tf.data.Dataset.from_tensor_slices(X).map(lambda x: (x, ())).batch(4)
    _, inputs, labels = ktl.TFDataset(unlabeled).yield_batch()
    assert labels == [] and inputs[0].shape == (4, 3)


def test_uint8_values_are_kept():
    images = np.full((4, 8, 8, 1), 255, np.uint8)
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((images, Y[:4])).batch(2))
    batch = ds.yield_batch()[1][0]
    assert batch.dtype == np.uint8 and batch.max() == 255


def _zip_batched_separately():
    return tf.data.Dataset.zip(
        (
            tf.data.Dataset.from_tensor_slices(X).batch(4, drop_remainder=True),
            tf.data.Dataset.from_tensor_slices(Y).batch(2, drop_remainder=True),
        )
    )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: np.zeros((4, 2)), TypeError, "Received: tf_dataset=<ndarray"),
        (
            lambda: tf.data.Dataset.from_tensor_slices((X, Y)),
            ValueError,
            r"looks unbatched: its elements come from from_tensor_slices.*ds\.batch\(64\)",
        ),
        (
            lambda: tf.data.Dataset.from_tensors((X[0], Y[0])),
            ValueError,
            r"Received: labels of shape \(\).*call \.batch",
        ),
        (
            lambda: tf.data.Dataset.from_tensor_slices({"image": X, "label": Y}).batch(2),
            TypeError,
            "Received: dict.*as_supervised=True",
        ),
        (
            lambda: tf.data.Dataset.from_tensor_slices(X).batch(2),
            TypeError,
            "Received: TensorSpec.*lambda x: \\(x, \\(\\)\\)",
        ),
        (
            lambda: tf.data.Dataset.from_tensor_slices((X, Y, Y)).batch(2),
            TypeError,
            "Received: a tuple of 3 items",
        ),
        (_zip_batched_separately, ValueError, "labels with leading dimension 2 but inputs with 4"),
        (
            lambda: tf.data.Dataset.from_tensor_slices(
                (tf.ragged.constant([[1], [2, 3]]), [0, 1])
            ).batch(2),
            TypeError,
            "RaggedTensorSpec.*to_tensor",
        ),
        (
            lambda: tf.data.Dataset.from_tensor_slices(((X, (X, X)), Y)).batch(2),
            TypeError,
            r"inputs\[1\] with spec \(",
        ),
        (
            lambda: tf.data.Dataset.from_tensor_slices(Y).map(lambda y: ((), y)).batch(2),
            ValueError,
            "at least one input",
        ),
    ],
    ids=[
        "not-a-dataset",
        "unbatched",
        "rank-0",
        "dict-element",
        "single-tensor",
        "three-tuple",
        "different-batch-dims",
        "ragged",
        "nested",
        "no-inputs",
    ],
)
def test_bad_datasets_raise_at_construction(make, error, match):
    with pytest.raises(error, match=match) as info:
        ktl.TFDataset(make())
    assert "Fix:" in str(info.value)


def test_unknown_shapes_are_accepted():
    def gen():
        yield np.zeros((2, 3), np.float32), np.zeros(2, np.int32)

    signature = (tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.int32))
    ds = ktl.TFDataset(tf.data.Dataset.from_generator(gen, output_signature=signature))
    assert ds.yield_batch()[1][0].shape == (2, 3)


def test_non_dataset_is_rejected_without_importing_tensorflow():
    code = (
        "import sys, numpy, keras_trainloop as ktl\n"
        "try:\n"
        "    ktl.TFDataset(numpy.zeros(3))\n"
        "except TypeError as e:\n"
        "    print('TypeError', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["TypeError", "False"], result.stderr


def test_yield_batches_stacks_then_leaves_the_short_batch_to_yield_batch():
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(3), spec="s")
    spec, (xs,), (ys,) = ds.yield_batches(2)
    assert spec == "s" and xs.shape == (2, 3, 3) and ys.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert ds.yield_batches(2) is None  # [6, 7, 8] and the short [9] do not stack
    assert ds.yield_batches(4) is None  # and the pass ends: nothing is lost either way
    assert _label_ids(ds) == [6, 7, 8, 9]
    with pytest.raises(EOFError):
        ds.yield_batch()
    ds.reset()
    assert ds.yield_batches(3)[2][0].shape == (3, 3)
    assert _label_ids(ds) == [9]


def test_yield_batches_of_a_repeated_pipeline_match_yield_batch():
    pipeline = tf.data.Dataset.from_tensor_slices((X, Y)).repeat().batch(4)
    one, stacked = ktl.TFDataset(pipeline), ktl.TFDataset(pipeline)
    for _ in range(3):
        _, (xs,), (ys,) = stacked.yield_batches(4)
        singles = [one.yield_batch() for _ in range(4)]
        np.testing.assert_array_equal(xs, np.stack([b[1][0] for b in singles]))
        np.testing.assert_array_equal(ys, np.stack([b[2][0] for b in singles]))


def test_loop_fuses_steps_over_a_tf_dataset_with_the_same_results():
    import keras

    def run(max_fused_steps):
        keras.utils.set_random_seed(0)
        trainer = ktl.Trainer(
            lambda ctx, spec, inputs: [ctx.layer("d", lambda: keras.layers.Dense(1))(inputs[0])],
            "mean_squared_error",
            keras.optimizers.SGD(0.01),
        )
        # Fused calls as planned: a run this short compiles none when the gate measures.
        loop = ktl.Loop(trainer, max_fused_steps=max_fused_steps, measure_fusion=False)
        seen = []
        ktl.every_n_steps(loop, 3, "log", 0, lambda loop, m: seen.append(float(m[0])))
        y = X.sum(axis=1, keepdims=True) / 10
        loop.run_epochs(ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X / 10, y)).batch(2)), 3)
        return seen, trainer

    fused, fused_trainer = run(8)
    single, _ = run(1)
    assert fused == single and len(fused) == 5  # 15 steps
    assert fused_trainer._cache.executors()[0].fused_fns  # 2-step calls between the hooks


def test_length_is_tf_datas_cardinality_when_known():
    assert len(ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4))) == 3
    endless = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4).repeat())
    with pytest.raises(TypeError, match="no known length"):
        len(endless)


def test_progbar_logger_gets_the_steps_of_a_tf_data_epoch(capsys):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    loop = ktl.Loop(ktl.Trainer(model, "mse", "sgd"))
    callback = keras.callbacks.ProgbarLogger()
    loop.add_keras_callback(callback)
    y = Y.astype(np.float32)[:, None]
    loop.run_epochs(ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, y)).batch(4)), 1)
    assert callback.target == 3  # params["steps"] (ProgbarLogger keeps it as target)
    assert "3/3" in capsys.readouterr().out


def test_batches_are_read_eight_per_iterator_call_and_stack_without_copies(monkeypatch):
    x = np.arange(160, dtype=np.float32).reshape(80, 2)
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((x, x[:, 0])).batch(4))
    reads = []
    original = ktl.TFDataset._next_element
    monkeypatch.setattr(
        ktl.TFDataset, "_next_element", lambda self, d: reads.append(1) or original(self, d)
    )
    _, inputs, labels = ds.yield_batches(8)
    assert inputs[0].shape == (8, 4, 2) and labels[0].shape == (8, 4)
    assert inputs[0].base is not None  # a view into the chunk tf.data stacked
    np.testing.assert_array_equal(inputs[0].reshape(-1, 2), x[:32])
    _, inputs, _ = ds.yield_batches(4)
    _, more, _ = ds.yield_batches(8)  # crosses into the third chunk: concatenated
    np.testing.assert_array_equal(np.concatenate([inputs[0], more[0]]).reshape(-1, 2), x[32:80])
    assert len(reads) == 3


def test_short_last_batch_keeps_its_shape_and_order():
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((X, Y)).batch(4))  # 4, 4, 2
    assert ds.yield_batches(4) is None  # the short batch does not stack with the others
    _, stacked, _ = ds.yield_batches(2)
    assert stacked[0].shape == (2, 4, 3)
    _, last, last_labels = ds.yield_batch()
    assert last[0].shape == (2, 3) and last_labels[0].tolist() == [8, 9]  # not padded
    with pytest.raises(EOFError):
        ds.yield_batch()
    ds.reset()
    assert [b[2][0].tolist() for b in drain(ds)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_variable_length_batches_come_back_with_their_true_shapes():
    def gen():
        for n in (3, 3, 5, 2, 2, 2):
            yield np.ones((2, n), np.float32) * n, np.zeros(2, np.int32)

    tf_ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec((2, None), tf.float32), tf.TensorSpec((2,), tf.int32))
    )
    ds = ktl.TFDataset(tf_ds)
    _, first_two, _ = ds.yield_batches(2)
    assert first_two[0].shape == (2, 2, 3)
    assert ds.yield_batches(2) is None  # 5 then 2: different shapes
    _, five, _ = ds.yield_batch()
    assert five[0].shape == (2, 5) and float(five[0][0, 0]) == 5.0
    _, twos, _ = ds.yield_batches(3)
    assert twos[0].shape == (3, 2, 2) and np.all(twos[0] == 2.0)  # the padding cut back off


def test_a_shuffled_pipeline_is_read_in_the_same_order_as_its_iterator():
    def pipeline():
        return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(10, seed=3).batch(3).repeat(2)

    expected = [labels.tolist() for _, labels in pipeline().as_numpy_iterator()]
    ds = ktl.TFDataset(pipeline())
    got = []
    while True:
        batch = ds.yield_batches(2) if len(got) % 3 == 0 else None
        if batch is not None:
            got.extend(labels.tolist() for labels in batch[2][0])
            continue
        try:
            got.append(ds.yield_batch()[2][0].tolist())
        except EOFError:
            break
    assert got == expected


def test_static_shapes_are_stacked_by_tf_batch_without_a_per_batch_function():
    x = np.arange(96, dtype=np.float32).reshape(48, 2)
    ds = ktl.TFDataset(
        tf.data.Dataset.from_tensor_slices((x, x[:, 0])).batch(4, drop_remainder=True)
    )
    assert ds._chunk_shapes is False  # every shape known: plain .batch(8) of the batches
    _, inputs, _ = ds.yield_batches(4)
    _, single, _ = ds.yield_batch()
    _, rest, _ = ds.yield_batches(7)
    got = np.concatenate([inputs[0].reshape(-1, 2), single[0], rest[0].reshape(-1, 2)])
    np.testing.assert_array_equal(got, x)
    with pytest.raises(EOFError):
        ds.yield_batch()
