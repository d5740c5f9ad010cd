"""Schedules: when a hook fires, as small objects the loop asks.

A schedule answers `due(loop)`: "call the function after the step
`loop.loop_step` that just ran?", and `next_step(loop)`: the first step from
`loop.loop_step` on after which it may be due. The loop fuses the steps up to
there into one compiled call, and `loop.plan` lists the firing steps from
it, so `next_step` must never skip a step where `due` would hold. Time-based
schedules also answer `seconds_left(loop)`, which bounds how long a fused
call may take. The registration functions keep GoMLX's argument order and
return the schedule.
"""

from __future__ import annotations

import abc
import datetime
import math
import time
from collections.abc import Callable
from typing import Any

from keras_trainloop.loop._hooks import check_callable, check_priority

OnStepFn = Callable[[Any, list], None]

_FIRST_UNKNOWN_TOTAL_CALL = 128  # steps done at the first call while the total is unknown


def _check_int(function: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{function} expects an int {name}. Received: {name}={value!r}.")
    if value < minimum:
        raise ValueError(f"{function} expects {name} >= {minimum}. Received: {name}={value!r}.")
    return value


def _check_hook_args(function: str, name: Any, priority: Any, fn: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{function} expects a string name. Received: name={name!r}.")
    check_priority(priority, f"{function} hook {name!r}")
    check_callable(fn, 2, f"{function} hook {name!r}", "fn(loop, metrics)")


def _round_half_away(x: float) -> int:
    """Rounds half away from zero (Go's math.Round) for x >= 0."""
    return math.floor(x + 0.5)


class Schedule(abc.ABC):
    """Decides after which steps a hook function is called.

    Subclasses implement `due` and `next_step`; `called` is told when the
    function ran. `loop` is anything with `loop_step`, `start_step` and
    `end_step` (a `ktl.Loop`).

    Give one to `loop.on_step(name, priority, fn, schedule=...)` to have `fn`
    called only when due; the loop then runs the steps in between fused.
    """

    @abc.abstractmethod
    def due(self, loop: Any) -> bool:
        """Whether the function should be called after step `loop.loop_step`."""

    @abc.abstractmethod
    def next_step(self, loop: Any) -> int | None:
        """The first step >= `loop.loop_step` after which `due` may hold.

        None when no step is known: never again in this run, or time decides
        (then `seconds_left` says when).
        """

    def called(self, loop: Any) -> None:
        """Tells the schedule that the function was just called (after step `loop.loop_step`)."""

    def seconds_left(self, loop: Any) -> float | None:
        """Seconds until a time-based schedule is due (0: now); None for step-based ones."""
        return None


class EveryNSteps(Schedule):
    """Due after the steps where `(loop_step + 1) % n == 0`.

    Counted from the start of training (the global step), not from the start
    of the run, so the calls stay aligned when training resumes from a
    checkpoint. Never forces a call at the last step.

    Args:
        n: the period in steps, >= 1.

    Raises:
        TypeError, ValueError: `n` is not an int >= 1.
    """

    def __init__(self, n: int):
        self.n = _check_int("EveryNSteps", "n", n, 1)

    def due(self, loop: Any) -> bool:
        return (loop.loop_step + 1) % self.n == 0

    def next_step(self, loop: Any) -> int:
        step = loop.loop_step
        return step + (self.n - 1 - step) % self.n

    def __repr__(self) -> str:
        return f"EveryNSteps({self.n})"


class NTimesDuringLoop(Schedule):
    """Due at most `n` times per run, evenly spread, always at the last step.

    With `total = end_step - start_step` known, it is due after the steps
    where the steps done in the run (`loop_step - start_step + 1`) reach
    `ceil(k * total / n)` for k = 1..n (once per step when `total < n`).
    While the total is unknown (`end_step == -1`: the first epoch of
    `run_epochs`) it is due at 128, 256, 512, ... steps done, so over a
    whole `run_epochs` it may be due more than `n` times. A step beyond an
    extrapolated `end_step` is never due; the registration calls the function
    at the end of the run when the last step was not a due one (a stop, or
    epochs of different lengths). GoMLX v0.9.1 also fired at the first step,
    `n + 1` times in all; this fires `n` times.

    Args:
        n: the number of calls, >= 1.

    Raises:
        TypeError, ValueError: `n` is not an int >= 1.
    """

    def __init__(self, n: int):
        self.n = _check_int("NTimesDuringLoop", "n", n, 1)

    def due(self, loop: Any) -> bool:
        start = loop.start_step
        done = loop.loop_step - start + 1
        end = loop.end_step
        if end < 0:
            return done >= _FIRST_UNKNOWN_TOTAL_CALL and done & (done - 1) == 0
        total = end - start
        if done > total:
            return False
        n = self.n
        k = (done - 1) * n // total + 1  # the first k with ceil(k * total / n) >= done
        return k <= n and -(-k * total // n) == done

    def next_step(self, loop: Any) -> int | None:
        start = loop.start_step
        done = loop.loop_step - start + 1
        end = loop.end_step
        if end < 0:
            target = max(_FIRST_UNKNOWN_TOTAL_CALL, 1 << (done - 1).bit_length())
            return start + target - 1
        total = end - start
        if done > total:
            return None
        k = (done - 1) * self.n // total + 1
        return start + -(-k * total // self.n) - 1

    def __repr__(self) -> str:
        return f"NTimesDuringLoop({self.n})"


class Periodic(Schedule):
    """Due when `period` seconds passed since the end of the previous call.

    The clock starts after the first step of each run (so compilation is not
    counted), and restarts when the function returns, so its own duration
    and pauses are not counted: calls are at least `period` apart, not
    exactly `period`. The first step of a run is never due.

    Args:
        period: seconds (> 0) or a `datetime.timedelta`.
        clock: returns the time in seconds; tests pass a fake one.

    Raises:
        TypeError, ValueError: `period` is not a positive number of seconds.

    Example:
        now = [0.0]
        schedule = Periodic(30, clock=lambda: now[0])
    """

    def __init__(
        self, period: float | datetime.timedelta, *, clock: Callable[[], float] = time.monotonic
    ):
        if isinstance(period, datetime.timedelta):
            seconds = period.total_seconds()
        elif isinstance(period, (int, float)) and not isinstance(period, bool):
            seconds = float(period)
        else:
            raise TypeError(
                "PeriodicCallback expects period in seconds or a datetime.timedelta. "
                f"Received: period={period!r}."
            )
        if not seconds > 0:
            raise ValueError(f"PeriodicCallback expects period > 0. Received: period={period!r}.")
        if not callable(clock):
            raise TypeError(f"clock must be a function returning seconds. Received: {clock!r}.")
        self.period = seconds
        self.clock = clock
        self._last: float | None = None

    def due(self, loop: Any) -> bool:
        if loop.loop_step == loop.start_step or self._last is None:
            self._last = self.clock()
            return False
        return self.clock() - self._last >= self.period

    def next_step(self, loop: Any) -> int | None:
        """`loop.loop_step` at the first step of a run (it starts the clock) and when
        the period has passed now; else None (time decides: see `seconds_left`)."""
        if self._last is None or loop.loop_step == loop.start_step:
            return loop.loop_step
        return loop.loop_step if self.clock() - self._last >= self.period else None

    def seconds_left(self, loop: Any) -> float:
        if self._last is None or loop.loop_step == loop.start_step:
            return 0.0
        return max(0.0, self.period - (self.clock() - self._last))

    def called(self, loop: Any) -> None:
        self._last = self.clock()

    def __repr__(self) -> str:
        return f"Periodic({self.period:g}s)"


class Exponential(Schedule):
    """Due at geometrically spaced steps: `start_step`, then growing skips.

    The skip starts at `start_step` and, after each due step, is multiplied
    by `factor` and rounded half away from zero: `(100, 1.2)` is due at 100,
    220, 364, 537, ... These steps depend only on the arguments, so they are
    the same across resumed runs.

    Args:
        start_step: the first due step, >= 1.
        factor: the growth of the skip, > 1.

    Raises:
        TypeError, ValueError: `start_step` is not an int >= 1 or `factor`
            not a number > 1.
    """

    def __init__(self, start_step: int, factor: float):
        self.start_step = _check_int("ExponentialCallback", "start_step", start_step, 1)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TypeError(
                f"ExponentialCallback expects a number factor. Received: factor={factor!r}."
            )
        if not factor > 1:
            raise ValueError(
                f"ExponentialCallback expects factor > 1. Received: factor={factor!r}."
            )
        self.factor = float(factor)
        self._restart()

    def _restart(self) -> None:
        self._previous = -1  # the due step before _next (-1: none)
        self._next = self.start_step
        self._skip = _round_half_away(self.start_step * self.factor)

    def _advance(self, step: int) -> int:
        """Moves the cursor to the first due step >= `step` and returns it."""
        if step <= self._previous:
            self._restart()
        while self._next < step:
            self._previous = self._next
            self._next += self._skip
            self._skip = _round_half_away(self._skip * self.factor)
        return self._next

    def due(self, loop: Any) -> bool:
        step = loop.loop_step
        if self._previous < step < self._next:
            return False
        return self._advance(step) == step

    def next_step(self, loop: Any) -> int:
        return self._advance(loop.loop_step)

    def steps(self, count: int) -> list[int]:
        """The first `count` due steps (e.g. `[100, 220, 364, 537]` for (100, 1.2))."""
        out: list[int] = []
        schedule = Exponential(self.start_step, self.factor)
        step = 0
        for _ in range(count):
            step = schedule._advance(step)
            out.append(step)
            step += 1
        return out

    def __repr__(self) -> str:
        return f"Exponential({self.start_step}, {self.factor:g})"


class ScheduledHook:
    """Calls `fn(loop, metrics)` after the steps a schedule marks, and maybe at the end.

    Registered as an `on_step` hook with the schedule (the loop calls it
    only when due), and an `on_end` one when `call_on_end`. The end call
    happens only if the run trained at least one step and `fn` did not
    already run after its last step, so the same metrics are never reported
    twice.
    """

    def __init__(self, schedule: Schedule, fn: OnStepFn, call_on_end: bool):
        self.schedule = schedule
        self.fn = fn
        self.call_on_end = call_on_end
        self._last_call: tuple[int, int] | None = None  # (start_step of the run, step)

    def on_step(self, loop: Any, metrics: list) -> None:
        self.fn(loop, metrics)
        self._last_call = (loop.start_step, loop.loop_step)

    def on_end(self, loop: Any, metrics: list) -> None:
        last_step = loop.loop_step - 1
        if last_step < loop.start_step or self._last_call == (loop.start_step, last_step):
            return
        self.fn(loop, metrics)
        self._last_call = (loop.start_step, last_step)

    def register(self, loop: Any, name: str, priority: float) -> None:
        loop.on_step(name, priority, self.on_step, schedule=self.schedule)
        if self.call_on_end:
            loop.on_end(name, priority, self.on_end)


def every_n_steps(loop: Any, n: int, name: str, priority: float, fn: OnStepFn) -> EveryNSteps:
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
    loop: Any, n: int, name: str, priority: float, fn: OnStepFn
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
    loop: Any,
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
    loop: Any,
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
