"""Tests for keras_trainloop.metrics: accumulation (eager and jitted), accuracies, Keras, names."""

# keras_trainloop is imported first: it selects Keras' JAX backend before keras loads.
# ruff: noqa: I001

from __future__ import annotations

import functools

import keras_trainloop as ktl

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

M = ktl.metrics


def _batch_mean(labels, predictions):
    return jnp.mean(predictions[0])


def _per_example(labels, predictions):
    return predictions[0]


def _run(metric, batches, jit=True):
    """Feeds (labels, predictions) batches; returns the values after each update."""
    update = jax.jit(metric.update) if jit else metric.update
    state = metric.init_state()
    values = []
    for labels, predictions in batches:
        state, value = update(state, labels, predictions)
        values.append(float(value))
    return values


def _value_batches():
    return [([], [np.full(n, v, np.float32)]) for n, v in [(2, 1.0), (6, 3.0), (4, 0.0)]]


# Aggregating metrics -----------------------------------------------------------------------
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("fn", [_batch_mean, _per_example], ids=["scalar", "per_example"])
def test_mean_metric_weights_batches_by_their_size(fn, jit):
    metric = M.MeanMetric("Mean x", "#x", "x", fn)
    values = _run(metric, _value_batches(), jit=jit)
    np.testing.assert_allclose(values, [1.0, (2 + 18) / 8, 20 / 12], rtol=1e-6)


def test_mean_metric_reset_by_fresh_state():
    metric = M.MeanMetric("Mean x", "#x", "x", _batch_mean)
    first = _run(metric, _value_batches())
    assert _run(metric, _value_batches()) == first


def test_mean_metric_accumulate_ignores_empty_batches():
    metric = M.MeanMetric("Mean Loss", "#loss", "loss", _batch_mean)
    state = metric.init_state()
    state, value = metric.accumulate(state, 2.0, 3)
    state, value = metric.accumulate(state, jnp.nan, 0)
    state, value = metric.accumulate(state, 4.0, 1)
    np.testing.assert_allclose(value, 10 / 4)


def test_mean_metric_is_zero_before_any_example():
    metric = M.MeanMetric("Mean Loss", "#loss", "loss", _batch_mean)
    _, value = metric.accumulate(metric.init_state(), 5.0, 0)
    assert float(value) == 0.0


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_moving_average_starts_as_plain_mean_then_decays(jit):
    weight = 0.25
    metric = M.MovingAverageMetric("Moving Average x", "~x", "x", _batch_mean, weight)
    batch_values = [4.0, 2.0, 0.0, 8.0, 8.0, 8.0]
    batches = [([], [np.full(3, v, np.float32)]) for v in batch_values]
    expected, mean = [], 0.0
    for count, v in enumerate(batch_values, start=1):
        w = max(weight, 1 / count)
        mean = (1 - w) * mean + w * v
        expected.append(mean)
    values = _run(metric, batches, jit=jit)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    np.testing.assert_allclose(values[:3], [4.0, 3.0, 2.0], rtol=1e-6)  # Plain mean at first.


def test_moving_average_counts_every_batch_once_whatever_its_size():
    metric = M.MovingAverageMetric("Moving Average x", "~x", "x", _batch_mean, 0.5)
    values = _run(metric, [([], [np.full(1, 0.0)]), ([], [np.full(100, 1.0)])])
    assert values == [0.0, 0.5]


def test_moving_average_skips_zero_weight_batches():
    metric = M.MovingAverageMetric("Moving Average Loss", "~loss", "loss", _batch_mean)
    state = metric.init_state()
    state, _ = metric.accumulate(state, 3.0, 1)
    state, value = metric.accumulate(state, jnp.nan, 0)
    assert float(value) == 3.0
    state, value = metric.accumulate(state, 1.0, 1)
    assert float(value) == 2.0


