"""Agreement: with several processes, the loop's time-based decisions agree across them.

In a job of several JAX processes every process runs the same steps, and the steps run
collectives across the processes, so every decision that changes which collective runs
next must come out the same on all of them: whether a hook that may run collectives fires
(a checkpoint save, an eval), how many steps a call fuses, whether a spec runs fused at
all. Step-based schedules agree by construction (pure functions of the step); decisions
read from a clock or from measured times do not: each process has its own.

- `Agreement` is a hook of the loop's own ("Agreement: process 0's checks", first of the
  `on_step` hooks), registered on every process when a run begins with steps that span
  processes. Its schedule is due at check steps, which end fused calls alike everywhere:
  the run's first step, then the steps the last check named. At a check every process
  sends, in one small collective (`process_allgather`), the answer of each of its
  time-based schedules by its own clock and how many steps it wants to the next check.
  A hook that process 0 has fires by process 0's answer (hooks are matched by name), one
  that only this process has (an output-only hook such as the progress bar, attached on
  process 0 only) by its own; the next check is the nearest any process asked for, at most
  `MAX_CHECK_GAP` steps on: about one collective per period of the shortest timed hook.
- `AgreedSchedule` wraps each time-based schedule (one whose `seconds_left` answers): it
  is due only at a check step, by the agreed answer, and no longer bounds fused calls (the
  check steps do, for every process alike).
- `process_zero_verdict`: the fusion gate's verdicts (`FusionGate.agree`), taken at the
  fixed points of its probe (loop/_fusion_gate.py).
- `agree(loop)`: called when a run begins. With one process, or a trainer without a
  distribution (each process then trains on its own), it does nothing: no extra cost or
  synchronisation.

Contract for the user: every process registers the same step-based and unscheduled hooks
and reads a dataset with the same number of batches of the same shapes (e.g.
`ktl.ArrayDataset(..., shard=ktl.data.process_shard())`); a time-based hook may be
registered on some processes only when it runs no collective (output). A hook that
decides from local state (its own clock) must carry a time-based schedule rather than
decide inside `fn`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from keras_trainloop.loop._schedules import Schedule

MAX_CHECK_GAP = 1024
"""The most steps between two checks with several processes."""

MAX_TIMED_HOOKS = 16
"""The most time-based `on_step` hooks per process with several processes."""

CHECK_HOOK_NAME = "Agreement: process 0's checks"

Gather = Callable[[np.ndarray], np.ndarray]
"""Every process's int32 vector, stacked as rows in process order (a collective)."""


def gather_from_processes(values: np.ndarray) -> np.ndarray:
    """`values` of every process, one row each (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    rows = multihost_utils.process_allgather(np.asarray(values, dtype=np.int32))
    return np.asarray(rows).reshape(-1, np.size(values))


def process_zero_verdict(verdict: bool | None, gather: Gather | None = None) -> bool | None:
    """Process 0's fusion verdict (True keep, False drop, None: measure on) on every process."""
    code = 0 if verdict is None else 1 if verdict else 2
    agreed = int((gather or gather_from_processes)(np.array([code], np.int32))[0, 0])
    return None if agreed == 0 else agreed == 1


def is_time_based(schedule: Any, loop: Any) -> bool:
    """Whether `schedule` answers `seconds_left` (the contract of time-based schedules)."""
    seconds_left = getattr(schedule, "seconds_left", None)
    return callable(seconds_left) and seconds_left(loop) is not None


def steps_for(seconds: float | None, loop: Any) -> int:
    """Steps until `seconds` pass at the last step's duration, in [1, MAX_CHECK_GAP]."""
    durations = loop.train_step_durations
    step_seconds = durations[-1] if len(durations) else 0.0
    if seconds is None or not seconds > 0 or not step_seconds > 0:
        return 1
    return int(min(MAX_CHECK_GAP, max(1, math.ceil(seconds / step_seconds))))


def _key(name: str, ordinal: int) -> int:
    """A hook's key across processes: its name and its rank among timed hooks so named."""
    return zlib.crc32(f"{name}\0{ordinal}".encode()) & 0x7FFFFFFF


class AgreedSchedule(Schedule):
    """A time-based schedule that, with several processes, fires at check steps only.

    Due after a check step when the check agreed so (process 0's answer, or this
    process's own for a hook process 0 lacks). `next_step` and `seconds_left` are
    None: the checks end fused calls, alike on every process.

    Args:
        inner: the wrapped schedule (`due`, `next_step`, `called`, `seconds_left`).
        agreement: the loop's `Agreement`.
        key: the hook's key (name and rank), to match it across processes.
    """

    def __init__(self, inner: Any, agreement: Agreement, key: int):
        self.inner = inner
        self.agreement = agreement
        self.key = key

    def due(self, loop: Any) -> bool:
        return self.agreement.verdict(self, loop)

    def next_step(self, loop: Any) -> None:
        return None

    def called(self, loop: Any) -> None:
        self.inner.called(loop)

    def local_answer(self, loop: Any) -> tuple[bool, int]:
        """(due, steps to its next check) by this process's clock; asked once per check."""
        inner = self.inner
        if inner.due(loop):
            after = inner.snapshot()  # As it will be once called: asked without changing it.
            after.called(loop)
            return True, steps_for(after.seconds_left(loop), loop)
        return False, steps_for(inner.seconds_left(loop), loop)

    def snapshot(self) -> Schedule:
        """The wrapped schedule's snapshot: a plan is this process's view (no collective)."""
        return self.inner.snapshot()

    def __repr__(self) -> str:
        return f"Agreed({self.inner!r})"


