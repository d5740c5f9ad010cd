"""The checks on what a Trainer is given: its arguments, and each batch's inputs and labels."""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np

from keras_trainloop._describe import short_repr
from keras_trainloop.context import Context
from keras_trainloop.trainer._cache import Executor, check_max_executors


def check_arguments(model_fn: Any, context: Any, max_executors: Any) -> None:
    """Raises on a `model_fn`, `context` or `max_executors` a Trainer cannot use."""
    if not (callable(model_fn) or isinstance(model_fn, keras.layers.Layer)):
        raise TypeError(
            "model_fn must be a function model_fn(ctx, spec, inputs) or a keras Layer/Model. "
            f"Received: model_fn={short_repr(model_fn)}. Fix: def model_fn(ctx, spec, inputs): "
            "return [predictions], or pass a keras.Model."
        )
    if not isinstance(model_fn, keras.layers.Layer):
        _check_model_fn_signature(model_fn)
    if isinstance(model_fn, keras.Model):
        _check_no_custom_step(model_fn)
    if context is not None and not isinstance(context, Context):
        raise TypeError(
            f"context must be a ktl.Context. Received: context={short_repr(context)}. "
            "Fix: pass ktl.Context(), or None for a new one."
        )
    if max_executors is not None:
        check_max_executors(max_executors)


_KERAS_STEP_METHODS = ("train_step", "test_step", "compute_loss")


def _check_no_custom_step(model: keras.Model) -> None:
    """A model overriding `fit`'s step or loss would be trained without it: refused."""
    for method in _KERAS_STEP_METHODS:
        if getattr(type(model), method) is not getattr(keras.Model, method):
            raise ValueError(
                f"The model {type(model).__name__} overrides {method}(), which keras.Model.fit "
                "runs; the Trainer compiles its own step from loss_fn and the metrics and "
                f"would silently skip it. Received: model_fn={short_repr(model)} with its own "
                f"{method}. Fix: keep training with model.fit and drive the loop's hooks "
                "from it (model.fit(..., callbacks=[ktl.Loop(None).as_keras_callback()])), "
                "or move the logic into loss_fn (and ktl.add_loss)."
            )


def check_metrics_for_outputs(metric_sets: Any, outputs: list) -> None:
    """Refuses Keras metrics on a Keras model of several outputs (they would read one).

    A Keras metric reads `labels[0]` and `predictions[0]` (a second label as the
    sample weight), while `fit` applies metrics per output: with several outputs
    it would silently measure the first output against a wrong weight.
    """
    if len(outputs) < 2:
        return
    for metrics in metric_sets:
        for metric in metrics.user_metrics:
            if hasattr(metric, "keras_metric") or hasattr(metric, "keras_metrics"):
                raise ValueError(
                    f"Metric {metric.name!r} is a Keras metric, which reads labels[0] and "
                    f"predictions[0] only, but the model has {len(outputs)} outputs (fit "
                    "applies metrics per output). Fix: measure the output you mean with a "
                    "function, e.g. ktl.metrics.mean(lambda labels, predictions: "
                    "keras.metrics.mean_absolute_error(labels[1], predictions[1]), "
                    'keras_name="out1_mae").'
                )


def _check_model_fn_signature(model_fn: Any) -> None:
    """A `model_fn` must take `(ctx, spec, inputs)`: checked now, not at the first step."""
    try:
        signature = inspect.signature(model_fn)
    except (TypeError, ValueError):  # Builtins and some C callables have none: trust them.
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        name = getattr(model_fn, "__name__", type(model_fn).__name__)
        raise TypeError(
            "model_fn is called as model_fn(ctx, spec, inputs) and must accept those three "
            f"arguments. Received: model_fn={name}{signature}. Fix: def {name}(ctx, spec, "
            "inputs): ... (inputs is a list of arrays), or pass a keras.Model/Layer."
        ) from None


def _check_numeric(kind: str, values: list, spec: Any) -> None:
    for i, value in enumerate(values):
        dtype = getattr(value, "dtype", None)
        if dtype is not None and getattr(dtype, "kind", "") in "USO":
            raise TypeError(
                f"{kind}[{i}] holds {dtype} values, not numbers: the compiled step takes "
                f"numeric arrays only. Received: {kind}[{i}] of dtype {dtype} and shape "
                f"{getattr(value, 'shape', None)} for spec={spec!r}. Fix: turn them into "
                "numbers in the data pipeline (e.g. keras.layers.StringLookup, or "
                "np.asarray(x, dtype=np.float32))."
            )


def check_new_context(ctx: Any, num_executors: int) -> None:
    """Raises unless `ctx` is a Context and no executor was compiled yet."""
    if not isinstance(ctx, Context):
        raise TypeError(
            f"set_context() expects a ktl.Context. Received: ctx={short_repr(ctx)}. "
            "Fix: pass a ktl.Context()."
        )
    if num_executors:
        raise ValueError(
            "set_context() must be called before the first train or eval step: this "
            f"trainer already compiled {num_executors} executor(s). "
            "Fix: create a new Trainer with context=ctx."
        )


