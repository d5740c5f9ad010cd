"""Metrics: pure, functional, with state held by the Trainer.

A metric's state is a pytree of JAX arrays that the Trainer keeps in its own
state and passes through the compiled step. `update` is traced inside
`jax.jit`: it has no Python side effects and never waits on the device.
Resetting a metric means replacing its state with a fresh `init_state()`.

Three kinds aggregate a per-batch value, as GoMLX does:

- `MeanMetric`: the mean since the last reset, weighted by examples (for eval);
- `MovingAverageMetric`: an exponential moving average (for training);
- `BatchMetric`: the current batch only.

`KerasMetric` wraps any `keras.metrics.Metric` through its stateless API, and
`mean`, `moving_average`, `per_batch` and `as_metric` build metrics from
functions, Keras metrics or Keras metric names. `as_metric` reads names as
`model.compile(metrics=[...])` does: "accuracy" (or "acc") becomes the binary,
sparse categorical or categorical accuracy that the shapes of the labels and
predictions call for. GoMLX's accuracy metrics come ready-made.

Every metric has a `keras_name`, the key of its value in Keras-shaped logs (as
`model.fit` would name it): a Keras metric's own name, a Keras metric name as
given, else the snake_case of the metric's `name` ("Mean Accuracy" ->
"mean_accuracy").

Example:
    trainer = ktl.Trainer(
        model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam",
        train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()],
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy(), "auc"],
    )
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from keras_trainloop.losses import (
    _as_list,
    _same_size,
    _sparse_class_ids,
    weights_and_mask,
)

__all__ = [
    "ACCURACY_METRIC_TYPE",
    "LOSS_METRIC_TYPE",
    "BatchMetric",
    "BinaryAccuracy",
    "BinaryLogitsAccuracy",
    "KerasMetric",
    "MeanMetric",
    "Metric",
    "MovingAverageBinaryAccuracy",
    "MovingAverageBinaryLogitsAccuracy",
    "MovingAverageMetric",
    "MovingAverageSparseCategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "as_metric",
    "mean",
    "moving_average",
    "per_batch",
]

LOSS_METRIC_TYPE = "loss"
ACCURACY_METRIC_TYPE = "accuracy"

MetricFn = Callable[[list, list], Any]


# Base class -----------------------------------------------------------------------------------
class Metric(abc.ABC):
    """A metric: names, a state pytree and a pure update.

    Attributes:
        name: full name, e.g. "Mean Accuracy".
        short_name: a few characters for progress bars, e.g. "#acc".
        metric_type: what the value measures: "loss", "accuracy" or anything
            else. Metrics of one type share a plot axis, and the type picks
            the `pretty_print` format.
        keras_name: the key of the metric's value in Keras-shaped logs, as
            `model.fit` would name it, e.g. "mean_accuracy". Set by the
            `keras_name=` keyword; defaults to the snake_case of `name`
            ("Mean Accuracy" -> "mean_accuracy", "myError" -> "my_error").

    Example:
        class Max(Metric):
            def init_state(self):
                return jnp.full((), -jnp.inf)

            def update(self, state, labels, predictions):
                state = jnp.maximum(state, jnp.max(predictions[0]))
                return state, state

        peak = Max("Max Prediction", "max", "prediction")
    """

    def __init__(
        self, name: str, short_name: str, metric_type: str, *, keras_name: str | None = None,
    ):
        named = [("name", name), ("short_name", short_name), ("metric_type", metric_type)]
        if keras_name is not None:
            named.append(("keras_name", keras_name))
        for arg, value in named:
            if not isinstance(value, str) or not value:
                raise TypeError(
                    f"A metric's {arg} must be a non-empty string. "
                    f"Received: {arg}={value!r}. Fix: pass a string."
                )
        self.name = name
        self.short_name = short_name
        self.metric_type = metric_type
        self.keras_name = keras_name if keras_name is not None else _keras_log_name(name)

    @abc.abstractmethod
    def init_state(self) -> Any:
        """Returns a fresh state: a pytree of new JAX arrays (never reused buffers)."""

    @abc.abstractmethod
    def update(self, state: Any, labels: list, predictions: list) -> tuple[Any, jax.Array]:
        """Folds one batch into the state; pure, traced inside `jax.jit`.

        Args:
            state: the current state, as built by `init_state` or returned by
                a previous `update`.
            labels: the batch's labels (a list of arrays).
            predictions: the model's predictions (a list of arrays).

        Returns:
            `(new_state, value)`, value being the metric's current value.
        """

    def pretty_print(self, value: Any) -> str:
        """Formats a value returned by `update`.

        Loss types print with 3 decimals ("0.123"), accuracy types as a
        percentage with 2 decimals ("93.45%"), other types in general format
        with 4 significant digits. Non-scalar values print element by element.

        Args:
            value: a scalar (or array) from `update`; a device array is read.

        Returns:
            The formatted string.
        """
        array = np.asarray(value, dtype=np.float64)
        if self.metric_type == LOSS_METRIC_TYPE:
            fmt = "{:.3f}".format
        elif self.metric_type == ACCURACY_METRIC_TYPE:
            fmt = "{:.2%}".format
        else:
            fmt = "{:.4g}".format
        if array.size == 1:
            return fmt(float(array.reshape(())))
        return np.array2string(array, separator=", ", formatter={"float_kind": fmt})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, short_name={self.short_name!r}, "
                f"metric_type={self.metric_type!r})")


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_log_name(name: str) -> str:
    """The snake_case of a display name: "Mean Loss+Regularization" -> "mean_loss_regularization"."""
    words = [word for word in re.split(r"\W+", name) if word]
    snake = "_".join(_snake_case(word) for word in words)
    return re.sub(r"(?<=[^_])_{2,}", "_", snake) or "metric"  # A leading "_" stays.


def _check_fn(fn: Any, kind: str) -> None:
    if fn is not None and not callable(fn):
        raise TypeError(
            f"{kind} takes a function fn(labels: list, predictions: list) -> value, or None "
            f"when fed only through accumulate(). Received: fn={fn!r}. Fix: pass a callable."
        )


def _call_fn(metric: Any, labels: Any, predictions: Any) -> tuple[list, list, Any]:
    if metric.fn is None:
        raise ValueError(
            f"Metric {metric.name!r} has no fn, so update() cannot compute its value. "
            "Received: fn=None. Fix: feed it with accumulate(state, value, weight), or build "
            "it with a function fn(labels, predictions)."
        )
    labels, predictions = _as_list(labels), _as_list(predictions)
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


# Aggregating metrics --------------------------------------------------------------------------
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
        self, name: str, short_name: str, metric_type: str, fn: MetricFn | None = None, *,
        keras_name: str | None = None,
    ):
        super().__init__(name, short_name, metric_type, keras_name=keras_name)
        _check_fn(fn, type(self).__name__)
        self.fn = fn

    def init_state(self) -> jax.Array:
        # One array [total, weight]: fewer buffers per compiled step than a dict of two.
        return jnp.zeros((2,), jnp.float32)

    def accumulate(
        self, state: jax.Array, value: Any, weight: Any = 1.0,
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
        self, name: str, short_name: str, metric_type: str, fn: MetricFn | None = None,
        new_example_weight: float = 0.01, *, keras_name: str | None = None,
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
        self, state: jax.Array, value: Any, weight: Any = 1.0,
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
        self, name: str, short_name: str, metric_type: str, fn: MetricFn | None = None, *,
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


# Keras metrics --------------------------------------------------------------------------------
def _initial_variables(metric: keras.metrics.Metric) -> list[np.ndarray]:
    """Host copies of the metric's variables right after a reset."""
    if hasattr(metric, "stateless_reset_state"):
        values = metric.stateless_reset_state()
    else:  # Older Keras: reset the (now wrapped) metric itself.
        metric.reset_state()
        values = [v.value for v in metric.variables]
    return [np.array(v) for v in values]


