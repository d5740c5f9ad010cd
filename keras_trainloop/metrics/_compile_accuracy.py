"""The metric named "accuracy" or "acc", picked from the shapes as `model.compile` does.

Owns `_CompileAccuracy`, which chooses Keras' binary, sparse categorical or
categorical accuracy when `update` is traced, and the rule that chooses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras

from keras_trainloop._labels import as_list
from keras_trainloop.metrics._base import Metric
from keras_trainloop.metrics._keras_adapter import (
    check_keras_inputs,
    initial_variables,
    keras_update,
)
from keras_trainloop.metrics._names import ACCURACY_METRIC_TYPE, short

COMPILE_ACCURACY_NAMES = ("accuracy", "acc")


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
        super().__init__(identifier, short(identifier), ACCURACY_METRIC_TYPE, keras_name=identifier)
        self.keras_metrics = {
            "binary": keras.metrics.BinaryAccuracy(name=identifier),
            "sparse_categorical": keras.metrics.SparseCategoricalAccuracy(name=identifier),
            "categorical": keras.metrics.CategoricalAccuracy(name=identifier),
        }
        initials = {kind: initial_variables(m) for kind, m in self.keras_metrics.items()}
        layouts = {
            kind: [(v.shape, v.dtype.name, v.tolist()) for v in values]
            for kind, values in initials.items()
        }
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
        labels, predictions = as_list(labels), as_list(predictions)
        check_keras_inputs(self.name, labels, predictions)
        kind = _compile_accuracy_kind(tuple(jnp.shape(labels[0])), tuple(jnp.shape(predictions[0])))
        return self.keras_metrics[kind]

    def init_state(self) -> list[jax.Array]:
        return [jnp.array(value) for value in self._initial]

    def update(self, state, labels, predictions):
        metric = self.keras_metric_for(labels, predictions)
        state = keras_update(metric, list(state), labels, predictions)
        return state, metric.stateless_result(state)