@pytest.mark.parametrize(
    "weight", [0, -0.1, 1.5, "0.1"], ids=["zero", "negative", "above_one", "string"]
)
def test_moving_average_rejects_bad_new_example_weight(weight):
    with pytest.raises(ValueError, match=f"Received: new_example_weight={weight!r}"):
        M.MovingAverageMetric("m", "m", "m", _batch_mean, weight)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_batch_metric_reports_current_batch_only(jit):
    metric = M.BatchMetric("Batch x", "x", "x", _batch_mean)
    assert _run(metric, _value_batches(), jit=jit) == [1.0, 3.0, 0.0]
    _, value = metric.accumulate(metric.init_state(), jnp.array([1.0, 3.0]), 2)
    assert float(value) == 2.0


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(M.MeanMetric("a", "a", "a", _batch_mean), id="mean"),
        pytest.param(M.MovingAverageMetric("a", "a", "a", _batch_mean), id="moving_average"),
        pytest.param(M.KerasMetric(keras.metrics.Mean()), id="keras"),
    ],
)
def test_init_state_returns_new_buffers_each_time(metric):
    # The Trainer donates metric state to the compiled step: buffers must never be shared.
    first, second = jax.tree.leaves(metric.init_state()), jax.tree.leaves(metric.init_state())
    assert first
    assert all(a is not b for a, b in zip(first, second))


def test_jitted_update_traces_once_across_steps():
    traces = []

    def fn(labels, predictions):
        traces.append(1)
        return jnp.mean(predictions[0])

    metric = M.MeanMetric("Mean x", "#x", "x", fn)
    update = jax.jit(metric.update)
    state = metric.init_state()
    for _ in range(5):
        state, _ = update(state, [], [jnp.ones(4)])
    assert len(traces) == 1


# Keras metrics -----------------------------------------------------------------------------
def _classification_batches(seed=0, sizes=(5, 3, 7)):
    rng = np.random.default_rng(seed)
    return [
        (
            [rng.integers(0, 3, size=(n,)).astype(np.int32)],
            [rng.normal(size=(n, 3)).astype(np.float32)],
        )
        for n in sizes
    ]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(keras.metrics.SparseCategoricalAccuracy, id="sparse_categorical_accuracy"),
        pytest.param(lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=2), id="top_2"),
    ],
)
def test_keras_metric_is_cumulative_like_keras(make):
    batches = _classification_batches()
    reference = make()
    expected = []
    for labels, predictions in batches:
        reference.update_state(labels[0], predictions[0])
        expected.append(float(reference.result()))
    wrapped = make()
    values = _run(M.KerasMetric(wrapped), batches)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert float(wrapped.result()) == 0.0  # The wrapped metric's own variables are untouched.


def test_keras_metric_reads_sample_weight_from_second_label():
    labels, predictions = _classification_batches(sizes=(6,))[0]
    weights = np.array([1, 0, 1, 0, 1, 0], np.float32)
    reference = keras.metrics.SparseCategoricalAccuracy()
    reference.update_state(labels[0], predictions[0], sample_weight=weights)
    metric = M.KerasMetric(keras.metrics.SparseCategoricalAccuracy())
    _, value = jax.jit(metric.update)(metric.init_state(), [labels[0], weights], predictions)
    np.testing.assert_allclose(value, reference.result(), rtol=1e-6)


def test_keras_metric_rejects_more_than_a_sample_weight():
    labels, predictions = _classification_batches(sizes=(3,))[0]
    metric = M.KerasMetric(keras.metrics.SparseCategoricalAccuracy())
    with pytest.raises(ValueError, match=r"len\(labels\)=3"):
        metric.update(metric.init_state(), [labels[0], np.ones(3), np.ones(3, bool)], predictions)


def test_per_batch_keras_metric_is_each_batch_alone():
    batches = _classification_batches()
    expected = []
    for labels, predictions in batches:
        fresh = keras.metrics.SparseCategoricalAccuracy()
        fresh.update_state(labels[0], predictions[0])
        expected.append(float(fresh.result()))
    metric = M.per_batch(keras.metrics.SparseCategoricalAccuracy())
    np.testing.assert_allclose(_run(metric, batches), expected, rtol=1e-6)


