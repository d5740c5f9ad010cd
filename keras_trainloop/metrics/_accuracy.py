"""GoMLX's accuracy metrics: one accuracy per aggregator, parametrized by a `correct_fn`.

`correct_fn(labels, predictions) -> bool array` says which predictions are
right; the accuracy is the fraction right after the optional weights and mask
labels. The public classes bind one `correct_fn` each (sparse categorical,
binary probabilities, binary logits) to the mean or the moving average.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from keras_trainloop._labels import as_list, same_size, sparse_class_ids, weights_and_mask
from keras_trainloop.metrics._aggregators import MeanMetric, MovingAverageMetric
from keras_trainloop.metrics._names import ACCURACY_METRIC_TYPE

CorrectFn = Callable[[list, list], jax.Array]
"""`correct_fn(labels: list, predictions: list) -> bool array`, True where right."""


# What is correct ------------------------------------------------------------------------------
def _need_labels(labels: list, predictions: list, fn_name: str) -> None:
    """Raises unless there are labels and predictions."""
    if not labels or not predictions:
        raise ValueError(
            f"{fn_name} needs labels[0] and predictions[0]. Received: len(labels)="
            f"{len(labels)}, len(predictions)={len(predictions)}. "
            "Fix: make the dataset yield labels."
        )


def sparse_categorical_correct(labels: list, predictions: list) -> jax.Array:
    """True where the single highest score is the labeled class; ties are misses."""
    name = "SparseCategoricalAccuracy"
    _need_labels(labels, predictions, name)
    logits = jnp.asarray(predictions[0])
    class_ids = sparse_class_ids(jnp.asarray(labels[0]), logits, name)
    is_max = logits == jnp.max(logits, axis=-1, keepdims=True)
    unique_max = jnp.sum(is_max, axis=-1) == 1
    return unique_max & (jnp.argmax(logits, axis=-1) == class_ids)


def binary_correct(labels: list, predictions: list) -> jax.Array:
    """True where |label - probability| < 0.5: a probability of exactly 0.5 is a miss."""
    name = "BinaryAccuracy"
    _need_labels(labels, predictions, name)
    probabilities = jnp.asarray(predictions[0])
    label = same_size(jnp.asarray(labels[0]), probabilities, name)
    return jnp.abs(label.astype(jnp.float32) - probabilities.astype(jnp.float32)) < 0.5


def binary_logits_correct(labels: list, predictions: list) -> jax.Array:
    """True where the logit's sign matches the label (1: positive, 0: negative); 0 is a miss."""
    name = "BinaryLogitsAccuracy"
    _need_labels(labels, predictions, name)
    logits = jnp.asarray(predictions[0])
    label = same_size(jnp.asarray(labels[0]), logits, name)
    return logits.astype(jnp.float32) * (label.astype(jnp.float32) - 0.5) > 0


# The accuracy of correct_fn -------------------------------------------------------------------
def _accuracy_counts(
    correct: jax.Array,
    labels: list,
    fn_name: str,
) -> tuple[jax.Array, jax.Array]:
    """(accuracy, total weight) of a boolean `correct` array, with weights/mask labels."""
    weights, mask = weights_and_mask(correct.shape, labels[1:], fn_name)
    hits = correct.astype(jnp.float32)
    count = jnp.ones_like(hits)
    if weights is not None:
        hits = hits * weights.astype(jnp.float32)
        count = count * weights.astype(jnp.float32)
    if mask is not None:
        mask = jnp.broadcast_to(mask, hits.shape)
        hits = jnp.where(mask, hits, 0.0)
        count = jnp.where(mask, count, 0.0)
    total = jnp.sum(count)
    accuracy = jnp.where(total != 0, jnp.sum(hits) / jnp.where(total != 0, total, 1), 0.0)
    return accuracy, total


def _accuracy_fn(correct_fn: CorrectFn, fn_name: str) -> Callable[[list, list], jax.Array]:
    """`fn(labels, predictions) -> accuracy` of `correct_fn`, named `fn_name` (the metric's fn)."""

    def accuracy(labels: list, predictions: list) -> jax.Array:
        labels, predictions = as_list(labels), as_list(predictions)
        return _accuracy_counts(correct_fn(labels, predictions), labels, fn_name)[0]

    accuracy.__name__ = fn_name
    return accuracy


class _Accuracy:
    """The update both accuracies share: the batch accuracy, weighted by the examples counted.

    Mixed in before an aggregator, whose `accumulate` takes the batch accuracy
    with the total weight after weights and mask as its weight (a fully masked
    batch has weight 0 and leaves the value as is).
    """

    correct_fn: CorrectFn
    accumulate: Callable[..., tuple[Any, jax.Array]]

    def update(self, state, labels, predictions):
        labels, predictions = as_list(labels), as_list(predictions)
        correct = self.correct_fn(labels, predictions)
        accuracy, weight = _accuracy_counts(correct, labels, type(self).__name__)
        return self.accumulate(state, accuracy, weight)


class _MeanAccuracy(_Accuracy, MeanMetric):
    """The mean accuracy of `correct_fn`, weighted by the examples counted.

    Args:
        correct_fn: which predictions are right, see `CorrectFn`.
        name: full name.
        short_name: short name.
        keras_name: defaults to the snake_case of `name`.
    """

    def __init__(
        self,
        correct_fn: CorrectFn,
        name: str = "Mean Accuracy",
        short_name: str = "#acc",
        *,
        keras_name: str | None = None,
    ):
        self.correct_fn = correct_fn
        super().__init__(
            name,
            short_name,
            ACCURACY_METRIC_TYPE,
            _accuracy_fn(correct_fn, type(self).__name__),
            keras_name=keras_name,
        )


