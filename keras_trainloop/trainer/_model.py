"""FnModel: a `keras.Model` whose call is the user's `model_fn(ctx, spec, inputs)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from keras_trainloop.context import Context


def _as_list(predictions: Any) -> list:
    if isinstance(predictions, (list, tuple)):
        return list(predictions)
    return [predictions]


class FnModel(keras.Model):
    """The Keras model built from a `model_fn`.

    Layers and variables created through the context (and a Keras layer given
    as `model_fn`) are tracked, so `summary()`, `save_weights()` and
    `load_weights()` work. While the Trainer trains, the current weights live
    in the Trainer's state; every read through this model (`get_weights`,
    `save_weights`, `summary`, calling it, or a Keras callback's `.model`)
    first syncs them back (`jax_state_sync`), and values written here are used
    by the next step.
    """

    def __init__(self, model_fn: Callable | keras.layers.Layer, context: Context, name: str = "fn_model"):
        super().__init__(name=name)
        self.context_layer = context.keras_layer
        if isinstance(model_fn, keras.layers.Layer):
            self.wrapped = model_fn
            self._model_fn = self._call_wrapped
        else:
            self._model_fn = model_fn
        self._context = context
        self._spec = None
        self._sync_fn: Callable[[], None] | None = None

    def _call_wrapped(self, ctx: Context, spec: Any, inputs: list) -> Any:
        del spec
        x = inputs[0] if len(inputs) == 1 else inputs
        return self.wrapped(x, training=ctx.training)

    def call(self, inputs, training=False):
        store = self._context._store
        previous = store.training
        store.training = bool(training)
        try:
            predictions = self._model_fn(self._context, self._spec, list(inputs))
        finally:
            store.training = previous
        predictions = _as_list(predictions)
        if not predictions:
            raise ValueError(
                "model_fn must return at least one prediction. Received: an empty list "
                f"for spec={self._spec!r}."
            )
        return predictions

    # State sync protocol (Keras' JAX trainer uses the same name) -----------
    def jax_state_sync(self):
        if self._sync_fn is not None:
            self._sync_fn()

    def _synced(method_name: str):
        def method(self, *args, **kwargs):
            self.jax_state_sync()
            return getattr(keras.Model, method_name)(self, *args, **kwargs)

        method.__name__ = method_name
        method.__doc__ = getattr(keras.Model, method_name).__doc__
        return method

    get_weights = _synced("get_weights")
    set_weights = _synced("set_weights")
    save_weights = _synced("save_weights")
    load_weights = _synced("load_weights")
    save = _synced("save")
    summary = _synced("summary")
    predict = _synced("predict")
    evaluate = _synced("evaluate")
    __call__ = _synced("__call__")
    del _synced