def test_moving_average_of_keras_metric_starts_at_first_batch_value():
    batches = _classification_batches()
    fresh = keras.metrics.SparseCategoricalAccuracy()
    fresh.update_state(batches[0][0][0], batches[0][1][0])
    metric = M.moving_average("sparse_categorical_accuracy", new_example_weight=0.5)
    values = _run(metric, batches)
    np.testing.assert_allclose(values[0], float(fresh.result()), rtol=1e-6)


def test_keras_metric_with_vector_result_is_refused_per_batch():
    metric = M.per_batch(keras.metrics.F1Score(average=None))
    labels = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"scalar result.*shape \(3,\)"):
        metric.update(metric.init_state(), [labels], [labels])


# GoMLX accuracy metrics --------------------------------------------------------------------
def _sparse_reference(class_ids, logits):
    is_max = logits == logits.max(-1, keepdims=True)
    unique = is_max.sum(-1) == 1
    return unique & (logits.argmax(-1) == class_ids.reshape(-1))


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_sparse_categorical_accuracy_counts_ties_as_misses(label_shape):
    logits = np.array([[1.0, 2, 0], [3, 3, 0], [0, 0, 1], [5, 1, 1]], np.float32)
    class_ids = np.array([1, 0, 0, 0], np.int32)
    if label_shape == "column":
        class_ids = class_ids[:, None]
    metric = M.SparseCategoricalAccuracy()
    _, value = jax.jit(metric.update)(metric.init_state(), [class_ids], [logits])
    assert float(value) == 0.5  # Row 1 is a tie (miss), row 2 is wrong.


def test_sparse_categorical_accuracy_mean_over_batches_matches_numpy():
    batches = _classification_batches(seed=3)
    values = _run(M.SparseCategoricalAccuracy(), batches)
    hits = np.concatenate([_sparse_reference(lab[0], pred[0]) for lab, pred in batches])
    np.testing.assert_allclose(values[-1], hits.mean(), rtol=1e-6)


def test_sparse_categorical_accuracy_weights_mean_by_weights_and_mask():
    (labels, predictions), (labels2, predictions2) = _classification_batches(seed=1, sizes=(4, 4))
    hits1 = _sparse_reference(labels[0], predictions[0])
    hits2 = _sparse_reference(labels2[0], predictions2[0])
    weights = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    mask = np.array([True, False, True, True])
    metric = M.SparseCategoricalAccuracy()
    update = jax.jit(metric.update)
    state, _ = update(metric.init_state(), [labels[0], weights], predictions)
    state, value = update(state, [labels2[0], mask], predictions2)
    expected = ((hits1 * weights).sum() + hits2[mask].sum()) / (weights.sum() + mask.sum())
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_moving_average_accuracy_ignores_fully_masked_batch():
    labels, predictions = _classification_batches(sizes=(4,))[0]
    metric = M.MovingAverageSparseCategoricalAccuracy()
    update = jax.jit(metric.update)
    state, first = update(metric.init_state(), labels, predictions)
    state, second = update(state, [labels[0], np.zeros(4, bool)], predictions)
    assert float(second) == float(first)


