"""Keras callbacks both ways: driven by a Loop, and a Loop driven by `model.fit`."""

from __future__ import annotations

import time
from typing import Any

import jax
import keras
import numpy as np

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


class _LogsCache:
    """Builds a step's Keras logs once for all the Keras callbacks of a loop."""

    def __init__(self):
        self._metrics: Any = None
        self._logs: dict[str, float] = {}

    def logs(self, loop: Any, metrics: list) -> dict[str, float]:
        if metrics is self._metrics:
            return dict(self._logs)
        logs: dict[str, float] = {}
        if metrics:
            values = jax.device_get(list(metrics))  # one transfer for all the values
            metric_objects = getattr(loop.trainer, "train_metrics", None) or []
            names = [getattr(m, "short_name", None) or getattr(m, "name", None)
                     for m in metric_objects]
            names += [f"metric_{i}" for i in range(len(names), len(values))]
            loss = np.asarray(values[0])
            if loss.size == 1:
                logs["loss"] = float(loss.reshape(()))
            for name, value in zip(names, values):
                value = np.asarray(value)
                if value.size == 1 and name not in logs:
                    logs[name] = float(value.reshape(()))
        self._metrics, self._logs = metrics, logs
        return dict(logs)


def add_keras_callback(loop: Any, callback: Any, priority: float) -> None:
    """Registers the hooks that drive `callback` from `loop` (see `Loop.add_keras_callback`)."""
    if not isinstance(callback, _Callback):
        raise TypeError(
            "add_keras_callback() expects a keras.callbacks.Callback. "
            f"Received: callback={callback!r}."
        )
    if loop.trainer is None:
        raise TypeError(
            "add_keras_callback() needs a loop with a trainer (the callback's model is "
            "trainer.model). Received: a Loop created with trainer=None. Fix: ktl.Loop(trainer)."
        )
    cache = getattr(loop, "_keras_logs_cache", None)
    if cache is None:
        cache = loop._keras_logs_cache = _LogsCache()
    _KerasDriver(callback, cache).register(loop, priority)


class _KerasDriver:
    """The hooks that call one Keras callback from a Loop."""

    def __init__(self, callback: Any, cache: _LogsCache):
        self.callback = callback
        self.cache = cache
        self.model: Any = None
        self.epoch_start = 0

    def register(self, loop: Any, priority: float) -> None:
        cb = self.callback
        name = f"KerasCallback({type(cb).__name__})"
        loop.on_start(name, priority, self.on_start)
        loop._on_epoch_begin.add(name, priority, self.on_epoch_begin)
        loop._on_epoch_end.add(name, priority, self.on_epoch_end)
        if _overrides(cb, "on_train_batch_begin", "on_batch_begin"):
            loop._on_batch_begin.add(name, priority, self.on_batch_begin)
        if _overrides(cb, "on_train_batch_end", "on_batch_end"):
            loop.on_step(name, priority, self.on_batch_end)
        loop.on_end(name, priority, self.on_end)

    def _check_stop(self, loop: Any) -> None:
        if getattr(self.model, "stop_training", False):
            loop.stop()

    def on_start(self, loop: Any, ds: Any) -> None:
        self.model = loop.trainer.model
        self.model.stop_training = False
        self.epoch_start = loop.loop_step
        epochs = loop._epochs
        self.callback.set_model(self.model)
        self.callback.set_params({
            "verbose": 0,
            "epochs": epochs or 1,
            "steps": None if epochs else loop.end_step - loop.start_step,
        })
        self.callback.on_train_begin({})
        self._check_stop(loop)

    def on_epoch_begin(self, loop: Any, epoch: int) -> None:
        self.epoch_start = loop.loop_step
        self.callback.on_epoch_begin(epoch, {})
        self._check_stop(loop)

    def on_batch_begin(self, loop: Any, step: int) -> None:
        self.callback.on_train_batch_begin(step - self.epoch_start)
        self._check_stop(loop)

    def on_batch_end(self, loop: Any, metrics: list) -> None:
        logs = self.cache.logs(loop, metrics)
        self.callback.on_train_batch_end(loop.loop_step - self.epoch_start, logs)
        self._check_stop(loop)

    def on_epoch_end(self, loop: Any, metrics: list) -> None:
        self.callback.on_epoch_end(loop.epoch, self.cache.logs(loop, metrics))
        self._check_stop(loop)

    def on_end(self, loop: Any, metrics: list) -> None:
        self.callback.on_train_end(self.cache.logs(loop, metrics))


class LoopCallback(_Callback):
    """A Keras callback that fires a Loop's hooks from `model.fit` (see `Loop.as_keras_callback`).

    Args:
        loop: the `ktl.Loop` whose hooks to fire.
    """

    def __init__(self, loop: Any):
        super().__init__()
        self.loop = loop
        self._epoch_base = 0
        self._metrics: list = []
        self._names: list[str] = []
        self._last_time = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        loop = self.loop
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        loop.loop_step = int(np.asarray(iterations)) if iterations is not None else 0
        loop.start_step = loop.loop_step
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        loop.end_step = loop.start_step + epochs * steps if epochs and steps else -1
        loop.epoch = 0
        loop.train_step_durations = []
        loop._stop_requested = False
        self._epoch_base = loop.loop_step
        self._metrics = []
        if loop._on_start.hooks:
            loop._on_start.fire(loop, None)
        self._check_stop()
        self._last_time = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.loop.epoch = epoch
        self._epoch_base = self.loop.loop_step

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loop = self.loop
        loop.loop_step = step = self._epoch_base + batch
        logs = logs or {}
        metrics = [logs["loss"]] if "loss" in logs else []
        metrics += [value for key, value in logs.items() if key != "loss"]
        self._metrics = metrics
        if len(metrics) != len(self._names):  # Names of the values, for plugins.
            self._names = (["loss"] if "loss" in logs else []) + [k for k in logs if k != "loss"]
            loop.shared_data[LOG_NAMES_KEY] = self._names
        if loop._on_step.hooks:
            loop._on_step.fire(loop, metrics)
        now = time.perf_counter()
        loop.train_step_durations.append(now - self._last_time)
        self._last_time = now
        loop.loop_step = step + 1
        self._check_stop()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_base = self.loop.loop_step
        self.loop.epoch = epoch + 1

    def on_train_end(self, logs: dict | None = None) -> None:
        loop = self.loop
        loop.end_step = loop.loop_step
        if loop._on_end.hooks:
            loop._on_end.fire(loop, self._metrics)

    def _check_stop(self) -> None:
        if self.loop._stop_requested:
            self._model.stop_training = True
