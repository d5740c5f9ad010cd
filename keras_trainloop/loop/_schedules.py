"""Schedules: when a hook fires, as small objects the loop asks.

A schedule answers `due(loop)`: "call the function after the step
`loop.loop_step` that just ran?", and `next_step(loop)`: the first step from
`loop.loop_step` on after which it may be due. The loop fuses the steps up to
there into one compiled call, so `next_step` must never skip a step where `due`
would hold. Time-based schedules also answer `seconds_left(loop)`, which bounds
how long a fused call may take.

State: the step-based schedules (`EveryNSteps`, `NTimesDuringLoop`,
`Exponential`) have none; their answers are pure functions of the loop's steps.
A time-based one changes only on the run's path: `Periodic` starts its clock
when `due` is asked after a run's first step, and restarts it in `called`.
`snapshot()` is a schedule that answers as this one does now and is the only one
changed by what it is asked: `loop.plan` fires the hooks over snapshots with the
run's own `HookList.fire`, so plan and run share one rule and planning changes
no schedule. A stateless schedule is its own snapshot.

With several processes, a time-based schedule (one whose `seconds_left` answers)
is asked by the Loop only at steps every process agrees on, and process 0's answer
is used everywhere (loop/_agreement.py): a clock read inside `due` alone would let
the processes fire at different steps.

The hooks that run on a schedule, and the registration functions (GoMLX's
`every_n_steps` & co.), are in loop/_scheduled.py.
"""

from __future__ import annotations

import abc
import copy
import datetime
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keras_trainloop._describe import short_repr

if TYPE_CHECKING:
    from keras_trainloop.loop._loop import Loop

_FIRST_UNKNOWN_TOTAL_CALL = 128  # steps done at the first call while the total is unknown

_NEVER = 1 << 62
"""A skip no run reaches: `Exponential`'s skips stop growing there (no float overflow)."""