def _check_keras_inputs(metric_name: str, labels: list, predictions: list) -> None:
    if not labels or not predictions or len(labels) > 2:
        raise ValueError(
            f"A Keras metric reads labels[0], predictions[0] and an optional sample weight "
            f"labels[1]. Received: len(labels)={len(labels)}, len(predictions)="
            f"{len(predictions)} for metric {metric_name!r}. "
            "Fix: yield [labels] or [labels, sample_weight], or wrap a function instead."
        )


def _keras_update(metric: keras.metrics.Metric, state: list, labels: list, predictions: list):
    labels, predictions = _as_list(labels), _as_list(predictions)
    _check_keras_inputs(metric.name, labels, predictions)
    kwargs = {"sample_weight": labels[1]} if len(labels) == 2 else {}
    return metric.stateless_update_state(state, labels[0], predictions[0], **kwargs)


def _keras_base_name(metric: keras.metrics.Metric) -> str:
    """The Keras metric's name without the "_1", "_2"... Keras adds to repeated default names."""
    default = _snake_case(type(metric).__name__)
    if re.fullmatch(re.escape(default) + r"_\d+", metric.name):
        return default
    return metric.name


def _infer_type(name: str) -> str:
    return ACCURACY_METRIC_TYPE if "acc" in name.lower() else name


