"""Planning a run: which hook fires at which step, and how steps are fused into calls.

`make_plan` fires the loop's `on_step` hooks as a run does, with `HookList.fire`
itself, over `HookList.snapshot` (each schedule's snapshot, a recording function per
hook), and sizes the calls with the run's `fusable_steps`, so what the plan shows is
what the loop does (for the step-based schedules; time-based ones are asked at the
plan's time, and marked). An end call of a scheduled hook is listed by the run's rule
(`end_call_due`), paired with its `on_step` hook through the `end_of` it carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_trainloop._describe import short_repr
from keras_trainloop.loop._agreement import unwrapped
from keras_trainloop.loop._hooks import HookCost, HookList
from keras_trainloop.loop._scheduled import end_call_due
from keras_trainloop.loop._step_source import fusable_steps


class _View:
    """What schedules read of a loop, for planning without touching the loop."""

    def __init__(self, loop: Any, steps: int):
        self.trainer = loop.trainer
        self.start_step = loop.loop_step
        self.loop_step = loop.loop_step
        self.end_step = loop.loop_step + steps
        self.epoch = 0
        self.shared_data: dict = {}


@dataclasses.dataclass
class PlannedHook:
    """One hook in a plan.

    Attributes:
        event: "OnStep" or "OnEnd" (OnStart hooks run once, before the first step).
        name: the hook's name.
        steps: the steps after which it is called; for "OnEnd", `[end_step]`.
        timed: whether its schedule is time-based (`steps` then lists only
            the steps known now, such as a run's first step).
        cost: its measured cost so far (calls, median, total seconds).
    """

    event: str
    name: str
    steps: list[int]
    timed: bool
    cost: HookCost

    @property
    def estimated_seconds(self) -> float:
        """Planned calls times the median measured cost (0 before any call)."""
        return len(self.steps) * self.cost.median


@dataclasses.dataclass
class Plan:
    """What a `run_steps(ds, steps)` from the current step would do (see `Loop.plan`).

    Attributes:
        start_step, end_step: the run's first step and one past its last.
        hooks: every on_step and on_end hook, in calling order, with its steps.
        calls: `(first_step, num_steps)` of each compiled call, in order,
            when the dataset supplies stacked batches (else one step each);
            time-based schedules may cut calls shorter while running.
        step_seconds: the median step duration measured so far (0: none yet).
    """

    start_step: int
    end_step: int
    hooks: list[PlannedHook]
    calls: list[tuple[int, int]]
    step_seconds: float

    def steps_of(self, name: str) -> list[int]:
        """The steps after which the on_step hook(s) called `name` fire."""
        found = [h for h in self.hooks if h.name == name and h.event == "OnStep"]
        if not found:
            names = sorted({h.name for h in self.hooks})
            raise KeyError(
                f"No on_step hook named {short_repr(name)} in this plan. Hooks: {names}. "
                "Fix: pass one of these names (a scheduled hook's name starts with its "
                "schedule, e.g. 'EveryNSteps(100): eval')."
            )
        return sorted({step for h in found for step in h.steps})

    def fires_at(self, step: int) -> list[str]:
        """Names of the on_step hooks that fire after `step`, in calling order."""
        return [h.name for h in self.hooks if h.event == "OnStep" and step in h.steps]

    def report(self) -> str:
        """A table of the hooks by estimated cost, most expensive first."""
        steps = self.end_step - self.start_step
        train = steps * self.step_seconds
        lines = [
            (
                f"Plan: steps {self.start_step}..{self.end_step - 1} ({steps} steps) in "
                f"{len(self.calls)} compiled calls; training ~{train:.3g} s at "
                f"{self.step_seconds * 1e6:.3g} us/step measured."
            ),
            f"{'hook':<40} {'event':<6} {'calls':>7} {'median':>10} {'est. s':>9} {'share':>6}",
        ]
        ranked = sorted(self.hooks, key=lambda h: -h.estimated_seconds)
        total = sum(h.estimated_seconds for h in ranked) + train
        for h in ranked:
            calls = f"{len(h.steps)}+" if h.timed else str(len(h.steps))
            share = f"{100 * h.estimated_seconds / total:.0f}%" if total else "-"
            median = f"{h.cost.median * 1e3:.3g} ms" if h.cost.calls else "unmeasured"
            lines.append(
                f"{h.name[:40]:<40} {h.event[2:]:<6} {calls:>7} {median:>10} "
                f"{h.estimated_seconds:>9.3g} {share:>6}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def make_plan(
    loop: Any,
    steps: int,
    on_step: HookList,
    on_end: HookList,
    cap: int,
    first_caps: list[int] | None = None,
) -> Plan:
    """Plans `steps` steps of `loop` from its `loop_step` (changing nothing of it).

    `first_caps`: the caps of the run's first calls (the loop's fusion gate
    measures single steps, then short fused calls); `cap` after them.
    """
    view = _View(loop, steps)
    fired: list[list[int]] = [[] for _ in on_step.hooks]
    hooks = on_step.snapshot([_recorder(steps_) for steps_ in fired])
    timed = [_is_timed(hook.schedule, view) for hook in hooks.hooks]
    calls = _fire_calls(view, hooks, cap, list(first_caps or []))
    planned = [
        PlannedHook("OnStep", hook.name, steps_, is_timed, hook.cost)
        for hook, steps_, is_timed in zip(on_step.hooks, fired, timed)
    ]
    planned += _end_hooks(on_end, on_step, fired, view.start_step, view.end_step)
    step_seconds = loop.median_train_step_duration() if loop.train_step_durations else 0.0
    return Plan(view.start_step, view.end_step, planned, calls, step_seconds)


def _end_hooks(
    on_end: HookList, on_step: HookList, fired: list[list[int]], start: int, end: int
) -> list[PlannedHook]:
    """The on_end hooks at the end of the run; `fired`: the steps of each on_step hook."""
    # A scheduled hook's end call (`end_of`) is skipped when its on_step hook just fired.
    ran = {
        id(unwrapped(hook.schedule))
        for hook, steps in zip(on_step.hooks, fired)
        if hook.schedule is not None and steps[-1:] == [end - 1]
    }
    return [
        PlannedHook(
            "OnEnd",
            hook.name,
            [end] if end_call_due(start, end, id(hook.end_of) in ran) else [],
            False,
            hook.cost,
        )
        for hook in on_end.hooks
    ]


def _recorder(steps: list[int]) -> Any:
    """A hook function that records the steps it is called at."""
    return lambda view, metrics: steps.append(view.loop_step)


def _is_timed(schedule: Any, view: _View) -> bool:
    seconds_left = getattr(schedule, "seconds_left", None)
    return seconds_left is not None and seconds_left(view) is not None


def _fire_calls(
    view: _View, hooks: HookList, cap: int, first_caps: list[int]
) -> list[tuple[int, int]]:
    """Sizes the calls of the planned run and fires `hooks` after each, as the loop does.

    Returns:
        `(first_step, num_steps)` of each call.
    """
    calls: list[tuple[int, int]] = []
    step, end = view.start_step, view.end_step
    while step < end:
        view.loop_step = step
        call_cap = min(cap, first_caps[len(calls)]) if len(calls) < len(first_caps) else cap
        n = fusable_steps(view, hooks, end, call_cap, None)
        calls.append((step, n))
        view.loop_step = step = step + n - 1
        if hooks.hooks:
            hooks.fire(view, [])
        step += 1
    return calls
