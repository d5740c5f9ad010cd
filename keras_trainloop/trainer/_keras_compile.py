"""The user's uncompiled `keras.Model`, compiled with the Trainer's optimizer, loss and metrics.

Keras saves a whole model (`model.save("m.keras")`, `ModelCheckpoint("m.keras")`) with
its compile config and the optimizer's state only when it is compiled; `load_model` then
returns a model that `evaluate`s and trains on, as one saved during `fit` does. So a
model the user did not compile is compiled with the Trainer's own pieces, where Keras can
save them: the optimizer (the Trainer's object), a `keras.losses.Loss` or a Keras loss
name (with a Python `loss_fn`, which Keras could not load back, the model stays
uncompiled), and the metrics given as names or Keras metrics (copies: the Trainer's
metric objects stay its own). A model the user compiled is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras


def compile_like_trainer(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: Any,
    metrics: Sequence[Any] | None,
) -> None:
    """Compiles `model` (if it is not) with `optimizer`, `loss` and `metrics` (see above)."""
    if model.compiled or not all(_keras_can_load(item) for item in _items(loss)):
        return
    model.compile(
        optimizer=optimizer,
        loss=list(loss) if isinstance(loss, tuple) else loss,
        metrics=[m for m in map(_keras_metric, metrics or []) if m is not None],
        auto_scale_loss=False,  # The Trainer's optimizer itself, not a loss-scaling wrapper.
    )


def _items(loss: Any) -> list:
    return list(loss) if isinstance(loss, (list, tuple)) else [loss]


def _keras_can_load(loss: Any) -> bool:
    """Whether Keras can save and load `loss` back: None, a name or a `keras.losses.Loss`."""
    return loss is None or isinstance(loss, (str, keras.losses.Loss))


def _keras_metric(metric: Any) -> Any:
    """A metric as `compile` takes it: a name, a copy of a Keras metric, or None (not Keras')."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric, keras.metrics.Metric):  # ktl.metrics objects are not Keras metrics.
        try:
            return keras.metrics.deserialize(keras.metrics.serialize(metric))
        except (TypeError, ValueError):  # A custom metric Keras cannot rebuild from its config.
            return None
    return None
