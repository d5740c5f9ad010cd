"""Loop: GoMLX's training loop with prioritized named hooks."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax

from keras_trainloop.data import Dataset, maybe_prefetch_to_device
from keras_trainloop.loop._errors import NonFiniteLossError
from keras_trainloop.loop._fusion_gate import FusionGate
from keras_trainloop.loop._hooks import HookCost, HookList
from keras_trainloop.loop._loss_watch import LossWatch, PendingCall, batch_size_of
from keras_trainloop.loop._plan import Plan, check_max_fused_steps, fusable_steps, make_plan
from keras_trainloop.loop._run_parts import (
    FirstBatch,
    check_validation,
    new_history,
    validation_due,
)

SYNC_EVERY = 16
"""The loop waits on the device at least once every this many steps (and at the end)."""

MAX_FUSED_STEPS = 8
"""Default and largest `max_fused_steps`: at most this many steps run in one compiled call.
A call's losses are checked after the next call is dispatched, so with two calls in flight
a NaN surfaces at most `SYNC_EVERY - 1` steps late."""

_NO_SPEC = object()  # No batch read yet: fusion waits for the gate's probe.

VAL_LOGS_KEY = "val_logs"
"""`loop.shared_data` key: the last validation's logs (`{"val_loss": ..., ...}`)."""

OnStartFn = Callable[["Loop", Any], None]
OnStepFn = Callable[["Loop", list], None]
OnEndFn = OnStepFn


def _check_count(name: str, value: Any, method: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"loop.{method}() expects a non-negative int {name}. Received: {name}={value!r}."
        )
    return value


def _check_dataset(ds: Any, method: str) -> None:
    if not callable(getattr(ds, "yield_batch", None)) or not callable(getattr(ds, "reset", None)):
        raise TypeError(
            f"loop.{method}() expects a dataset with yield_batch() and reset() (ktl.Dataset). "
            f"Received: ds={ds!r}. Fix: wrap arrays in ktl.ArrayDataset or a tf.data pipeline "
            "in ktl.TFDataset."
        )


def _dataset_name(ds: Any) -> str:
    return str(getattr(ds, "name", type(ds).__name__))


