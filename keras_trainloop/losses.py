"""GoMLX's standard losses over lists of labels and predictions.

Every loss here has the Trainer's `loss_fn` signature
`fn(labels: list, predictions: list) -> scalar array`: it reads `labels[0]`
and `predictions[0]`, and up to two extra labels, in any order, as GoMLX does:

- **weights**: a numeric (non-boolean) array that multiplies each loss term;
- **mask**: a boolean array; `False` entries are left out of the loss.

The expected shape of weights and mask is the shape of the loss terms: the
labels' shape for the element-wise losses (mean squared/absolute error, binary
cross-entropy) and the predictions' shape without the class axis for the
categorical ones (usually `[batch_size]`). A weight or mask may also be a
prefix of that shape (e.g. `[batch_size]` for labels `[batch_size, 3]`) and is
then broadcast over the remaining axes; trailing axes of size 1 are ignored.

The result is the mean of `loss * weights` over the unmasked terms (0 when
every term is masked). GoMLX v0.9.1 divided by all terms, masked ones
included; its later versions, and this module, divide by the unmasked count.
How labels, weights and mask are read lives in `keras_trainloop._labels`,
shared with `ktl.metrics`.

Example:
    trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")
    # A dataset yielding labels [class_ids, weights, mask] is weighted and masked as well.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from keras_trainloop._labels import (
    as_list,
    same_shape,
    same_size,
    sparse_class_ids,
    weights_and_mask,
)

__all__ = [
    "EPSILON",
    "LossFn",
    "as_loss_fn",
    "binary_cross_entropy",
    "binary_cross_entropy_logits",
    "categorical_cross_entropy",
    "categorical_cross_entropy_logits",
    "mean_absolute_error",
    "mean_squared_error",
    "sparse_categorical_cross_entropy_logits",
    "weighted_masked_mean",
    "weights_and_mask",
]

EPSILON = 1e-7
"""Probabilities are clipped to `[EPSILON, 1 - EPSILON]` before their log (as in GoMLX)."""

LossFn = Callable[[list, list], Any]


# Inputs and reduction ------------------------------------------------------------------------
def _first(labels: Any, predictions: Any, fn_name: str) -> tuple[list, list]:
    """Labels and predictions as lists, checked to hold at least one array each."""
    labels, predictions = as_list(labels), as_list(predictions)
    if not labels or not predictions:
        raise ValueError(
            f"{fn_name} needs at least one label and one prediction array. "
            f"Received: len(labels)={len(labels)}, len(predictions)={len(predictions)}. "
            "Fix: make the dataset yield labels and the model_fn return predictions."
        )
    return labels, predictions


def _float_dtype(x: jax.Array) -> Any:
    """Computation dtype: the array's float dtype, at least float32."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.promote_types(x.dtype, jnp.float32)
    return jnp.float32


def weighted_masked_mean(
    terms: jax.Array,
    weights: jax.Array | None,
    mask: jax.Array | None,
) -> jax.Array:
    """Mean of `terms * weights` over the unmasked terms (0 when all are masked).

    Args:
        terms: the loss terms.
        weights: None, or weights broadcastable to `terms` (see `weights_and_mask`).
        mask: None, or a boolean mask broadcastable to `terms`.

    Returns:
        A scalar. Masked terms are left out with `where`, so a NaN there does
        not reach the result.

    Example:
        loss = weighted_masked_mean(jnp.square(y - p), None, mask[:, None])
    """
    if weights is not None:
        terms = terms * weights.astype(terms.dtype)
    if mask is None:
        return jnp.mean(terms)
    mask = jnp.broadcast_to(mask, terms.shape)
    total = jnp.sum(jnp.where(mask, terms, jnp.zeros_like(terms)))
    count = jnp.sum(mask).astype(terms.dtype)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.zeros_like(total))


# Losses --------------------------------------------------------------------------------------
def _elementwise_loss(labels: list, predictions: list, term_fn, fn_name: str) -> jax.Array:
    """Weighted, masked mean of `term_fn(labels[0] - predictions[0])`."""
    labels, predictions = _first(labels, predictions, fn_name)
    prediction = jnp.asarray(predictions[0])
    label = jnp.asarray(labels[0])
    same_shape(label, prediction, fn_name)
    dtype = _float_dtype(prediction)
    terms = term_fn(label.astype(dtype) - prediction.astype(dtype))
    weights, mask = weights_and_mask(label.shape, labels[1:], fn_name)
    return weighted_masked_mean(terms, weights, mask)


