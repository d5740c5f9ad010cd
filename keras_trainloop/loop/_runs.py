"""A run from start to end: what `run_steps` and `run_epochs` do around the steps.

- `begin`: resets the run's attributes and its loss check, builds the model first when
  asked (`request_built_model`), fires `on_start`, and with several processes makes the
  time-based decisions process 0's (loop/_agreement.py).
- `run_steps`: chunks of steps (`StepLoop.run`) ending where a validation is due;
  `run_epochs`: one chunk per epoch, then `ds.reset()`, validation, `on_epoch_end`,
  the epoch's `history` entry.
- `finish`: waits for the last losses, writes the trained state into the model
  (`trainer.finalize`), fires `on_end`.

Contract: every pending batch loss is read (`flush`) before a validation, a history
entry, an epoch's end hooks and the run's end, so the logs there hold the complete mean
and no NaN passes an epoch or a run unnoticed. The steps themselves are
loop/_step_loop.py's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from keras_trainloop._describe import short_repr
from keras_trainloop.loop._agreement import agree
from keras_trainloop.loop._run_parts import (
    VAL_LOGS_KEY,
    FirstBatch,
    dataset_name,
    new_history,
    validation_due,
)
from keras_trainloop.trainer import interrupts


@contextlib.contextmanager
def running(loop: Any) -> Iterator[None]:
    """Marks the loop as running; a nested run (from a hook) is an error."""
    if loop._running:
        raise RuntimeError(
            "This loop is already running: run_steps/run_epochs cannot be called from one "
            f"of its hooks. Received: a nested call at loop step {loop.loop_step}. Fix: "
            "call loop.stop() in the hook and start the next run after it returns."
        )
    loop._running = True
    loop._feed = None
    try:
        with interrupts.handling_sigterm():
            yield
    except (KeyboardInterrupt, interrupts.TerminationRequested) as interrupt:
        _interrupted(loop, interrupt)
        raise
    finally:
        loop._running = False
        loop._feed = None


def _interrupted(loop: Any, interrupt: BaseException) -> None:
    """Ctrl-C or SIGTERM stopped the run: the on_interrupt hooks see the last complete step.

    The Trainer never holds a torn step (its steps defer the signals until
    their results replace the state), so `loop_step` is brought to the
    trainer's global step and the hooks run, with further Ctrl-C deferred.
    """
    with interrupts.guard():
        global_step = getattr(loop.trainer, "global_step", None)
        if isinstance(global_step, int) and global_step >= loop.start_step:
            loop.loop_step = global_step  # A step that ended as the signal came counts.
        if loop._on_interrupt.hooks:
            loop._on_interrupt.fire(loop, interrupt)


def run_steps(
    loop: Any, ds: Any, steps: int, validation_data: Any, validation_freq: Any, sync_every: int
) -> list:
    """`loop.run_steps`, its arguments checked; `sync_every`: the loop's `SYNC_EVERY`."""
    feed = loop._device_feed(ds)
    with running(loop):
        feed = begin(loop, ds, feed, loop.loop_step + steps, 0, sync_every)
        metrics: list = []
        end = loop.end_step
        freq = validation_freq if validation_data is not None else None
        while loop.loop_step != end and not loop._stop_requested:
            limit = end if freq is None else min(end, (loop.loop_step // freq + 1) * freq)
            metrics, ended = loop._stepper.run(loop, feed, limit, metrics)
            if ended:
                raise _ended_early(ds, steps, loop.loop_step - loop.start_step)
            if loop.loop_step == limit and limit != end and not loop._stop_requested:
                flush(loop, metrics)
                validate(loop, validation_data)
                loop.history.on_epoch_end(loop.loop_step, loop.logs(metrics))
                loop._val_logs = {}
        if loop.loop_step != loop.start_step:
            flush(loop, metrics)
            if validation_data is not None:
                validate(loop, validation_data)
            loop.history.on_epoch_end(loop.loop_step, loop.logs(metrics))
        return finish(loop, metrics, keep_logs=True)


def _ended_early(ds: Any, steps: int, done: int) -> ValueError:
    return ValueError(
        f"Dataset {short_repr(dataset_name(ds))} ended after {done} steps, before the requested "
        f"{steps}. Received: steps={steps}. Fix: use loop.run_epochs(ds, epochs) for a finite "
        "dataset, or a dataset that loops forever (e.g. ktl.ArrayDataset(..., "
        "loop_forever=True))."
    )


def run_epochs(
    loop: Any, ds: Any, epochs: int, validation_data: Any, validation_freq: Any, sync_every: int
) -> list:
    """`loop.run_epochs`, its arguments checked; `sync_every`: the loop's `SYNC_EVERY`."""
    feed = loop._device_feed(ds)
    with running(loop):
        feed = begin(loop, ds, feed, -1, epochs, sync_every)
        first_epoch = _checked_initial_epoch(loop, epochs)
        metrics: list = []
        logs_of_last_epoch = False
        for epoch in range(first_epoch, epochs):
            if loop._stop_requested:
                break
            if epoch != first_epoch:  # The first epoch starts fresh from begin().
                loop.trainer.reset_train_metrics()
                loop._nonfinite.reset_mean()
            metrics = _run_epoch(loop, ds, feed, epoch, epochs, metrics)
            if validation_data is not None and validation_due(epoch, validation_freq):
                validate(loop, validation_data)
            if loop._on_epoch_end.hooks:
                loop._on_epoch_end.fire(loop, metrics)
            if metrics:
                loop.history.on_epoch_end(epoch, loop.logs(metrics))
            logs_of_last_epoch = True
            loop.epoch = epoch + 1
        return finish(loop, metrics, keep_logs=logs_of_last_epoch)


def _run_epoch(loop: Any, ds: Any, feed: Any, epoch: int, epochs: int, metrics: list) -> list:
    """The steps of one epoch, up to `feed.reset()` and its losses read; extrapolates
    `end_step` from its length."""
    loop.epoch = epoch
    loop._val_logs = {}
    if loop._on_epoch_begin.hooks:
        loop._event_logs = None
        loop._on_epoch_begin.fire(loop, epoch)
    epoch_start = loop.loop_step
    metrics, ended = loop._stepper.run(loop, feed, -1, metrics)
    yields = loop.loop_step - epoch_start
    if ended and yields == 0:
        raise ValueError(
            f"Dataset {short_repr(dataset_name(ds))} yielded no batch in epoch {epoch} of "
            f"run_epochs(ds, {epochs}). Fix: check that it is not empty and that "
            "reset() starts a new pass."
        )
    if ended:
        loop.end_step = loop.loop_step + yields * (epochs - epoch - 1)
    feed.reset()
    flush(loop, metrics)  # The epoch's mean loss is complete.
    loop._event_logs = None
    return metrics


def _checked_initial_epoch(loop: Any, epochs: int) -> int:
    """`initial_epoch` as set by the on_start hooks, checked against `epochs`."""
    initial = loop.initial_epoch
    if isinstance(initial, bool) or not isinstance(initial, int) or not (0 <= initial <= epochs):
        raise ValueError(
            f"loop.initial_epoch must be an int in [0, epochs={epochs}] (set by an "
            f"on_start hook to resume run_epochs). Received: initial_epoch={short_repr(initial)}. "
            "Fix: set loop.initial_epoch to an int in [0, epochs] from the on_start hook."
        )
    loop.epoch = initial
    return initial


def begin(loop: Any, ds: Any, feed: Any, end_step: int, epochs: int, sync_every: int) -> Any:
    """Starts a run: resets metrics, flags and the loss check, then fires the on_start hooks.

    Returns the dataset to read: `feed`, or, when the model must be built
    first (`request_built_model`), `feed` with its first batch read ahead.
    """
    trainer = loop.trainer
    trainer.reset_train_metrics()
    loop._nonfinite.reset(sync_every)
    loop._stop_requested = False
    loop.epochs = epochs
    loop.initial_epoch = 0
    loop.start_step = loop.loop_step
    loop.end_step = end_step
    loop.epoch = 0
    loop.train_step_durations = []
    loop.history = new_history(trainer)
    loop._val_logs = {}
    loop._event_logs = None
    loop.shared_data.pop(VAL_LOGS_KEY, None)
    if loop._build_model_first and not getattr(trainer, "built", True):
        feed = FirstBatch(feed)
        if feed.first is not None:
            trainer.build(*feed.first)
    loop._feed = feed
    if loop._on_start.hooks:
        loop._on_start.fire(loop, ds)
    agree(loop)  # Several processes: time-based decisions become process 0's.
    return loop._feed


def flush(loop: Any, metrics: list) -> None:
    """Waits for the run's last step and reads every pending batch loss (NaN check, mean)."""
    if loop.loop_step != loop.start_step:
        loop._nonfinite.sync(metrics, loop.loop_step - 1)


def validate(loop: Any, validation_data: Any) -> None:
    """Evaluates `validation_data`; its values become the `val_*` logs of this event."""
    if loop._on_validation_begin.hooks:
        loop._event_logs = None
        loop._on_validation_begin.fire(loop, validation_data)
    batch_hooks = {}
    if loop._on_validation_batch_begin.hooks:
        batch_hooks["on_batch_begin"] = lambda batch: loop._on_validation_batch_begin.fire(
            loop, batch
        )
    if loop._on_validation_batch_end.hooks:
        batch_hooks["on_batch_end"] = lambda batch, logs: loop._on_validation_batch_end.fire(
            loop, logs
        )
    values = loop.trainer.eval(validation_data, return_dict=True, **batch_hooks)
    if loop._on_validation_end.hooks:
        loop._on_validation_end.fire(loop, dict(values))
    loop._val_logs = {f"val_{name}": value for name, value in values.items()}
    loop.shared_data[VAL_LOGS_KEY] = dict(loop._val_logs)
    loop._event_logs = None


def finish(loop: Any, metrics: list, *, keep_logs: bool = False) -> list:
    """Ends a run: waits for the device, checks the loss, fires the on_end hooks.

    `trainer.finalize()` writes the trained weights into the Keras
    variables (and applies EMA weights), so any reference to the model
    (or to a Keras model given as `model_fn`) holds them after the run,
    as after `keras.Model.fit`. With `keep_logs`, the on_end hooks get the
    last event's logs (the last epoch's, as `fit`'s `on_train_end`).
    """
    if loop.loop_step != loop.start_step:
        flush(loop, metrics)
        finalize = getattr(loop.trainer, "finalize", None)
        if finalize is not None:
            finalize()
        else:
            getattr(loop.trainer, "model", None)
    loop.end_step = loop.loop_step
    if not keep_logs:
        loop._event_logs = None
    if loop._on_end.hooks:
        loop._on_end.fire(loop, metrics)
    return metrics