@pytest.mark.parametrize(
    ("metric_cls", "predictions", "expected"),
    [
        # labels: [1, 0, 1, 0, 1]
        pytest.param(M.BinaryAccuracy, [0.9, 0.2, 0.5, 0.7, 0.51], 0.6, id="probabilities"),
        pytest.param(M.BinaryLogitsAccuracy, [2.0, -1.0, 0.0, 3.0, 0.1], 0.6, id="logits"),
    ],
)
def test_binary_accuracies_treat_the_threshold_as_a_miss(metric_cls, predictions, expected):
    labels = np.array([1, 0, 1, 0, 1], np.float32)
    predictions = np.array(predictions, np.float32)[:, None]  # [B, 1] against [B] labels.
    metric = metric_cls()
    _, value = jax.jit(metric.update)(metric.init_state(), [labels], [predictions])
    np.testing.assert_allclose(value, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("metric_cls", "name", "short_name", "kind"),
    [
        (M.SparseCategoricalAccuracy, "Mean Accuracy", "#acc", M.MeanMetric),
        (M.BinaryAccuracy, "Mean Accuracy", "#acc", M.MeanMetric),
        (M.BinaryLogitsAccuracy, "Mean Accuracy", "#acc", M.MeanMetric),
        (
            M.MovingAverageSparseCategoricalAccuracy,
            "Moving Average Accuracy",
            "~acc",
            M.MovingAverageMetric,
        ),
        (M.MovingAverageBinaryAccuracy, "Moving Average Accuracy", "~acc", M.MovingAverageMetric),
        (
            M.MovingAverageBinaryLogitsAccuracy,
            "Moving Average Accuracy",
            "~acc",
            M.MovingAverageMetric,
        ),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_accuracy_metrics_have_gomlx_names(metric_cls, name, short_name, kind):
    metric = metric_cls()
    assert (metric.name, metric.short_name, metric.metric_type) == (name, short_name, "accuracy")
    assert isinstance(metric, kind)


def test_moving_average_binary_logits_accuracy_uses_new_example_weight():
    metric = M.MovingAverageBinaryLogitsAccuracy(new_example_weight=0.5)
    labels = [np.array([1.0, 1.0], np.float32)]
    batches = [(labels, [np.array([1.0, 1.0], np.float32)])] * 3
    batches += [(labels, [np.array([-1.0, -1.0], np.float32)])]
    assert _run(metric, batches) == [1.0, 1.0, 1.0, 0.5]


def test_sparse_accuracy_needs_labels():
    metric = M.SparseCategoricalAccuracy()
    with pytest.raises(ValueError, match=r"needs labels\[0\].*len\(labels\)=0"):
        metric.update(metric.init_state(), [], [np.zeros((2, 3))])


# pretty_print ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metric_type", "value", "expected"),
    [
        ("loss", 0.12345, "0.123"),
        ("loss", jnp.float32(2.0), "2.000"),
        ("accuracy", 0.93454, "93.45%"),
        ("accuracy", jnp.array(1.0), "100.00%"),
        ("auc", 0.876543, "0.8765"),
        ("auc", 12345.6, "1.235e+04"),
        ("loss", float("nan"), "nan"),
        ("auc", np.array([0.5, 0.25]), "[0.5, 0.25]"),
    ],
    ids=[
        "loss",
        "loss_device_array",
        "accuracy",
        "accuracy_one",
        "general",
        "general_large",
        "nan",
        "vector",
    ],
)
def test_pretty_print_format_follows_metric_type(metric_type, value, expected):
    metric = M.MeanMetric("m", "m", metric_type, _batch_mean)
    assert metric.pretty_print(value) == expected


# Names, factories and as_metric ------------------------------------------------------------
def test_factories_name_functions_like_gomlx():
    def mean_absolute_error(labels, predictions):
        return jnp.mean(jnp.abs(labels[0] - predictions[0]))

    names = [
        (m.name, m.short_name, m.metric_type, type(m))
        for m in (
            M.mean(mean_absolute_error),
            M.moving_average(mean_absolute_error),
            M.per_batch(mean_absolute_error),
        )
    ]
    assert names == [
        ("Mean mean_absolute_error", "#mae", "mean_absolute_error", M.MeanMetric),
        (
            "Moving Average mean_absolute_error",
            "~mae",
            "mean_absolute_error",
            M.MovingAverageMetric,
        ),
        ("Batch mean_absolute_error", "mae", "mean_absolute_error", M.BatchMetric),
    ]


def test_factories_accept_explicit_names():
    metric = M.mean(keras.metrics.AUC(), name="Eval AUC", short_name="auc", metric_type="auc")
    assert isinstance(metric, M.KerasMetric)
    assert (metric.name, metric.short_name, metric.metric_type) == ("Eval AUC", "auc", "auc")


def test_as_metric_returns_metrics_as_is():
    metric = M.SparseCategoricalAccuracy()
    assert M.as_metric(metric) is metric


@pytest.mark.parametrize(
    ("obj", "keras_cls", "name", "short_name", "metric_type"),
    [
        pytest.param(
            keras.metrics.SparseCategoricalAccuracy(),
            keras.metrics.SparseCategoricalAccuracy,
            "sparse_categorical_accuracy",
            "sca",
            "accuracy",
            id="instance",
        ),
        pytest.param(
            "binary_accuracy",
            keras.metrics.BinaryAccuracy,
            "binary_accuracy",
            "binary_acc",
            "accuracy",
            id="accuracy_name",
        ),
        pytest.param("auc", keras.metrics.AUC, "auc", "auc", "auc", id="auc_name"),
    ],
)
def test_as_metric_wraps_keras_metrics(obj, keras_cls, name, short_name, metric_type):
    metric = M.as_metric(obj)
    assert isinstance(metric, M.KerasMetric)
    assert isinstance(metric.keras_metric, keras_cls)
    assert (metric.name, metric.short_name, metric.metric_type) == (name, short_name, metric_type)


def test_keras_default_name_suffixes_are_dropped_but_given_names_kept():
    first, second = keras.metrics.AUC(), keras.metrics.AUC()
    assert second.name != first.name  # Keras made the default name unique.
    names = {(m.name, m.metric_type) for m in (M.as_metric(first), M.as_metric(second))}
    assert names == {("auc", "auc")}
    named = M.as_metric(keras.metrics.AUC(name="val_auc_2"))
    assert (named.name, named.metric_type) == ("val_auc_2", "val_auc_2")


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        pytest.param(ktl.losses.mean_squared_error, "mean_squared_error", id="function"),
        pytest.param(functools.partial(_batch_mean), "_batch_mean", id="partial"),
        pytest.param(lambda labels, predictions: jnp.mean(predictions[0]), "metric", id="lambda"),
    ],
)
def test_as_metric_makes_functions_mean_metrics_named_after_them(fn, name):
    metric = M.as_metric(fn)
    assert isinstance(metric, M.MeanMetric)
    assert metric.name == name
    labels = [np.array([1.0, 2.0], np.float32)]
    _, value = metric.update(metric.init_state(), labels, [np.zeros(2, np.float32)])
    assert np.isfinite(float(value))


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        pytest.param(3, TypeError, r"Received: metric=3 of type int", id="number"),
        pytest.param(keras.metrics.AUC, TypeError, r"a class.*AUC\(\)", id="class"),
        pytest.param("no_such_metric", ValueError, r"metric='no_such_metric'", id="unknown_name"),
    ],
)
def test_as_metric_rejects_bad_values(obj, error, match):
    with pytest.raises(error, match=match):
        M.as_metric(obj)