def _short(name: str) -> str:
    """A short display name: "accuracy" -> "acc", long names by their initials."""
    words = [w for w in re.split(r"[\s_\-/]+", name) if w]
    words = ["acc" if w.lower() == "accuracy" else w for w in words]
    joined = "_".join(words)
    if len(joined) <= 10:
        return joined
    return "".join(w[0] for w in words).lower()


class KerasMetric(Metric):
    """A `keras.metrics.Metric` driven through its stateless API.

    The state is the list of the metric's variable values after a reset;
    `update` calls `stateless_update_state(state, labels[0], predictions[0])`
    (with `sample_weight=labels[1]` when a second label is present) and
    returns `stateless_result`. Like Keras, the value is cumulative since the
    last reset. The wrapped metric's own variables are never changed.

    Args:
        metric: the Keras metric (an instance).
        name: defaults to `metric.name`, without the "_1", "_2"... suffix
            Keras adds when several metrics of a class have their default name.
        short_name: defaults to a short form of the name ("accuracy" -> "acc").
        metric_type: defaults to "accuracy" when the Keras metric's name
            contains "acc", else to that name.
        keras_name: the key in Keras-shaped logs; defaults to `metric.name`
            as is (suffix included), the key `model.fit` logs it under.

    Raises:
        TypeError: `metric` is not a `keras.metrics.Metric` instance.

    Example:
        auc = KerasMetric(keras.metrics.AUC(from_logits=True))
    """

    def __init__(
        self, metric: keras.metrics.Metric, name: str | None = None,
        short_name: str | None = None, metric_type: str | None = None, *,
        keras_name: str | None = None,
    ):
        if not isinstance(metric, keras.metrics.Metric):
            raise TypeError(
                "KerasMetric wraps a keras.metrics.Metric instance. "
                f"Received: metric={metric!r}. Fix: pass e.g. keras.metrics.AUC()."
            )
        base = _keras_base_name(metric)
        name = name or base
        super().__init__(name, short_name or _short(name), metric_type or _infer_type(base),
                         keras_name=metric.name if keras_name is None else keras_name)
        self.keras_metric = metric
        self._initial = _initial_variables(metric)

    def init_state(self) -> list[jax.Array]:
        return [jnp.array(value) for value in self._initial]

    def update(self, state, labels, predictions):
        state = _keras_update(self.keras_metric, list(state), labels, predictions)
        return state, self.keras_metric.stateless_result(state)


_COMPILE_ACCURACY_NAMES = ("accuracy", "acc")


def _compile_accuracy_kind(label_shape: tuple, prediction_shape: tuple) -> str:
    """Keras' `is_binary_or_sparse_categorical` rule (`trainers/compile_utils.py`)."""
    label_last = label_shape[-1] if label_shape else None
    prediction_last = prediction_shape[-1] if prediction_shape else None
    if prediction_last == 1:
        return "binary"
    if len(label_shape) < len(prediction_shape) or (
        label_last == 1 and prediction_last is not None and prediction_last > 1
    ):
        return "sparse_categorical"
    return "categorical"