class _MovingAverageAccuracy(_Accuracy, MovingAverageMetric):
    """The moving average of the batch accuracy of `correct_fn`.

    Args:
        correct_fn: which predictions are right, see `CorrectFn`.
        name: full name.
        short_name: short name.
        new_example_weight: see `MovingAverageMetric`.
        keras_name: defaults to the snake_case of `name`.
    """

    def __init__(
        self,
        correct_fn: CorrectFn,
        name: str = "Moving Average Accuracy",
        short_name: str = "~acc",
        new_example_weight: float = 0.01,
        *,
        keras_name: str | None = None,
    ):
        self.correct_fn = correct_fn
        super().__init__(
            name,
            short_name,
            ACCURACY_METRIC_TYPE,
            _accuracy_fn(correct_fn, type(self).__name__),
            new_example_weight,
            keras_name=keras_name,
        )


# The public accuracies: one correct_fn each ---------------------------------------------------
class SparseCategoricalAccuracy(_MeanAccuracy):
    """Mean fraction of examples whose highest score is the labeled class.

    Labels are integer class ids shaped `[batch]` or `[batch, 1]`;
    predictions are logits or probabilities shaped `[batch, classes]`. As in
    GoMLX, ties for the highest score count as misses, and optional weights
    (numeric) and mask (bool) labels shaped `[batch]` are honoured: the mean
    is weighted by the examples counted.

    Args:
        name: defaults to "Mean Accuracy".
        short_name: defaults to "#acc".
        keras_name: defaults to the snake_case of `name`, "mean_accuracy".

    Example:
        eval_metrics = [ktl.metrics.SparseCategoricalAccuracy()]
    """

    def __init__(
        self,
        name: str = "Mean Accuracy",
        short_name: str = "#acc",
        *,
        keras_name: str | None = None,
    ):
        super().__init__(sparse_categorical_correct, name, short_name, keras_name=keras_name)


class MovingAverageSparseCategoricalAccuracy(_MovingAverageAccuracy):
    """Moving average of the batch accuracy of `SparseCategoricalAccuracy`.

    Args:
        name: defaults to "Moving Average Accuracy".
        short_name: defaults to "~acc".
        new_example_weight: see `MovingAverageMetric`.
        keras_name: defaults to the snake_case of `name`,
            "moving_average_accuracy".

    Example:
        train_metrics = [ktl.metrics.MovingAverageSparseCategoricalAccuracy()]
    """

    def __init__(
        self,
        name: str = "Moving Average Accuracy",
        short_name: str = "~acc",
        new_example_weight: float = 0.01,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(
            sparse_categorical_correct, name, short_name, new_example_weight, keras_name=keras_name
        )


class BinaryAccuracy(_MeanAccuracy):
    """Mean binary accuracy of probabilities against labels in {0, 1}.

    A prediction is correct when `|label - probability| < 0.5` (threshold
    0.5; a probability of exactly 0.5 is a miss, as in GoMLX). Labels need the
    same number of elements as the predictions (`[batch]` with `[batch, 1]`
    works). Optional weights and mask labels are honoured.

    Args:
        name: defaults to "Mean Accuracy".
        short_name: defaults to "#acc".
        keras_name: defaults to the snake_case of `name`, "mean_accuracy".

    Example:
        eval_metrics = [ktl.metrics.BinaryAccuracy()]
    """

    def __init__(
        self,
        name: str = "Mean Accuracy",
        short_name: str = "#acc",
        *,
        keras_name: str | None = None,
    ):
        super().__init__(binary_correct, name, short_name, keras_name=keras_name)


class MovingAverageBinaryAccuracy(_MovingAverageAccuracy):
    """Moving average of the batch accuracy of `BinaryAccuracy`.

    Args:
        name: defaults to "Moving Average Accuracy".
        short_name: defaults to "~acc".
        new_example_weight: see `MovingAverageMetric`.
        keras_name: defaults to the snake_case of `name`,
            "moving_average_accuracy".

    Example:
        train_metrics = [ktl.metrics.MovingAverageBinaryAccuracy()]
    """

    def __init__(
        self,
        name: str = "Moving Average Accuracy",
        short_name: str = "~acc",
        new_example_weight: float = 0.01,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(
            binary_correct, name, short_name, new_example_weight, keras_name=keras_name
        )


class BinaryLogitsAccuracy(_MeanAccuracy):
    """Mean binary accuracy of logits against labels in {0, 1} (threshold 0).

    A prediction is correct when the logit is positive for label 1 and
    negative for label 0; a logit of exactly 0 is a miss, as in GoMLX.

    Args:
        name: defaults to "Mean Accuracy".
        short_name: defaults to "#acc".
        keras_name: defaults to the snake_case of `name`, "mean_accuracy".

    Example:
        eval_metrics = [ktl.metrics.BinaryLogitsAccuracy()]
    """

    def __init__(
        self,
        name: str = "Mean Accuracy",
        short_name: str = "#acc",
        *,
        keras_name: str | None = None,
    ):
        super().__init__(binary_logits_correct, name, short_name, keras_name=keras_name)


class MovingAverageBinaryLogitsAccuracy(_MovingAverageAccuracy):
    """Moving average of the batch accuracy of `BinaryLogitsAccuracy`.

    Args:
        name: defaults to "Moving Average Accuracy".
        short_name: defaults to "~acc".
        new_example_weight: see `MovingAverageMetric`.
        keras_name: defaults to the snake_case of `name`,
            "moving_average_accuracy".

    Example:
        train_metrics = [ktl.metrics.MovingAverageBinaryLogitsAccuracy()]
    """

    def __init__(
        self,
        name: str = "Moving Average Accuracy",
        short_name: str = "~acc",
        new_example_weight: float = 0.01,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(
            binary_logits_correct, name, short_name, new_example_weight, keras_name=keras_name
        )