def fits(executor: Executor | None, inputs: list, labels: list) -> bool:
    """Whether a batch can go to `executor` without the full checks (the fast path)."""
    return (
        executor is not None
        and len(inputs) == executor.num_inputs
        and len(labels) == executor.num_labels
        and not any(x is None for x in inputs)
    )


def as_array_list(kind: str, values: Any, spec: Any) -> list:
    """A batch's inputs or labels as a list (one array is wrapped, None is empty)."""
    if values is None:
        return []
    if isinstance(values, (list, tuple)):
        return list(values)
    if isinstance(values, dict):
        raise TypeError(
            f"{kind} must be a list of arrays. Received: a dict for spec={spec!r}. "
            "Fix: pass list(d.values()) and use the spec to name them."
        )
    return [values]


def _none_input_error(spec: Any, inputs: list, labels: list) -> ValueError:
    return ValueError(
        f"Inputs may not be None. Received: inputs with a None entry for spec={spec!r} "
        f"({len(inputs)} input(s), {len(labels)} label(s))."
    )


def check_new_batch(spec: Any, inputs: list, labels: list) -> None:
    """The checks before a spec's first executor is created."""
    if not inputs:
        raise ValueError(
            f"At least one input is required. Received: 0 inputs and {len(labels)} "
            f"label(s) for spec={spec!r}. Fix: yield batches as (spec, [inputs...], "
            "[labels...])."
        )
    if any(x is None for x in inputs):
        raise _none_input_error(spec, inputs, labels)
    _check_numeric("inputs", inputs, spec)
    _check_numeric("labels", labels, spec)


def check_batch(executor: Executor, spec: Any, inputs: list, labels: list) -> None:
    """The checks of a batch against the executor compiled for its spec."""
    if len(inputs) != executor.num_inputs or len(labels) != executor.num_labels:
        raise ValueError(
            f"The number of inputs and labels must stay the same for one spec. "
            f"spec={spec!r} was compiled with {executor.num_inputs} input(s) and "
            f"{executor.num_labels} label(s). Received: {len(inputs)} input(s) and "
            f"{len(labels)} label(s). Fix: yield a different spec for differently "
            "structured batches."
        )
    if any(x is None for x in inputs):
        raise _none_input_error(spec, inputs, labels)


def stacked_count(spec: Any, inputs: list, labels: list) -> int:
    """The number of stacked batches: the leading axis shared by every array."""
    shapes = [None if x is None else tuple(getattr(x, "shape", ())) for x in inputs + labels]
    leading = {shape[0] if shape else None for shape in shapes}
    if len(leading) != 1 or None in leading or min(leading) < 1:
        raise ValueError(
            "train_steps() expects every input and label stacked on a leading axis of "
            f"the same size n >= 1 (shape (n, batch_size, ...)). Received: spec={spec!r} "
            f"with shapes {shapes}. Fix: stack n batches with np.stack, or call "
            "train_step() for a single batch."
        )
    return int(leading.pop())


def takes_class_ids(loss_fn: Any) -> bool:
    """Whether `loss_fn` (as the user gave it) reads labels as sparse class ids."""
    if isinstance(loss_fn, str):
        return "sparse_categorical" in loss_fn
    if isinstance(loss_fn, keras.losses.Loss):
        return isinstance(loss_fn, keras.losses.SparseCategoricalCrossentropy)
    return "sparse_categorical" in getattr(loss_fn, "__name__", "")


def check_class_ids(spec: Any, labels: list, predictions: list | None) -> None:
    """Refuses class ids outside `[0, classes)` in a spec's first batch (cheap: host arrays).

    An id out of range makes the loss NaN inside the compiled step, where it
    cannot be named; checking the first batch of each spec catches the usual
    cause (labels 1..n, or a model with too few outputs) before anything runs.
    """
    if not labels or not predictions or not hasattr(predictions[0], "shape"):
        return
    ids, shape = labels[0], tuple(predictions[0].shape)
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or len(shape) < 2:
        return
    if ids.size and (ids.min() < 0 or ids.max() >= shape[-1]):
        raise ValueError(
            f"The labels are class ids, but they range over [{ids.min()}, {ids.max()}] while the "
            f"model predicts {shape[-1]} classes (ids 0..{shape[-1] - 1}). Received: labels[0] "
            f"of shape {ids.shape} for spec={spec!r}, predictions of shape {shape}. Fix: "
            "number the classes from 0 (e.g. y - 1 for labels 1..n), or give the model's "
            "last layer one unit per class."
        )


def as_eval_dataset(ds: Any) -> Any:
    """`ds`, or what `model.evaluate`/`fit(validation_data=)` would read from it, as a Dataset."""
    from keras_trainloop.data import Dataset, as_validation_data

    return ds if isinstance(ds, Dataset) else as_validation_data(ds)