class _CompileAccuracy(Metric):
    """The metric named "accuracy" or "acc", as `model.compile(metrics=[...])` reads it.

    Keras picks the accuracy from the shapes of the labels and predictions:
    predictions with a last dimension of 1 take `BinaryAccuracy`; labels of a
    lower rank than the predictions, or with a last dimension of 1 against
    more than one class, `SparseCategoricalAccuracy`; anything else
    `CategoricalAccuracy`. The shapes are known only when `update` is traced,
    so it picks then, from `labels[0]` and `predictions[0]`. The three are
    `MeanMetricWrapper`s with the same state (total, count), so one state
    serves whichever is picked. As with `KerasMetric`, a second label is the
    sample weight, and the value is cumulative since the last reset.

    Args:
        identifier: "accuracy" or "acc" in any case; the metric's `name` and
            `keras_name`, as `model.compile` names it.
    """

    def __init__(self, identifier: str):
        super().__init__(identifier, _short(identifier), ACCURACY_METRIC_TYPE,
                         keras_name=identifier)
        self.keras_metrics = {
            "binary": keras.metrics.BinaryAccuracy(name=identifier),
            "sparse_categorical": keras.metrics.SparseCategoricalAccuracy(name=identifier),
            "categorical": keras.metrics.CategoricalAccuracy(name=identifier),
        }
        initials = {kind: _initial_variables(m) for kind, m in self.keras_metrics.items()}
        layouts = {kind: [(v.shape, v.dtype.name, v.tolist()) for v in values]
                   for kind, values in initials.items()}
        if len({repr(layout) for layout in layouts.values()}) != 1:
            raise RuntimeError(  # Only if a future Keras changes these metrics' variables.
                "Keras' BinaryAccuracy, SparseCategoricalAccuracy and CategoricalAccuracy "
                f"were expected to share one state. Received: initial states {layouts}. "
                "Fix: name the accuracy explicitly, e.g. 'sparse_categorical_accuracy'."
            )
        self._initial = initials["binary"]

    def keras_metric_for(self, labels: list, predictions: list) -> keras.metrics.Metric:
        """The Keras accuracy `model.compile` picks for these labels and predictions.

        Args:
            labels: the batch's labels; only `labels[0]`'s shape is read.
            predictions: the predictions; only `predictions[0]`'s shape is read.

        Returns:
            One of the `BinaryAccuracy`, `SparseCategoricalAccuracy` or
            `CategoricalAccuracy` in `keras_metrics`.

        Raises:
            ValueError: labels or predictions are missing, or more than two
                labels are given.
        """
        labels, predictions = _as_list(labels), _as_list(predictions)
        _check_keras_inputs(self.name, labels, predictions)
        kind = _compile_accuracy_kind(tuple(jnp.shape(labels[0])),
                                      tuple(jnp.shape(predictions[0])))
        return self.keras_metrics[kind]

    def init_state(self) -> list[jax.Array]:
        return [jnp.array(value) for value in self._initial]

    def update(self, state, labels, predictions):
        metric = self.keras_metric_for(labels, predictions)
        state = _keras_update(metric, list(state), labels, predictions)
        return state, metric.stateless_result(state)


def _keras_batch_fn(metric: keras.metrics.Metric, initial: list[np.ndarray], kind: str):
    """The Keras metric's value on one batch alone: one update from a fresh state."""

    def keras_batch_value(labels: list, predictions: list) -> jax.Array:
        state = _keras_update(metric, [jnp.asarray(v) for v in initial], labels, predictions)
        value = jnp.asarray(metric.stateless_result(state))
        if value.ndim != 0:
            raise ValueError(
                f"{kind}() needs a Keras metric with a scalar result. Received: metric "
                f"{metric.name!r} with a result of shape {tuple(value.shape)}. "
                "Fix: configure the Keras metric to return a scalar (e.g. average='macro'), "
                "or use mean() or KerasMetric(), which keep any result shape."
            )
        return value

    keras_batch_value.__name__ = metric.name
    return keras_batch_value


# Factories ------------------------------------------------------------------------------------
def _resolve(obj: Any, factory: str) -> tuple[Any, str]:
    """(keras metric or function, base name) for the factories."""
    if isinstance(obj, str):
        obj = _keras_metric_by_name(obj)
    if isinstance(obj, keras.metrics.Metric):
        return obj, _keras_base_name(obj)
    if isinstance(obj, Metric):
        raise TypeError(
            f"{factory}() builds a metric from a function or a Keras metric. "
            f"Received: {obj!r}, already a ktl Metric. Fix: use it as is."
        )
    if callable(obj) and not isinstance(obj, type):
        return obj, _function_name(obj)
    raise TypeError(
        f"{factory}() takes a function fn(labels, predictions), a keras.metrics.Metric "
        f"instance or a Keras metric name. Received: {obj!r} of type {type(obj).__name__}. "
        "Fix: pass one of those."
    )


