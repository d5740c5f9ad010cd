"""The Loop's events: their hook lists, the public API that registers hooks, the logs.

A mixin of `Loop`: each event (`on_start`, `on_step`, `on_end`, `on_epoch_begin`, ...)
is a `HookList` in priority order; the registration methods check a hook when it is
added. `logs(metrics)` is one Keras-shaped dict per event, shared by all its hooks: the
loop sets `_event_logs` to None before firing an event whose hooks get a fresh one, and
keeps it where `fit` shares one dict (epoch end, then `history`; the run's end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from keras_trainloop.loop._hooks import HookList

if TYPE_CHECKING:
    from keras_trainloop.data import Dataset
    from keras_trainloop.loop._loop import Loop
    from keras_trainloop.loop._schedules import Schedule

# Hook signatures, the one definition of each (loop/_scheduled.py imports them). Strings, so
# that `Loop` (whose module imports this one) is named for type checkers only. What a hook
# returns is ignored (`object`).
OnStartFn: TypeAlias = "Callable[[Loop, Dataset | None], object]"  # Also on_validation_begin's.
OnStepFn: TypeAlias = "Callable[[Loop, list], object]"  # Also on_epoch_end's.
OnEndFn: TypeAlias = OnStepFn
OnEpochBeginFn: TypeAlias = "Callable[[Loop, int], object]"  # Also on_batch_begin's (step).
OnValidationEndFn: TypeAlias = "Callable[[Loop, dict], object]"
OnInterruptFn: TypeAlias = "Callable[[Loop, BaseException], object]"


class LoopEvents:
    """The events of a `Loop` and their hooks (see `Loop`)."""

    def _init_events(self) -> None:
        self._on_start = HookList("OnStart", "fn(loop, ds)")
        self._on_step = HookList("OnStep", "fn(loop, metrics)")
        self._on_end = HookList("OnEnd", "fn(loop, metrics)")
        self._on_epoch_begin = HookList("OnEpochBegin", "fn(loop, epoch)")
        self._on_epoch_end = HookList("OnEpochEnd", "fn(loop, metrics)")
        self._on_batch_begin = HookList("OnBatchBegin", "fn(loop, step)")
        self._on_validation_begin = HookList("OnValidationBegin", "fn(loop, ds)")
        self._on_validation_end = HookList("OnValidationEnd", "fn(loop, logs)")
        self._on_validation_batch_begin = HookList("OnValidationBatchBegin", "fn(loop, batch)")
        self._on_validation_batch_end = HookList("OnValidationBatchEnd", "fn(loop, logs)")
        self._on_interrupt = HookList("OnInterrupt", "fn(loop, interrupt)")
        self._build_model_first = False
        self._event_logs: dict[str, Any] | None = None  # The current event's Keras logs.
        self._val_logs: dict[str, Any] = {}  # The last validation's, while it is current.

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

    def on_step(
        self, name: str, priority: float, fn: OnStepFn, *, schedule: Schedule | None = None
    ) -> None:
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

    def on_interrupt(self, name: str, priority: float, fn: OnInterruptFn) -> None:
        """Adds `fn(loop, interrupt)`, called when Ctrl-C or SIGTERM stops a run.

        `interrupt` is the `KeyboardInterrupt` (Ctrl-C) or the
        `ktl.trainer.TerminationRequested` (SIGTERM, a `SystemExit` with status
        143) that stops the run; it propagates after the hooks. The trainer's
        state then is the last completed step's (a step is never torn), so a
        hook can save it: `attach_checkpoint` saves there. Another Ctrl-C
        while the hooks run is deferred until they end (a third one
        interrupts them). The `on_end` hooks do not run.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as
                `fn(loop, interrupt)`.
        """
        self._on_interrupt.add(name, priority, fn)

    def on_epoch_begin(self, name: str, priority: float, fn: OnEpochBeginFn) -> None:
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

    def on_batch_begin(self, name: str, priority: float, fn: OnEpochBeginFn) -> None:
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

    def on_validation_end(self, name: str, priority: float, fn: OnValidationEndFn) -> None:
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

    def on_validation_batch_begin(self, name: str, priority: float, fn: OnEpochBeginFn) -> None:
        """Adds `fn(loop, batch)`, called before each batch of a validation (from 0).

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, batch)`.
        """
        self._on_validation_batch_begin.add(name, priority, fn)

    def on_validation_batch_end(self, name: str, priority: float, fn: OnValidationEndFn) -> None:
        """Adds `fn(loop, logs)`, called after each batch of a validation.

        `logs` holds the validation's values so far (`{"loss": ..., "accuracy":
        ...}`, as Keras' `on_test_batch_end` gets them), one dict shared by the
        hooks of the batch. While such a hook is registered a validation waits
        for the device after every batch.

        Raises:
            TypeError: bad name or priority, or `fn` cannot be called as `fn(loop, logs)`.
        """
        self._on_validation_batch_end.add(name, priority, fn)

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

    def _build_logs(self, metrics: list) -> dict[str, Any]:
        """A new Keras logs dict for `metrics` (see `logs`).

        Reads the pending batch losses without raising: a non-finite one makes
        `"loss"` NaN or Inf (Keras' `TerminateOnNaN` sees it) and is raised by
        the loop after the hooks of the event, unless they stopped the run.
        """
        check = self._nonfinite
        if check.pending:
            check.read_all()
        logs: dict[str, Any] = {}
        if metrics:
            logs["loss"] = check.mean.value()
            trainer_logs = getattr(self.trainer, "train_logs", None)
            if trainer_logs is not None:
                logs.update(trainer_logs(metrics))
        logs.update(self._val_logs)
        return logs
