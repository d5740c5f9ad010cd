"""Tests for keras_trainloop.losses: values against numpy, weights, masks, errors, conversion."""

# keras_trainloop is imported first: it selects Keras' JAX backend before keras loads.
# ruff: noqa: I001

from __future__ import annotations

import keras_trainloop as ktl

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

L = ktl.losses
B, C = 6, 4


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, C)).astype(np.float32) * 2
    class_ids = rng.integers(0, C, size=(B,)).astype(np.int32)
    one_hot = np.eye(C, dtype=np.float32)[class_ids]
    binary = rng.integers(0, 2, size=(B, 1)).astype(np.float32)
    binary_logits = rng.normal(size=(B, 1)).astype(np.float32) * 3
    regression = rng.normal(size=(B, 3)).astype(np.float32)
    regression_pred = rng.normal(size=(B, 3)).astype(np.float32)
    return {
        "logits": logits,
        "class_ids": class_ids,
        "one_hot": one_hot,
        "binary": binary,
        "binary_logits": binary_logits,
        "regression": regression,
        "regression_pred": regression_pred,
    }


# Each case: loss fn, (labels, predictions) builder, per-term numpy reference shaped [B, ...].
def _cases():
    return [
        pytest.param(
            L.mean_squared_error,
            lambda d: (d["regression"], d["regression_pred"]),
            lambda d: (d["regression"] - d["regression_pred"]) ** 2,
            id="mean_squared_error",
        ),
        pytest.param(
            L.mean_absolute_error,
            lambda d: (d["regression"], d["regression_pred"]),
            lambda d: np.abs(d["regression"] - d["regression_pred"]),
            id="mean_absolute_error",
        ),
        pytest.param(
            L.binary_cross_entropy,
            lambda d: (d["binary"], _sigmoid(d["binary_logits"])),
            lambda d: (
                -(
                    d["binary"] * np.log(_sigmoid(d["binary_logits"]))
                    + (1 - d["binary"]) * np.log(1 - _sigmoid(d["binary_logits"]))
                )
            ),
            id="binary_cross_entropy",
        ),
        pytest.param(
            L.binary_cross_entropy_logits,
            lambda d: (d["binary"], d["binary_logits"]),
            lambda d: (
                -(
                    d["binary"] * np.log(_sigmoid(d["binary_logits"]))
                    + (1 - d["binary"]) * np.log(1 - _sigmoid(d["binary_logits"]))
                )
            ),
            id="binary_cross_entropy_logits",
        ),
        pytest.param(
            L.categorical_cross_entropy,
            lambda d: (d["one_hot"], _softmax(d["logits"])),
            lambda d: -np.sum(d["one_hot"] * np.log(_softmax(d["logits"])), -1),
            id="categorical_cross_entropy",
        ),
        pytest.param(
            L.categorical_cross_entropy_logits,
            lambda d: (d["one_hot"], d["logits"]),
            lambda d: -np.sum(d["one_hot"] * np.log(_softmax(d["logits"])), -1),
            id="categorical_cross_entropy_logits",
        ),
        pytest.param(
            L.sparse_categorical_cross_entropy_logits,
            lambda d: (d["class_ids"][:, None], d["logits"]),
            lambda d: -np.log(_softmax(d["logits"])[np.arange(B), d["class_ids"]]),
            id="sparse_categorical_cross_entropy_logits",
        ),
    ]


def _per_example(terms):
    """Per-example weight broadcast: [B] -> [B, 1, ...] like the terms."""
    return terms.reshape(B, -1)


@pytest.mark.parametrize(("loss_fn", "make", "reference"), _cases())
def test_loss_matches_numpy_reference(loss_fn, make, reference):
    d = _data()
    labels, predictions = make(d)
    value = loss_fn([labels], [predictions])
    assert value.shape == ()
    np.testing.assert_allclose(value, reference(d).mean(), rtol=1e-5)


@pytest.mark.parametrize(("loss_fn", "make", "reference"), _cases())
def test_loss_under_jit_matches_eager_and_has_finite_gradient(loss_fn, make, reference):
    del reference
    labels, predictions = make(_data())
    jitted = jax.jit(loss_fn)([labels], [predictions])
    np.testing.assert_allclose(jitted, loss_fn([labels], [predictions]), rtol=1e-6)
    grad = jax.grad(lambda p: loss_fn([labels], [p]))(jnp.asarray(predictions))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(("loss_fn", "make", "reference"), _cases())