def _function_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "metric" if name == "<lambda>" else name


def _keras_metric_by_name(name: str) -> keras.metrics.Metric:
    try:
        metric = keras.metrics.get(name)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Unknown Keras metric name. Received: metric={name!r}. Fix: use a name Keras "
            "knows (e.g. 'sparse_categorical_accuracy', 'auc', 'mae') or a metric object."
        ) from error
    if not isinstance(metric, keras.metrics.Metric):  # A plain function: wrap it.
        metric = keras.metrics.MeanMetricWrapper(metric, name=name)
    return metric


def mean(
    fn_or_keras_metric: Any, name: str | None = None, short_name: str | None = None,
    metric_type: str | None = None, *, keras_name: str | None = None,
) -> Metric:
    """A metric that averages over everything since the last reset (for eval).

    Args:
        fn_or_keras_metric: a function `fn(labels, predictions)` (becomes a
            `MeanMetric`), a `keras.metrics.Metric` or a Keras metric name
            (becomes a `KerasMetric`, cumulative like Keras).
        name: defaults to "Mean <function or Keras metric name>".
        short_name: defaults to "#" + a short form of that name.
        metric_type: defaults to "accuracy" if the name contains "acc", else the name.
        keras_name: the key in Keras-shaped logs; defaults to a Keras metric
            name as given, a Keras metric's own name, or for a function the
            snake_case of `name`.

    Returns:
        The metric.

    Raises:
        TypeError: the argument is none of the accepted kinds.
        ValueError: a string that Keras does not know as a metric.

    Example:
        eval_metrics = [ktl.metrics.mean("sparse_categorical_accuracy")]
    """
    obj, base = _resolve(fn_or_keras_metric, "mean")
    name = name or f"Mean {base}"
    short_name = short_name or f"#{_short(base)}"
    metric_type = metric_type or _infer_type(base)
    if isinstance(obj, keras.metrics.Metric):
        if keras_name is None and isinstance(fn_or_keras_metric, str):
            keras_name = fn_or_keras_metric
        return KerasMetric(obj, name, short_name, metric_type, keras_name=keras_name)
    return MeanMetric(name, short_name, metric_type, obj, keras_name=keras_name)


def moving_average(
    fn_or_keras_metric: Any, name: str | None = None, short_name: str | None = None,
    metric_type: str | None = None, new_example_weight: float = 0.01, *,
    keras_name: str | None = None,
) -> MovingAverageMetric:
    """An exponential moving average of a per-batch value (for training).

    Args:
        fn_or_keras_metric: a function `fn(labels, predictions)`, a
            `keras.metrics.Metric` or a Keras metric name. A Keras metric's
            per-batch value is its result after one update from a fresh state.
        name: defaults to "Moving Average <name>".
        short_name: defaults to "~" + a short form of the name.
        metric_type: defaults to "accuracy" if the name contains "acc", else the name.
        new_example_weight: see `MovingAverageMetric`.
        keras_name: the key in Keras-shaped logs; defaults to the snake_case
            of `name` (a moving average is not what `model.fit` logs).

    Returns:
        The metric.

    Raises:
        TypeError: the argument is none of the accepted kinds.
        ValueError: an unknown Keras metric name, or a bad `new_example_weight`.

    Example:
        train_metrics = [ktl.metrics.moving_average(keras.metrics.SparseCategoricalAccuracy())]
    """
    obj, base = _resolve(fn_or_keras_metric, "moving_average")
    if isinstance(obj, keras.metrics.Metric):
        obj = _keras_batch_fn(obj, _initial_variables(obj), "moving_average")
    return MovingAverageMetric(
        name or f"Moving Average {base}", short_name or f"~{_short(base)}",
        metric_type or _infer_type(base), obj, new_example_weight, keras_name=keras_name,
    )


