"""Keras interoperability, both ways, and the run-session API of external drivers.

A mixin of `Loop`: `add_keras_callback` drives a Keras callback from the loop's runs
(loop/_keras_bridge.py, through the loop's public event API); `as_keras_callback` and
`begin_external_run` let another loop (`model.fit`) drive this loop's hooks. An
`ExternalRun` reports the driver's steps: it fires the `on_step` hooks on schedule and
keeps `loop_step`, `end_step`, `epoch` and `train_step_durations` as a run of the loop
does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from keras_trainloop.loop._run_parts import VAL_LOGS_KEY, check_count

if TYPE_CHECKING:
    import keras

    from keras_trainloop.loop._keras_bridge import LoopCallback
    from keras_trainloop.loop._loop import Loop


class KerasInterop:
    """Keras callbacks driven by a `Loop`, and a `Loop` driven from outside (see `Loop`)."""

    def add_keras_callback(self, callback: keras.callbacks.Callback, priority: float = 0) -> None:
        """Drives a `keras.callbacks.Callback` from this loop's runs, as `model.fit` would.

        The callback's model is `trainer.model`: the user's own `keras.Model`
        when one was given as `model_fn` (so `ModelCheckpoint` with a
        `.keras` path, `OrbaxCheckpoint`, `TensorBoard`'s model summary work
        as after `fit`), else the `FnModel` (weights only:
        `save_weights_only=True`). The model is built before
        `on_train_begin` (the run reads its first batch early for that).

        At the start of a run the callback gets `set_model`, `set_params`
        (`verbose=1`, `epochs`, and `steps`: per epoch from `len(ds)` when the
        dataset has a length, the run's steps in `run_steps`) and
        `on_train_begin`; `run_epochs` calls `on_epoch_begin` /
        `on_epoch_end` (after the epoch's validation); every step calls
        `on_train_batch_begin` / `on_train_batch_end` with the batch index
        within the epoch (within the run for `run_steps`); the end of the run
        calls `on_train_end` with the last epoch's logs. Each event has one
        logs dict (`loop.logs`), shared by all callbacks in priority order,
        with `fit`'s names: `"loss"` the epoch's running mean, metrics under
        Keras' names, `val_*`, plus the GoMLX values under their short names
        (`"batch_loss"`, `"~loss"`, ...); what a callback writes there
        (`ReduceLROnPlateau`'s `"learning_rate"`) reaches the callbacks after
        it and `loop.history`. Before epoch-end and train-end events the
        trained state is written into the Keras variables, so a callback
        holding the model by reference reads current weights; what it writes
        there is used by the next step. Setting `model.stop_training = True`
        stops the loop gracefully (see `stop`). A `BackupAndRestore` resumes
        `run_epochs` at the epoch it recorded (`loop.initial_epoch`). A
        validation calls `on_test_begin` before and `on_test_end` (with the
        results, no `val_` prefix) after it, for callbacks that override
        them (`SwapEMAWeights` evaluates the EMA weights so, as in `fit`); no
        per-batch test events are sent.

        Per-step logs are built, which copies the metrics to the host, only
        for callbacks that override the batch hooks (they also make every
        step its own compiled call); other callbacks cost nothing per step.
        `run_steps` fires no epoch events: callbacks that act at epoch end
        (CSVLogger, EarlyStopping) need `run_epochs`.

        `keras.callbacks.TerminateOnNaN` works as under `fit`: at the step whose
        batch loss is NaN or Inf, `"loss"` in the logs turns NaN or Inf, and the
        callback stops the run gracefully (the epoch ends, validation and the
        on_end hooks run; no error, as `fit` returns) or, with
        `raise_error=True`, raises (a `ktl.HookError`, a `RuntimeError`; the
        on_end hooks do not run). Without a hook that stops the run on it, the
        loop raises `ktl.NonFiniteLossError` naming the first bad step.

        Args:
            callback: any `keras.callbacks.Callback`.
            priority: the priority of all its hooks.

        Raises:
            TypeError: `callback` is not a Keras callback, or the loop has no trainer.
            ValueError: `priority` is NaN.

        Example:
            loop.add_keras_callback(keras.callbacks.CSVLogger("log.csv"))
            loop.add_keras_callback(keras.callbacks.EarlyStopping(patience=2))  # val_loss
            loop.run_epochs(ds, 20, validation_data=val_ds)
            loop.history.history["val_loss"]
        """
        from keras_trainloop.loop._keras_bridge import add_keras_callback

        add_keras_callback(self, callback, priority)

    def as_keras_callback(self) -> LoopCallback:
        """Returns a `keras.callbacks.Callback` that fires this loop's hooks from `model.fit`.

        In `fit`, `loop_step` starts at the model's `optimizer.iterations`
        and counts batches across epochs; `on_start` hooks get `ds=None`;
        `on_step`, `on_epoch_end` and `on_end` hooks get `[logs["loss"],
        *other logs]` (Keras' running values, Python floats) and
        `loop.logs(metrics)` is `fit`'s own logs dict of the event; the epoch
        and validation hooks fire at fit's epochs and validations (with
        `ds=None`); `epoch` follows Keras' epoch; `loop.stop()` sets `model.stop_training`. Schedules are exact
        with `steps_per_execution=1` (with k > 1 Keras calls back once per k
        batches, and `loop_step` jumps by k).

        Example:
            loop = ktl.Loop(None)
            ktl.every_n_steps(loop, 100, "log", 0, log_fn)
            model.fit(x, y, epochs=3, callbacks=[loop.as_keras_callback()])
        """
        from keras_trainloop.loop._keras_bridge import LoopCallback

        return LoopCallback(self)

    def begin_external_run(self, start_step: int, end_step: int = -1) -> ExternalRun:
        """Starts a run whose steps happen elsewhere (e.g. `model.fit`); fires `on_start`.

        The run-session API for drivers such as `as_keras_callback`: the
        returned `ExternalRun` reports each step (`run.step(step, metrics)`,
        which fires the `on_step` hooks on schedule), epochs
        (`run.epoch_begin(epoch)`, `run.epoch_end(metrics)`, which fire the
        epoch hooks; `run.set_epoch(epoch)` only sets it), validations
        (`run.validation_begin()`, `run.validation_end(logs)`) and the end
        (`run.end(metrics)`, which fires `on_end`). Each may pass the driver's
        own logs dict (`logs=`): `loop.logs(metrics)` then returns that dict. `loop_step`, `start_step`, `end_step`, `epoch` and
        `train_step_durations` follow it as in `run_steps`; `stop()` sets
        `run.stop_requested`. `on_start` hooks get `ds=None`.

        Args:
            start_step: the global step of the run's first step.
            end_step: one past its last step; -1 while unknown.
        """
        check_count("start_step", start_step, "begin_external_run")
        self.loop_step = self.start_step = start_step
        self.end_step = end_step
        self.epoch = 0
        self.epochs = 0
        self.train_step_durations = []
        self._stop_requested = False
        self._event_logs = None
        run = ExternalRun(self)
        if self._on_start.hooks:
            self._on_start.fire(self, None)
        return run


class ExternalRun:
    """A run driven from outside the loop (see `Loop.begin_external_run`)."""

    def __init__(self, loop: Loop):
        self.loop = loop
        self._last_time = time.perf_counter()
        self._metrics: list = []

    @property
    def stop_requested(self) -> bool:
        """Whether a hook called `loop.stop()`."""
        return self.loop._stop_requested

    def set_epoch(self, epoch: int) -> None:
        """The epoch now running (for hooks reading `loop.epoch`)."""
        self.loop.epoch = epoch

    def epoch_begin(self, epoch: int) -> None:
        """Epoch `epoch` begins: sets it and fires the `on_epoch_begin` hooks."""
        loop = self.loop
        loop.epoch = epoch
        if loop._on_epoch_begin.hooks:
            loop._event_logs = None
            loop._on_epoch_begin.fire(loop, epoch)

    def epoch_end(self, metrics: list, logs: dict | None = None) -> None:
        """The epoch ended with `metrics` (and the driver's `logs`): fires `on_epoch_end`."""
        loop = self.loop
        if loop._on_epoch_end.hooks:
            loop._event_logs = logs
            loop._on_epoch_end.fire(loop, metrics)
        loop.epoch += 1

    def validation_begin(self) -> None:
        """A validation begins: fires the `on_validation_begin` hooks (with `ds=None`)."""
        loop = self.loop
        if loop._on_validation_begin.hooks:
            loop._event_logs = None
            loop._on_validation_begin.fire(loop, None)

    def validation_end(self, logs: dict) -> None:
        """A validation ended with `logs` (no `val_` prefix): fires `on_validation_end`.

        Its values become `loop.shared_data["val_logs"]` (`val_` prefixed).
        """
        loop = self.loop
        if loop._on_validation_end.hooks:
            loop._on_validation_end.fire(loop, dict(logs))
        loop.shared_data[VAL_LOGS_KEY] = {f"val_{name}": value for name, value in logs.items()}

    def step(self, step: int, metrics: list, logs: dict | None = None) -> None:
        """Step `step` ran with `metrics`: fires the `on_step` hooks due, then advances."""
        loop = self.loop
        loop.loop_step = step
        self._metrics = metrics
        if loop._on_step.hooks:
            loop._event_logs = logs
            loop._on_step.fire(loop, metrics)
        now = time.perf_counter()
        loop.train_step_durations.append(now - self._last_time)
        self._last_time = now
        loop.loop_step = step + 1

    def end(self, metrics: list | None = None, logs: dict | None = None) -> None:
        """The run ended: fires the `on_end` hooks with `metrics` (default: the last step's)."""
        loop = self.loop
        loop.end_step = loop.loop_step
        loop._event_logs = logs
        if loop._on_end.hooks:
            loop._on_end.fire(loop, self._metrics if metrics is None else metrics)
