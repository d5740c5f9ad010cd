"""Planning a run: which hook fires at which step, and how steps are fused into calls.

The loop and `loop.plan` share `fusable_steps`, so what the plan shows is what
the loop does (for the step-based schedules; time-based ones are marked).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from keras_trainloop.loop._hooks import HookCost, HookList
from keras_trainloop.loop._schedules import ScheduledHook


def check_max_fused_steps(value: Any) -> int:
    """Returns `value` if it is a power of two >= 1, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(
            "max_fused_steps must be a power of two >= 1 (1 turns fused execution off). "
            f"Received: max_fused_steps={value!r}. Fix: pass e.g. max_fused_steps=8."
        )
    return value


def fusable_steps(
    loop: Any, hooks: HookList, limit: int, cap: int, step_seconds: float | None
) -> int:
    """How many steps from `loop.loop_step` on may run in one call: a power of two <= cap.

    The call must end at the next step where a scheduled hook may fire
    (`schedule.next_step`), at `limit` (-1: none), and, for time-based
    schedules, before `schedule.seconds_left` passes at `step_seconds` a step.
    Hooks without a schedule fire after every step, so they allow one step.
    """
    if cap <= 1 or hooks.unscheduled:
        return 1
    step = loop.loop_step
    if limit >= 0:
        cap = min(cap, limit - step)
    for hook in hooks.hooks:
        schedule = hook.schedule
        next_step = schedule.next_step(loop)
        if next_step is not None:
            cap = min(cap, next_step - step + 1)
        seconds_left = getattr(schedule, "seconds_left", None)
        seconds = seconds_left(loop) if seconds_left is not None else None
        if seconds is not None and step_seconds:
            cap = min(cap, max(1, int(seconds / step_seconds)))
        if cap <= 1:
            return 1
    return 1 << (cap.bit_length() - 1)


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
            raise KeyError(f"No on_step hook named {name!r} in this plan. Hooks: {names}.")
        return sorted({step for h in found for step in h.steps})

    def fires_at(self, step: int) -> list[str]:
        """Names of the on_step hooks that fire after `step`, in calling order."""
        return [h.name for h in self.hooks if h.event == "OnStep" and step in h.steps]

    def report(self) -> str:
        """A table of the hooks by estimated cost, most expensive first."""
        steps = self.end_step - self.start_step
        train = steps * self.step_seconds
        lines = [
            (f"Plan: steps {self.start_step}..{self.end_step - 1} ({steps} steps) in "
             f"{len(self.calls)} compiled calls; training ~{train:.3g} s at "
             f"{self.step_seconds * 1e6:.3g} us/step measured."),
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
    loop: Any, steps: int, on_step: HookList, on_end: HookList, cap: int,
    first_caps: list[int] | None = None,
) -> Plan:
    """Simulates the schedules of `loop`'s hooks (on copies) for `steps` steps.

    `first_caps`: the caps of the run's first calls (the loop's fusion gate
    measures single steps, then short fused calls); `cap` after them.
    """
    first_caps = list(first_caps or [])
    view = _View(loop, steps)
    end = view.end_step
    copies = [copy.copy(h.schedule) for h in on_step.hooks]
    fired: list[list[int]] = [[] for _ in copies]
    timed = [getattr(s, "seconds_left", lambda _: None)(view) is not None for s in copies]
    plan_hooks = HookList("OnStep", "fn(loop, metrics)")  # The copies, for fusable_steps.
    for hook, schedule in zip(on_step.hooks, copies):
        plan_hooks.add(hook.name, 0, hook.fn, schedule)
    calls: list[tuple[int, int]] = []
    step = view.start_step
    while step < end:
        view.loop_step = step
        call_cap = min(cap, first_caps[len(calls)]) if len(calls) < len(first_caps) else cap
        n = fusable_steps(view, plan_hooks, end, call_cap, None)
        calls.append((step, n))
        view.loop_step = step = step + n - 1
        for i, (hook, schedule) in enumerate(zip(on_step.hooks, copies)):
            if schedule is None:
                fired[i].append(step)
            elif not timed[i] and schedule.due(view):
                fired[i].append(step)
                schedule.called(view)
            elif timed[i] and schedule.next_step(view) == step and schedule.due(view):
                fired[i].append(step)
        step += 1
    planned = [
        PlannedHook("OnStep", hook.name, steps_, is_timed, hook.cost)
        for hook, steps_, is_timed in zip(on_step.hooks, fired, timed)
    ]
    for hook in on_end.hooks:
        # A schedule's end call is skipped when its function just ran after the last step.
        owner = getattr(hook.fn, "__self__", None)
        just_ran = isinstance(owner, ScheduledHook) and any(
            p.steps[-1:] == [end - 1] for p, h in zip(planned, on_step.hooks)
            if getattr(h.fn, "__self__", None) is owner
        )
        at_end = [end] if steps and not just_ran else []
        planned.append(PlannedHook("OnEnd", hook.name, at_end, False, hook.cost))
    return Plan(view.start_step, end, planned, calls, loop.median_train_step_duration()
                if loop.train_step_durations else 0.0)