def per_batch(
    fn_or_keras_metric: Any, name: str | None = None, short_name: str | None = None,
    metric_type: str | None = None, *, keras_name: str | None = None,
) -> BatchMetric:
    """A metric whose value is that of the current batch only.

    Args:
        fn_or_keras_metric: a function `fn(labels, predictions)`, a
            `keras.metrics.Metric` or a Keras metric name. A Keras metric's
            per-batch value is its result after one update from a fresh state.
        name: defaults to "Batch <name>".
        short_name: defaults to a short form of the name.
        metric_type: defaults to "accuracy" if the name contains "acc", else the name.
        keras_name: the key in Keras-shaped logs; defaults to the snake_case
            of `name`.

    Returns:
        The metric.

    Raises:
        TypeError: the argument is none of the accepted kinds.
        ValueError: a string that Keras does not know as a metric.

    Example:
        train_metrics = [ktl.metrics.per_batch("binary_accuracy")]
    """
    obj, base = _resolve(fn_or_keras_metric, "per_batch")
    if isinstance(obj, keras.metrics.Metric):
        obj = _keras_batch_fn(obj, _initial_variables(obj), "per_batch")
    return BatchMetric(
        name or f"Batch {base}", short_name or _short(base), metric_type or _infer_type(base),
        obj, keras_name=keras_name,
    )


def as_metric(obj: Any) -> Metric:
    """Converts what a user lists as a metric into a `Metric`.

    Args:
        obj: one of
            - a `Metric`: returned as is;
            - a `keras.metrics.Metric` instance: wrapped in a `KerasMetric`;
            - "accuracy" or "acc" (any case): the accuracy
              `model.compile(metrics=["accuracy"])` picks from the shapes of
              `labels[0]` and `predictions[0]`, chosen when `update` is
              traced: `BinaryAccuracy` for predictions shaped `[..., 1]`,
              `SparseCategoricalAccuracy` for class ids (labels of lower rank
              than the predictions, or `[..., 1]` against several classes),
              else `CategoricalAccuracy`. A second label is the sample weight;
            - another Keras metric name such as "sparse_categorical_accuracy",
              "auc" or "mse": `keras.metrics.get(obj)` wrapped in a
              `KerasMetric`;
            - a function `fn(labels, predictions)`: a `MeanMetric` named after
              the function.

    Returns:
        The metric. A name is kept as given for both `name` and
        `keras_name`, as `model.compile` does (`"mse"` logs as "mse", not
        "mean_squared_error"); an instance's `keras_name` is the Keras metric's
        own `name`, a function's the snake_case of the function's name.

    Raises:
        TypeError: `obj` is none of the accepted kinds (a class instead of an
            instance included).
        ValueError: a string that Keras does not know as a metric.

    Example:
        metrics = [as_metric(m) for m in ["accuracy", "auc", ktl.metrics.BinaryAccuracy()]]
    """
    if isinstance(obj, Metric):
        return obj
    if isinstance(obj, keras.metrics.Metric):
        return KerasMetric(obj)
    if isinstance(obj, str):
        if obj.lower() in _COMPILE_ACCURACY_NAMES:
            return _CompileAccuracy(obj)
        return KerasMetric(_keras_metric_by_name(obj), name=obj, keras_name=obj)
    accepted = ("a ktl.metrics.Metric, a keras.metrics.Metric instance, a Keras metric name, "
                "or a function fn(labels: list, predictions: list)")
    if isinstance(obj, type):
        raise TypeError(
            f"A metric must be {accepted}. Received: metric={obj!r}, a class. "
            f"Fix: pass an instance, e.g. {obj.__name__}()."
        )
    if callable(obj):
        name = _function_name(obj)
        return MeanMetric(name, _short(name), _infer_type(name), obj)
    raise TypeError(
        f"A metric must be {accepted}. Received: metric={obj!r} of type "
        f"{type(obj).__name__}. Fix: pass one of those."
    )


