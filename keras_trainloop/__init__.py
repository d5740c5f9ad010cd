"""keras-trainloop: GoMLX's training loop (ml/train v0.9.1) for Keras 3 on JAX.

Example:
    import keras_trainloop as ktl  # First: it selects Keras' JAX backend.
    import keras

    def model_fn(ctx, spec, inputs):  # Returns logits.
        x = ctx.layer("hidden", lambda: keras.layers.Dense(128, "relu"))(inputs[0])
        return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]

    keras.utils.set_random_seed(0)  # The same initial weights on every run.
    trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits,
                          "adam", eval_metrics=["accuracy"])
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 100, "log", 0, lambda loop, metrics: print(float(metrics[1])))
    loop.run_steps(ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0,
                                    loop_forever=True), 1000,
                   validation_data=ktl.ArrayDataset(x_val, y_val, batch_size=256),
                   validation_freq=500)
    print(loop.history.history["val_accuracy"])

A Keras model works as model_fn too (`ktl.Trainer(model, "sparse_categorical_crossentropy",
"adam")` for a model ending in a softmax); then `trainer.model is model`.

Importing the package only selects Keras' JAX backend; Keras, JAX and the
rest load when a public name is first used, and TensorFlow, TFDS, orbax and
matplotlib only inside the adapters and plugins that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keras_trainloop._backend import ensure_jax_backend
from keras_trainloop._forwarding import forward_attribute

ensure_jax_backend()

if TYPE_CHECKING:  # What `__getattr__` loads on first use, spelled out for pyright and mypy.
    from keras_trainloop import (
        checkpoints,
        commandline,
        context,  # noqa: F401 - a submodule, not in __all__
        data,
        loop,  # noqa: F401
        losses,
        metrics,
        optimizers,
        plots,
        trainer,  # noqa: F401
    )
    from keras_trainloop.context import Context
    from keras_trainloop.data import (
        ArrayDataset,
        Dataset,
        IterableDataset,
        TFDataset,
        as_dataset,
        from_tfds,
    )
    from keras_trainloop.loop import (
        HookError,
        Loop,
        NonFiniteLossError,
        every_n_steps,
        exponential_callback,
        n_times_during_loop,
        periodic_callback,
    )
    from keras_trainloop.trainer import (
        GraphType,
        Trainer,
        add_loss,
        add_per_step_update_fn,
        get_losses,
    )

    DEFAULT_MAX_EXECUTORS: int  # Forwarded to keras_trainloop.trainer._cache (see below).

__version__ = "0.1.0"

# Public name -> private module that defines it.
_EXPORTS = {
    "Dataset": "keras_trainloop.data",
    "ArrayDataset": "keras_trainloop.data",
    "IterableDataset": "keras_trainloop.data",
    "TFDataset": "keras_trainloop.data",
    "from_tfds": "keras_trainloop.data",
    "as_dataset": "keras_trainloop.data",
    "Context": "keras_trainloop.context",
    "Trainer": "keras_trainloop.trainer",
    "GraphType": "keras_trainloop.trainer",
    "add_loss": "keras_trainloop.trainer",
    "get_losses": "keras_trainloop.trainer",
    "add_per_step_update_fn": "keras_trainloop.trainer",
    "Loop": "keras_trainloop.loop",
    "HookError": "keras_trainloop.loop",
    "NonFiniteLossError": "keras_trainloop.loop",
    "every_n_steps": "keras_trainloop.loop",
    "n_times_during_loop": "keras_trainloop.loop",
    "periodic_callback": "keras_trainloop.loop",
    "exponential_callback": "keras_trainloop.loop",
}
# Submodules, loaded on first use: `ktl.loop.EveryNSteps` works in a fresh process.
_SUBMODULES = (
    "data",
    "losses",
    "metrics",
    "optimizers",
    "commandline",
    "checkpoints",
    "plots",
    "context",
    "trainer",
    "loop",
)

__all__ = [
    "DEFAULT_MAX_EXECUTORS",
    "ArrayDataset",
    "Context",
    "Dataset",
    "GraphType",
    "HookError",
    "IterableDataset",
    "Loop",
    "NonFiniteLossError",
    "TFDataset",
    "Trainer",
    "add_loss",
    "add_per_step_update_fn",
    "as_dataset",
    "checkpoints",
    "commandline",
    "data",
    "every_n_steps",
    "exponential_callback",
    "from_tfds",
    "get_losses",
    "losses",
    "metrics",
    "n_times_during_loop",
    "optimizers",
    "periodic_callback",
    "plots",
]


# One value under both names: a write to either is what the next Trainer reads.
forward_attribute(__name__, "DEFAULT_MAX_EXECUTORS", "keras_trainloop.trainer._cache")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_trainloop.{name}")
    raise AttributeError(f"module 'keras_trainloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
