"""Metrics built from what a user lists: functions, Keras metrics or Keras metric names.

Owns the factories `mean`, `moving_average` and `per_batch`, and `as_metric`,
which reads a metric list as `model.compile(metrics=[...])` does.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_trainloop.metrics._aggregators import BatchMetric, MeanMetric, MovingAverageMetric
from keras_trainloop.metrics._base import Metric
from keras_trainloop.metrics._compile_accuracy import COMPILE_ACCURACY_NAMES, _CompileAccuracy
from keras_trainloop.metrics._keras_adapter import (
    KerasMetric,
    initial_variables,
    keras_batch_fn,
    keras_metric_by_name,
)
from keras_trainloop.metrics._names import function_name, infer_type, keras_base_name, short


def _resolve(obj: Any, factory: str) -> tuple[Any, str]:
    """(keras metric or function, base name) for the factories."""
    if isinstance(obj, str):
        obj = keras_metric_by_name(obj)
    if isinstance(obj, keras.metrics.Metric):
        return obj, keras_base_name(obj)
    if isinstance(obj, Metric):
        raise TypeError(
            f"{factory}() builds a metric from a function or a Keras metric. "
            f"Received: {obj!r}, already a ktl Metric. Fix: use it as is."
        )
    if callable(obj) and not isinstance(obj, type):
        return obj, function_name(obj)
    raise TypeError(
        f"{factory}() takes a function fn(labels, predictions), a keras.metrics.Metric "
        f"instance or a Keras metric name. Received: {obj!r} of type {type(obj).__name__}. "
        "Fix: pass one of those."
    )


def mean(
    fn_or_keras_metric: Any,
    name: str | None = None,
    short_name: str | None = None,
    metric_type: str | None = None,
    *,
    keras_name: str | None = None,
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
    short_name = short_name or f"#{short(base)}"
    metric_type = metric_type or infer_type(base)
    if isinstance(obj, keras.metrics.Metric):
        if keras_name is None and isinstance(fn_or_keras_metric, str):
            keras_name = fn_or_keras_metric
        return KerasMetric(obj, name, short_name, metric_type, keras_name=keras_name)
    return MeanMetric(name, short_name, metric_type, obj, keras_name=keras_name)


def moving_average(
    fn_or_keras_metric: Any,
    name: str | None = None,
    short_name: str | None = None,
    metric_type: str | None = None,
    new_example_weight: float = 0.01,
    *,
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
        obj = keras_batch_fn(obj, initial_variables(obj), "moving_average")
    return MovingAverageMetric(
        name or f"Moving Average {base}",
        short_name or f"~{short(base)}",
        metric_type or infer_type(base),
        obj,
        new_example_weight,
        keras_name=keras_name,
    )


def per_batch(
    fn_or_keras_metric: Any,
    name: str | None = None,
    short_name: str | None = None,
    metric_type: str | None = None,
    *,
    keras_name: str | None = None,
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
        obj = keras_batch_fn(obj, initial_variables(obj), "per_batch")
    return BatchMetric(
        name or f"Batch {base}",
        short_name or short(base),
        metric_type or infer_type(base),
        obj,
        keras_name=keras_name,
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
        if obj.lower() in COMPILE_ACCURACY_NAMES:
            return _CompileAccuracy(obj)
        return KerasMetric(keras_metric_by_name(obj), name=obj, keras_name=obj)
    accepted = (
        "a ktl.metrics.Metric, a keras.metrics.Metric instance, a Keras metric name, "
        "or a function fn(labels: list, predictions: list)"
    )
    if isinstance(obj, type):
        raise TypeError(
            f"A metric must be {accepted}. Received: metric={obj!r}, a class. "
            f"Fix: pass an instance, e.g. {obj.__name__}()."
        )
    if callable(obj):
        name = function_name(obj)
        return MeanMetric(name, short(name), infer_type(name), obj)
    raise TypeError(
        f"A metric must be {accepted}. Received: metric={obj!r} of type "
        f"{type(obj).__name__}. Fix: pass one of those."
    )