def mean_squared_error(labels: list, predictions: list) -> jax.Array:
    """Mean of `(labels[0] - predictions[0]) ** 2`, weighted and masked.

    Args:
        labels: `[labels, *optional weights and/or mask]`; labels shaped like
            `predictions[0]`.
        predictions: `[predictions, ...]`; only the first is used.

    Returns:
        A scalar.

    Raises:
        ValueError: shapes differ, or an extra label is neither weights nor mask.

    Example:
        loss = mean_squared_error([y, per_example_weights], [model_output])
    """
    return _elementwise_loss(labels, predictions, jnp.square, "mean_squared_error")


def mean_absolute_error(labels: list, predictions: list) -> jax.Array:
    """Mean of `|labels[0] - predictions[0]|`, weighted and masked.

    Args:
        labels: `[labels, *optional weights and/or mask]`; labels shaped like
            `predictions[0]`.
        predictions: `[predictions, ...]`; only the first is used.

    Returns:
        A scalar.

    Raises:
        ValueError: shapes differ, or an extra label is neither weights nor mask.

    Example:
        loss = mean_absolute_error([y], [model_output])
    """
    return _elementwise_loss(labels, predictions, jnp.abs, "mean_absolute_error")


def binary_cross_entropy(labels: list, predictions: list) -> jax.Array:
    """Binary cross-entropy of probabilities, weighted and masked.

    Predictions are clipped to `[EPSILON, 1 - EPSILON]` so that a confident
    mistake gives a large finite loss (GoMLX v0.9.1 took the log unclipped).

    Args:
        labels: `[labels in [0, 1], *optional weights and/or mask]`, labels
            shaped like `predictions[0]`.
        predictions: `[probabilities, ...]`; only the first is used.

    Returns:
        A scalar: the mean over all elements.

    Raises:
        ValueError: shapes differ, or an extra label is neither weights nor mask.

    Example:
        loss = binary_cross_entropy([y], [keras.ops.sigmoid(logits)])
    """
    labels, predictions = _first(labels, predictions, "binary_cross_entropy")
    prediction = jnp.asarray(predictions[0])
    label = jnp.asarray(labels[0])
    same_shape(label, prediction, "binary_cross_entropy")
    dtype = _float_dtype(prediction)
    p = jnp.clip(prediction.astype(dtype), EPSILON, 1.0 - EPSILON)
    y = label.astype(dtype)
    terms = -(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))
    weights, mask = weights_and_mask(label.shape, labels[1:], "binary_cross_entropy")
    return weighted_masked_mean(terms, weights, mask)


def binary_cross_entropy_logits(labels: list, predictions: list) -> jax.Array:
    """Binary cross-entropy of `sigmoid(logits)`, computed stably from the logits.

    Uses `max(x, 0) - x * y + log(1 + exp(-|x|))`. As in GoMLX, labels only
    need the same number of elements as the logits (`[batch]` labels work with
    `[batch, 1]` logits).

    Args:
        labels: `[labels in [0, 1], *optional weights and/or mask]`; weights and
            mask are shaped like the logits (or a prefix of their shape).
        predictions: `[logits, ...]`; only the first is used.

    Returns:
        A scalar: the mean over all elements.

    Raises:
        ValueError: sizes differ, or an extra label is neither weights nor mask.

    Example:
        loss = binary_cross_entropy_logits([y], [logits])
    """
    labels, predictions = _first(labels, predictions, "binary_cross_entropy_logits")
    logits = jnp.asarray(predictions[0])
    label = same_size(jnp.asarray(labels[0]), logits, "binary_cross_entropy_logits")
    dtype = _float_dtype(logits)
    x = logits.astype(dtype)
    y = label.astype(dtype)
    terms = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
    weights, mask = weights_and_mask(logits.shape, labels[1:], "binary_cross_entropy_logits")
    return weighted_masked_mean(terms, weights, mask)