class _Unplanned(Schedule):
    """The agreement's stand-in in plans: its check steps are known only while running."""

    def due(self, loop: Any) -> bool:
        return False

    def next_step(self, loop: Any) -> None:
        return None


class Agreement(Schedule):
    """The check steps of a loop with several processes, and what the last check agreed.

    It is the schedule of the loop's own check hook, whose function is `check`.

    Args:
        gather: every process's int32 vector as rows (tests pass a fake collective).

    Attributes:
        schedules: this process's time-based schedules, wrapped, in hook order.
        checks: how many checks ran (one collective each).
    """

    def __init__(self, gather: Gather = gather_from_processes):
        self._gather = gather
        self.schedules: list[AgreedSchedule] = []
        self.checks = 0
        self._check = -1  # The next check step; -1: the run's first step.
        self._checked_at: int | None = None
        self._verdicts: dict[int, bool] = {}  # id(schedule) -> due at the last check.

    def new_run(self) -> None:
        """A run begins: its first step is a check."""
        self._check, self._checked_at = -1, None

    def _check_step(self, loop: Any) -> int:
        return loop.start_step if self._check < 0 else self._check

    def due(self, loop: Any) -> bool:
        return loop.loop_step >= self._check_step(loop)

    def next_step(self, loop: Any) -> int:
        return max(loop.loop_step, self._check_step(loop))

    def snapshot(self) -> Schedule:
        return _Unplanned()

    def check(self, loop: Any, metrics: list) -> None:
        """The check hook: one collective; sets the verdicts and the next check step."""
        del metrics
        answers = [schedule.local_answer(loop) for schedule in self.schedules]
        sent = np.zeros(2 + 2 * MAX_TIMED_HOOKS, np.int32)
        sent[0] = min((gap for _, gap in answers), default=MAX_CHECK_GAP)
        sent[1] = len(answers)
        for i, (schedule, (due, _)) in enumerate(zip(self.schedules, answers)):
            sent[2 + 2 * i : 4 + 2 * i] = schedule.key, due
        rows = self._gather(sent)
        zero = rows[0]
        process_zero = {int(k): bool(d) for k, d in zero[2 : 2 + 2 * int(zero[1])].reshape(-1, 2)}
        self._verdicts = {
            id(schedule): process_zero.get(schedule.key, due)
            for schedule, (due, _) in zip(self.schedules, answers)
        }
        step = loop.loop_step
        self._check = step + max(1, int(rows[:, 0].min()))
        self._checked_at = step
        self.checks += 1

    def verdict(self, schedule: AgreedSchedule, loop: Any) -> bool:
        """Whether `schedule`'s hook fires now: at a check step, as that check agreed."""
        return self._checked_at == loop.loop_step and self._verdicts.get(id(schedule), False)

    def wrap(self, loop: Any) -> None:
        """Wraps the time-based `on_step` schedules (once), keyed by hook name and rank."""
        hooks = loop._on_step
        ranks: dict[str, int] = {}
        wrapped: list[AgreedSchedule] = []

        def replace(schedule: Any, name: str) -> Any:
            if schedule is self or not (
                isinstance(schedule, AgreedSchedule) or is_time_based(schedule, loop)
            ):
                return schedule
            rank = ranks[name] = ranks.get(name, -1) + 1
            if not isinstance(schedule, AgreedSchedule):
                schedule = AgreedSchedule(schedule, self, 0)
            schedule.key = _key(name, rank)
            wrapped.append(schedule)
            return schedule

        hooks.replace_schedules(replace)
        if len(wrapped) > MAX_TIMED_HOOKS:
            raise ValueError(
                f"With several processes a loop takes at most {MAX_TIMED_HOOKS} time-based "
                f"on_step hooks. Received: {len(wrapped)}. Fix: merge some of them, or give "
                "some a step-based schedule (ktl.every_n_steps)."
            )
        self.schedules = wrapped


def unwrapped(schedule: Any) -> Any:
    """The schedule an `AgreedSchedule` wraps, or `schedule` itself."""
    return schedule.inner if isinstance(schedule, AgreedSchedule) else schedule


def needs_agreement(trainer: Any) -> bool:
    """Whether the trainer's steps span several processes (several, and a distribution)."""
    return jax.process_count() > 1 and getattr(trainer, "distribution", None) is not None


def agree(loop: Any, gather: Gather | None = None) -> bool:
    """Makes the run's time-based decisions agree when its steps span processes.

    Called when a run begins (after its `on_start` hooks). `gather`: tests pass a
    fake collective and force agreement; None: the real one, only when
    `needs_agreement(loop.trainer)`. The loop keeps its `Agreement` across runs.

    Returns:
        Whether agreement is on for this run.
    """
    agreement = getattr(loop, "_agreement", None)
    if agreement is None:
        if gather is None:
            if not needs_agreement(loop.trainer):
                return False
            gather = gather_from_processes
        agreement = loop._agreement = Agreement(gather)
        loop._on_step.add(CHECK_HOOK_NAME, -math.inf, agreement.check, schedule=agreement)
        loop._gate.agree = lambda verdict: process_zero_verdict(verdict, agreement._gather)
    agreement.new_run()
    agreement.wrap(loop)
    return True