class Loop:
    """Runs `trainer.train_step` over a dataset and calls hooks by priority.

    The loop itself only counts steps; hooks attach everything else (progress
    bars, evaluation, checkpoints, plots, early stopping). Hooks of each event
    run lowest priority first, equal priorities in registration order.

    The public attributes are for reading; only the loop changes them.

    Attributes:
        trainer: the Trainer this loop drives (None for a loop used only as
            a Keras callback, see `as_keras_callback`).
        loop_step: the step being run; inside `on_step` hooks, the step that
            just finished. It starts at `trainer.global_step` (0 for a new
            model), so a loop on a restored model resumes its step count.
            After an aborted run it counts the steps trained: after a
            `HookError` of an `on_step` hook at step k it is k + 1, after a
            `NonFiniteLossError` it is one past the last step trained (the
            error's `detected_at + 1`: the steps up to there took their updates).
        start_step: `loop_step` at the start of the current (or last) run.
        end_step: one past the last step of the run; -1 while unknown (the
            first epoch of `run_epochs`). At `on_end`, `loop_step == end_step`.
        epoch: the epoch being run by `run_epochs`, from 0; after the run, one
            past the last epoch that ran (`epochs` when all ran).
        shared_data: a dict for hooks and plugins to exchange values.
        train_step_durations: seconds per step of the current (or last) run:
            the time between the ends of consecutive steps (reading the
            batch, dispatching the step, its hooks, and the device time the
            loop waited for). The first one includes compilation. The steps
            of a fused call each get the call's time divided by its steps.
        max_fused_steps: see the argument; may be changed between runs.
        epochs: the epochs asked of the current (or last) `run_epochs`; 0 in
            `run_steps`.
        initial_epoch: the epoch `run_epochs` starts at: 0, unless an
            `on_start` hook sets it to resume (as `fit(initial_epoch=...)`).
        history: a `keras.callbacks.History` of the current (or last) run, as
            `fit` returns it: one entry per epoch (`run_epochs`), or per
            validation (`run_steps`; one at its end without validation), with
            the epoch's logs (`loop.logs`), `val_*` included.

    Keras-shaped runs: `run_steps` / `run_epochs` take `validation_data`
    (evaluated with `trainer.eval`, results as `val_<name>`); `loop.logs`
    gives any hook the event's logs with `fit`'s names; `add_keras_callback`
    drives Keras callbacks as `fit` does, through the public event API
    (`on_epoch_begin`, `on_epoch_end`, `on_batch_begin`, `logs`,
    `request_built_model`, `initial_epoch`), which any bridge may use;
    `begin_external_run` lets another loop (`model.fit`, see
    `as_keras_callback`) drive this loop's hooks. `run_epochs` restarts the
    train metrics at each epoch, as `fit` does.

    Device synchronization: metrics returned by the Trainer stay on the
    device, and the loop does not wait for a step to finish before starting
    the next one, except every `SYNC_EVERY` (16) steps and at the end of a
    run. There it also checks the batch losses of the steps since the last
    wait (one small dispatch), so a NaN or Inf batch loss raises
    `NonFiniteLossError`, naming the first bad step, up to 16 steps after it.
    The steps in between were trained (their hooks saw the non-finite values,
    and the weights took their updates): keep a checkpoint to go back to.

    Fused steps: when no hook needs every step, the loop runs several steps
    in one compiled call (`trainer.train_steps`, a `lax.scan` over stacked
    batches) and ends each call exactly at the next step where a hook may
    fire, so hooks fire at the same steps and see the same metrics as with
    one call per step. A call runs a power of two of steps, at most
    `max_fused_steps`, so few functions are compiled. It needs a dataset
    with `yield_batches(n)` (`ktl.ArrayDataset` and `ktl.TFDataset` have
    it) and a trainer with `train_steps` (one process:
    `trainer.can_fuse_steps`); otherwise, and while a
    hook without a schedule (`on_step(..., schedule=None)`) or a Keras
    callback with batch hooks is registered, each step is its own call.
    Hooks registered by `ktl.every_n_steps` and the other schedule helpers
    carry their schedule; time-based ones (`periodic_callback`, the progress
    bar) limit how long a call may take. `loop.plan(steps)` shows the steps
    at which the hooks fire and the calls, before running anything.

    Args:
        trainer: a `ktl.Trainer` (or an object with the same `train_step`,
            `global_step` and `reset_train_metrics`), or None.
        max_fused_steps: the most steps run in one compiled call, a power of
            two from 1 (off) to `MAX_FUSED_STEPS` (8, the default).
        measure_fusion: True (the default): for each dataset spec, the first
            calls are timed (5 single steps, then 5 fused calls of 2 steps,
            each waited on) and fused calls are kept only if a fused step
            costs no more than a single one; a step whose host dispatch is
            under 5% of its time (compute-bound) is decided against fusion
            after the single steps, with no fused compile (see
            `loop/_fusion_gate.py`, `fusion_decisions`). The decision holds
            for this loop's later runs. False: fuse without measuring.

    Example:
        loop = ktl.Loop(trainer)
        loop.on_step("print", 0, lambda loop, metrics: print(loop.loop_step, float(metrics[0])))
        ktl.every_n_steps(loop, 100, "eval", 10, lambda loop, metrics: trainer.eval(test_ds))
        metrics = loop.run_epochs(train_ds, 3)
    """

    def __init__(
        self, trainer: Any, *, max_fused_steps: int = MAX_FUSED_STEPS,
        measure_fusion: bool = True,
    ):
        if trainer is not None and not callable(getattr(trainer, "train_step", None)):
            raise TypeError(
                "Loop expects a ktl.Trainer (or None for a loop used only as a Keras callback). "
                f"Received: trainer={trainer!r}."
            )
        self.max_fused_steps = max_fused_steps
        self.trainer = trainer
        self.loop_step: int = int(trainer.global_step) if trainer is not None else 0
        self.start_step: int = self.loop_step
        self.end_step: int = -1
        self.epoch: int = 0
        self.epochs: int = 0
        self.initial_epoch: int = 0
        self.shared_data: dict[str, Any] = {}
        self.train_step_durations: list[float] = []
        self.history = new_history(None)
        self._on_start = HookList("OnStart", "fn(loop, ds)")
        self._on_step = HookList("OnStep", "fn(loop, metrics)")
        self._on_end = HookList("OnEnd", "fn(loop, metrics)")
        self._on_epoch_begin = HookList("OnEpochBegin", "fn(loop, epoch)")
        self._on_epoch_end = HookList("OnEpochEnd", "fn(loop, metrics)")
        self._on_batch_begin = HookList("OnBatchBegin", "fn(loop, step)")
        self._on_validation_begin = HookList("OnValidationBegin", "fn(loop, ds)")
        self._on_validation_end = HookList("OnValidationEnd", "fn(loop, logs)")
        self._stop_requested = False
        self._running = False
        self._build_model_first = False
        self._countdown = SYNC_EVERY
        self._losses = LossWatch()  # Batch losses not yet read: NaN check, running mean.
        self._event_logs: dict[str, Any] | None = None  # The current event's Keras logs.
        self._val_logs: dict[str, Any] = {}  # The last validation's, while it is current.
        self._feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._step_seconds: float | None = None  # Last measured seconds per fused step.
        self._gate = FusionGate(enabled=bool(measure_fusion))
        self._last_spec: Any = _NO_SPEC  # The spec of the last batch trained on.

    @property
    def max_fused_steps(self) -> int:
        """The most steps run in one compiled call (1: one call per step)."""
        return self._max_fused_steps

    @max_fused_steps.setter
    def max_fused_steps(self, value: int) -> None:
        value = check_max_fused_steps(value)
        if value > MAX_FUSED_STEPS:
            raise ValueError(
                f"max_fused_steps may not exceed {MAX_FUSED_STEPS}: with two calls in flight, "
                f"a NaN loss must surface within SYNC_EVERY={SYNC_EVERY} steps. Received: "
                f"max_fused_steps={value}. Fix: pass a power of two up to {MAX_FUSED_STEPS}."
            )
        self._max_fused_steps = value

    # Hooks -------------------------------------------------------------------
    def on_start(self, name: str, priority: float, fn: OnStartFn) -> None:
        """Adds `fn(loop, ds)`, called at the start of each run, before the first step.

        Args:
            name: names the hook in error messages.
            priority: lower runs first; equal priorities run in registration order.
            fn: called with the loop and the dataset of the run (None when the
                loop runs as a Keras callback).

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, ds)`.
        """
        self._on_start.add(name, priority, fn)

    def on_step(self, name: str, priority: float, fn: OnStepFn, *, schedule: Any = None) -> None:
        """Adds `fn(loop, metrics)`, called after every train step, or when `schedule` says.

        `metrics` is the Trainer's list of device arrays for the step (batch
        loss first); reading a value (`float(metrics[0])`) waits for the
        device, so do it only when needed. `loop.loop_step` is the step that
        just ran.

        With a `schedule` (a `ktl.loop.Schedule`, e.g.
        `ktl.loop.EveryNSteps(100)`) `fn` is called only after the steps where
        `schedule.due(loop)` holds, and the steps in between may run fused
        (see the class docs). Without one, every step is its own compiled call
        while the hook is registered.

        Raises:
            TypeError: bad name or priority, `fn` cannot be called as
                `fn(loop, metrics)`, or `schedule` is not a schedule.
        """
        self._on_step.add(name, priority, fn, schedule)

    def on_end(self, name: str, priority: float, fn: OnEndFn) -> None:
        """Adds `fn(loop, metrics)`, called after the last step of each run.

        `metrics` are the last step's (an empty list when no step ran, e.g.
        `stop()` was called by an `on_start` hook). They do not run when the
        run is aborted by an exception.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as
                `fn(loop, metrics)`.
        """
        self._on_end.add(name, priority, fn)

    def on_epoch_begin(self, name: str, priority: float, fn: Callable[[Loop, int], None]) -> None:
        """Adds `fn(loop, epoch)`, called by `run_epochs` before each epoch's first step.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, epoch)`.
        """
        self._on_epoch_begin.add(name, priority, fn)

    def on_epoch_end(self, name: str, priority: float, fn: OnStepFn) -> None:
        """Adds `fn(loop, metrics)`, called by `run_epochs` after each epoch.

        It runs after the epoch's validation (`loop.logs(metrics)` holds its
        `val_*` values) and after `ds.reset()`; `loop.epoch` is the epoch
        that ended.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, metrics)`.
        """
        self._on_epoch_end.add(name, priority, fn)

    def on_batch_begin(self, name: str, priority: float, fn: Callable[[Loop, int], None]) -> None:
        """Adds `fn(loop, step)`, called before every train step with the step about to run.

        While such a hook is registered every step is its own compiled call
        (no fused steps).

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, step)`.
        """
        self._on_batch_begin.add(name, priority, fn)

    def on_validation_begin(self, name: str, priority: float, fn: OnStartFn) -> None:
        """Adds `fn(loop, ds)`, called before each validation with its dataset.

        Reading `trainer.model` there syncs the trained state into the Keras
        variables; values written there (e.g. Keras' `SwapEMAWeights` putting
        the EMA weights in) are what the validation evaluates.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, ds)`.
        """
        self._on_validation_begin.add(name, priority, fn)

    def on_validation_end(
        self, name: str, priority: float, fn: Callable[[Loop, dict], None]
    ) -> None:
        """Adds `fn(loop, logs)`, called after each validation with its results.

        `logs` is `trainer.eval(..., return_dict=True)`: `{"loss": ...,
        "accuracy": ...}`, without the `val_` prefix (as Keras'
        `on_test_end` gets them). The trainer's next step uses the Keras
        variables' values if the hook read `trainer.model` (to undo what an
        `on_validation_begin` hook wrote, for example).

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, logs)`.
        """
        self._on_validation_end.add(name, priority, fn)

    def request_built_model(self) -> None:
        """Asks that the model be built before the `on_start` hooks of every run.

        When the trainer's model has no variables yet, the run reads its
        first batch before the `on_start` hooks, builds the model on it
        (`trainer.build`) and trains on it as its first step. `fit` builds
        the model before `on_train_begin` too; Keras' `BackupAndRestore`
        needs it (`add_keras_callback` asks for it).
        """
        self._build_model_first = True

    def logs(self, metrics: list) -> dict[str, Any]:
        """The Keras-shaped logs of the current event, one dict shared by all its hooks.

        Built on the first call of an event (a step, an epoch end, the end of
        a run) and returned as the same dict to every later caller of that
        event, so a hook that writes into it (a Keras callback setting
        `logs["learning_rate"]`) is seen by the hooks after it, as in `fit`.
        The values are Python floats, named as `fit` names them: `"loss"` (the
        mean batch loss of the epoch so far, or of the run in `run_steps`,
        weighted by batch size), each train metric under its Keras name
        (`"accuracy"`), and after a validation `val_<name>` for each eval
        value; the GoMLX values are there under their short names too
        (`"batch_loss"`, `"~loss+"`, `"~loss"`, ...). Reading them waits for
        the device (and checks the pending batch losses for NaN).

        Args:
            metrics: the metrics the hook received.
        """
        logs = self._event_logs
        if logs is None:
            logs = self._event_logs = self._build_logs(metrics)
        return logs

    def stop(self) -> None:
        """Asks the current run to end gracefully after the current step.

        Callable from any hook (or another thread): the step in progress and
        its remaining `on_step` hooks complete, then the `on_end` hooks run
        and `run_steps` / `run_epochs` return normally. Called from an
        `on_start` hook, no step runs. The request is forgotten when the next
        run starts.
        """
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether `stop()` was called during the current run."""
        return self._stop_requested

    # Running -----------------------------------------------------------------
    def run_steps(
        self, ds: Any, steps: int, *, validation_data: Any = None,
        validation_freq: int | None = None,
    ) -> list:
        """Trains for `steps` steps, continuing from `loop_step`.

        Sets `start_step = loop_step` and `end_step = loop_step + steps`,
        resets the train metrics, runs the `on_start` hooks, then the steps,
        then the `on_end` hooks. The dataset is not reset.

        Args:
            ds: a `ktl.Dataset`; it must not end before `steps` batches
                (use one that loops forever, or `run_epochs`).
            steps: how many steps; 0 does nothing (no hook runs).
            validation_data: a finite `ktl.Dataset` evaluated with
                `trainer.eval` every `validation_freq` steps and at the end of
                the run; its values are `val_<name>` in `loop.logs`, the
                progress bar, `loop.shared_data["val_logs"]` and `loop.history`.
            validation_freq: validate after the steps where
                `(loop_step + 1) % validation_freq == 0` (aligned with
                `every_n_steps`, so it holds across resumes); None: only at the
                end of the run.

        `loop.history` gets one entry per validation (and one at the end of a
        run without `validation_data`), indexed by the steps trained so far.

        Returns:
            The last step's metrics (a list of device arrays), or `[]` when
            no step ran.

        Raises:
            ValueError: `steps` is negative, a bad validation argument, or the
                dataset ended early (the message says after how many steps).
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_steps(ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True), 1000,
                           validation_data=ktl.ArrayDataset(x_val, y_val, batch_size=256),
                           validation_freq=200)
        """
        _check_count("steps", steps, "run_steps")
        self._require_trainer("run_steps")
        _check_dataset(ds, "run_steps")
        check_validation(validation_data, validation_freq, "run_steps")
        if steps == 0:
            return []
        feed = self._device_feed(ds)
        with self._run():
            feed = self._begin(ds, feed, end_step=self.loop_step + steps, epochs=0)
            metrics: list = []
            end = self.end_step
            while self.loop_step != end and not self._stop_requested:
                limit = end
                if validation_data is not None and validation_freq is not None:
                    limit = min(end, (self.loop_step // validation_freq + 1) * validation_freq)
                metrics, ended = self._steps(feed, limit, metrics)
                if ended:
                    done = self.loop_step - self.start_step
                    raise ValueError(
                        f"Dataset {_dataset_name(ds)!r} ended after {done} steps, before the "
                        f"requested {steps}. Received: steps={steps}. Fix: use "
                        "loop.run_epochs(ds, epochs) for a finite dataset, or a dataset that "
                        "loops forever (e.g. ktl.ArrayDataset(..., loop_forever=True))."
                    )
                if self.loop_step == limit and limit != end and not self._stop_requested:
                    self._flush_losses(metrics)
                    self._validate(validation_data)
                    self._record_history(self.loop_step, metrics)
                    self._val_logs = {}
            if self.loop_step != self.start_step:
                self._flush_losses(metrics)
                if validation_data is not None:
                    self._validate(validation_data)
                self._record_history(self.loop_step, metrics)
            return self._finish(metrics, keep_logs=True)

    def run_epochs(
        self, ds: Any, epochs: int, *, validation_data: Any = None, validation_freq: Any = 1,
    ) -> list:
        """Trains for `epochs` passes over a finite dataset, continuing from `loop_step`.

        `end_step` is -1 during the first epoch; at the end of each epoch it
        is extrapolated from that epoch's length. `ds.reset()` is called after
        every epoch, including the last (and one cut short by `stop()`).

        As in `fit`, each epoch starts its train metrics and the running mean
        `"loss"` of `loop.logs` over; after an epoch (and its validation) the
        `on_epoch_end` hooks run, then `loop.history` gets the epoch's logs.
        An `on_start` hook may set `loop.initial_epoch` (Keras'
        `BackupAndRestore` does, through `add_keras_callback`): the run then
        resumes at that epoch, as `fit(initial_epoch=...)`.

        Args:
            ds: a finite `ktl.Dataset` (it signals its end with `EOFError`).
            epochs: how many epochs; 0 does nothing (no hook runs).
            validation_data: a finite `ktl.Dataset` evaluated with
                `trainer.eval` after the epochs `validation_freq` selects;
                its values are `val_<name>` in the epoch-end logs, the
                progress bar, `loop.shared_data["val_logs"]` and `loop.history`.
            validation_freq: an int n: after every n-th epoch (`(epoch + 1) %
                n == 0`); or a list of the epochs (counted from 1) to validate
                after, as in `fit`.

        Returns:
            The last step's metrics (a list of device arrays), or `[]` when
            no step ran.

        Raises:
            ValueError: `epochs` is negative, a bad validation argument, an
                epoch yielded no batch, or `initial_epoch` is out of range.
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=32, shuffle=True), 5,
                            validation_data=ktl.ArrayDataset(x_val, y_val, batch_size=256))
        """
        _check_count("epochs", epochs, "run_epochs")
        self._require_trainer("run_epochs")
        _check_dataset(ds, "run_epochs")
        check_validation(validation_data, validation_freq, "run_epochs")
        if epochs == 0:
            return []
        feed = self._device_feed(ds)
        with self._run():
            feed = self._begin(ds, feed, end_step=-1, epochs=epochs)
            first_epoch = self._checked_initial_epoch(epochs)
            metrics: list = []
            logs_of_last_epoch = False
            for epoch in range(first_epoch, epochs):
                if self._stop_requested:
                    break
                self.epoch = epoch
                if epoch != first_epoch:  # The first epoch starts fresh from _begin.
                    self.trainer.reset_train_metrics()
                    self._losses.reset_mean()
                self._val_logs = {}
                if self._on_epoch_begin.hooks:
                    self._event_logs = None
                    self._on_epoch_begin.fire(self, epoch)
                epoch_start = self.loop_step
                metrics, ended = self._steps(feed, -1, metrics)
                yields = self.loop_step - epoch_start
                if ended and yields == 0:
                    raise ValueError(
                        f"Dataset {_dataset_name(ds)!r} yielded no batch in epoch {epoch} of "
                        f"run_epochs(ds, {epochs}). Fix: check that it is not empty and that "
                        "reset() starts a new pass."
                    )
                if ended:
                    self.end_step = self.loop_step + yields * (epochs - epoch - 1)
                feed.reset()
                self._flush_losses(metrics)  # The epoch's mean loss is complete.
                self._event_logs = None
                if validation_data is not None and validation_due(epoch, validation_freq):
                    self._validate(validation_data)
                if self._on_epoch_end.hooks:
                    self._on_epoch_end.fire(self, metrics)
                if metrics:
                    self._record_history(epoch, metrics)
                logs_of_last_epoch = True
                self.epoch = epoch + 1
            return self._finish(metrics, keep_logs=logs_of_last_epoch)

    def median_train_step_duration(self) -> float:
        """The median of `train_step_durations` in seconds; 0.001 when empty.

        With an even count it is the upper of the two middle values (a
        measured duration, as in GoMLX). `train_step_durations` is not changed.
        """
        durations = self.train_step_durations
        if not durations:
            return 0.001
        return sorted(durations)[len(durations) // 2]

    def plan(self, steps: int) -> Plan:
        """Lists the steps at which each hook would fire in `run_steps(ds, steps)`; runs nothing.

        The schedules are simulated on copies (the loop and its hooks are not
        changed), with the same rule the loop uses to size its fused calls, so
        the plan is what a run from the current `loop_step` does: hooks
        without a schedule fire at every step; time-based schedules list only
        the steps known now. Each hook also carries its measured cost so far,
        and `plan.report()` ranks the hooks by estimated cost in the run
        (calls times median duration).

        Args:
            steps: the run's length, >= 0.

        Returns:
            A `Plan`: `plan.hooks` (event, name, steps, cost), `plan.calls`
            (first step and steps of each compiled call, for a dataset with
            `yield_batches`; others run one step per call), `plan.steps_of(name)`,
            `plan.fires_at(step)`, `plan.report()`.

        Example:
            ktl.every_n_steps(loop, 100, "eval", 0, eval_fn)
            print(loop.plan(1000).steps_of("EveryNSteps(100): eval"))  # [99, 199, ..., 999]
            print(loop.plan(1000).report())
        """
        _check_count("steps", steps, "plan")
        fusable = (not self._on_batch_begin.hooks and self._trainer_can_fuse()
                   and not self._gate.dropped_fusion())
        cap = self._max_fused_steps if fusable else 1
        first_caps = self._gate.planned_caps() if fusable else []
        return make_plan(self, steps, self._on_step, self._on_end, cap, first_caps)

    def fusion_decisions(self) -> dict[Any, bool | None]:
        """Per dataset spec trained on: whether fused calls are kept (`measure_fusion`).

        True: fused calls measured at most as costly per step as single steps;
        False: slower, so this loop runs that spec one step per call; None:
        still measuring. Empty before any fused-capable run.
        """
        return self._gate.decisions()

    def hook_costs(self) -> dict[str, HookCost]:
        """Each hook's measured cost since the loop was created, by "Event: name".

        A `HookCost` has `calls`, `total` seconds and `median` seconds (of
        the last 1024 calls); a scheduled hook counts only the calls of its
        function. Hooks of one event with the same name are added together.
        """
        costs: dict[str, HookCost] = {}
        for hooks in (self._on_start, self._on_step, self._on_end):
            for hook in hooks.hooks:
                key = f"{hooks.kind}: {hook.name}"
                costs[key] = costs[key] + hook.cost if key in costs else hook.cost
        return costs

    # Keras interoperability ---------------------------------------------------
    def add_keras_callback(self, callback: Any, priority: float = 0) -> None:
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

        `keras.callbacks.TerminateOnNaN`: the loop's own check comes first: a
        NaN or Inf batch loss makes `"loss"` NaN in the logs (TerminateOnNaN
        prints its message and stops the run) and the run raises
        `ktl.NonFiniteLossError` naming the first bad step, as without the
        callback; with it, the NaN is noticed at the step it happens.

        Args:
            callback: any `keras.callbacks.Callback`.
            priority: the priority of all its hooks.

        Raises:
            TypeError: `callback` is not a Keras callback, or the loop has no trainer.

        Example:
            loop.add_keras_callback(keras.callbacks.CSVLogger("log.csv"))
            loop.add_keras_callback(keras.callbacks.EarlyStopping(patience=2))  # val_loss
            loop.run_epochs(ds, 20, validation_data=val_ds)
            loop.history.history["val_loss"]
        """
        from keras_trainloop.loop._keras_bridge import add_keras_callback

        add_keras_callback(self, callback, priority)

    def as_keras_callback(self) -> Any:
        """Returns a `keras.callbacks.Callback` that fires this loop's hooks from `model.fit`.

        In `fit`, `loop_step` starts at the model's `optimizer.iterations`
        and counts batches across epochs; `on_start` hooks get `ds=None`;
        `on_step` and `on_end` hooks get `[logs["loss"], *other logs]`
        (Keras' running values, Python floats); `epoch` follows Keras'
        epoch; `loop.stop()` sets `model.stop_training`. Schedules are exact
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
        (`run.set_epoch(epoch)`) and the end (`run.end(metrics)`, which fires
        `on_end`). `loop_step`, `start_step`, `end_step`, `epoch` and
        `train_step_durations` follow it as in `run_steps`; `stop()` sets
        `run.stop_requested`. `on_start` hooks get `ds=None`.

        Args:
            start_step: the global step of the run's first step.
            end_step: one past its last step; -1 while unknown.
        """
        _check_count("start_step", start_step, "begin_external_run")
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

    # Internals ---------------------------------------------------------------
    def _require_trainer(self, method: str) -> None:
        if self.trainer is None:
            raise ValueError(
                f"loop.{method}() needs a trainer. Received: a Loop created with trainer=None "
                "(usable only through loop.as_keras_callback()). Fix: create it as "
                "ktl.Loop(trainer)."
            )

    @contextlib.contextmanager
    def _run(self) -> Iterator[None]:
        """Marks the loop as running; a nested run (from a hook) is an error."""
        if self._running:
            raise RuntimeError(
                "This loop is already running: run_steps/run_epochs cannot be called from one "
                f"of its hooks. Received: a nested call at loop step {self.loop_step}. Fix: "
                "call loop.stop() in the hook and start the next run after it returns."
            )
        self._running = True
        try:
            yield
        finally:
            self._running = False

    def _device_feed(self, ds: Any) -> Any:
        """The dataset read by the steps: `ds`, prefetched to the device off the CPU backend.

        One prefetcher per dataset is kept, so batches read ahead at the end of
        one run are the first of the next (see `maybe_prefetch_to_device`).
        """
        if not isinstance(ds, Dataset) or self._can_fuse(ds):
            return ds  # Fused calls put each stacked chunk on the device in one transfer.
        try:
            feed = self._feeds.get(ds)
        except TypeError:  # Not hashable or weak-referenceable: no caching.
            return maybe_prefetch_to_device(ds)
        if feed is None:
            feed = maybe_prefetch_to_device(ds)
            self._feeds[ds] = feed
        return feed

    def _begin(self, ds: Any, feed: Any, end_step: int, epochs: int) -> Any:
        """Starts a run: resets metrics and flags, then fires the on_start hooks.

        Returns the dataset to read: `feed`, or, when the model must be built
        first (`request_built_model`), `feed` with its first batch read ahead.
        """
        trainer = self.trainer
        trainer.reset_train_metrics()
        self._losses.reset()
        self._stop_requested = False
        self._countdown = SYNC_EVERY
        self.epochs = epochs
        self.initial_epoch = 0
        self.start_step = self.loop_step
        self.end_step = end_step
        self.epoch = 0
        self.train_step_durations = []
        self.history = new_history(trainer)
        self._val_logs = {}
        self._event_logs = None
        self.shared_data.pop(VAL_LOGS_KEY, None)
        if self._build_model_first and not getattr(trainer, "built", True):
            feed = FirstBatch(feed)
            if feed.first is not None:
                trainer.build(*feed.first)
        if self._on_start.hooks:
            self._on_start.fire(self, ds)
        return feed

    def _checked_initial_epoch(self, epochs: int) -> int:
        """`initial_epoch` as set by the on_start hooks, checked against `epochs`."""
        initial = self.initial_epoch
        if isinstance(initial, bool) or not isinstance(initial, int) or not (
            0 <= initial <= epochs
        ):
            raise ValueError(
                f"loop.initial_epoch must be an int in [0, epochs={epochs}] (set by an "
                f"on_start hook to resume run_epochs). Received: initial_epoch={initial!r}."
            )
        self.epoch = initial
        return initial

    def _trainer_can_fuse(self) -> bool:
        trainer = self.trainer
        return (
            self._max_fused_steps > 1
            and callable(getattr(trainer, "train_steps", None))
            and bool(getattr(trainer, "can_fuse_steps", False))
        )

    def _can_fuse(self, ds: Any) -> bool:
        """Whether steps over `ds` may run fused (some may still run one by one)."""
        return callable(getattr(ds, "yield_batches", None)) and self._trainer_can_fuse()

    def _steps(self, ds: Any, limit: int, metrics: list) -> tuple[list, bool]:
        """Runs steps until `loop_step == limit` (-1: no limit), the data ends or a stop.

        With `_can_fuse(ds)`, several steps run in one compiled call wherever
        the hooks allow: each call ends at the next step where a hook may fire
        (see `fusable_steps`). A call's batch losses are checked once the next
        call (or step) has been dispatched, so the host prepares a call while
        the device runs the previous one; with calls of at most 8 steps a NaN
        surfaces at most 15 steps late. Other steps (a hook needs every step,
        the dataset cannot stack the next batches, or fusion is off) run one
        by one, their losses checked every `SYNC_EVERY` steps.

        Returns:
            The last metrics (`metrics` if no step ran) and whether the data
            ended (`EOFError`).
        """
        try:
            return self._run_steps_until(ds, limit, metrics)
        except NonFiniteLossError as e:
            self.loop_step = e.detected_at + 1  # The steps dispatched were trained.
            raise

    def _run_steps_until(self, ds: Any, limit: int, metrics: list) -> tuple[list, bool]:
        fuse = self._can_fuse(ds)
        yield_batch = ds.yield_batch
        yield_batches = ds.yield_batches if fuse else None
        trainer = self.trainer
        train_step = trainer.train_step
        on_step, on_batch_begin = self._on_step, self._on_batch_begin
        durations = self.train_step_durations
        perf_counter = time.perf_counter
        cap = self._max_fused_steps
        countdown = self._countdown
        step = self.loop_step
        losses = self._losses
        gate = self._gate
        probe = fuse and gate.enabled  # Fused calls wait for the gate's measurements.
        settled, settled_cap = object(), cap  # The last spec the gate decided, its cap.
        last = perf_counter()
        while step != limit and not self._stop_requested:
            self.loop_step = step
            n = 1
            batch = None
            start = last
            timing = probe and self._last_spec is not settled  # The gate may time this call.
            dispatch = None
            if fuse and not on_batch_begin.hooks:
                call_cap = cap
                if probe:
                    last_spec = self._last_spec
                    call_cap = settled_cap if last_spec is settled else gate.cap(last_spec, cap)
                n = fusable_steps(self, on_step, limit, call_cap, self._step_seconds)
                while n > 1:
                    batch = yield_batches(n)
                    if batch is not None:
                        break
                    n //= 2
            if batch is None:  # One step.
                try:
                    spec, inputs, labels = yield_batch()
                except EOFError:
                    self._countdown = countdown
                    return metrics, True
                if on_batch_begin.hooks:
                    self._event_logs = None
                    on_batch_begin.fire(self, step)
                if timing:
                    dispatch = perf_counter()
                    metrics = train_step(spec, inputs, labels)
                    dispatch = perf_counter() - dispatch  # The host's share (async dispatch).
                else:
                    metrics = train_step(spec, inputs, labels)
                if losses.call is not None:
                    losses.check_call(step)
                losses.add_step(metrics[0], batch_size_of(inputs, stacked=False))
                countdown -= 1
                if not countdown:
                    countdown = SYNC_EVERY
                    self._sync(metrics, step)
            else:  # n steps in one call.
                if losses.has_steps:  # Steps run one by one before: check them first.
                    self._sync(metrics, step - 1)
                spec = batch[0]
                metrics, batch_losses = trainer.train_steps(*batch)
                size = batch_size_of(batch[1], stacked=True)
                previous = losses.add_call(PendingCall(batch_losses, step, n, size))
                step += n - 1
                self.loop_step = step
                if previous is not None:
                    losses.check_call(step, previous)
                countdown = SYNC_EVERY
            if probe and spec is not settled:
                if gate.probing(spec):  # Timed: the call's whole cost, waited on.
                    jax.block_until_ready(metrics)
                    gate.record(spec, n, perf_counter() - start, dispatch)
                else:
                    settled, settled_cap = spec, gate.cap(spec, cap)
            self._last_spec = spec
            if on_step.hooks:
                self._event_logs = None
                try:
                    on_step.fire(self, metrics)
                except BaseException:
                    self.loop_step = step + 1  # The step was trained.
                    raise
                losses.raise_if_bad()  # Found by a hook reading loop.logs.
            now = perf_counter()
            self._step_seconds = (now - last) / n  # Bounds the next call for timed hooks.
            if n == 1:
                durations.append(self._step_seconds)
            else:
                durations.extend([self._step_seconds] * n)
            last = now
            step += 1
        self.loop_step = step
        self._countdown = countdown
        return metrics, False

    def _sync(self, metrics: list, detected_at: int) -> None:
        """Waits for `metrics`, then reads every pending batch loss (NaN check, running mean).

        `detected_at` is the step that just ran.

        Raises:
            NonFiniteLossError: a batch loss was NaN or Inf.
        """
        jax.block_until_ready(metrics)
        self._losses.check_all(detected_at)

    def _flush_losses(self, metrics: list) -> None:
        """`_sync` after the last step run, setting `loop_step` as `_steps` does on a NaN."""
        if self.loop_step == self.start_step:
            return
        try:
            self._sync(metrics, self.loop_step - 1)
        except NonFiniteLossError as e:
            self.loop_step = e.detected_at + 1
            raise

    def _build_logs(self, metrics: list) -> dict[str, Any]:
        """A new Keras logs dict for `metrics` (see `logs`).

        Reads the pending batch losses without raising: a non-finite one makes
        `"loss"` NaN (Keras' `TerminateOnNaN` sees it) and is raised by the
        loop after the hooks of the event.
        """
        if self._losses.pending:
            self._losses.read_all(self.loop_step)
        logs: dict[str, Any] = {}
        if metrics:
            logs["loss"] = self._losses.mean()
            trainer_logs = getattr(self.trainer, "train_logs", None)
            if trainer_logs is not None:
                logs.update(trainer_logs(metrics))
        logs.update(self._val_logs)
        return logs

    def _validate(self, validation_data: Any) -> None:
        """Evaluates `validation_data`; its values become the `val_*` logs of this event."""
        if self._on_validation_begin.hooks:
            self._event_logs = None
            self._on_validation_begin.fire(self, validation_data)
        values = self.trainer.eval(validation_data, return_dict=True)
        if self._on_validation_end.hooks:
            self._on_validation_end.fire(self, dict(values))
        self._val_logs = {f"val_{name}": value for name, value in values.items()}
        self.shared_data[VAL_LOGS_KEY] = dict(self._val_logs)
        self._event_logs = None

    def _record_history(self, epoch: int, metrics: list) -> None:
        """Adds the current event's logs to `history` (after the hooks, as `fit` does)."""
        self.history.on_epoch_end(epoch, self.logs(metrics))

    def _finish(self, metrics: list, *, keep_logs: bool = False) -> list:
        """Ends a run: waits for the device, checks the loss, fires the on_end hooks.

        `trainer.finalize()` writes the trained weights into the Keras
        variables (and applies EMA weights), so any reference to the model
        (or to a Keras model given as `model_fn`) holds them after the run,
        as after `keras.Model.fit`. With `keep_logs`, the on_end hooks get the
        last event's logs (the last epoch's, as `fit`'s `on_train_end`).
        """
        if self.loop_step != self.start_step:
            self._flush_losses(metrics)
            finalize = getattr(self.trainer, "finalize", None)
            if finalize is not None:
                finalize()
            else:
                getattr(self.trainer, "model", None)
        self.end_step = self.loop_step
        if not keep_logs:
            self._event_logs = None
        if self._on_end.hooks:
            self._on_end.fire(self, metrics)
        return metrics

    def __repr__(self) -> str:
        return (
            f"Loop(loop_step={self.loop_step}, start_step={self.start_step}, "
            f"end_step={self.end_step}, epoch={self.epoch}, hooks: "
            f"on_start={self._on_start.names()}, on_step={self._on_step.names()}, "
            f"on_end={self._on_end.names()})"
        )


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

    def step(self, step: int, metrics: list) -> None:
        """Step `step` ran with `metrics`: fires the `on_step` hooks due, then advances."""
        loop = self.loop
        loop.loop_step = step
        self._metrics = metrics
        if loop._on_step.hooks:
            loop._event_logs = None
            loop._on_step.fire(loop, metrics)
        now = time.perf_counter()
        loop.train_step_durations.append(now - self._last_time)
        self._last_time = now
        loop.loop_step = step + 1

    def end(self, metrics: list | None = None) -> None:
        """The run ended: fires the `on_end` hooks with `metrics` (default: the last step's)."""
        loop = self.loop
        loop.end_step = loop.loop_step
        loop._event_logs = None
        if loop._on_end.hooks:
            loop._on_end.fire(loop, self._metrics if metrics is None else metrics)

