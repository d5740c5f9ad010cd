"""Attaching a Checkpoint to a Loop: save on schedules and at the end, resume the step count."""

from __future__ import annotations

import datetime
import warnings
from typing import TYPE_CHECKING, Any

from keras_trainloop._describe import short_repr
from keras_trainloop.checkpoints._checkpoint import Checkpoint

if TYPE_CHECKING:
    from keras_trainloop.loop import Loop

_HOOK_NAME = "checkpoint"


def _check_schedules(every_n_steps: Any, n_times: Any, period: Any, exponential: Any) -> None:
    """Builds each schedule asked for, unregistered: a bad argument raises before any hook."""
    import keras_trainloop.loop as loop_lib

    if exponential is not None and (
        not isinstance(exponential, (tuple, list)) or len(exponential) != 2
    ):
        raise ValueError(
            "exponential must be a pair (start_step, factor), e.g. (100, 1.2). "
            f"Received: exponential={short_repr(exponential)}. Fix: pass "
            "exponential=(start_step, factor)."
        )
    if every_n_steps is not None:
        loop_lib.EveryNSteps(every_n_steps)
    if n_times is not None:
        loop_lib.NTimesDuringLoop(n_times)
    if period is not None:
        loop_lib.Periodic(period)
    if exponential is not None:
        loop_lib.Exponential(*exponential)


def _resume_data(loop: Loop, checkpoint: Checkpoint) -> None:
    """Hands the restored data position to the run's dataset, once, at the restored step."""
    state, checkpoint.restored_data_state = checkpoint.restored_data_state, None
    if state is None or loop.loop_step != checkpoint.restored_step:
        return
    try:
        taken = loop.restore_data_state(state)
    except ValueError as error:
        taken = False
        reason = str(error)
    else:
        reason = "it has no set_state()"
    if not taken:
        warnings.warn(
            f"The data position saved at step {checkpoint.restored_step} in "
            f"{checkpoint.directory!r} does not fit this run's dataset ({reason}): its data "
            "order starts afresh. Fix: resume with the dataset the checkpoint was saved with.",
            stacklevel=2,
        )


def attach_checkpoint(
    loop: Loop,
    checkpoint: Checkpoint,
    *,
    every_n_steps: int | None = None,
    n_times: int | None = None,
    period: float | datetime.timedelta | None = None,
    exponential: tuple[int, float] | None = None,
    on_end: bool = True,
    wait_on_end: bool = True,
    priority: float = 100,
) -> None:
    """Saves `checkpoint` on the given schedules, at the end of each run and on interrupts.

    When Ctrl-C or SIGTERM stops a run, the last completed step is saved
    (and its files written) before the interrupt propagates. Each save
    records the data position (`loop.data_state()`), and the first run
    after a restore continues the data from there (`loop.restore_data_state`),
    so a resumed run sees exactly the batches of an uninterrupted one.

    Any combination of schedules may be given (a step where several fire is
    saved once). The loop resumes at the trainer's global step
    (`loop.resume_at`), so a loop created before the checkpoint was restored
    resumes at the restored step too. For other schedules pass
    `checkpoint.on_step` to them directly.

    Args:
        loop: the `ktl.Loop` (not running).
        checkpoint: the `Checkpoint` of `loop.trainer`.
        every_n_steps: save after every step where `(loop_step + 1) % n == 0`
            (`ktl.every_n_steps`).
        n_times: save at most this many times per run, evenly spread
            (`ktl.n_times_during_loop`).
        period: save every this many seconds, or a `timedelta`
            (`ktl.periodic_callback`).
        exponential: `(start_step, factor)`: save at geometrically spaced
            steps (`ktl.exponential_callback`).
        on_end: also save at the end of every run (GoMLX's demos do).
        wait_on_end: at the end of a run, wait until the files are written,
            so they are complete when `run_steps` / `run_epochs` returns.
        priority: of the checkpoint hooks; the default 100 runs after most
            hooks (GoMLX's examples use 100 too).

    Raises:
        TypeError: `checkpoint` is not a Checkpoint, or it belongs to another
            trainer than the loop's.
        ValueError: a bad schedule argument (from the schedule helpers).

    Example:
        ckpt = ktl.checkpoints.Checkpoint(trainer, "/tmp/run", keep=3)
        loop = ktl.Loop(trainer)
        ktl.checkpoints.attach_checkpoint(loop, ckpt, every_n_steps=1000, period=600)
    """
    import keras_trainloop.loop as loop_lib

    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            f"attach_checkpoint() expects a ktl.checkpoints.Checkpoint. "
            f"Received: checkpoint={short_repr(checkpoint)}. Fix: pass "
            "ktl.checkpoints.Checkpoint(loop.trainer, directory)."
        )
    if loop.trainer is not checkpoint.trainer:
        raise TypeError(
            "The checkpoint must belong to the loop's trainer. Received: a Checkpoint of "
            f"{checkpoint.trainer!r} for a loop of {loop.trainer!r}. Fix: create the "
            "Checkpoint with Checkpoint(loop.trainer, directory)."
        )
    _check_schedules(every_n_steps, n_times, period, exponential)
    hook = checkpoint.on_step
    if every_n_steps is not None:
        loop_lib.every_n_steps(loop, every_n_steps, _HOOK_NAME, priority, hook)
    if n_times is not None:
        loop_lib.n_times_during_loop(loop, n_times, _HOOK_NAME, priority, hook)
    if period is not None:
        loop_lib.periodic_callback(loop, period, False, _HOOK_NAME, priority, hook)
    if exponential is not None:
        start_step, factor = exponential
        loop_lib.exponential_callback(loop, start_step, factor, False, _HOOK_NAME, priority, hook)
    if on_end or wait_on_end:

        def save_on_end(loop: Any, metrics: list) -> None:
            if on_end:
                checkpoint.save(data_state=loop.data_state())
            if wait_on_end:
                checkpoint.wait()

        loop.on_end(_HOOK_NAME, priority, save_on_end)

    def save_on_interrupt(loop: Any, interrupt: BaseException) -> None:
        # The last completed step: Ctrl-C or SIGTERM loses nothing.
        checkpoint.save(data_state=loop.data_state())
        checkpoint.wait()

    loop.on_interrupt(_HOOK_NAME, priority, save_on_interrupt)
    loop.on_start(_HOOK_NAME, priority, lambda loop, ds: _resume_data(loop, checkpoint))
    step = int(loop.trainer.global_step)
    if loop.loop_step != step:
        loop.resume_at(step)