# GoMLX's accuracy metrics ---------------------------------------------------------------------
def _accuracy_counts(
    correct: jax.Array, labels: list, fn_name: str,
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


def _need_labels(labels: list, predictions: list, fn_name: str) -> None:
    if not labels or not predictions:
        raise ValueError(
            f"{fn_name} needs labels[0] and predictions[0]. Received: len(labels)="
            f"{len(labels)}, len(predictions)={len(predictions)}. "
            "Fix: make the dataset yield labels."
        )


def _sparse_categorical_correct(labels: list, predictions: list) -> jax.Array:
    """True where the single highest score is the labeled class; ties are misses."""
    name = "SparseCategoricalAccuracy"
    _need_labels(labels, predictions, name)
    logits = jnp.asarray(predictions[0])
    class_ids = _sparse_class_ids(jnp.asarray(labels[0]), logits, name)
    is_max = logits == jnp.max(logits, axis=-1, keepdims=True)
    unique_max = jnp.sum(is_max, axis=-1) == 1
    return unique_max & (jnp.argmax(logits, axis=-1) == class_ids)


def _binary_correct(labels: list, predictions: list) -> jax.Array:
    """True where |label - probability| < 0.5: a probability of exactly 0.5 is a miss."""
    name = "BinaryAccuracy"
    _need_labels(labels, predictions, name)
    probabilities = jnp.asarray(predictions[0])
    label = _same_size(jnp.asarray(labels[0]), probabilities, name)
    return jnp.abs(label.astype(jnp.float32) - probabilities.astype(jnp.float32)) < 0.5


def _binary_logits_correct(labels: list, predictions: list) -> jax.Array:
    """True where the logit's sign matches the label (1: positive, 0: negative); 0 is a miss."""
    name = "BinaryLogitsAccuracy"
    _need_labels(labels, predictions, name)
    logits = jnp.asarray(predictions[0])
    label = _same_size(jnp.asarray(labels[0]), logits, name)
    return logits.astype(jnp.float32) * (label.astype(jnp.float32) - 0.5) > 0


def _accuracy_fn(correct_fn: Callable[[list, list], jax.Array], fn_name: str):
    def accuracy(labels: list, predictions: list) -> jax.Array:
        labels, predictions = _as_list(labels), _as_list(predictions)
        return _accuracy_counts(correct_fn(labels, predictions), labels, fn_name)[0]

    accuracy.__name__ = fn_name
    return accuracy


class _MeanAccuracy(MeanMetric):
    """A mean accuracy weighted by the examples counted (after weights and mask)."""

    _correct_fn: Callable[[list, list], jax.Array]

    def __init__(self, name: str = "Mean Accuracy", short_name: str = "#acc", *,
                 keras_name: str | None = None):
        super().__init__(name, short_name, ACCURACY_METRIC_TYPE,
                         _accuracy_fn(type(self)._correct_fn, type(self).__name__),
                         keras_name=keras_name)

    def update(self, state, labels, predictions):
        labels, predictions = _as_list(labels), _as_list(predictions)
        correct = type(self)._correct_fn(labels, predictions)
        accuracy, weight = _accuracy_counts(correct, labels, type(self).__name__)
        return self.accumulate(state, accuracy, weight)


class _MovingAverageAccuracy(MovingAverageMetric):
    """A moving-average accuracy; a fully masked batch leaves it unchanged."""

    _correct_fn: Callable[[list, list], jax.Array]

    def __init__(self, name: str = "Moving Average Accuracy", short_name: str = "~acc",
                 new_example_weight: float = 0.01, *, keras_name: str | None = None):
        super().__init__(name, short_name, ACCURACY_METRIC_TYPE,
                         _accuracy_fn(type(self)._correct_fn, type(self).__name__),
                         new_example_weight, keras_name=keras_name)

    def update(self, state, labels, predictions):
        labels, predictions = _as_list(labels), _as_list(predictions)
        correct = type(self)._correct_fn(labels, predictions)
        accuracy, weight = _accuracy_counts(correct, labels, type(self).__name__)
        return self.accumulate(state, accuracy, weight)


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

    _correct_fn = staticmethod(_sparse_categorical_correct)


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

    _correct_fn = staticmethod(_sparse_categorical_correct)


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

    _correct_fn = staticmethod(_binary_correct)


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

    _correct_fn = staticmethod(_binary_correct)


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

    _correct_fn = staticmethod(_binary_logits_correct)


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

    _correct_fn = staticmethod(_binary_logits_correct)
