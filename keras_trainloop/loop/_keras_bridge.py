"""Keras callbacks both ways: driven by a Loop, and a Loop driven by `model.fit`."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_trainloop._describe import short_repr
from keras_trainloop.loop._hooks import check_priority

LOG_NAMES_KEY = "keras_log_names"
"""`loop.shared_data` key: under `model.fit`, the names of the values hooks receive."""

_Callback = keras.callbacks.Callback


def _overrides(callback: Any, *method_names: str) -> bool:
    """Whether `callback` overrides any of the named `keras.callbacks.Callback` methods.

    Keras marks its empty defaults (`_is_default`, what `keras.fit` checks);
    a method that is neither marked nor Callback's own function is an override.
    """
    for method_name in method_names:
        method = getattr(callback, method_name, None)
        if method is None or getattr(method, "_is_default", False):
            continue
        if getattr(method, "__func__", None) is getattr(_Callback, method_name, None):
            continue
        return True
    return False


def add_keras_callback(loop: Any, callback: Any, priority: float) -> None:
    """Registers the hooks that drive `callback` from `loop` (see `Loop.add_keras_callback`)."""
    if not isinstance(callback, _Callback):
        raise TypeError(
            "add_keras_callback() expects a keras.callbacks.Callback. "
            f"Received: callback={short_repr(callback)}. Fix: pass a Keras callback instance, "
            "e.g. keras.callbacks.CSVLogger('log.csv'); for a function use loop.on_step(...)."
        )
    if loop.trainer is None:
        raise TypeError(
            "add_keras_callback() needs a loop with a trainer (the callback's model is "
            "trainer.model). Received: a Loop created with trainer=None. Fix: ktl.Loop(trainer)."
        )
    check_priority(priority, f"add_keras_callback({type(callback).__name__})")
    loop.request_built_model()  # fit builds the model before on_train_begin.
    _KerasDriver(callback).register(loop, priority)


def _metric_direction(metric: Any) -> str | None:
    """A trainer metric's direction ("up", "down"): its Keras metric's, else its type's."""
    direction = getattr(getattr(metric, "keras_metric", None), "_direction", None)
    if direction in ("up", "down"):
        return direction
    return {"accuracy": "up", "loss": "down"}.get(getattr(metric, "metric_type", None))


def resolve_auto_mode(callback: Any, trainer: Any) -> None:
    """Gives a Keras monitor callback in `mode="auto"` the trainer's metric direction.

    `EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau` (Keras' monitor callbacks)
    find an auto mode's direction among the model's compiled metrics, built by `fit`'s
    first step; a Loop trains without them, so the monitored metric's direction comes
    from the trainer's metric of that name, and `callback.mode` becomes `"max"` or
    `"min"` (what `fit` would pick). Names neither knows stay `"auto"`: Keras then asks
    for a mode, as under `fit`.
    """
    monitor = getattr(callback, "monitor", None)
    if (
        getattr(callback, "mode", None) != "auto"
        or not isinstance(monitor, str)
        or not hasattr(callback, "_set_monitor_op")  # Not a Keras monitor callback.
        or getattr(callback, "monitor_op", None) is not None
    ):
        return
    name = monitor.removeprefix("val_")
    if name == "loss":  # Keras' own rule.
        return
    metrics = [*getattr(trainer, "train_metrics", []), *getattr(trainer, "eval_metrics", [])]
    for metric in metrics:
        if getattr(metric, "keras_name", None) == name:
            direction = _metric_direction(metric)
            if direction is not None:
                callback.mode = "max" if direction == "up" else "min"
                return


def _steps_per_epoch(loop: Any, ds: Any) -> int | None:
    """`params["steps"]`: the run's steps (`run_steps`), or the dataset's length if known."""
    if not loop.epochs:
        return loop.end_step - loop.start_step
    try:
        return len(ds)
    except TypeError:  # No __len__, or an unknown length.
        return None