def test_loss_multiplies_per_example_weights(loss_fn, make, reference):
    d = _data()
    labels, predictions = make(d)
    weights = np.linspace(0.0, 2.0, B).astype(np.float32)
    value = loss_fn([labels, weights], [predictions])
    terms = _per_example(reference(d))
    np.testing.assert_allclose(value, (terms * weights[:, None]).mean(), rtol=1e-5)


@pytest.mark.parametrize(("loss_fn", "make", "reference"), _cases())
def test_loss_averages_only_unmasked_examples(loss_fn, make, reference):
    d = _data()
    labels, predictions = make(d)
    mask = np.array([True, False, True, True, False, True])
    value = loss_fn([labels, mask], [predictions])
    terms = _per_example(reference(d))
    np.testing.assert_allclose(value, terms[mask].mean(), rtol=1e-5)


@pytest.mark.parametrize("order", ["weights_then_mask", "mask_then_weights"])
def test_weights_and_mask_are_found_in_either_order(order):
    d = _data()
    weights = np.arange(1, B + 1, dtype=np.float32)
    mask = np.array([True, True, False, True, False, True])
    extras = [weights, mask] if order == "weights_then_mask" else [mask, weights]
    value = L.sparse_categorical_cross_entropy_logits([d["class_ids"], *extras], [d["logits"]])
    terms = -np.log(_softmax(d["logits"])[np.arange(B), d["class_ids"]])
    np.testing.assert_allclose(value, (terms * weights)[mask].mean(), rtol=1e-5)


def test_fully_masked_batch_gives_zero_loss():
    d = _data()
    mask = np.zeros(B, dtype=bool)
    value = jax.jit(L.mean_squared_error)([d["regression"], mask], [d["regression_pred"]])
    assert float(value) == 0.0


def test_masked_nan_terms_do_not_poison_the_loss():
    labels = np.array([1.0, np.nan, 2.0], np.float32)
    predictions = np.zeros(3, np.float32)
    value = L.mean_squared_error([labels, np.array([True, False, True])], [predictions])
    np.testing.assert_allclose(value, 2.5)


@pytest.mark.parametrize("weight_shape", [(B,), (B, 1)], ids=["batch", "batch_by_1"])
def test_weights_broadcast_over_trailing_axes(weight_shape):
    d = _data()
    weights = np.arange(B, dtype=np.float32).reshape(weight_shape)
    value = L.mean_squared_error([d["regression"], weights], [d["regression_pred"]])
    expected = ((d["regression"] - d["regression_pred"]) ** 2 * weights.reshape(B, 1)).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_sparse_labels_with_and_without_trailing_axis_agree():
    d = _data()
    flat = L.sparse_categorical_cross_entropy_logits([d["class_ids"]], [d["logits"]])
    column = L.sparse_categorical_cross_entropy_logits([d["class_ids"][:, None]], [d["logits"]])
    np.testing.assert_allclose(flat, column)


@pytest.mark.parametrize("bad_id", [C, -1], ids=["too_large", "negative"])
def test_sparse_out_of_range_class_id_gives_nan(bad_id):
    d = _data()
    class_ids = d["class_ids"].copy()
    class_ids[2] = bad_id
    value = jax.jit(L.sparse_categorical_cross_entropy_logits)([class_ids], [d["logits"]])
    assert np.isnan(value)


def test_binary_logits_loss_is_stable_for_large_logits_and_flat_labels():
    logits = np.array([[100.0], [-100.0], [100.0]], np.float32)
    labels = np.array([1.0, 0.0, 0.0], np.float32)  # [B] labels with [B, 1] logits.
    value = L.binary_cross_entropy_logits([labels], [logits])
    np.testing.assert_allclose(value, 100.0 / 3, rtol=1e-5)


def test_binary_cross_entropy_clips_certain_mistakes():
    value = L.binary_cross_entropy([np.array([1.0, 0.0])], [np.array([0.0, 1.0])])
    # float32 rounds 1 - EPSILON, so the second term is log(1.19e-7) rather than log(1e-7).
    np.testing.assert_allclose(value, -np.log(L.EPSILON), rtol=1e-2)


def test_low_precision_predictions_are_computed_in_float32():
    d = _data()
    value = L.categorical_cross_entropy_logits(
        [d["one_hot"]], [jnp.asarray(d["logits"], jnp.bfloat16)]
    )
    assert value.dtype == jnp.float32


