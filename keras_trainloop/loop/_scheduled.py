"""Hooks on a schedule: `ScheduledHook` and GoMLX's registration functions.

`every_n_steps`, `n_times_during_loop`, `periodic_callback` and `exponential_callback`
keep GoMLX's argument order, check their arguments up front, register a `ScheduledHook`
and return its schedule (loop/_schedules.py). A scheduled hook is an `on_step` hook with
the schedule and, with `call_on_end`, an `on_end` hook that carries the schedule as its
`end_of`, so `loop.plan` pairs them; its end call follows `end_call_due`, the one rule
of the run and the plan.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keras_trainloop._describe import short_repr
from keras_trainloop.loop._events import OnStepFn
from keras_trainloop.loop._hooks import check_callable, check_priority
from keras_trainloop.loop._schedules import (
    EveryNSteps,
    Exponential,
    NTimesDuringLoop,
    Periodic,
    Schedule,
)

if TYPE_CHECKING:
    from keras_trainloop.loop._loop import Loop


def _check_hook_args(function: str, name: Any, priority: Any, fn: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(
            f"{function} expects a string name. Received: name={short_repr(name)}. "
            "Fix: pass a name such as 'eval' (it names the hook in errors and reports)."
        )
    where = f"{function} hook {short_repr(name)}"
    check_priority(priority, where)
    check_callable(fn, 2, where, "fn(loop, metrics)")


def end_call_due(start_step: int, end_step: int, ran_after_last_step: bool) -> bool:
    """Whether a scheduled hook's end call runs: one rule for the run and `loop.plan`.

    It runs when the run trained a step (`end_step > start_step`) and the
    function did not already run after its last one, so the same metrics are
    never reported twice.
    """
    return end_step > start_step and not ran_after_last_step


class ScheduledHook:
    """Calls `fn(loop, metrics)` after the steps a schedule marks, and maybe at the end.

    Registered as an `on_step` hook with the schedule (the loop calls it
    only when due), and an `on_end` one when `call_on_end`, which carries the
    schedule as its `end_of` (so `loop.plan` knows the pair). The end call
    follows `end_call_due`.
    """

    def __init__(self, schedule: Schedule, fn: OnStepFn, call_on_end: bool):
        self.schedule = schedule
        self.fn = fn
        self.call_on_end = call_on_end
        self._last_call: tuple[int, int] | None = None  # (start_step of the run, step)

    def on_step(self, loop: Loop, metrics: list) -> None:
        self.fn(loop, metrics)
        self._last_call = (loop.start_step, loop.loop_step)

    def on_end(self, loop: Loop, metrics: list) -> None:
        last_call = (loop.start_step, loop.loop_step - 1)
        if not end_call_due(loop.start_step, loop.loop_step, self._last_call == last_call):
            return
        self.fn(loop, metrics)
        self._last_call = last_call

    def register(self, loop: Loop, name: str, priority: float) -> None:
        """Adds the hooks to `loop` (a `ktl.Loop`: its `OnEnd` list takes the `end_of` link)."""
        loop.on_step(name, priority, self.on_step, schedule=self.schedule)
        if self.call_on_end:
            loop._on_end.add(name, priority, self.on_end, end_of=self.schedule)


def every_n_steps(loop: Loop, n: int, name: str, priority: float, fn: OnStepFn) -> EveryNSteps:
    """Calls `fn(loop, metrics)` after every step where `(loop.loop_step + 1) % n == 0`.

    Aligned on the global step, so it survives resumes; never forces a call
    at the last step.

    Args:
        loop: the `ktl.Loop`.
        n: the period in steps, >= 1.
        name: names the hook ("EveryNSteps(n): name") in error messages.
        priority: lower runs first.
        fn: `fn(loop, metrics)`.

    Returns:
        The schedule (`next_step(loop)` tells the next step it fires at).

    Raises:
        TypeError, ValueError: a bad argument (the message shows its value).

    Example:
        ktl.every_n_steps(loop, 100, "log", 0, lambda loop, m: print(loop.loop_step, float(m[1])))
    """
    schedule = EveryNSteps(n)
    _check_hook_args("every_n_steps", name, priority, fn)
    ScheduledHook(schedule, fn, call_on_end=False).register(loop, f"{schedule}: {name}", priority)
    return schedule


def n_times_during_loop(
    loop: Loop, n: int, name: str, priority: float, fn: OnStepFn
) -> NTimesDuringLoop:
    """Calls `fn(loop, metrics)` at most `n` times per run, evenly spread, always at the end.

    See `NTimesDuringLoop` for the exact steps (and the first epoch of
    `run_epochs`, where the total is unknown).

    Args:
        loop: the `ktl.Loop`.
        n: the number of calls, >= 1.
        name: names the hook ("NTimesDuringLoop(n): name") in error messages.
        priority: lower runs first.
        fn: `fn(loop, metrics)`.

    Returns:
        The schedule.

    Raises:
        TypeError, ValueError: a bad argument (the message shows its value).

    Example:
        ktl.n_times_during_loop(loop, 10, "eval", 0, lambda loop, m: trainer.eval(test_ds))
    """
    schedule = NTimesDuringLoop(n)
    _check_hook_args("n_times_during_loop", name, priority, fn)
    ScheduledHook(schedule, fn, call_on_end=True).register(loop, f"{schedule}: {name}", priority)
    return schedule


def periodic_callback(
    loop: Loop,
    period: float | datetime.timedelta,
    call_on_end: bool,
    name: str,
    priority: float,
    fn: OnStepFn,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Periodic:
    """Calls `fn(loop, metrics)` after a step once `period` passed since the previous call.

    The time counts from the end of the previous call (or the first step of
    the run), so `fn`'s own duration is not counted.

    Args:
        loop: the `ktl.Loop`.
        period: seconds (> 0) or a `datetime.timedelta`.
        call_on_end: also call `fn` at the end of the run (unless it just
            ran after the last step).
        name: names the hook ("Periodic(30s): name") in error messages.
        priority: lower runs first.
        fn: `fn(loop, metrics)`.
        clock: the time source in seconds (tests pass a fake clock).

    Returns:
        The schedule.

    Raises:
        TypeError, ValueError: a bad argument (the message shows its value).

    Example:
        ktl.periodic_callback(loop, 60, True, "checkpoint", 100, lambda loop, m: save(loop))
    """
    schedule = Periodic(period, clock=clock)
    _check_hook_args("periodic_callback", name, priority, fn)
    hook = ScheduledHook(schedule, fn, call_on_end=bool(call_on_end))
    hook.register(loop, f"{schedule}: {name}", priority)
    return schedule


def exponential_callback(
    loop: Loop,
    start_step: int,
    factor: float,
    call_on_end: bool,
    name: str,
    priority: float,
    fn: OnStepFn,
) -> Exponential:
    """Calls `fn(loop, metrics)` at geometrically spaced steps.

    `(100, 1.2)` calls after steps 100, 220, 364, 537, ... (see `Exponential`).

    Args:
        loop: the `ktl.Loop`.
        start_step: the first step, >= 1; also the first skip.
        factor: the growth of the skip after each call, > 1.
        call_on_end: also call `fn` at the end of the run (unless it just
            ran after the last step).
        name: names the hook ("Exponential(100, 1.2): name") in error messages.
        priority: lower runs first.
        fn: `fn(loop, metrics)`.

    Returns:
        The schedule.

    Raises:
        TypeError, ValueError: a bad argument (the message shows its value).

    Example:
        ktl.exponential_callback(loop, 100, 1.2, True, "plot", 0, plot_fn)
    """
    schedule = Exponential(start_step, factor)
    _check_hook_args("exponential_callback", name, priority, fn)
    hook = ScheduledHook(schedule, fn, call_on_end=bool(call_on_end))
    hook.register(loop, f"{schedule}: {name}", priority)
    return schedule
