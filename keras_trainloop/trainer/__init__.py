"""The Trainer: model_fn/loss_fn into a keras.Model and compiled steps per dataset spec."""

from keras_trainloop.trainer._cache import Executor, ExecutorLimitError, GraphType
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._model_losses import add_loss, add_per_step_update_fn, get_losses
from keras_trainloop.trainer._trainer import DEFAULT_MAX_EXECUTORS, Trainer

__all__ = [
    "DEFAULT_MAX_EXECUTORS",
    "Executor",
    "ExecutorLimitError",
    "FnModel",
    "GraphType",
    "Trainer",
    "add_loss",
    "add_per_step_update_fn",
    "get_losses",
]