@pytest.mark.parametrize(
    ("loss_fn", "labels", "predictions", "match"),
    [
        pytest.param(
            L.mean_squared_error,
            np.zeros((B, 3)),
            np.zeros((B, 2)),
            r"same shape.*labels\[0\]\.shape=\(6, 3\)",
            id="mse_shapes",
        ),
        pytest.param(
            L.categorical_cross_entropy_logits,
            np.zeros((B, C)),
            np.zeros((B, C + 1)),
            "same shape",
            id="categorical_shapes",
        ),
        pytest.param(
            L.binary_cross_entropy_logits,
            np.zeros((B, 2)),
            np.zeros((B, 1)),
            "same number of elements",
            id="binary_logits_sizes",
        ),
        pytest.param(
            L.sparse_categorical_cross_entropy_logits,
            np.zeros((B, C)),
            np.zeros((B, C)),
            "class ids shaped",
            id="sparse_given_one_hot",
        ),
    ],
)
def test_shape_mismatch_raises_at_trace_time(loss_fn, labels, predictions, match):
    with pytest.raises(ValueError, match=match):
        jax.jit(loss_fn)([labels], [predictions])


@pytest.mark.parametrize(
    ("extras", "match"),
    [
        pytest.param([np.ones(B + 1, np.float32)], r"labels\[1\].*does not fit", id="bad_shape"),
        pytest.param(
            [np.ones(B, bool), np.ones(B, bool)], r"labels\[2\].*mask was already", id="two_masks"
        ),
        pytest.param(
            [np.ones(B, np.float32), np.ones(B, np.float32)],
            r"weights array was already",
            id="two_weights",
        ),
    ],
)
def test_unknown_extra_labels_raise(extras, match):
    d = _data()
    with pytest.raises(ValueError, match=match):
        L.sparse_categorical_cross_entropy_logits([d["class_ids"], *extras], [d["logits"]])


def test_missing_predictions_raise():
    with pytest.raises(ValueError, match=r"len\(predictions\)=0"):
        L.mean_squared_error([np.zeros(3)], [])


# as_loss_fn ------------------------------------------------------------------------------------
def test_as_loss_fn_keeps_none_and_list_functions():
    assert L.as_loss_fn(None) is None
    assert L.as_loss_fn(L.mean_squared_error) is L.mean_squared_error

    def custom(labels, predictions):
        return jnp.sum(predictions[0])

    assert L.as_loss_fn(custom) is custom


@pytest.mark.parametrize(
    "loss",
    [
        pytest.param(keras.losses.SparseCategoricalCrossentropy(from_logits=True), id="instance"),
        pytest.param("sparse_categorical_crossentropy", id="name"),
    ],
)
def test_as_loss_fn_wraps_keras_losses_with_sample_weight(loss):
    d = _data()
    probabilities = _softmax(d["logits"])
    predictions = d["logits"] if not isinstance(loss, str) else probabilities
    fn = L.as_loss_fn(loss)
    expected = -np.log(probabilities[np.arange(B), d["class_ids"]])
    np.testing.assert_allclose(fn([d["class_ids"]], [predictions]), expected.mean(), rtol=1e-4)
    weights = np.linspace(0.0, 1.0, B).astype(np.float32)
    weighted = jax.jit(fn)([d["class_ids"], weights], [predictions])
    np.testing.assert_allclose(weighted, (expected * weights).mean(), rtol=1e-4)


def test_as_loss_fn_wraps_keras_loss_functions_given_directly():
    fn = L.as_loss_fn(keras.losses.mean_squared_error)
    value = fn([np.ones((B, 2), np.float32)], [np.zeros((B, 2), np.float32)])
    np.testing.assert_allclose(value, 1.0)


def test_keras_loss_rejects_more_than_a_sample_weight():
    fn = L.as_loss_fn("mse")
    with pytest.raises(ValueError, match="Received: 3 labels"):
        fn([np.ones(3), np.ones(3), np.ones(3, bool)], [np.zeros(3)])


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        pytest.param(
            42, TypeError, r"keras\.losses\.Loss.*Received: loss=42 of type int", id="number"
        ),
        pytest.param(keras.losses.MeanSquaredError, TypeError, r"MeanSquaredError\(\)", id="class"),
        pytest.param(
            "no_such_loss",
            ValueError,
            r"loss='no_such_loss'.*mean_squared_error",
            id="unknown_name",
        ),
    ],
)
def test_as_loss_fn_rejects_bad_values(obj, error, match):
    with pytest.raises(error, match=match):
        L.as_loss_fn(obj)