def _check_finite(function: str, name: str, value: Any, fix: str) -> None:
    """Raises ValueError for a NaN or infinite float `value` (before any type check)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"{function} expects a finite {name}. Received: {name}={short_repr(value)}. Fix: {fix}."
        )


def _check_int(function: str, name: str, value: Any, minimum: int) -> int:
    fix = f"pass an int {name} >= {minimum}"
    _check_finite(function, name, value, fix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{function} expects an int {name}. Received: {name}={short_repr(value)}. "
            f"Fix: {fix} (e.g. {name}=int(value))."
        )
    if value < minimum:
        raise ValueError(
            f"{function} expects {name} >= {minimum}. Received: {name}={short_repr(value)}. "
            f"Fix: {fix}."
        )
    return value


def _round_half_away(x: float) -> int:
    """Rounds half away from zero (Go's math.Round) for x >= 0; at most `_NEVER`."""
    if not x < _NEVER:  # Also +inf: a skip that large is never reached.
        return _NEVER
    return math.floor(x + 0.5)


class Schedule(abc.ABC):
    """Decides after which steps a hook function is called.

    Subclasses implement `due` and `next_step`; `called` is told when the
    function ran. `loop` is a `ktl.Loop` (anything with `loop_step`,
    `start_step` and `end_step` will do).

    Give one to `loop.on_step(name, priority, fn, schedule=...)` to have `fn`
    called only when due; the loop then runs the steps in between fused.
    """

    @abc.abstractmethod
    def due(self, loop: Loop) -> bool:
        """Whether the function should be called after step `loop.loop_step`."""

    @abc.abstractmethod
    def next_step(self, loop: Loop) -> int | None:
        """The first step >= `loop.loop_step` after which `due` may hold.

        None when no step is known: never again in this run, or time decides
        (then `seconds_left` says when).
        """

    def called(self, loop: Loop) -> None:
        """Tells the schedule that the function was just called (after step `loop.loop_step`)."""

    def seconds_left(self, loop: Loop) -> float | None:
        """Seconds until a time-based schedule is due (0: now); None for step-based ones."""
        return None

    def snapshot(self) -> Schedule:
        """A schedule that answers as this one does now; asking it changes only it.

        `loop.plan` asks snapshots (`due`, `called`, `next_step`,
        `seconds_left`), so planning changes no schedule. The default is a
        shallow copy: override it when the state is deeper, or return `self`
        when the answers depend only on the loop's steps.
        """
        return copy.copy(self)


class EveryNSteps(Schedule):
    """Due after the steps where `(loop_step + 1) % n == 0`.

    Counted from the start of training (the global step), not from the start
    of the run, so the calls stay aligned when training resumes from a
    checkpoint. Never forces a call at the last step.

    Args:
        n: the period in steps, >= 1.

    Raises:
        TypeError, ValueError: `n` is not an int >= 1 (NaN and inf are ValueErrors).
    """

    def __init__(self, n: int):
        self.n = _check_int("EveryNSteps", "n", n, 1)

    def due(self, loop: Loop) -> bool:
        return (loop.loop_step + 1) % self.n == 0

    def next_step(self, loop: Loop) -> int:
        step = loop.loop_step
        return step + (self.n - 1 - step) % self.n

    def snapshot(self) -> EveryNSteps:
        """Itself: its answers depend only on the loop's steps."""
        return self

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
        TypeError, ValueError: `n` is not an int >= 1 (NaN and inf are ValueErrors).
    """

    def __init__(self, n: int):
        self.n = _check_int("NTimesDuringLoop", "n", n, 1)

    def due(self, loop: Loop) -> bool:
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

    def next_step(self, loop: Loop) -> int | None:
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

    def snapshot(self) -> NTimesDuringLoop:
        """Itself: its answers depend only on the loop's steps."""
        return self

    def __repr__(self) -> str:
        return f"NTimesDuringLoop({self.n})"


class Periodic(Schedule):
    """Due when `period` seconds passed since the end of the previous call.

    The clock starts after the first step of each run (so compilation is not
    counted), and restarts when the function returns, so its own duration
    and pauses are not counted: calls are at least `period` apart, not
    exactly `period`. The first step of a run is never due.

    Its state is the time its clock started, set by `due` after a run's first
    step and by `called`; `snapshot()` is a copy holding the same time.

    With several processes (a trainer under a distribution), the Loop asks it
    at steps all processes agree on and follows process 0's clock, so every
    process calls the function at the same steps (loop/_agreement.py).

    Args:
        period: seconds (> 0, finite) or a `datetime.timedelta`.
        clock: returns the time in seconds; tests pass a fake one.

    Raises:
        TypeError, ValueError: `period` is not a positive finite number of
            seconds (NaN and inf are ValueErrors).

    Example:
        now = [0.0]
        schedule = Periodic(30, clock=lambda: now[0])
    """

    def __init__(
        self, period: float | datetime.timedelta, *, clock: Callable[[], float] = time.monotonic
    ):
        fix = "pass a number of seconds > 0 (period=60) or a datetime.timedelta(minutes=1)"
        _check_finite("PeriodicCallback", "period", period, fix)
        if isinstance(period, datetime.timedelta):
            seconds = period.total_seconds()
        elif isinstance(period, (int, float)) and not isinstance(period, bool):
            seconds = float(period)
        else:
            raise TypeError(
                "PeriodicCallback expects period in seconds or a datetime.timedelta. "
                f"Received: period={short_repr(period)}. Fix: {fix}."
            )
        if not seconds > 0:
            raise ValueError(
                f"PeriodicCallback expects period > 0. Received: period={short_repr(period)}. "
                f"Fix: {fix}."
            )
        if not callable(clock):
            raise TypeError(
                f"clock must be a function returning seconds. Received: {short_repr(clock)}. "
                "Fix: pass a function such as time.monotonic."
            )
        self.period = seconds
        self.clock = clock
        self._last: float | None = None

    def _running(self, loop: Loop) -> bool:
        """Whether the clock runs: started, and not at a run's first step (it restarts there)."""
        return self._last is not None and loop.loop_step != loop.start_step

    def due(self, loop: Loop) -> bool:
        """The run's question; at a run's first step it starts the clock instead (False)."""
        if not self._running(loop):
            self._last = self.clock()  # The state changes here and in `called` only.
            return False
        return self.clock() - self._last >= self.period

    def next_step(self, loop: Loop) -> int | None:
        """`loop.loop_step` at the first step of a run (it starts the clock) and when
        the period has passed now; else None (time decides: see `seconds_left`)."""
        if not self._running(loop) or self.clock() - self._last >= self.period:
            return loop.loop_step
        return None

    def seconds_left(self, loop: Loop) -> float:
        if not self._running(loop):
            return 0.0
        return max(0.0, self.period - (self.clock() - self._last))

    def called(self, loop: Loop) -> None:
        self._last = self.clock()

    def __repr__(self) -> str:
        return f"Periodic({self.period:g}s)"


class Exponential(Schedule):
    """Due at geometrically spaced steps: `start_step`, then growing skips.

    The skip starts at `start_step` and, after each due step, is multiplied
    by `factor` and rounded half away from zero: `(100, 1.2)` is due at 100,
    220, 364, 537, ... These steps depend only on the arguments, so they are
    the same across resumed runs, and the answers are pure functions of the
    step (a cursor caches the walk along them, whatever order the questions
    come in).

    Args:
        start_step: the first due step, >= 1.
        factor: the growth of the skip, > 1 and finite (a skip stops growing
            at 2**62 steps, which no run reaches).

    Raises:
        TypeError, ValueError: `start_step` is not an int >= 1 or `factor`
            not a finite number > 1 (NaN and inf are ValueErrors).
    """

    def __init__(self, start_step: int, factor: float):
        self.start_step = _check_int("ExponentialCallback", "start_step", start_step, 1)
        fix = "pass a finite number factor > 1, e.g. factor=1.2"
        _check_finite("ExponentialCallback", "factor", factor, fix)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TypeError(
                "ExponentialCallback expects a number factor. Received: "
                f"factor={short_repr(factor)}. Fix: {fix}."
            )
        if not factor > 1:
            raise ValueError(
                "ExponentialCallback expects factor > 1. Received: "
                f"factor={short_repr(factor)}. Fix: {fix}."
            )
        self.factor = float(factor)
        self._cursor = self._first_cursor()

    def _first_cursor(self) -> tuple[int, int, int]:
        """(the due step before `next`, -1 for none; the first due step; the skip after it)."""
        return -1, self.start_step, _round_half_away(self.start_step * self.factor)

    def _first_due_from(self, step: int) -> int:
        """The first due step >= `step` (the cursor moves there: a cache, not state)."""
        previous, next_, skip = self._cursor
        if step <= previous:
            previous, next_, skip = self._first_cursor()
        while next_ < step:
            previous, next_, skip = next_, next_ + skip, _round_half_away(skip * self.factor)
        self._cursor = previous, next_, skip
        return next_

    def due(self, loop: Loop) -> bool:
        step = loop.loop_step
        previous, next_, _ = self._cursor
        if previous < step < next_:
            return False
        return self._first_due_from(step) == step

    def next_step(self, loop: Loop) -> int:
        return self._first_due_from(loop.loop_step)

    def snapshot(self) -> Exponential:
        """Itself: its answers depend only on the loop's steps."""
        return self

    def steps(self, count: int) -> list[int]:
        """The first `count` due steps (e.g. `[100, 220, 364, 537]` for (100, 1.2))."""
        out: list[int] = []
        schedule = Exponential(self.start_step, self.factor)
        step = 0
        for _ in range(count):
            step = schedule._first_due_from(step)
            out.append(step)
            step += 1
        return out

    def __repr__(self) -> str:
        return f"Exponential({self.start_step}, {self.factor:g})"
