"""Keras metrics as ktl metrics: `KerasMetric` and the stateless-API helpers.

Owns driving a `keras.metrics.Metric` through `stateless_update_state` /
`stateless_result` (never touching its variables), a Keras metric's value on
one batch alone, and looking a Keras metric up by name.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from keras_trainloop._labels import as_list
from keras_trainloop.metrics._base import Metric
from keras_trainloop.metrics._names import infer_type, keras_base_name, short


def initial_variables(metric: keras.metrics.Metric) -> list[np.ndarray]:
    """Host copies of the metric's variables right after a reset."""
    if hasattr(metric, "stateless_reset_state"):
        values = metric.stateless_reset_state()
    else:  # Older Keras: reset the (now wrapped) metric itself.
        metric.reset_state()
        values = [v.value for v in metric.variables]
    return [np.array(v) for v in values]


def check_keras_inputs(metric_name: str, labels: list, predictions: list) -> None:
    """Raises unless there are labels, predictions and at most a sample weight besides."""
    if not labels or not predictions or len(labels) > 2:
        raise ValueError(
            f"A Keras metric reads labels[0], predictions[0] and an optional sample weight "
            f"labels[1]. Received: len(labels)={len(labels)}, len(predictions)="
            f"{len(predictions)} for metric {metric_name!r}. "
            "Fix: yield [labels] or [labels, sample_weight], or wrap a function instead."
        )


def keras_update(metric: keras.metrics.Metric, state: list, labels: list, predictions: list):
    """`metric.stateless_update_state` on one batch, `labels[1]` as the sample weight."""
    labels, predictions = as_list(labels), as_list(predictions)
    check_keras_inputs(metric.name, labels, predictions)
    kwargs = {"sample_weight": labels[1]} if len(labels) == 2 else {}
    return metric.stateless_update_state(state, labels[0], predictions[0], **kwargs)


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
            without that suffix too (`AUC()` logs as "auc" and "val_auc"
            whichever AUCs the process made before, so separate train and
            eval lists pair up as `fit`'s one list does); a metric set with
            two of one name keeps Keras' own names (see `MetricSet`).

    Raises:
        TypeError: `metric` is not a `keras.metrics.Metric` instance.

    Example:
        auc = KerasMetric(keras.metrics.AUC(from_logits=True))
    """

    def __init__(
        self,
        metric: keras.metrics.Metric,
        name: str | None = None,
        short_name: str | None = None,
        metric_type: str | None = None,
        *,
        keras_name: str | None = None,
    ):
        if not isinstance(metric, keras.metrics.Metric):
            raise TypeError(
                "KerasMetric wraps a keras.metrics.Metric instance. "
                f"Received: metric={metric!r}. Fix: pass e.g. keras.metrics.AUC()."
            )
        base = keras_base_name(metric)
        name = name or base
        super().__init__(
            name,
            short_name or short(name),
            metric_type or infer_type(base),
            keras_name=base if keras_name is None else keras_name,
        )
        self.keras_metric = metric
        self._initial = initial_variables(metric)

    def init_state(self) -> list[jax.Array]:
        return [jnp.array(value) for value in self._initial]

    def build_variables(self, labels: list, predictions: list) -> bool:
        """Creates the Keras metric's variables where Keras makes them at its first update.

        Some Keras metrics (`F1Score`, `FBetaScore`) have no variables until
        they see their inputs' shapes. Given a batch's labels and predictions
        (arrays or shape stand-ins), one update on zeros of those shapes
        creates them; the metric is reset after it and its state template
        refreshed. Returns whether variables were created (the owner then
        makes fresh states).
        """
        metric = self.keras_metric
        labels, predictions = as_list(labels), as_list(predictions)
        if metric.variables or not labels or not predictions:
            return False

        def zeros(like: Any) -> np.ndarray:
            dtype = keras.backend.standardize_dtype(getattr(like, "dtype", None) or "float32")
            return np.zeros((1, *tuple(like.shape)[1:]), dtype)

        metric.update_state(zeros(labels[0]), zeros(predictions[0]))
        metric.reset_state()
        self._initial = initial_variables(metric)
        return bool(self._initial)

    def update(self, state, labels, predictions):
        state = keras_update(self.keras_metric, list(state), labels, predictions)
        return state, self.keras_metric.stateless_result(state)


def keras_batch_fn(metric: keras.metrics.Metric, initial: list[np.ndarray], kind: str):
    """The Keras metric's value on one batch alone: one update from a fresh state."""

    def keras_batch_value(labels: list, predictions: list) -> jax.Array:
        state = keras_update(metric, [jnp.asarray(v) for v in initial], labels, predictions)
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


def keras_metric_by_name(name: str) -> keras.metrics.Metric:
    """`keras.metrics.get(name)`, a plain function wrapped in a `MeanMetricWrapper`."""
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