def test_factories_reject_ktl_metrics_and_other_values():
    with pytest.raises(TypeError, match="already a ktl Metric"):
        M.moving_average(M.SparseCategoricalAccuracy())
    with pytest.raises(TypeError, match=r"per_batch\(\) takes a function.*Received: 1\.5"):
        M.per_batch(1.5)


@pytest.mark.parametrize("kwargs", [{"name": ""}, {"short_name": None}], ids=["empty", "none"])
def test_metric_names_must_be_strings(kwargs):
    args = {"name": "n", "short_name": "s", "metric_type": "t", **kwargs}
    with pytest.raises(TypeError, match="must be a non-empty string"):
        M.MeanMetric(fn=_batch_mean, **args)


def test_keras_metric_rejects_non_keras_metric():
    with pytest.raises(TypeError, match=r"keras\.metrics\.Metric instance"):
        M.KerasMetric(_batch_mean)


@pytest.mark.parametrize(
    "metric_cls",
    [M.MeanMetric, M.MovingAverageMetric, M.BatchMetric],
    ids=lambda cls: cls.__name__,
)
def test_metric_without_fn_is_fed_by_accumulate_only(metric_cls):
    metric = metric_cls("Loss", "loss", "loss")
    state, value = jax.jit(metric.accumulate)(metric.init_state(), 2.5, 4)
    assert float(value) == 2.5
    with pytest.raises(ValueError, match=r"'Loss' has no fn.*accumulate"):
        metric.update(state, [], [np.zeros(2)])


