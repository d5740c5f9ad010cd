"""How metrics are named: the metric types, Keras log names and short display names.

Pure string heuristics, shared by the base class, the Keras adapter and the
factories: snake_case log names ("Mean Accuracy" -> "mean_accuracy"), a Keras
metric's name without its "_1" suffix, short names ("accuracy" -> "acc"), the
type guessed from a name and a function's name.
"""

from __future__ import annotations

import functools
import re
from typing import Any

LOSS_METRIC_TYPE = "loss"
ACCURACY_METRIC_TYPE = "accuracy"


def snake_case(name: str) -> str:
    """One word in snake_case: "myError" -> "my_error", "HTTPServer" -> "http_server"."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_log_name(name: str) -> str:
    """The snake_case of a display name: "Mean Loss+Regularization" -> "mean_loss_regularization"."""
    words = [word for word in re.split(r"\W+", name) if word]
    snake = "_".join(snake_case(word) for word in words)
    return re.sub(r"(?<=[^_])_{2,}", "_", snake) or "metric"  # A leading "_" stays.


def keras_base_name(metric: Any) -> str:
    """The Keras metric's name without the "_1", "_2"... Keras adds to repeated default names."""
    default = snake_case(type(metric).__name__)
    if re.fullmatch(re.escape(default) + r"_\d+", metric.name):
        return default
    return metric.name


def infer_type(name: str) -> str:
    """The metric type a name suggests: "accuracy" if it contains "acc", else the name."""
    return ACCURACY_METRIC_TYPE if "acc" in name.lower() else name


def short(name: str) -> str:
    """A short display name: "accuracy" -> "acc", long names by their initials
    ("sparse_categorical_accuracy" -> "sca", "RootMeanSquaredError" -> "rmse")."""
    words = [w for w in re.split(r"[\s_\-/]+", name) if w]
    words = ["acc" if w.lower() == "accuracy" else w for w in words]
    joined = "_".join(words)
    if len(joined) <= 10:
        return joined
    # Initials, camelCase words split too: "RootMeanSquaredError" -> "rmse".
    return "".join(part[0] for w in words for part in snake_case(w).split("_") if part).lower()


def function_name(fn: Any) -> str:
    """A function's name, through `functools.partial`; "metric" for a lambda."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "metric" if name == "<lambda>" else name