class _KerasDriver:
    """The hooks that call one Keras callback from a Loop, through its public event API.

    Every event's logs are `loop.logs(metrics)`: one dict per event, shared
    by all the Keras callbacks (and hooks) of the loop in priority order, as
    `fit`'s `CallbackList` shares them. Before epoch-end and train-end events
    the trained state is synced into the Keras variables (`trainer.model`),
    so a callback holding the model by reference reads current weights;
    what it writes there is used by the next step.
    """

    def __init__(self, callback: Any):
        self.callback = callback
        self.model: Any = None
        self.epoch_start = 0
        self.test_batch = 0  # The validation batch running (Keras' `on_test_batch_*`).

    def register(self, loop: Any, priority: float) -> None:
        cb = self.callback
        name = f"KerasCallback({type(cb).__name__})"
        loop.on_start(name, priority, self.on_start)
        loop.on_epoch_begin(name, priority, self.on_epoch_begin)
        loop.on_epoch_end(name, priority, self.on_epoch_end)
        if _overrides(cb, "on_train_batch_begin", "on_batch_begin"):
            loop.on_batch_begin(name, priority, self.on_batch_begin)
        if _overrides(cb, "on_train_batch_end", "on_batch_end"):
            loop.on_step(name, priority, self.on_batch_end)
        if _overrides(cb, "on_test_begin"):
            loop.on_validation_begin(name, priority, self.on_validation_begin)
        if _overrides(cb, "on_test_end"):
            loop.on_validation_end(name, priority, self.on_validation_end)
        if _overrides(cb, "on_test_batch_begin", "on_test_batch_end"):
            loop.on_validation_batch_begin(name, priority, self.on_validation_batch_begin)
            loop.on_validation_batch_end(name, priority, self.on_validation_batch_end)
        loop.on_end(name, priority, self.on_end)

    def _check_stop(self, loop: Any) -> None:
        if getattr(self.model, "stop_training", False):
            loop.stop()

    def on_start(self, loop: Any, ds: Any) -> None:
        self.model = model = loop.trainer.model
        model.stop_training = False
        self.epoch_start = loop.loop_step
        self.callback.set_model(model)
        resolve_auto_mode(self.callback, loop.trainer)
        self.callback.set_params(
            {
                "verbose": 1,
                "epochs": loop.epochs or 1,
                "steps": _steps_per_epoch(loop, ds),
            }
        )
        self.callback.on_train_begin({})
        # Keras' protocol for resuming (BackupAndRestore sets it; fit reads it).
        initial_epoch = getattr(model, "_initial_epoch", None)
        if initial_epoch and loop.epochs:
            loop.initial_epoch = min(int(initial_epoch), loop.epochs)
            model._initial_epoch = None
        self._check_stop(loop)

    def on_epoch_begin(self, loop: Any, epoch: int) -> None:
        self.epoch_start = loop.loop_step
        self.callback.on_epoch_begin(epoch, {})
        self._check_stop(loop)

    def on_batch_begin(self, loop: Any, step: int) -> None:
        self.callback.on_train_batch_begin(step - self.epoch_start, logs={})
        self._check_stop(loop)

    def on_batch_end(self, loop: Any, metrics: list) -> None:
        self.callback.on_train_batch_end(loop.loop_step - self.epoch_start, logs=loop.logs(metrics))
        self._check_stop(loop)

    def on_epoch_end(self, loop: Any, metrics: list) -> None:
        _ = loop.trainer.model  # Syncs the trained state into the Keras variables.
        self.callback.on_epoch_end(loop.epoch, loop.logs(metrics))
        self._check_stop(loop)

    def on_validation_begin(self, loop: Any, ds: Any) -> None:
        _ = loop.trainer.model  # The callback may change the weights evaluated (SwapEMAWeights).
        self.callback.on_test_begin({})

    def on_validation_batch_begin(self, loop: Any, batch: int) -> None:
        self.test_batch = batch
        self.callback.on_test_batch_begin(batch, logs={})

    def on_validation_batch_end(self, loop: Any, logs: dict) -> None:
        self.callback.on_test_batch_end(self.test_batch, logs=logs)

    def on_validation_end(self, loop: Any, logs: dict) -> None:
        _ = loop.trainer.model  # What the callback writes back is used by the next step.
        self.callback.on_test_end(logs)

    def on_end(self, loop: Any, metrics: list) -> None:
        _ = loop.trainer.model
        self.callback.on_train_end(loop.logs(metrics))


class LoopCallback(_Callback):
    """A Keras callback that fires a Loop's hooks from `model.fit` (see `Loop.as_keras_callback`).

    It drives the loop through its run-session API (`loop.begin_external_run`).

    Args:
        loop: the `ktl.Loop` whose hooks to fire.
    """

    def __init__(self, loop: Any):
        super().__init__()
        self.loop = loop
        self._run: Any = None
        self._epoch_base = 0
        self._names: list[str] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        start = int(np.asarray(iterations)) if iterations is not None else 0
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        end = start + epochs * steps if epochs and steps else -1
        self._epoch_base = start
        self._run = self.loop.begin_external_run(start, end)
        self._check_stop()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_base = self.loop.loop_step
        self._run.epoch_begin(epoch)
        self._check_stop()

    def _metrics(self, logs: dict) -> list:
        """`[logs["loss"], *other logs]`, and the names of those values for plugins."""
        metrics = [logs["loss"]] if "loss" in logs else []
        metrics += [value for key, value in logs.items() if key != "loss"]
        if len(metrics) != len(self._names):
            self._names = (["loss"] if "loss" in logs else []) + [k for k in logs if k != "loss"]
            self.loop.shared_data[LOG_NAMES_KEY] = self._names
        return metrics

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        self._run.step(self._epoch_base + batch, self._metrics(logs), logs)
        self._check_stop()

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._run is not None:  # fit's validation (not an evaluate() of its own).
            self._run.validation_begin()

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._run is not None:
            self._run.validation_end(logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        self._epoch_base = self.loop.loop_step
        self._run.epoch_end(self._metrics(logs), logs)
        self._check_stop()

    def on_train_end(self, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        self._run.end(self._metrics(logs) if logs else None, logs)
        self._run = None

    def _check_stop(self) -> None:
        if self._run.stop_requested:
            self._model.stop_training = True
