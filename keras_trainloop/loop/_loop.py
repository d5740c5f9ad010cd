"""Loop: GoMLX's training loop with prioritized named hooks."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keras_trainloop.data import Dataset, maybe_prefetch_to_device
from keras_trainloop.loop._errors import NonFiniteLossError
from keras_trainloop.loop._hooks import HookCost, HookList
from keras_trainloop.loop._plan import Plan, check_max_fused_steps, fusable_steps, make_plan

SYNC_EVERY = 16
"""The loop waits on the device at least once every this many steps (and at the end)."""

MAX_FUSED_STEPS = 8
"""Default and largest `max_fused_steps`: at most this many steps run in one compiled call.
A call's losses are checked after the next call is dispatched, so with two calls in flight
a NaN surfaces at most `SYNC_EVERY - 1` steps late."""


@jax.jit
def _first_nonfinite(losses: list) -> jax.Array:
    """Index of the first non-finite loss in `losses`, or -1 (one dispatch for all)."""
    bad = jnp.stack([~jnp.all(jnp.isfinite(loss)) for loss in losses])
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)

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
            `NonFiniteLossError` it is the bad step (its update was dropped).
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

    Example:
        loop = ktl.Loop(trainer)
        loop.on_step("print", 0, lambda loop, metrics: print(loop.loop_step, float(metrics[0])))
        ktl.every_n_steps(loop, 100, "eval", 10, lambda loop, metrics: trainer.eval(test_ds))
        metrics = loop.run_epochs(train_ds, 3)
    """

    def __init__(self, trainer: Any, *, max_fused_steps: int = MAX_FUSED_STEPS):
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
        self.shared_data: dict[str, Any] = {}
        self.train_step_durations: list[float] = []
        self._on_start = HookList("OnStart", "fn(loop, ds)")
        self._on_step = HookList("OnStep", "fn(loop, metrics)")
        self._on_end = HookList("OnEnd", "fn(loop, metrics)")
        # Used by the Keras-callback bridge only; empty lists cost nothing.
        self._on_epoch_begin = HookList("OnEpochBegin", "fn(loop, epoch)")
        self._on_epoch_end = HookList("OnEpochEnd", "fn(loop, metrics)")
        self._on_batch_begin = HookList("OnBatchBegin", "fn(loop, step)")
        self._stop_requested = False
        self._running = False
        self._epochs = 0  # epochs requested by the current run_epochs; 0 in run_steps.
        self._countdown = SYNC_EVERY
        self._pending_losses: list = []  # Batch losses not yet checked for NaN/Inf.
        # The last fused call not yet checked: (its batch losses, its first step, n).
        self._pending_call: tuple[jax.Array, int, int] | None = None
        self._feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._step_seconds: float | None = None  # Last measured seconds per fused step.

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
    def run_steps(self, ds: Any, steps: int) -> list:
        """Trains for `steps` steps, continuing from `loop_step`.

        Sets `start_step = loop_step` and `end_step = loop_step + steps`,
        resets the train metrics, runs the `on_start` hooks, then the steps,
        then the `on_end` hooks. The dataset is not reset.

        Args:
            ds: a `ktl.Dataset`; it must not end before `steps` batches
                (use one that loops forever, or `run_epochs`).
            steps: how many steps; 0 does nothing (no hook runs).

        Returns:
            The last step's metrics (a list of device arrays), or `[]` when
            no step ran.

        Raises:
            ValueError: `steps` is negative or the dataset ended early (the
                message says after how many steps).
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_steps(ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True), 1000)
        """
        _check_count("steps", steps, "run_steps")
        self._require_trainer("run_steps")
        _check_dataset(ds, "run_steps")
        if steps == 0:
            return []
        feed = self._device_feed(ds)
        with self._run():
            self._begin(ds, end_step=self.loop_step + steps, epochs=0)
            metrics, ended = self._steps(feed, self.end_step, [])
            if ended:
                done = self.loop_step - self.start_step
                raise ValueError(
                    f"Dataset {_dataset_name(ds)!r} ended after {done} steps, before the "
                    f"requested {steps}. Received: steps={steps}. Fix: use "
                    "loop.run_epochs(ds, epochs) for a finite dataset, or a dataset that loops "
                    "forever (e.g. ktl.ArrayDataset(..., loop_forever=True))."
                )
            return self._finish(metrics)

    def run_epochs(self, ds: Any, epochs: int) -> list:
        """Trains for `epochs` passes over a finite dataset, continuing from `loop_step`.

        `end_step` is -1 during the first epoch; at the end of each epoch it
        is extrapolated from that epoch's length. `ds.reset()` is called after
        every epoch, including the last (and one cut short by `stop()`).

        Args:
            ds: a finite `ktl.Dataset` (it signals its end with `EOFError`).
            epochs: how many epochs; 0 does nothing (no hook runs).

        Returns:
            The last step's metrics (a list of device arrays), or `[]` when
            no step ran.

        Raises:
            ValueError: `epochs` is negative, or an epoch yielded no batch.
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=32, shuffle=True), 5)
        """
        _check_count("epochs", epochs, "run_epochs")
        self._require_trainer("run_epochs")
        _check_dataset(ds, "run_epochs")
        if epochs == 0:
            return []
        feed = self._device_feed(ds)
        with self._run():
            self._begin(ds, end_step=-1, epochs=epochs)
            metrics: list = []
            for epoch in range(epochs):
                if self._stop_requested:
                    break
                self.epoch = epoch
                if self._on_epoch_begin.hooks:
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
                if self._on_epoch_end.hooks:
                    self._on_epoch_end.fire(self, metrics)
                self.epoch = epoch + 1
            return self._finish(metrics)

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
        fusable = not self._on_batch_begin.hooks and self._trainer_can_fuse()
        cap = self._max_fused_steps if fusable else 1
        return make_plan(self, steps, self._on_step, self._on_end, cap)

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
        """Drives a `keras.callbacks.Callback` from this loop's runs.

        At the start of a run the callback gets `set_model(trainer.model)`,
        `set_params(...)` and `on_train_begin`; `run_epochs` calls
        `on_epoch_begin` / `on_epoch_end`; every step calls
        `on_train_batch_begin` / `on_train_batch_end` with the batch index
        within the epoch (within the run for `run_steps`); the end of the run
        calls `on_train_end`. Logs are dicts of Python floats: `"loss"` (the
        batch loss) and each train metric under its short name (e.g.
        `"~loss"`, the moving average); epoch-end and train-end logs hold the
        last step's values. Per-step logs are built, which copies the metrics
        to the host, only for callbacks that override the batch hooks; other
        callbacks cost nothing per step. Setting `model.stop_training = True`
        stops the loop gracefully (see `stop`).

        `run_steps` fires no epoch events: callbacks that act at epoch end
        (CSVLogger, EarlyStopping) need `run_epochs`.

        Args:
            callback: any `keras.callbacks.Callback`.
            priority: the priority of all its hooks.

        Raises:
            TypeError: `callback` is not a Keras callback, or the loop has no trainer.

        Example:
            loop.add_keras_callback(keras.callbacks.CSVLogger("log.csv"))
            loop.add_keras_callback(keras.callbacks.EarlyStopping(monitor="loss", patience=2))
            loop.run_epochs(ds, 20)
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

    def _begin(self, ds: Any, end_step: int, epochs: int) -> None:
        """Starts a run: resets metrics and flags, then fires the on_start hooks."""
        trainer = self.trainer
        trainer.reset_train_metrics()
        self._pending_losses = []
        self._pending_call = None
        self._stop_requested = False
        self._countdown = SYNC_EVERY
        self._epochs = epochs
        self.start_step = self.loop_step
        self.end_step = end_step
        self.epoch = 0
        self.train_step_durations = []
        if self._on_start.hooks:
            self._on_start.fire(self, ds)

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
        pending = self._pending_losses
        last = perf_counter()
        while step != limit and not self._stop_requested:
            self.loop_step = step
            n = 1
            batch = None
            if fuse and not on_batch_begin.hooks:
                n = fusable_steps(self, on_step, limit, cap, self._step_seconds)
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
                    on_batch_begin.fire(self, step)
                metrics = train_step(spec, inputs, labels)
                if self._pending_call is not None:
                    self._check_call(step)
                pending.append(metrics[0])
                countdown -= 1
                if not countdown:
                    countdown = SYNC_EVERY
                    self._sync(metrics, step)
            else:  # n steps in one call.
                if pending:  # Steps run one by one before: check them first.
                    self._sync(metrics, step - 1)
                metrics, losses = trainer.train_steps(*batch)
                previous, self._pending_call = self._pending_call, (losses, step, n)
                step += n - 1
                self.loop_step = step
                if previous is not None:
                    self._check_call(step, previous)
                countdown = SYNC_EVERY
            if on_step.hooks:
                try:
                    on_step.fire(self, metrics)
                except BaseException:
                    self.loop_step = step + 1  # The step was trained.
                    raise
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

    def _check_call(self, detected_at: int, call: tuple | None = None) -> None:
        """Waits for a fused call (the pending one by default) and raises if a loss was not finite.

        `detected_at` is the last step dispatched so far.
        """
        if call is None:
            call, self._pending_call = self._pending_call, None
        losses, first_step, _ = call
        # Read on the host: n floats, cheaper than one more dispatch (measured ~25 us).
        bad = ~np.isfinite(np.asarray(losses))
        if bad.any():
            self._pending_call = None
            self.loop_step = detected_at + 1  # The steps dispatched were trained.
            raise NonFiniteLossError(first_step + int(bad.argmax()), detected_at)

    def _sync(self, metrics: list, detected_at: int) -> None:
        """Waits for `metrics`, then raises if a batch loss since the last sync was not finite.

        The batch losses of the steps since the last sync are checked in one
        dispatch; `detected_at` is the step that just ran.
        """
        if self._pending_call is not None:  # It ran before the pending single steps.
            self._check_call(detected_at)
        jax.block_until_ready(metrics)
        pending = self._pending_losses
        if not pending:
            return
        first_pending_step = detected_at + 1 - len(pending)
        index = int(_first_nonfinite(pending))
        pending.clear()
        if index >= 0:
            self.loop_step = detected_at + 1  # Those steps were trained.
            raise NonFiniteLossError(first_pending_step + index, detected_at)

    def _finish(self, metrics: list) -> list:
        """Ends a run: waits for the device, checks the loss, fires the on_end hooks.

        Reading `trainer.model` writes the trained weights into the Keras
        variables, so any reference to the model (or to a Keras model given as
        `model_fn`) holds them after the run, as after `keras.Model.fit`.
        """
        if self.loop_step != self.start_step:
            self._sync(metrics, self.loop_step - 1)
            getattr(self.trainer, "model", None)
        self.end_step = self.loop_step
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