def test_metric_fn_must_be_callable():
    with pytest.raises(TypeError, match=r"Received: fn='mse'"):
        M.MeanMetric("m", "m", "m", "mse")


# "accuracy" as model.compile reads it --------------------------------------------------------
def _accuracy_batches(kind, seed=0, sizes=(5, 3, 7), classes=3):
    """(labels, predictions) batches shaped for one of Keras' three accuracies."""
    rng = np.random.default_rng(seed)
    batches = []
    for n in sizes:
        if kind == "binary":
            labels = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
            predictions = rng.uniform(size=(n, 1)).astype(np.float32)
        else:
            class_ids = rng.integers(0, classes, size=(n,)).astype(np.int32)
            predictions = rng.normal(size=(n, classes)).astype(np.float32)
            labels = {
                "sparse": class_ids,
                "sparse_column": class_ids[:, None],
                "one_hot": np.eye(classes, dtype=np.float32)[class_ids],
            }[kind]
        batches.append(([labels], [predictions]))
    return batches


def _keras_values(keras_metric, batches):
    """The Keras metric's cumulative result after each batch (stateful API)."""
    values = []
    for labels, predictions in batches:
        keras_metric.update_state(
            *labels[:1], predictions[0], sample_weight=labels[1] if len(labels) > 1 else None
        )
        values.append(float(keras_metric.result()))
    return values


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    ("kind", "keras_cls"),
    [
        pytest.param("sparse", keras.metrics.SparseCategoricalAccuracy, id="sparse_ids"),
        pytest.param(
            "sparse_column", keras.metrics.SparseCategoricalAccuracy, id="sparse_ids_column"
        ),
        pytest.param("one_hot", keras.metrics.CategoricalAccuracy, id="one_hot"),
        pytest.param("binary", keras.metrics.BinaryAccuracy, id="binary"),
    ],
)
def test_accuracy_name_picks_the_keras_accuracy_compile_would(kind, keras_cls, jit):
    batches = _accuracy_batches(kind)
    metric = M.as_metric("accuracy")
    assert type(metric.keras_metric_for(*batches[0])) is keras_cls
    expected = _keras_values(keras_cls(), batches)
    assert len(set(expected)) > 1  # The batches move the value: cumulative, not constant.
    np.testing.assert_allclose(_run(metric, batches, jit=jit), expected, rtol=1e-6)


def test_accuracy_name_reads_sample_weight_from_second_label():
    batches = _accuracy_batches("sparse", seed=2, sizes=(6, 4))
    rng = np.random.default_rng(5)
    weighted = [
        ([labels[0], rng.uniform(size=len(labels[0])).astype(np.float32)], predictions)
        for labels, predictions in batches
    ]
    expected = _keras_values(keras.metrics.SparseCategoricalAccuracy(), weighted)
    np.testing.assert_allclose(_run(M.as_metric("accuracy"), weighted), expected, rtol=1e-6)


@pytest.mark.parametrize("identifier", ["accuracy", "acc", "Accuracy", "ACC"])
def test_accuracy_names_keep_the_name_as_given(identifier):
    metric = M.as_metric(identifier)
    assert (metric.name, metric.keras_name, metric.short_name, metric.metric_type) == (
        identifier,
        identifier,
        "acc" if identifier.lower() == "accuracy" else identifier,
        "accuracy",
    )
    batches = _accuracy_batches("one_hot", seed=4)
    expected = _keras_values(keras.metrics.CategoricalAccuracy(), batches)
    np.testing.assert_allclose(_run(metric, batches), expected, rtol=1e-6)


def test_accuracy_name_state_is_shared_by_the_three_keras_accuracies():
    metric = M.as_metric("acc")
    state = metric.init_state()
    for keras_metric in metric.keras_metrics.values():
        initial = keras_metric.stateless_reset_state()
        assert [(v.shape, v.dtype) for v in initial] == [(v.shape, v.dtype) for v in state]


