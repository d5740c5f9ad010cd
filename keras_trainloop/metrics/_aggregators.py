"""GoMLX's three aggregators of a per-batch value: mean, moving average, current batch.

`MeanMetric` (weighted by examples, for eval), `MovingAverageMetric` (GoMLX's
exponential moving average, for training) and `BatchMetric` (no state), each
fed by `fn(labels, predictions)` or directly through `accumulate`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from keras_trainloop._labels import as_list
from keras_trainloop.metrics._base import Metric, MetricFn


def _check_fn(fn: Any, kind: str) -> None:
    """Raises unless `fn` is callable or None."""
    if fn is not None and not callable(fn):
        raise TypeError(
            f"{kind} takes a function fn(labels: list, predictions: list) -> value, or None "
            f"when fed only through accumulate(). Received: fn={fn!r}. Fix: pass a callable."
        )


def _call_fn(metric: Any, labels: Any, predictions: Any) -> tuple[list, list, Any]:
    """(labels, predictions, metric.fn(labels, predictions)), labels and predictions as lists."""
    if metric.fn is None:
        raise ValueError(
            f"Metric {metric.name!r} has no fn, so update() cannot compute its value. "
            "Received: fn=None. Fix: feed it with accumulate(state, value, weight), or build "
            "it with a function fn(labels, predictions)."
        )
    labels, predictions = as_list(labels), as_list(predictions)
    return labels, predictions, metric.fn(labels, predictions)


def _f32(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float32)


def _value_and_weight(value: Any, predictions: list) -> tuple[jax.Array, jax.Array]:
    """Scalar value weighted by the batch size; an array by its mean and size."""
    value = jnp.asarray(value)
    if value.ndim == 0:
        first = jnp.shape(predictions[0]) if predictions else ()
        return value, _f32(first[0] if first else 1)
    return jnp.mean(value.astype(jnp.float32)), _f32(value.size)


class MeanMetric(Metric):
    """Running mean of `fn(labels, predictions)` since the last reset, weighted by examples.

    A scalar `fn` result counts as many examples as the leading dimension of
    `predictions[0]` (GoMLX's convention); an array result is read as one
    value per example (or per element) and counts with its mean and size.

    Args:
        name: full name, e.g. "Mean Loss".
        short_name: e.g. "#loss".
        metric_type: "loss", "accuracy" or another type.
        fn: `fn(labels: list, predictions: list) -> scalar or array`, traceable;
            None for a metric fed only through `accumulate` (the Trainer's loss
            entries).
        keras_name: the key in Keras-shaped logs; defaults to the snake_case
            of `name`.

    Example:
        mae = MeanMetric("Mean Absolute Error", "#mae", "mae", ktl.losses.mean_absolute_error)
        state = mae.init_state()
        state, value = mae.update(state, [y], [predictions])
    """

    def __init__(
        self,
        name: str,
        short_name: str,
        metric_type: str,
        fn: MetricFn | None = None,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(name, short_name, metric_type, keras_name=keras_name)
        _check_fn(fn, type(self).__name__)
        self.fn = fn

    def init_state(self) -> jax.Array:
        # One array [total, weight]: fewer buffers per compiled step than a dict of two.
        return jnp.zeros((2,), jnp.float32)

    def accumulate(
        self,
        state: jax.Array,
        value: Any,
        weight: Any = 1.0,
    ) -> tuple[jax.Array, jax.Array]:
        """Adds `value` with `weight` examples to the running mean.

        Args:
            state: the current state.
            value: a scalar (an array is reduced to its mean).
            weight: how many examples `value` stands for; 0 leaves the mean as is.

        Returns:
            `(new_state, mean)`; the mean is 0 while the total weight is 0.
        """
        value = jnp.mean(_f32(value))
        weight = _f32(weight)
        added = jnp.where(weight > 0, value * weight, 0.0)  # A NaN of an empty batch stays out.
        total = state[0] + added
        total_weight = state[1] + weight
        safe_weight = jnp.where(total_weight > 0, total_weight, 1.0)
        mean = jnp.where(total_weight > 0, total / safe_weight, 0.0)
        return jnp.stack([total, total_weight]), mean

    def update(self, state, labels, predictions):
        _, predictions, value = _call_fn(self, labels, predictions)
        value, weight = _value_and_weight(value, predictions)
        return self.accumulate(state, value, weight)


class MovingAverageMetric(Metric):
    """Exponential moving average of `fn(labels, predictions)` over batches.

    As in GoMLX, batch `n` (counted from 1 since the reset) enters with weight
    `w = max(new_example_weight, 1 / n)`: `mean = (1 - w) * mean + w * value`.
    So the first value is the first batch's value, the average is a plain mean
    of the first `1 / new_example_weight` batches, and exponential afterwards.
    Every batch counts once, whatever its size.

    Args:
        name: full name, e.g. "Moving Average Loss".
        short_name: e.g. "~loss".
        metric_type: "loss", "accuracy" or another type.
        fn: `fn(labels: list, predictions: list) -> scalar or array` (an array
            is reduced to its mean), traceable; None for a metric fed only
            through `accumulate`.
        new_example_weight: weight of a new batch once past the plain-mean
            start; in (0, 1]. Smaller is smoother.
        keras_name: the key in Keras-shaped logs; defaults to the snake_case
            of `name`.

    Raises:
        ValueError: `new_example_weight` is outside (0, 1].

    Example:
        ema = MovingAverageMetric("Moving Average MSE", "~mse", "loss",
                                  ktl.losses.mean_squared_error, new_example_weight=0.05)
    """

    def __init__(
        self,
        name: str,
        short_name: str,
        metric_type: str,
        fn: MetricFn | None = None,
        new_example_weight: float = 0.01,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(name, short_name, metric_type, keras_name=keras_name)
        _check_fn(fn, type(self).__name__)
        if not isinstance(new_example_weight, (int, float)) or not 0 < new_example_weight <= 1:
            raise ValueError(
                "new_example_weight must be a number in (0, 1]. "
                f"Received: new_example_weight={new_example_weight!r}. "
                "Fix: use e.g. 0.01 (smooth) to 0.1 (fast)."
            )
        self.fn = fn
        self.new_example_weight = float(new_example_weight)

    def init_state(self) -> jax.Array:
        # One array [mean, count]; the count is a float32 (exact up to 2**24 batches,
        # and past 1 / new_example_weight batches only whether it is > 0 matters).
        return jnp.zeros((2,), jnp.float32)

    def accumulate(
        self,
        state: jax.Array,
        value: Any,
        weight: Any = 1.0,
    ) -> tuple[jax.Array, jax.Array]:
        """Moves the average towards `value`.

        Args:
            state: the current state.
            value: a scalar (an array is reduced to its mean).
            weight: only tested for zero: a batch with weight 0 (e.g. fully
                masked) leaves the average unchanged; otherwise each batch
                counts once.

        Returns:
            `(new_state, moving_average)`.
        """
        value = jnp.mean(_f32(value))
        counts = _f32(weight) > 0
        count = state[1] + counts.astype(jnp.float32)
        w = jnp.maximum(self.new_example_weight, 1.0 / jnp.maximum(count, 1).astype(jnp.float32))
        moved = (1.0 - w) * state[0] + w * value
        mean = jnp.where(counts, moved, state[0])
        return jnp.stack([mean, count]), mean

    def update(self, state, labels, predictions):
        return self.accumulate(state, _call_fn(self, labels, predictions)[2])


class BatchMetric(Metric):
    """The value of `fn(labels, predictions)` on the current batch only (no state).

    Args:
        name: full name, e.g. "Batch Loss".
        short_name: e.g. "loss".
        metric_type: "loss", "accuracy" or another type.
        fn: `fn(labels: list, predictions: list) -> value`, traceable; an
            array result is reduced to its mean. None for a metric fed only
            through `accumulate`.
        keras_name: the key in Keras-shaped logs; defaults to the snake_case
            of `name`.

    Example:
        batch_mse = BatchMetric("Batch MSE", "mse", "loss", ktl.losses.mean_squared_error)
    """

    def __init__(
        self,
        name: str,
        short_name: str,
        metric_type: str,
        fn: MetricFn | None = None,
        *,
        keras_name: str | None = None,
    ):
        super().__init__(name, short_name, metric_type, keras_name=keras_name)
        _check_fn(fn, type(self).__name__)
        self.fn = fn

    def init_state(self) -> dict:
        return {}

    def accumulate(self, state: dict, value: Any, weight: Any = 1.0) -> tuple[dict, jax.Array]:
        """Returns `value` (reduced to its mean if an array) as is; `weight` is unused."""
        del weight
        return state, jnp.mean(_f32(value))

    def update(self, state, labels, predictions):
        return self.accumulate(state, _call_fn(self, labels, predictions)[2])
