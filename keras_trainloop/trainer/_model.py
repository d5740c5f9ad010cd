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


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, str)


def _check_predictions(predictions: Any, spec: Any) -> None:
    """Raises unless `model_fn` returned one array or a non-empty list of arrays."""
    if isinstance(predictions, (list, tuple)) and not predictions:
        raise ValueError(
            "model_fn must return at least one prediction. Received: an empty list "
            f"for spec={spec!r}. Fix: return [predictions], e.g. return [logits]."
        )
    items = predictions if isinstance(predictions, (list, tuple)) else [predictions]
    for i, item in enumerate(items):
        if not _is_array(item):
            where = "" if items is not predictions else f" (prediction #{i})"
            fix = "list(d.values())" if isinstance(item, dict) else "[logits]"
            raise TypeError(
                "model_fn must return its predictions: an array or a list of arrays. "
                f"Received: {type(item).__name__} {str(item)[:60]!r}{where} for spec={spec!r}. "
                f"Fix: return the model's outputs, e.g. return {fix}."
            )


def _not_savable(what: str) -> ValueError:
    return ValueError(
        "This model is built from a Python model_fn, so it cannot be saved as a whole model "
        "(a .keras file or a full-model checkpoint needs a Keras config of the "
        f"architecture). Received: {what}. Fix: save the weights only "
        "(keras.callbacks.ModelCheckpoint('m.weights.h5', save_weights_only=True), "
        "keras.callbacks.OrbaxCheckpoint(..., save_weights_only=True), "
        "model.save_weights('m.weights.h5'), or ktl.checkpoints), or pass a keras.Model as "
        "model_fn (then trainer.model is that model and saves as usual)."
    )


class FnModel(keras.Model):
    """The Keras model built from a `model_fn`.

    Layers and variables created through the context (and a Keras layer given
    as `model_fn`) are tracked, so `summary()`, `save_weights()` and
    `load_weights()` work; calling it (`model(x)`, `model.predict(x)`) takes
    one array or a list of arrays, as any Keras model. While the Trainer
    trains, the current weights live in the Trainer's state; every read
    through this model (`get_weights`, `save_weights`, `summary`, calling it,
    or a Keras callback's `.model`) first syncs them back through Keras' own
    `jax_state_sync()`, and values written here are used by the next step.

    It cannot be saved as a whole model (`save("m.keras")`): its architecture
    is Python code, not a Keras config. Save its weights instead.
    """

    def __init__(
        self, model_fn: Callable | keras.layers.Layer, context: Context, name: str = "fn_model"
    ):
        super().__init__(name=name)
        self.context_layer = context.keras_layer
        if isinstance(model_fn, keras.layers.Layer):
            self.wrapped = model_fn
            self._model_fn = self._call_wrapped
        else:
            self._model_fn = model_fn
        self._context = context

    def _call_wrapped(self, ctx: Context, spec: Any, inputs: list) -> Any:
        del spec
        x = inputs[0] if len(inputs) == 1 else inputs
        return self.wrapped(x, training=ctx.training)

    def call(self, inputs, training=False):
        ctx = self._context
        trace = ctx.trace.with_training(bool(training))
        with ctx.tracing(trace):
            predictions = self._model_fn(ctx, trace.spec, _as_list(inputs))
        _check_predictions(predictions, trace.spec)
        return predictions

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Refused: a model built from a `model_fn` has no Keras config to save.

        Raises:
            ValueError: always, with the fix (save the weights).
        """
        raise _not_savable(f"save({filepath!r})")

    def get_config(self) -> dict:
        """Refused as `save`: what Keras serializes a whole model with (`.keras`, Orbax)."""
        raise _not_savable("get_config() (saving the whole model)")

    # Reads sync the Trainer's state first (Keras' JAX state protocol) ---------
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
    summary = _synced("summary")
    predict = _synced("predict")
    evaluate = _synced("evaluate")
    __call__ = _synced("__call__")
    del _synced