def test_accuracy_name_needs_labels_and_predictions():
    metric = M.as_metric("accuracy")
    with pytest.raises(ValueError, match=r"len\(labels\)=0.*metric 'accuracy'"):
        metric.update(metric.init_state(), [], [np.zeros((2, 3), np.float32)])


def test_trainer_eval_with_accuracy_name_matches_keras_sparse_categorical_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=(40,)).astype(np.int32)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    trainer = ktl.Trainer(
        model, "sparse_categorical_crossentropy", "adam", eval_metrics=["accuracy"]
    )
    values = trainer.eval(ktl.ArrayDataset(x, y, batch_size=16))  # Batches of 16, 16 and 8.
    names = [m.name for m in trainer.eval_metrics]
    assert names[-1] == "accuracy"
    reference = keras.metrics.SparseCategoricalAccuracy()
    reference.update_state(y, np.asarray(trainer.model(x)))
    np.testing.assert_allclose(float(values[-1]), float(reference.result()), rtol=1e-6)


# Names as Keras logs them ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("identifier", "keras_fn"),
    [
        pytest.param("mse", keras.metrics.mean_squared_error, id="mse"),
        pytest.param("mae", keras.metrics.mean_absolute_error, id="mae"),
    ],
)
def test_keras_metric_names_average_keras_functions_under_the_name_given(identifier, keras_fn):
    rng = np.random.default_rng(1)
    batches = [
        ([rng.normal(size=(n, 2)).astype(np.float32)], [rng.normal(size=(n, 2)).astype(np.float32)])
        for n in (4, 2, 5)
    ]
    metric = M.as_metric(identifier)
    assert (metric.name, metric.keras_name) == (identifier, identifier)
    per_example = np.concatenate([np.asarray(keras_fn(lab[0], pred[0])) for lab, pred in batches])
    np.testing.assert_allclose(_run(metric, batches)[-1], per_example.mean(), rtol=1e-5)


@pytest.mark.parametrize("identifier", ["sparse_categorical_accuracy", "auc", "AUC", "mse"])
def test_keras_metric_names_are_name_and_keras_name_as_given(identifier):
    metric = M.as_metric(identifier)
    assert isinstance(metric, M.KerasMetric)
    assert (metric.name, metric.keras_name) == (identifier, identifier)


@pytest.mark.parametrize(
    ("make", "keras_name"),
    [
        pytest.param(keras.metrics.MeanAbsoluteError, "mean_absolute_error", id="default_name"),
        pytest.param(lambda: keras.metrics.AUC(name="my_auc"), "my_auc", id="given_name"),
    ],
)
def test_keras_metric_objects_keras_name_is_their_name(make, keras_name):
    keras_metric = make()
    for metric in (M.as_metric(keras_metric), M.KerasMetric(keras_metric), M.mean(keras_metric)):
        assert metric.keras_name == keras_metric.name == keras_name


def _my_err(labels, predictions):
    return jnp.mean(jnp.abs(labels[0] - predictions[0]))


def myRelativeError(labels, predictions):  # A camelCase name on purpose.
    return jnp.mean(jnp.abs(labels[0] - predictions[0]) / (jnp.abs(labels[0]) + 1))


