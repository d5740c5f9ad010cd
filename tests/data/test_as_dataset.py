"""ktl.as_dataset: whatever model.fit accepts as data, as a ktl.Dataset."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_helpers import array_reference, assert_same_weights, digits, drain, train_digits

import keras_trainloop as ktl
from keras_trainloop.data import GeneratorDataset, GrainDataset, PyDatasetSource

X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row i = i
Y = np.arange(10, dtype=np.int32)
W = np.linspace(0, 1, 10).astype(np.float32)


def _ids(batches, side=2, index=0):
    return [b[side][index].tolist() for b in batches]


def _batches(x=X, y=Y, size=4):
    for start in range(0, len(x), size):
        yield x[start : start + size], y[start : start + size]


class _PyBatches(keras.utils.PyDataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return X[i * 4 : (i + 1) * 4], Y[i * 4 : (i + 1) * 4]


# What each kind of data becomes ----------------------------------------------------------------
def test_a_ktl_dataset_is_returned_as_it_is():
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    assert ktl.as_dataset(ds) is ds
    assert ktl.data.as_dataset is ktl.as_dataset


def test_arrays_become_an_array_dataset_with_fit_defaults():
    ds = ktl.as_dataset(X, Y)
    assert isinstance(ds, ktl.ArrayDataset) and ds.batch_size == 32 and ds.name == "array"
    ((spec, inputs, labels),) = drain(ds)
    assert spec is None and inputs[0].shape == (10, 3) and labels[0].tolist() == Y.tolist()
    assert drain(ktl.as_dataset(X))[0][2] == []  # No y: no labels.


def test_array_options_are_array_datasets():
    options = {"batch_size": 3, "shuffle": True, "seed": 7, "drop_remainder": True}
    got = drain(ktl.as_dataset(X, Y, name="train", **options))
    assert _ids(got) == _ids(drain(ktl.ArrayDataset(X, Y, **options)))
    forever = ktl.as_dataset(X, Y, batch_size=4, loop_forever=True)
    assert _ids([forever.yield_batch() for _ in range(3)]) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 0, 1],
    ]


@pytest.mark.parametrize(
    ("x", "y", "num_inputs", "num_labels", "spec"),
    [
        ([X, X[:, :1]], Y, 2, 1, None),
        ({"b": X, "a": X[:, :1]}, Y, 2, 1, ("b", "a")),
        (X, [Y, Y * 2], 1, 2, None),
        (X, {"digit": Y, "parity": Y % 2}, 1, 2, None),
    ],
    ids=["list-of-inputs", "dict-of-inputs", "list-of-outputs", "dict-of-outputs"],
)
def test_several_inputs_and_outputs(x, y, num_inputs, num_labels, spec):
    got_spec, inputs, labels = ktl.as_dataset(x, y, batch_size=4).yield_batch()
    assert (got_spec, len(inputs), len(labels)) == (spec, num_inputs, num_labels)


def test_sample_weight_is_the_last_label():
    _, _, labels = ktl.as_dataset(X, [Y, Y], sample_weight=W, batch_size=4).yield_batch()
    assert len(labels) == 3
    np.testing.assert_array_equal(labels[-1], W[:4])


def test_generator_function_restarts_and_generator_object_gives_one_pass():
    ds = ktl.as_dataset(_batches)
    assert isinstance(ds, GeneratorDataset) and ds.name == "generator"
    assert _ids(drain(ds)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    ds.reset()
    assert len(drain(ds)) == 3
    once = ktl.as_dataset(_batches(), name="once")
    assert len(drain(once)) == 3
    with pytest.raises(ValueError, match="one-shot iterator"):
        once.reset()


def test_list_of_batches_and_elements_read_as_fit_reads_them():
    batches = [(X[:5], Y[:5], W[:5]), [X[5:], Y[5:]], (X[:2],), {"pixels": X[:2]}]
    got = drain(ktl.as_dataset(batches))
    assert [(len(b[1]), len(b[2])) for b in got] == [(1, 2), (1, 1), (1, 0), (1, 0)]
    assert got[3][0] == ("pixels",)  # A dict x: its keys are the spec.
    np.testing.assert_array_equal(got[0][2][1], W[:5])  # labels: [y, sample_weight]


def test_py_dataset_and_grain_become_their_sources():
    grain = pytest.importorskip("grain")
    py = ktl.as_dataset(_PyBatches(), name="py")
    assert isinstance(py, PyDatasetSource) and py.name == "py"
    assert _ids(drain(py)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert isinstance(ktl.as_dataset(_PyBatches(), shuffle=True), PyDatasetSource)
    source = grain.MapDataset.source(np.arange(10)).map(lambda i: (X[i], Y[i])).batch(4)
    for value in (source, source.to_iter_dataset()):
        ds = ktl.as_dataset(value)
        assert isinstance(ds, GrainDataset) and ds.name == "grain"
        assert _ids(drain(ds)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_tf_data_elements_are_read_as_fit_reads_them():
    tf = pytest.importorskip("tensorflow")
    base = tf.data.Dataset.from_tensor_slices((X, Y, W))
    cases = [
        (base.map(lambda x, y, w: (x, y)), 1),
        (base.map(lambda x, y, w: (x, y, w)), 2),
        (base.map(lambda x, y, w: (x,)), 0),
        (base.map(lambda x, y, w: x), 0),
        (base.map(lambda x, y, w: ({"pixels": x}, {"digit": y}, w)), 2),
    ]
    for pipeline, num_labels in cases:
        ds = ktl.as_dataset(pipeline.batch(4))
        assert isinstance(ds, ktl.TFDataset) and ds.name == "tf.data"
        batches = drain(ds)
        assert [len(b[2]) for b in batches] == [num_labels] * 3
        np.testing.assert_array_equal(batches[0][1][0], X[:4])
        if num_labels == 2:
            np.testing.assert_array_equal(batches[0][2][1], W[:4])
    with pytest.raises(TypeError, match=r"x, \(x,\), \(x, y\) or \(x, y, sample_weight\)"):
        ktl.as_dataset(base.map(lambda x, y, w: (x, y, w, w)).batch(4))
    with pytest.raises(ValueError, match="looks unbatched"):
        ktl.as_dataset(base)


# Errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("images/", "str"),
        (3, "int"),
        (None, "NoneType"),
        ({"a": "b"}, "dict"),
        (object(), "object"),
    ],
    ids=["string", "int", "none", "dict-of-strings", "object"],
)
def test_unsupported_inputs_name_the_type_and_the_fix(value, type_name):
    with pytest.raises(
        TypeError,
        match=rf"as_dataset takes what model.fit takes.*of type "
        rf"{type_name}\. Fix:",
    ):
        ktl.as_dataset(value)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: ktl.ArrayDataset(X, Y, batch_size=4), "ktl.Dataset"),
        (lambda: _batches, "generator or iterable of batches"),
        (lambda: _PyBatches(), "keras.utils.PyDataset"),
    ],
    ids=["dataset", "generator", "py-dataset"],
)
@pytest.mark.parametrize(
    ("option", "fix"),
    [
        ({"y": Y}, "yield the targets"),
        ({"sample_weight": W}, "yield the weights"),
        ({"batch_size": 8}, "batch the data in its source"),
        ({"seed": 1}, "seed the source"),
        ({"loop_forever": True}, r"\.repeat\(\)"),
        ({"drop_remainder": True}, "drop_remainder=True"),
    ],
    ids=["y", "sample-weight", "batch-size", "seed", "loop-forever", "drop-remainder"],
)
def test_options_the_data_decides_itself_are_refused_with_the_fix(make, kind, option, fix):
    (name,) = option
    with pytest.raises(ValueError, match=rf"no {name}= when x is a {kind}.*Fix:.*{fix}"):
        ktl.as_dataset(make(), **option)


def test_name_and_spec_of_a_ktl_dataset_are_set_where_it_is_built():
    with pytest.raises(ValueError, match="no name= when x is a ktl.Dataset.*Fix: set it"):
        ktl.as_dataset(ktl.ArrayDataset(X, Y, batch_size=4), name="other")
    with pytest.raises(ValueError, match="no shuffle= when x is a generator"):
        ktl.as_dataset(_batches, shuffle=True)


def test_bad_elements_are_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"a tuple of 4 items in element 0.*Fix:"):
        ktl.as_dataset([(X, Y, W, W)]).yield_batch()
    with pytest.raises(ValueError, match=r"must be a batch.*element 0 of dataset .generator.*Fix:"):
        ktl.as_dataset([(X[0], Y[0])]).yield_batch()


# Training and the import cost -------------------------------------------------------------------
def test_a_generator_trains_digits_exactly_as_array_dataset():
    x, y, _, _ = digits()
    accuracy, weights, _ = train_digits(ktl.as_dataset(lambda: _batches(x, y, 64)))
    reference_accuracy, reference_weights = array_reference()
    assert accuracy == reference_accuracy
    assert_same_weights(weights, reference_weights)


def test_arrays_and_generators_load_neither_tensorflow_nor_grain():
    code = (
        "import sys, numpy as np, keras_trainloop as ktl\n"
        "x = np.zeros((8, 2), np.float32)\n"
        "ktl.as_dataset(x, x[:, 0], batch_size=4).yield_batch()\n"
        "ktl.as_dataset([(x, x)]).yield_batch()\n"
        "print('tensorflow' in sys.modules, 'grain' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_validation_data_tuples_are_unpacked_as_fit_unpacks_them():
    from keras_trainloop.data._dispatch import as_validation_data

    ((_, inputs, labels),) = drain(as_validation_data((X, Y)))
    assert len(inputs) == 1 and labels[0].tolist() == Y.tolist()
    _, inputs, labels = as_validation_data(((X, X), Y, W), batch_size=4).yield_batch()
    assert (len(inputs), len(labels)) == (2, 2)
    np.testing.assert_array_equal(labels[1], W[:4])
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    assert as_validation_data(ds) is ds
    assert isinstance(as_validation_data(_PyBatches()), PyDatasetSource)
    assert len(drain(ktl.as_dataset((X, Y)))[0][1]) == 2  # as_dataset: a tuple is two inputs.


@pytest.mark.parametrize("one_hot", [False, True], ids=["class-ids", "one-hot"])
def test_class_weight_becomes_the_sample_weight_as_in_fit(one_hot):
    targets = np.eye(10, dtype=np.float32)[Y] if one_hot else Y
    class_weight = {int(Y[0]): 3.0, int(Y[1]): 0.5}
    ds = ktl.as_dataset(X, targets, class_weight=class_weight, batch_size=len(X))
    _, _, labels = ds.yield_batch()
    assert len(labels) == 2
    expected = [class_weight.get(int(c), 1.0) for c in Y]
    np.testing.assert_array_equal(labels[1], np.asarray(expected, np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_weight": [1.0, 2.0]}, TypeError, "class_weight must map class ids"),
        ({"class_weight": {0: 2.0}, "sample_weight": W}, ValueError, "cannot be given together"),
    ],
    ids=["not-a-mapping", "with-sample-weight"],
)
def test_bad_class_weight_is_refused_naming_it(kwargs, error, match):
    with pytest.raises(error, match=match):
        ktl.as_dataset(X, Y, batch_size=4, **kwargs)
    with pytest.raises(ValueError, match="single array of targets"):
        ktl.as_dataset(X, [Y, Y], batch_size=4, class_weight={0: 2.0})


def test_class_weight_for_other_data_says_how_to_weigh_there():
    with pytest.raises(ValueError, match="class_weight=.*tf.gather"):
        ktl.as_dataset([(X, Y)], class_weight={0: 2.0})