def _categorical(
    labels: list,
    predictions: list,
    fn_name: str,
    log_probs: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    labels, predictions = _first(labels, predictions, fn_name)
    prediction = jnp.asarray(predictions[0])
    label = jnp.asarray(labels[0])
    same_shape(label, prediction, fn_name)
    if prediction.ndim < 1:
        raise ValueError(
            f"{fn_name} needs predictions[0] with a class axis last. "
            f"Received: predictions[0].shape={tuple(prediction.shape)}. "
            "Fix: return predictions shaped [batch, num_classes]."
        )
    dtype = _float_dtype(prediction)
    terms = -jnp.sum(label.astype(dtype) * log_probs(prediction.astype(dtype)), axis=-1)
    weights, mask = weights_and_mask(prediction.shape[:-1], labels[1:], fn_name)
    return weighted_masked_mean(terms, weights, mask)


def categorical_cross_entropy(labels: list, predictions: list) -> jax.Array:
    """Cross-entropy of class probabilities against dense (e.g. one-hot) labels.

    Probabilities are clipped to `[EPSILON, 1 - EPSILON]` before the log.

    Args:
        labels: `[dense labels, *optional weights and/or mask]`; labels shaped
            like `predictions[0]` (`[batch, classes]`), each row a distribution;
            weights and mask shaped `[batch]`.
        predictions: `[probabilities, ...]`, rows summing to 1; only the first is used.

    Returns:
        A scalar: the mean over examples.

    Raises:
        ValueError: shapes differ, or an extra label is neither weights nor mask.

    Example:
        loss = categorical_cross_entropy([one_hot], [keras.ops.softmax(logits)])
    """
    return _categorical(
        labels,
        predictions,
        "categorical_cross_entropy",
        lambda p: jnp.log(jnp.clip(p, EPSILON, 1.0 - EPSILON)),
    )


def categorical_cross_entropy_logits(labels: list, predictions: list) -> jax.Array:
    """Cross-entropy of `softmax(logits)` against dense labels, via `log_softmax`.

    Args:
        labels: `[dense labels, *optional weights and/or mask]`; labels shaped
            like the logits (`[batch, classes]`); weights and mask `[batch]`.
        predictions: `[logits, ...]`; only the first is used.

    Returns:
        A scalar: the mean over examples.

    Raises:
        ValueError: shapes differ, or an extra label is neither weights nor mask.

    Example:
        loss = categorical_cross_entropy_logits([one_hot], [logits])
    """
    return _categorical(
        labels,
        predictions,
        "categorical_cross_entropy_logits",
        functools.partial(jax.nn.log_softmax, axis=-1),
    )


def sparse_categorical_cross_entropy_logits(labels: list, predictions: list) -> jax.Array:
    """Cross-entropy of `softmax(logits)` against integer class ids.

    Labels are shaped `[batch, 1]` (GoMLX) or `[batch]` (Keras). A class id
    outside `[0, num_classes)` cannot be checked while tracing; it makes the
    loss NaN, which the loop reports as a non-finite loss.

    Args:
        labels: `[class ids, *optional weights and/or mask]`; weights and mask
            shaped `[batch]` (the logits' shape without the class axis).
        predictions: `[logits, ...]` shaped `[batch, classes]`; only the first is used.

    Returns:
        A scalar: the mean over examples.

    Raises:
        ValueError: labels are not one class id per example, or an extra label
            is neither weights nor mask.

    Example:
        loss = sparse_categorical_cross_entropy_logits([class_ids], [logits])
    """
    name = "sparse_categorical_cross_entropy_logits"
    labels, predictions = _first(labels, predictions, name)
    logits = jnp.asarray(predictions[0])
    class_ids = sparse_class_ids(jnp.asarray(labels[0]), logits, name)
    dtype = _float_dtype(logits)
    log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    num_classes = logits.shape[-1]
    # Negative ids would wrap around: send them out of range so they read NaN.
    index = jnp.where(class_ids < 0, num_classes, class_ids)[..., None]
    picked = jnp.take_along_axis(log_probs, index, axis=-1, mode="fill", fill_value=jnp.nan)
    terms = -picked[..., 0]
    weights, mask = weights_and_mask(logits.shape[:-1], labels[1:], name)
    return weighted_masked_mean(terms, weights, mask)


# Conversion ----------------------------------------------------------------------------------
class _KerasFunctionLoss(keras.losses.Loss):
    """A Keras loss function (e.g. `keras.losses.mean_squared_error`) as a `Loss`."""

    def __init__(self, fn: Callable[..., Any]):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self._fn = fn

    def call(self, y_true, y_pred):
        return self._fn(y_true, y_pred)


def _keras_loss_names() -> list[str]:
    names = []
    for name in dir(keras.losses):
        value = getattr(keras.losses, name)
        if (
            not name.startswith("_")
            and callable(value)
            and not isinstance(value, type)
            and name not in ("get", "serialize", "deserialize")
        ):
            names.append(name)
    return sorted(names)


def _wrap_keras_loss(loss: keras.losses.Loss, per_output: bool = False) -> LossFn:
    def keras_loss_fn(labels: list, predictions: list) -> jax.Array:
        labels, predictions = _first(labels, predictions, f"Keras loss {loss.name!r}")
        outputs = len(predictions) if per_output else 1
        if not outputs <= len(labels) <= outputs + 1:
            each = "one label per output" if outputs > 1 else "labels[0]"
            raise ValueError(
                f"A Keras loss takes {each} and an optional sample weight after them. "
                f"Received: {len(labels)} labels for {outputs} output(s) and loss "
                f"{loss.name!r}. Fix: yield {outputs} label array(s), optionally followed "
                "by a sample weight, or use a ktl.losses function, which also reads a "
                "boolean mask."
            )
        sample_weight = labels[outputs] if len(labels) > outputs else None
        total = loss(labels[0], predictions[0], sample_weight=sample_weight)
        for label, prediction in zip(labels[1:outputs], predictions[1:outputs]):
            total = total + loss(label, prediction, sample_weight=sample_weight)
        return total

    keras_loss_fn.__name__ = loss.name
    keras_loss_fn.keras_loss = loss
    return keras_loss_fn


def _per_output_losses(losses: list | tuple) -> LossFn:
    """One loss per output, as `compile(loss=[...])` takes them: their sum (None: no loss)."""
    fns = [None if loss is None else as_loss_fn(loss) for loss in losses]
    if all(fn is None for fn in fns):
        raise ValueError(
            f"A list of losses needs at least one loss. Received: loss={list(losses)!r}. "
            "Fix: give a loss for at least one output, e.g. ['mse', None]."
        )
    n = len(fns)

    def per_output_loss_fn(labels: list, predictions: list) -> jax.Array:
        labels, predictions = as_list(labels), as_list(predictions)
        if len(predictions) != n or not n <= len(labels) <= n + 1:
            raise ValueError(
                f"A list of {n} losses takes one per output: {n} predictions and {n} labels, "
                f"then an optional sample weight. Received: {len(predictions)} predictions "
                f"and {len(labels)} labels. Fix: give one loss per output of the model, "
                "None for an output without one."
            )
        weight = labels[n:]
        total = None
        for i, fn in enumerate(fns):
            if fn is not None:
                term = jnp.mean(jnp.asarray(fn([labels[i], *weight], [predictions[i]])))
                total = term if total is None else total + term
        return total

    return per_output_loss_fn


_ACCEPTED = (
    "None, a function fn(labels: list, predictions: list), a keras.losses.Loss instance, "
    "a Keras loss function, a Keras loss name such as 'mse', or a list of those (one per "
    "output)"
)


def as_loss_fn(obj: Any, *, per_output: bool = False) -> LossFn | None:
    """Converts what a user passes as `loss_fn` into `fn(labels, predictions)`.

    Args:
        obj: one of
            - `None`: returned as is (only `ktl.add_loss` terms are optimized);
            - a callable `fn(labels: list, predictions: list)`: returned as is;
            - a `keras.losses.Loss` instance, a Keras loss function (e.g.
              `keras.losses.mean_squared_error`) or a Keras loss name (e.g.
              `"sparse_categorical_crossentropy"`): called as
              `loss(labels[0], predictions[0], sample_weight=labels[1])`, the
              sample weight only when a second label is present.
            - a list (or tuple) of those, one per output, as
              `compile(loss=[...])` takes them (None: an output without a
              loss): the sum of each output's loss on `[labels[i]]` (and the
              sample weight `labels[n]` if present) and `[predictions[i]]`.
        per_output: for a Keras loss, apply it to every prediction as `fit`
            applies one loss to each output of a Keras model: the sum of
            `loss(labels[i], predictions[i], sample_weight=labels[n])` over the
            `n` predictions, the sample weight only when an `n+1`-th label is
            present. (The Trainer sets it for a user's Keras model.)

    Returns:
        The loss function, or None.

    Raises:
        TypeError: `obj` is of none of the accepted kinds (a loss class
            instead of an instance included).
        ValueError: `obj` is a string that Keras does not know as a loss.

    Example:
        loss_fn = as_loss_fn("sparse_categorical_crossentropy")
        loss = loss_fn([class_ids], [probabilities])
    """
    if obj is None:
        return None
    if isinstance(obj, (list, tuple)):
        return _per_output_losses(obj)
    if isinstance(obj, keras.losses.Loss):
        return _wrap_keras_loss(obj, per_output)
    if isinstance(obj, str):
        try:
            loss = keras.losses.get(obj)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"Unknown Keras loss name. Received: loss={obj!r}. "
                f"Fix: use one of {_keras_loss_names()} or a ktl.losses function."
            ) from error
        if not isinstance(loss, keras.losses.Loss):
            loss = _KerasFunctionLoss(loss)
        return _wrap_keras_loss(loss, per_output)
    if isinstance(obj, type):
        raise TypeError(
            f"A loss must be {_ACCEPTED}. Received: loss={obj!r}, a class. "
            f"Fix: pass an instance, e.g. {obj.__name__}()."
        )
    if callable(obj):
        if getattr(obj, "__module__", "").startswith("keras."):
            # Keras loss functions take single arrays, not lists.
            return _wrap_keras_loss(_KerasFunctionLoss(obj), per_output)
        return obj
    raise TypeError(
        f"A loss must be {_ACCEPTED}. Received: loss={obj!r} of type {type(obj).__name__}. "
        "Fix: pass one of those."
    )