@pytest.mark.parametrize(
    ("make", "keras_name"),
    [
        pytest.param(
            lambda: M.MeanMetric("Mean Accuracy", "#acc", "accuracy", _batch_mean),
            "mean_accuracy",
            id="mean",
        ),
        pytest.param(
            lambda: M.MovingAverageMetric("Moving Average Loss", "~loss", "loss"),
            "moving_average_loss",
            id="moving_average",
        ),
        pytest.param(
            lambda: M.BatchMetric("Batch Loss+Regularization", "l", "loss"),
            "batch_loss_regularization",
            id="batch",
        ),
        pytest.param(M.SparseCategoricalAccuracy, "mean_accuracy", id="gomlx_accuracy"),
        pytest.param(
            M.MovingAverageBinaryLogitsAccuracy,
            "moving_average_accuracy",
            id="gomlx_moving_accuracy",
        ),
        pytest.param(lambda: M.as_metric(_my_err), "_my_err", id="function"),
        pytest.param(
            lambda: M.as_metric(myRelativeError), "my_relative_error", id="camel_case_function"
        ),
        pytest.param(lambda: M.mean(_my_err), "mean_my_err", id="mean_of_function"),
        pytest.param(
            lambda: M.moving_average("mse"),
            "moving_average_mean_squared_error",
            id="moving_average_of_keras_name",
        ),
    ],
)
def test_ktl_metrics_keras_name_is_snake_case_of_name(make, keras_name):
    assert make().keras_name == keras_name


@pytest.mark.parametrize(
    ("make", "keras_name"),
    [
        pytest.param(
            lambda: M.MeanMetric("Mean x", "#x", "x", _batch_mean, keras_name="val_x"),
            "val_x",
            id="mean",
        ),
        pytest.param(
            lambda: M.KerasMetric(keras.metrics.AUC(), keras_name="roc"), "roc", id="keras"
        ),
        pytest.param(
            lambda: M.SparseCategoricalAccuracy(keras_name="acc"), "acc", id="gomlx_accuracy"
        ),
        pytest.param(
            lambda: M.moving_average(_my_err, keras_name="err"), "err", id="moving_average_factory"
        ),
        pytest.param(lambda: M.mean("mse"), "mse", id="mean_of_keras_name"),
    ],
)
def test_keras_name_can_be_set_or_follows_the_source(make, keras_name):
    assert make().keras_name == keras_name


@pytest.mark.parametrize("keras_name", ["", 3], ids=["empty", "number"])
def test_keras_name_must_be_a_non_empty_string(keras_name):
    with pytest.raises(TypeError, match=rf"Received: keras_name={keras_name!r}"):
        M.MeanMetric("m", "m", "m", _batch_mean, keras_name=keras_name)


def test_keras_metric_objects_log_without_keras_suffix_so_train_and_eval_lists_pair_up():
    keras.metrics.AUC(), keras.metrics.Precision()  # Later ones get Keras' "_1", "_2"...
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    trainer = ktl.Trainer(
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")]),
        "binary_crossentropy",
        "adam",
        train_metrics=[keras.metrics.AUC(), keras.metrics.Precision()],
        eval_metrics=[keras.metrics.AUC(), keras.metrics.Precision()],
    )
    loop = ktl.Loop(trainer)
    loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=8), 1, validation_data=(x, y))
    history = loop.history.history
    assert {"auc", "precision", "val_auc", "val_precision"} <= set(history)
    assert not any(key.startswith(("auc_", "val_auc_", "precision_")) for key in history)


def test_two_metrics_of_one_name_in_a_set_keep_distinct_log_names():
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    first, second = keras.metrics.AUC(), keras.metrics.AUC(curve="PR")
    trainer = ktl.Trainer(
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")]),
        "binary_crossentropy",
        "adam",
        eval_metrics=[first, second, M.mean("mse"), M.mean("mse")],
    )
    ktl.Loop(trainer).run_steps(ktl.ArrayDataset(x, y, batch_size=8, loop_forever=True), 2)
    values = trainer.eval(ktl.ArrayDataset(x, y, batch_size=8), return_dict=True)
    # The second of a name takes Keras' own name of its metric where that is free.
    assert {"auc", second.name, "mse", "mean_squared_error"} <= set(values)
    assert second.name != "auc"
    assert len(set(values) - {"loss"}) == 4  # the four metrics, none hidden


@pytest.mark.parametrize(
    ("name", "expected"),
    [("RootMeanSquaredError", "rmse"), ("sparse_categorical_accuracy", "sca"), ("AUC", "AUC")],
)
def test_short_names_take_initials_of_long_names_camel_case_included(name, expected):
    assert M.as_metric(name).short_name == expected
