"""The `Metric` base class: names, a state pytree and a pure `update`.

A metric's state is a pytree of JAX arrays that the Trainer keeps and passes
through the compiled step; `update` is traced inside `jax.jit`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from keras_trainloop.metrics._names import (
    ACCURACY_METRIC_TYPE,
    LOSS_METRIC_TYPE,
    keras_log_name,
)

MetricFn = Callable[[list, list], Any]
"""A per-batch metric function `fn(labels: list, predictions: list) -> value`."""


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
        self,
        name: str,
        short_name: str,
        metric_type: str,
        *,
        keras_name: str | None = None,
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
        self.keras_name = keras_name if keras_name is not None else keras_log_name(name)

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
        return (
            f"{type(self).__name__}(name={self.name!r}, short_name={self.short_name!r}, "
            f"metric_type={self.metric_type!r})"
        )
