"""Loop: GoMLX's training loop with prioritized named hooks (the public facade).

The Loop holds the public attributes of its runs and wires its parts together; each
part is a small module, in the order the data flows:

- loop/_events.py: the events, their hook lists and registration API, `logs`;
  loop/_hooks.py: a hook list, the one place hooks fire;
- loop/_schedules.py: when a scheduled hook is due; loop/_scheduled.py: `every_n_steps`
  & co., and a scheduled hook's end call;
- loop/_runs.py: a run from `begin` to `finish` (run_steps chunks, run_epochs epochs,
  validation, history); loop/_run_parts.py: argument checks, History, a built model;
- loop/_step_loop.py: the steps of a chunk, one compiled call at a time, and their hooks;
- loop/_step_source.py: the batches of each call (fused sizes, halving, end of data);
- loop/_nonfinite.py: when batch losses are read, and the NonFiniteLossError;
  loop/_loss_watch.py: the reads themselves and the running mean `"loss"`;
- loop/_fusion_gate.py: whether fused calls pay, per dataset spec;
- loop/_plan.py: `loop.plan`; loop/_data_position.py: the data position for resumes;
- loop/_interop.py: Keras callbacks and external drivers; loop/_keras_bridge.py: the
  Keras side, through the public API only.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from keras_trainloop._describe import short_repr
from keras_trainloop.loop import _runs
from keras_trainloop.loop._data_position import DataPosition
from keras_trainloop.loop._durations import StepDurations
from keras_trainloop.loop._events import LoopEvents
from keras_trainloop.loop._fusion_gate import FusionGate
from keras_trainloop.loop._hooks import HookCost
from keras_trainloop.loop._interop import KerasInterop
from keras_trainloop.loop._nonfinite import NonFiniteCheck
from keras_trainloop.loop._plan import Plan, make_plan
from keras_trainloop.loop._run_parts import (
    VAL_LOGS_KEY,
    check_count,
    checked_inputs,
    new_history,
)
from keras_trainloop.loop._step_loop import StepLoop
from keras_trainloop.loop._step_source import (
    can_fuse,
    check_max_fused_steps,
    device_feed,
    trainer_can_fuse,
)

if TYPE_CHECKING:
    from keras_trainloop.data import Dataset
    from keras_trainloop.trainer import Trainer

__all__ = ["FUSED_STEPS_LIMIT", "MAX_FUSED_STEPS", "SYNC_EVERY", "VAL_LOGS_KEY", "Loop"]

SYNC_EVERY = 16
"""The loop waits on the device at least once every this many steps (and at the end)."""

MAX_FUSED_STEPS = 8
"""The default `max_fused_steps`: at most this many steps run in one compiled call."""

FUSED_STEPS_LIMIT = 32
"""The largest `max_fused_steps`. A call's losses are read after the next call is
dispatched, so with two calls in flight a NaN surfaces at most `2 * max_fused_steps - 1`
steps late (15 with the default 8, 63 at this limit)."""


class Loop(LoopEvents, KerasInterop, DataPosition):
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
            model), so a loop on a restored model resumes its step count;
            `resume_at(step)` moves it between runs (e.g. after restoring a
            checkpoint into the trainer). After an aborted run it counts the
            steps trained: after a `HookError` of an `on_step` hook at step k
            it is k + 1; after a `NonFiniteLossError` it is the step after the
            last one trained, `error.detected_at + 1`, not the bad step
            `error.step` (the steps up to `detected_at` took their updates).
        start_step: `loop_step` at the start of the current (or last) run.
        end_step: one past the last step of the run; -1 while unknown (the
            first epoch of `run_epochs`). At `on_end`, `loop_step == end_step`.
        epoch: the epoch being run by `run_epochs`, from 0; after the run, one
            past the last epoch that ran (`epochs` when all ran).
        shared_data: a dict for hooks and plugins to exchange values.
        train_step_durations: seconds per step of the current (or last) run,
            for its last 10,000 steps only (a list-like window, see
            loop/_durations.py): the time between the ends of consecutive
            steps (reading the batch, dispatching the step, its hooks, and
            the device time the loop waited for). The first one includes
            compilation. The steps of a fused call each get the call's time
            divided by its steps.
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
    `NonFiniteLossError`, naming the first bad step, at most 15 steps after it
    (`2 * max_fused_steps - 1` steps with fused calls longer than 8).
    The steps in between were trained (their hooks saw the non-finite values,
    and the weights took their updates): keep a checkpoint to go back to.

    Fused steps: when no hook needs every step, the loop runs several steps
    in one compiled call (`trainer.train_steps`, a `lax.scan` over stacked
    batches) and ends each call exactly at the next step where a hook may
    fire, so hooks fire at the same steps and see the same metrics as with
    one call per step. A call runs a power of two of steps, at most
    `max_fused_steps`, so few functions are compiled. It needs a dataset
    with `yield_batches(n)` (`ktl.ArrayDataset` and `ktl.TFDataset` have
    it) and a trainer with `train_steps` (`trainer.can_fuse_steps`); otherwise,
    and while a hook without a schedule (`on_step(..., schedule=None)`) or a
    Keras callback with batch hooks is registered, each step is its own call.
    Hooks registered by `ktl.every_n_steps` and the other schedule helpers
    carry their schedule; time-based ones (`periodic_callback`, the progress
    bar) limit how long a call may take; with several processes they fire
    at steps process 0 decides (loop/_agreement.py). `loop.plan(steps)` shows
    the steps at which the hooks fire and the calls, before running anything.

    Args:
        trainer: a `ktl.Trainer` (or an object with the same `train_step`,
            `global_step` and `reset_train_metrics`), or None.
        max_fused_steps: the most steps run in one compiled call, a power of
            two from 1 (off) to `FUSED_STEPS_LIMIT` (32); `MAX_FUSED_STEPS` (8) by
            default. Longer calls dispatch less often, and a NaN loss surfaces up
            to `2 * max_fused_steps - 1` steps late.
        measure_fusion: True (the default): for each dataset spec, the first
            calls are timed (5 single steps, then 5 fused calls of 2 steps,
            each waited on) and fused calls are kept only if a fused step
            costs no more than a single one; a step whose host dispatch is
            under 5% of its time (compute-bound) is decided against fusion
            after the single steps, with no fused compile (see
            `loop/_fusion_gate.py`, `fusion_decisions`). The decision holds
            for this loop's later runs. Fused calls compile off the critical
            path (one process, numpy batches): the steps run one by one
            while XLA compiles a call size in a background thread, from the
            second call that asks for it and only when the training ahead
            outlasts a compile (a short run compiles none). False: fuse
            without measuring, each call size compiled where first used.

    Example:
        loop = ktl.Loop(trainer)
        loop.on_step("print", 0, lambda loop, metrics: print(loop.loop_step, float(metrics[0])))
        ktl.every_n_steps(loop, 100, "eval", 10, lambda loop, metrics: trainer.eval(test_ds))
        metrics = loop.run_epochs(train_ds, 3)
    """

    def __init__(
        self,
        trainer: Trainer | None,
        *,
        max_fused_steps: int = MAX_FUSED_STEPS,
        measure_fusion: bool = True,
    ):
        if trainer is not None and not callable(getattr(trainer, "train_step", None)):
            raise TypeError(
                "Loop expects a ktl.Trainer (or None for a loop used only as a Keras callback). "
                f"Received: trainer={short_repr(trainer)}. Fix: pass "
                "ktl.Trainer(model_fn, loss, optimizer), or None with loop.as_keras_callback()."
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
        self.train_step_durations = []  # A StepDurations (see the property).
        self.history = new_history(None)
        self._init_events()  # The hook lists, `_event_logs`, `_val_logs` (loop/_events.py).
        self._stop_requested = False
        self._running = False
        self._feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._feed: Any = None  # What the current run reads (None between runs).
        self._gate = FusionGate(enabled=bool(measure_fusion))
        self._nonfinite = NonFiniteCheck(SYNC_EVERY)  # Batch losses not read yet.
        self._stepper = StepLoop(self._gate, self._nonfinite)

    @property
    def max_fused_steps(self) -> int:
        """The most steps run in one compiled call (1: one call per step)."""
        return self._max_fused_steps

    @max_fused_steps.setter
    def max_fused_steps(self, value: int) -> None:
        value = check_max_fused_steps(value)
        if value > FUSED_STEPS_LIMIT:
            raise ValueError(
                f"max_fused_steps may not exceed {FUSED_STEPS_LIMIT}: with two calls in flight, "
                f"a NaN loss surfaces up to 2 * max_fused_steps - 1 steps late. Received: "
                f"max_fused_steps={value}. Fix: pass a power of two up to {FUSED_STEPS_LIMIT}."
            )
        self._max_fused_steps = value

    @property
    def train_step_durations(self) -> StepDurations:
        """Seconds per step of the run, its last steps' only (see the class docs)."""
        return self._train_step_durations

    @train_step_durations.setter
    def train_step_durations(self, values: Iterable[float]) -> None:
        self._train_step_durations = StepDurations(values)  # The last DURATIONS_WINDOW.

    # Running -----------------------------------------------------------------
    def run_steps(
        self,
        ds: Dataset,
        steps: int,
        *,
        validation_data: Dataset | None = None,
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
            ValueError: `steps` is negative, a bad validation argument (a
                `validation_data` that never ends too), or the dataset ended
                early (the message says after how many steps).
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_steps(ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True), 1000,
                           validation_data=ktl.ArrayDataset(x_val, y_val, batch_size=256),
                           validation_freq=200)
        """
        check_count("steps", steps, "run_steps")
        self._require_trainer("run_steps")
        ds, validation_data = checked_inputs(
            self, "run_steps", ds, validation_data, validation_freq
        )
        if steps == 0:
            return []
        return _runs.run_steps(self, ds, steps, validation_data, validation_freq, SYNC_EVERY)

    def run_epochs(
        self,
        ds: Dataset,
        epochs: int,
        *,
        validation_data: Dataset | None = None,
        validation_freq: int | Sequence[int] = 1,
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
            ds: a finite `ktl.Dataset` (it signals its end with `EOFError`); one
                that declares it never ends (`loop_forever=True`, a tf.data
                pipeline of infinite cardinality) is refused.
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
            ValueError: `epochs` is negative, a bad validation argument, a
                dataset that never ends, an epoch yielded no batch, or
                `initial_epoch` is out of range.
            HookError: a hook raised.
            NonFiniteLossError: a batch loss was NaN or Inf.
            Exception: errors of the dataset (other than `EOFError`) and of
                the train step, unchanged.

        Example:
            loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=32, shuffle=True), 5,
                            validation_data=ktl.ArrayDataset(x_val, y_val, batch_size=256))
        """
        check_count("epochs", epochs, "run_epochs")
        self._require_trainer("run_epochs")
        ds, validation_data = checked_inputs(
            self, "run_epochs", ds, validation_data, validation_freq, finite=True
        )
        if epochs == 0:
            return []
        return _runs.run_epochs(self, ds, epochs, validation_data, validation_freq, SYNC_EVERY)

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

    def resume_at(self, step: int) -> None:
        """Makes the next run start at `step`: sets `loop_step` and `start_step` to it.

        The one way to move the step count of a loop that is not running, for
        a loop created before the trainer's state was restored (a new Loop
        starts at `trainer.global_step` by itself). Schedules aligned on the
        global step (`every_n_steps`) follow it.

        Args:
            step: the global step the next run starts at, >= 0.

        Raises:
            ValueError: `step` is not a non-negative int.
            RuntimeError: called while the loop runs (from one of its hooks).

        Example:
            checkpoint.restore()
            loop.resume_at(int(trainer.global_step))
        """
        check_count("step", step, "resume_at")
        if self._running:
            raise RuntimeError(
                "loop.resume_at() cannot move the step count of a running loop. Received: "
                f"step={step} at loop step {self.loop_step}. Fix: call it between runs."
            )
        self.loop_step = self.start_step = step

    def median_train_step_duration(self) -> float:
        """The median of `train_step_durations` (the last ones kept) in seconds; 0.001 when empty.

        With an even count it is the upper of the two middle values (a
        measured duration, as in GoMLX). `train_step_durations` is not changed.
        """
        median = self._train_step_durations.median()
        return 0.001 if median is None else median

    def plan(self, steps: int) -> Plan:
        """Lists the steps at which each hook would fire in `run_steps(ds, steps)`; runs nothing.

        The hooks are fired as a run fires them (`HookList.fire`), over
        snapshots of their schedules and with recording functions (the loop,
        its hooks and their schedules are not changed), and the calls are
        sized with the loop's own rule, so the plan is what a run from the
        current `loop_step` does: hooks without a schedule fire at every step;
        time-based schedules are asked at the plan's time, so they list only
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
        check_count("steps", steps, "plan")
        fusable = (
            not self._on_batch_begin.hooks
            and trainer_can_fuse(self.trainer, self._max_fused_steps)
            and not self._gate.dropped_fusion()
        )
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

    # Internals ---------------------------------------------------------------
    def _require_trainer(self, method: str) -> None:
        if self.trainer is None:
            raise ValueError(
                f"loop.{method}() needs a trainer. Received: a Loop created with trainer=None "
                "(usable only through loop.as_keras_callback()). Fix: create it as "
                "ktl.Loop(trainer)."
            )

    def _device_feed(self, ds: Dataset) -> Dataset:
        """The dataset the steps read: `ds`, prefetched to the device unless it stacks."""
        fuse = can_fuse(ds, self.trainer, self._max_fused_steps)
        return device_feed(ds, self.trainer, fuse, self._feeds)

    def __repr__(self) -> str:
        return (
            f"Loop(loop_step={self.loop_step}, start_step={self.start_step}, "
            f"end_step={self.end_step}, epoch={self.epoch}, hooks: "
            f"on_start={self._on_start.names()}, on_step={self._on_step.names()}, "
            f"on_end={self._on_end.names()})"
        )
