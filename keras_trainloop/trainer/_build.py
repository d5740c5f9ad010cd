"""Creating a new spec's variables: one eager, stateless call of the model, outside jit.

The model's variables (and, at the first spec, the optimizer's) must exist
before a step is traced. A call under `keras.StatelessScope` creates them and
drops every update it makes (BatchNorm statistics, dropout seeds, added
losses), as a symbolic build would. A built Keras model of the user's has
all its variables already and is not called (the call would hold a full
batch of activations for nothing).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_trainloop.context import Context, TraceState
from keras_trainloop.trainer import _distribution as distribution_lib
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._steps import call_model


def _no_trainable_error(model_fn: Any, spec: Any) -> ValueError:
    return ValueError(
        f"model_fn={model_fn!r} has no trainable variable to train "
        f"(0 trainable variables for spec={spec!r}): the layers it calls were "
        "not created through the context, so nothing tracks them. Fix: create "
        "layers inside model_fn with ctx.layer(name, lambda: keras.layers...) "
        "(variables with ctx.variable), or pass the keras.Model itself as "
        "model_fn."
    )


def create_variables(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    context: Context,
    spec: Any,
    inputs: list,
    training: bool,
    distribution: Any,
    model_fn: Any,
) -> list | None:
    """Creates the variables `spec`'s batch needs; builds the optimizer at the first spec.

    Returns the predictions of the build call (None when the model was not called).

    Raises:
        ValueError: a train step of a `model_fn` function would have no
            trainable variable, or a spec after the first created new
            trainable variables.
    """
    had_trainable = len(model.trainable_variables)
    optimizer_built = optimizer.built
    predictions = None
    with distribution_lib.scope(distribution):
        if isinstance(model, FnModel) or not model.built:
            trace = TraceState(training=training, spec=spec)
            with context.tracing(trace), keras.StatelessScope():
                predictions = call_model(model, inputs, training, spec)
        if training and isinstance(model, FnModel) and not model.trainable_variables:
            # A Keras model of the user's with none (all frozen, or only state that
            # its call assigns) trains as under fit: its other state still updates.
            raise _no_trainable_error(model_fn, spec)
        if optimizer_built and len(model.trainable_variables) != had_trainable:
            raise ValueError(
                f"spec={spec!r} created new trainable variables after the optimizer was "
                f"built ({had_trainable} -> {len(model.trainable_variables)}). Fix: create "
                "all variables on the first spec (e.g. call every branch of model_fn once)."
            )
        if not optimizer_built:
            optimizer.build(model.trainable_variables)
    return predictions
