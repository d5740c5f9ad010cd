"""Named hooks kept in priority order at registration, and the one rule that fires them.

`HookList.fire` is where a hook fires: after the steps where its schedule is due (every
step without one), `schedule.called` told after the function ran, each call timed into its
`HookCost`. `loop.plan` runs the same `fire` over a `HookList.snapshot` (the schedules'
snapshots, recording functions), so plan and run share that rule.
"""

from __future__ import annotations

import bisect
import copy
import inspect
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from keras_trainloop._describe import short_repr
from keras_trainloop.loop._errors import NonFiniteLossError, hook_error

_COST_WINDOW = 1024
"""Durations kept per hook for its median cost (the most recent calls)."""


class HookCost:
    """What one hook's calls cost: their count, total and recent durations (seconds).

    Attributes:
        calls: calls since the loop was created (the scheduled hooks: calls
            of the function, not the steps where it was not due).
        total: seconds spent in those calls.
        recent: durations of the last calls (at most 1024), for `median`.
    """

    __slots__ = ("calls", "recent", "total")

    def __init__(self) -> None:
        self.calls = 0
        self.total = 0.0
        self.recent: list[float] = []

    def add(self, seconds: float) -> None:
        self.calls += 1
        self.total += seconds
        recent = self.recent
        if len(recent) >= _COST_WINDOW:
            del recent[: _COST_WINDOW // 2]
        recent.append(seconds)

    def __add__(self, other: HookCost) -> HookCost:
        """The costs of two hooks together (e.g. hooks of one event sharing a name)."""
        total = HookCost()
        total.calls = self.calls + other.calls
        total.total = self.total + other.total
        total.recent = self.recent + other.recent
        return total

    @property
    def median(self) -> float:
        """The median duration of the recent calls in seconds; 0.0 before any call."""
        return statistics.median(self.recent) if self.recent else 0.0

    def __repr__(self) -> str:
        return f"HookCost(calls={self.calls}, median={self.median:.3g}s, total={self.total:.3g}s)"


class Hook(NamedTuple):
    """A registered hook: its name, its function, its schedule (or None) and its cost.

    A hook with a `schedule` is called only after the steps where
    `schedule.due(loop)` holds (then `schedule.called(loop)` is told); one
    without is called after every step. `end_of` marks an `OnEnd` hook that
    ends a scheduled `OnStep` hook (the schedule helpers' `call_on_end`): the
    schedule of that hook, whose function skips the end call when it just ran
    after the last step (`loop.plan` applies the same rule).
    """

    name: str
    fn: Callable[..., Any]
    schedule: Any = None
    cost: HookCost | None = None
    end_of: Any = None


def check_priority(priority: Any, where: str) -> None:
    """Raises TypeError unless `priority` is an int or a float (not a bool), ValueError for NaN.

    NaN would break the order (it compares false with every priority); inf and
    -inf are accepted (last and first).
    """
    fix = "Fix: pass a number such as 0 or 10 (lower runs first)."
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise TypeError(
            f"{where}: priority must be a number (lower runs first). "
            f"Received: priority={short_repr(priority)}. {fix}"
        )
    if isinstance(priority, float) and math.isnan(priority):
        raise ValueError(
            f"{where}: priority must not be NaN (it orders the hooks). "
            f"Received: priority={priority}. {fix}"
        )


def check_callable(fn: Any, num_args: int, where: str, signature: str) -> None:
    """Checks that `fn` is callable with `num_args` positional arguments.

    Functions whose signature Python cannot inspect (some builtins) are
    accepted as they are.

    Args:
        fn: the candidate function.
        num_args: how many positional arguments the caller passes.
        where: names the hook in the message, e.g. "OnStep hook 'log'".
        signature: the expected call, e.g. "fn(loop, metrics)".

    Raises:
        TypeError: `fn` is not callable or cannot take `num_args` positional
            arguments.
    """
    if not callable(fn):
        raise TypeError(
            f"{where} must be a function {signature}. Received: fn={short_repr(fn)}. "
            f"Fix: pass a function, e.g. `def fn{signature[2:]}: ...`."
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*([None] * num_args))
    except TypeError:
        raise TypeError(
            f"{where} must accept {num_args} positional arguments: {signature}. "
            f"Received: fn={short_repr(fn)} with signature {sig}. "
            f"Fix: define it as `def {getattr(fn, '__name__', 'fn')}{signature[2:]}: ...`."
        ) from None


class HookList:
    """The hooks of one event, lowest priority first, ties in registration order.

    The order is settled when a hook is added (binary search), never while
    the loop runs. `hooks` is a tuple replaced on each registration, so a
    hook that registers another one while the event fires does not disturb
    the iteration in progress (the new hook runs from the next event on).

    Args:
        kind: the event's name in messages: "OnStart", "OnStep" or "OnEnd".
        signature: the expected call of a hook, e.g. "fn(loop, metrics)".
    """

    __slots__ = ("_priorities", "hooks", "kind", "signature", "unscheduled")

    def __init__(self, kind: str, signature: str):
        self.kind = kind
        self.signature = signature
        self.hooks: tuple[Hook, ...] = ()
        self.unscheduled = 0  # How many hooks have no schedule (called after every step).
        self._priorities: list[float] = []

    def add(
        self,
        name: str,
        priority: float,
        fn: Callable[..., Any],
        schedule: Any = None,
        *,
        end_of: Any = None,
    ) -> None:
        """Adds `fn` under `name`, after every hook of lower or equal priority.

        Args:
            name: names the hook in error messages and cost reports.
            priority: lower runs first.
            fn: the hook function.
            schedule: None (call `fn` at every event), or an object with
                `due(loop)`, `next_step(loop)` and `called(loop)` (a
                `ktl.loop.Schedule`): `fn` is called only when `due` holds.
            end_of: for an end call of a scheduled hook, that hook's schedule
                (see `Hook`).

        Raises:
            TypeError: `name` is not a string, `priority` not a number,
                `fn` not callable with the event's two arguments, or
                `schedule` lacks `due`/`next_step`/`called`.
            ValueError: `priority` is NaN.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"{self.kind} hook names must be strings. Received: name={short_repr(name)}. "
                "Fix: pass a name such as 'log' (it names the hook in errors and reports)."
            )
        where = f"{self.kind} hook {short_repr(name)}"
        check_priority(priority, where)
        check_callable(fn, 2, where, self.signature)
        if schedule is not None and not all(
            callable(getattr(schedule, method, None)) for method in ("due", "next_step", "called")
        ):
            raise TypeError(
                f"{where}: schedule must have due(loop), next_step(loop) and called(loop) "
                f"(a ktl.loop.Schedule such as ktl.loop.EveryNSteps(100)). "
                f"Received: schedule={short_repr(schedule)}. Fix: pass "
                "schedule=ktl.loop.EveryNSteps(n) (or another ktl.loop.Schedule), or None."
            )
        index = bisect.bisect_right(self._priorities, priority)
        self._priorities.insert(index, priority)
        hooks = list(self.hooks)
        hooks.insert(index, Hook(name, fn, schedule, HookCost(), end_of))
        self.hooks = tuple(hooks)
        self.unscheduled += schedule is None

    def snapshot(self, fns: list[Callable[..., Any]]) -> HookList:
        """A copy of these hooks for planning: firing it changes nothing of them.

        The same hooks in the same order, each schedule replaced by its
        `snapshot()` (it answers as the schedule does now, and only it is changed
        by what it is asked; see `ktl.loop.Schedule`; an object without one is
        copied), the i-th function by `fns[i]`, with fresh costs.
        """
        planned = HookList(self.kind, self.signature)
        planned._priorities = list(self._priorities)
        planned.unscheduled = self.unscheduled
        planned.hooks = tuple(
            hook._replace(fn=fn, schedule=_snapshot(hook.schedule), cost=HookCost())
            for hook, fn in zip(self.hooks, fns)
        )
        return planned

    def replace_schedules(self, replace: Callable[[Any, str], Any]) -> None:
        """Gives each scheduled hook the schedule `replace(schedule, name)` (order, costs kept).

        With several processes the loop wraps the time-based schedules this way
        (loop/_agreement.py).
        """
        self.hooks = tuple(
            hook
            if hook.schedule is None
            else hook._replace(schedule=replace(hook.schedule, hook.name))
            for hook in self.hooks
        )

    def fire(self, loop: Any, arg: Any) -> None:
        """Calls every hook as `fn(loop, arg)` in order (scheduled ones when due).

        Each call is timed into the hook's `cost`.

        Raises:
            HookError: a hook (or its schedule) raised; the hooks after it were not
                called. It is also of the hook's exception type (see `hook_error`).
            NonFiniteLossError: as is, when a hook reading `loop.logs` made the loop
                find a non-finite batch loss.
        """
        clock = time.perf_counter
        for hook in self.hooks:
            schedule = hook.schedule
            try:
                if schedule is not None and not schedule.due(loop):
                    continue
                start = clock()
                hook.fn(loop, arg)
                hook.cost.add(clock() - start)
                if schedule is not None:
                    schedule.called(loop)
            except NonFiniteLossError:
                raise  # The loop's own check (a hook read `loop.logs`), not the hook's error.
            except Exception as e:
                raise hook_error(self.kind, hook.name, loop.loop_step, e) from e

    def names(self) -> list[str]:
        """The hook names in calling order."""
        return [hook.name for hook in self.hooks]

    def __len__(self) -> int:
        return len(self.hooks)

    def __repr__(self) -> str:
        return f"HookList({self.kind}, {self.names()})"


def _snapshot(schedule: Any) -> Any:
    if schedule is None:
        return None
    snapshot = getattr(schedule, "snapshot", None)
    return snapshot() if callable(snapshot) else copy.copy(schedule)
