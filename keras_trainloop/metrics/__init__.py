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

This package's `__init__` is its public surface; one module per concern:
`_base` (`Metric`), `_aggregators` (mean, moving average, batch), `_accuracy`
(GoMLX's accuracies), `_keras_adapter` (`KerasMetric`), `_compile_accuracy`
("accuracy" as `model.compile` reads it), `_factories` (`mean`, `as_metric`...)
and `_names` (metric types and name heuristics).

Example:
    trainer = ktl.Trainer(
        model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam",
        train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()],
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy(), "auc"],
    )
"""

from __future__ import annotations

from keras_trainloop.metrics._accuracy import (
    BinaryAccuracy,
    BinaryLogitsAccuracy,
    MovingAverageBinaryAccuracy,
    MovingAverageBinaryLogitsAccuracy,
    MovingAverageSparseCategoricalAccuracy,
    SparseCategoricalAccuracy,
)
from keras_trainloop.metrics._aggregators import BatchMetric, MeanMetric, MovingAverageMetric
from keras_trainloop.metrics._base import Metric
from keras_trainloop.metrics._base import MetricFn as MetricFn  # A type, kept as before.
from keras_trainloop.metrics._factories import as_metric, mean, moving_average, per_batch
from keras_trainloop.metrics._keras_adapter import KerasMetric
from keras_trainloop.metrics._names import ACCURACY_METRIC_TYPE, LOSS_METRIC_TYPE

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
