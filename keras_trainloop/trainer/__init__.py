"""The Trainer: model_fn/loss_fn into a keras.Model and compiled steps per dataset spec.

Multiple devices:
    The trainer runs under the `distribution` argument when given (it
    takes precedence), else under the global distribution active at its
    first step (`keras.distribution.set_distribution(...)`, or inside
    `with distribution.scope():`); it is fixed from then on and is used as
    the scope when the variables, the optimizer and the metrics are
    created. The variables, the optimizer state and the metric states are
    laid out as the distribution says (replicated by `DataParallel`, split
    per the `LayoutMap` by `ModelParallel`; metric states replicated) and
    keep that layout across steps. Each batch is split over the data axis
    with one `jax.device_put`; its size must be a multiple of the number
    of data-parallel devices (else a `ValueError`, before the step runs).
    With several processes (`jax.distributed.initialize()`), each process
    passes its own part of the global batch, as with Keras' `fit`.
    `in_device()` is refused under a distribution. Without one nothing
    changes: one device, no extra work per step. On simulated CPU devices,
    a loop of your own over `train_step` must wait on a result (e.g.
    `jax.block_until_ready(metrics)`) every 16 steps or so: XLA's CPU
    all-reduce deadlocks with more steps in flight (`ktl.Loop` does it).
"""

from keras_trainloop._forwarding import forward_attribute
from keras_trainloop.trainer import _interrupts as interrupts
from keras_trainloop.trainer._cache import Executor, ExecutorLimitError, GraphType
from keras_trainloop.trainer._interrupts import TerminationRequested
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._model_losses import add_loss, add_per_step_update_fn, get_losses
from keras_trainloop.trainer._trainer import Trainer

forward_attribute(__name__, "DEFAULT_MAX_EXECUTORS", "keras_trainloop.trainer._cache")

__all__ = [
    "DEFAULT_MAX_EXECUTORS",
    "Executor",
    "ExecutorLimitError",
    "FnModel",
    "GraphType",
    "TerminationRequested",
    "Trainer",
    "add_loss",
    "add_per_step_update_fn",
    "get_losses",
    "interrupts",
]
