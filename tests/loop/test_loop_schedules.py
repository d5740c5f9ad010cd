"""Schedules: the exact steps each one fires at, resumes, bad arguments, next_step."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
from loop_helpers import Batches

import keras_trainloop as ktl
from keras_trainloop.loop import EveryNSteps, Exponential, NTimesDuringLoop, Periodic


def _due_steps(schedule, start, end, steps=None, end_step=None):
    """Steps in [start, end) after which `schedule` is due, for a run with `end_step`."""
    loop = SimpleNamespace(start_step=start, end_step=end if end_step is None else end_step)
    fired = []
    for step in range(start, end):
        loop.loop_step = step
        if schedule.due(loop):
            fired.append(step)
            schedule.called(loop)
    return fired


def _record(loop, register, *args):
    """Registers a schedule through `register` and returns the list of (step, end?) calls."""
    calls = []

    def fn(lp, metrics):
        calls.append(lp.loop_step)

    register(loop, *args, fn)
    return calls


# every_n_steps ------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, start, end, expected",
    [
        (1, 0, 4, [0, 1, 2, 3]),
        (3, 0, 10, [2, 5, 8]),
        (3, 4, 10, [5, 8]),
        (5, 0, 4, []),
        (4, 7, 16, [7, 11, 15]),
    ],
    ids=["n1", "n3", "n3-resumed-at-4", "never-forces-last-step", "aligned-on-global-step"],
)
def test_every_n_steps_fires_when_next_step_is_a_multiple_of_n(n, start, end, expected):
    assert _due_steps(EveryNSteps(n), start, end) == expected


def test_every_n_steps_stays_aligned_across_a_resume(make_trainer):
    trainer = make_trainer()
    first = ktl.Loop(trainer)
    calls = _record(first, ktl.every_n_steps, 3, "log", 0)
    first.run_steps(Batches(loop_forever=True), 4)
    resumed = ktl.Loop(trainer)  # e.g. a new process after restoring a checkpoint
    calls_after = _record(resumed, ktl.every_n_steps, 3, "log", 0)
    resumed.run_steps(Batches(loop_forever=True), 6)
    assert calls == [2]
    assert calls_after == [5, 8]
    assert not resumed._on_end.hooks  # no forced call at the end


# n_times_during_loop -------------------------------------------------------------
@pytest.mark.parametrize(
    "n, start, total, expected",
    [
        (3, 0, 10, [3, 6, 9]),
        (1, 0, 10, [9]),
        (4, 0, 10, [2, 4, 7, 9]),
        (5, 0, 3, [0, 1, 2]),
        (10, 0, 10, list(range(10))),
        (2, 100, 7, [103, 106]),
    ],
    ids=[
        "n3-of-10",
        "n1-only-last",
        "n4-of-10",
        "more-calls-than-steps",
        "every-step",
        "resumed-run",
    ],
)
def test_n_times_during_loop_fires_at_ceil_k_total_over_n(n, start, total, expected):
    assert _due_steps(NTimesDuringLoop(n), start, start + total) == expected


def test_n_times_during_loop_with_unknown_total_fires_at_powers_of_two_from_128():
    fired = _due_steps(NTimesDuringLoop(3), 10, 10 + 1100, end_step=-1)
    assert [step - 10 + 1 for step in fired] == [128, 256, 512, 1024]


def test_n_times_during_loop_over_run_steps(trainer):
    loop = ktl.Loop(trainer)
    calls = _record(loop, ktl.n_times_during_loop, 3, "eval", 0)
    loop.run_steps(Batches(loop_forever=True), 10)
    assert calls == [3, 6, 9]  # n calls, not n + 1 as GoMLX v0.9.1, last step included


def test_n_times_during_loop_over_run_epochs_learns_the_total_after_epoch_one(trainer):
    loop = ktl.Loop(trainer)
    calls = _record(loop, ktl.n_times_during_loop, 3, "eval", 0)
    loop.run_epochs(Batches([150], batch_size=1), 2)
    # Epoch 0 (total unknown): at 128 steps done. Then total = 300: at 200 and 300 done.
    assert calls == [127, 199, 299]


def test_n_times_during_loop_calls_at_the_end_when_the_last_step_was_not_due(trainer):
    loop = ktl.Loop(trainer)
    calls = _record(loop, ktl.n_times_during_loop, 2, "eval", 0)
    loop.on_step("stopper", 10, lambda lp, m: lp.stop() if lp.loop_step == 6 else None)
    loop.run_steps(Batches(loop_forever=True), 20)
    assert calls == [7]  # the end call: after the step 6, loop_step == end_step == 7


def test_n_times_during_loop_reaches_the_last_step_of_a_longer_last_epoch(trainer):
    loop = ktl.Loop(trainer)
    calls = _record(loop, ktl.n_times_during_loop, 2, "eval", 0)
    loop.run_epochs(Batches([3, 5]), 2)
    # After epoch 0 (3 steps, total unknown): end_step = 6, so due at 6 done (step 5); the
    # data goes on to step 7, so the end call reports the real last step.
    assert calls == [5, 8]


# periodic_callback ----------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    "period, call_duration, call_on_end, expected",
    [
        (3, 0.0, False, [3, 6, 9]),
        (3, 1.5, False, [3, 6, 9]),
        (3, 0.0, True, [3, 6, 9]),
        (4, 0.0, False, [4, 8]),
        (4, 0.0, True, [4, 8, "end"]),
    ],
    ids=[
        "instant-calls",
        "call-duration-not-counted",
        "no-repeat-at-end",
        "no-end-call",
        "call-on-end",
    ],
)
def test_periodic_callback_measures_time_from_the_end_of_the_previous_call(
    trainer, period, call_duration, call_on_end, expected
):
    clock = FakeClock()
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, lambda lp, m: setattr(clock, "now", clock.now + 1.0))
    calls = []

    def fn(lp, metrics):
        calls.append(lp.loop_step if lp.loop_step < lp.end_step else "end")
        clock.now += call_duration

    ktl.periodic_callback(loop, period, call_on_end, "save", 0, fn, clock=clock)
    loop.run_steps(Batches(loop_forever=True), 10)
    # Each step takes 1 s; the clock starts after step 0. Measured from the start of the
    # previous call, the 1.5 s calls would make it fire at steps 3, 5, 7, 9.
    assert calls == expected


@pytest.mark.parametrize(
    "period", [3, 3.0, datetime.timedelta(seconds=3)], ids=["int", "float", "timedelta"]
)
def test_periodic_accepts_seconds_or_timedelta(period):
    clock = FakeClock()
    schedule = Periodic(period, clock=clock)
    loop = SimpleNamespace(start_step=0, end_step=10, loop_step=0)
    assert not schedule.due(loop)  # first step of the run: starts the clock
    loop.loop_step = 1
    clock.now = 2.9
    assert not schedule.due(loop) and schedule.next_step(loop) is None
    clock.now = 3.0
    assert schedule.due(loop) and schedule.next_step(loop) == 1


def test_periodic_restarts_its_clock_at_each_run():
    clock = FakeClock()
    schedule = Periodic(1, clock=clock)
    run1 = SimpleNamespace(start_step=0, end_step=5, loop_step=0)
    schedule.due(run1)
    clock.now = 100.0  # a long pause between runs
    run2 = SimpleNamespace(start_step=5, end_step=9, loop_step=5)
    assert not schedule.due(run2)
    run2.loop_step = 6
    assert not schedule.due(run2)


# exponential_callback --------------------------------------------------------------
@pytest.mark.parametrize(
    "start, factor, expected",
    [
        (100, 1.2, [100, 220, 364, 537]),
        (2, 1.5, [2, 5, 10, 18, 30]),  # skips 3, 4.5 -> 5, 7.5 -> 8: half away from zero
        (1, 2, [1, 3, 7, 15]),
        (1, 1.2, [1, 2, 3, 4]),  # round(1.2) == 1: the skip never grows
    ],
    ids=["gomlx-example", "rounds-half-away-from-zero", "doubling", "skip-stays-one"],
)
def test_exponential_callback_fires_at_geometrically_spaced_steps(start, factor, expected):
    schedule = Exponential(start, factor)
    assert schedule.steps(len(expected)) == expected
    assert _due_steps(Exponential(start, factor), 0, expected[-1] + 1) == expected


def test_exponential_callback_in_a_loop_and_at_the_end(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    calls = _record(loop, ktl.exponential_callback, 2, 1.5, True, "plot", 0)
    loop.run_steps(Batches(loop_forever=True), 12)
    assert calls == [2, 5, 10, 12]
    resumed = ktl.Loop(trainer)
    calls_after = _record(resumed, ktl.exponential_callback, 2, 1.5, False, "plot", 0)
    resumed.run_steps(Batches(loop_forever=True), 10)
    assert calls_after == [18]


def test_exponential_schedule_restarts_when_the_step_goes_back():
    schedule = Exponential(2, 1.5)
    assert _due_steps(schedule, 0, 12) == [2, 5, 10]
    assert _due_steps(schedule, 3, 12) == [5, 10]


# next_step --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule, loop_step, start, end, expected",
    [
        (EveryNSteps(3), 0, 0, 10, 2),
        (EveryNSteps(3), 2, 0, 10, 2),
        (EveryNSteps(3), 3, 0, 10, 5),
        (NTimesDuringLoop(3), 0, 0, 10, 3),
        (NTimesDuringLoop(3), 4, 0, 10, 6),
        (NTimesDuringLoop(3), 9, 0, 10, 9),
        (NTimesDuringLoop(3), 10, 0, 10, None),
        (NTimesDuringLoop(3), 0, 0, -1, 127),
        (NTimesDuringLoop(3), 200, 0, -1, 255),
        (Exponential(100, 1.2), 0, 0, 1000, 100),
        (Exponential(100, 1.2), 101, 0, 1000, 220),
        (Exponential(100, 1.2), 364, 0, 1000, 364),
    ],
    ids=[
        "every-first",
        "every-now",
        "every-next",
        "ntimes-first",
        "ntimes-mid",
        "ntimes-last",
        "ntimes-past-end",
        "ntimes-unknown",
        "ntimes-unknown-later",
        "exp-first",
        "exp-second",
        "exp-now",
    ],
)
def test_next_step_tells_where_the_schedule_fires_next(schedule, loop_step, start, end, expected):
    loop = SimpleNamespace(loop_step=loop_step, start_step=start, end_step=end)
    assert schedule.next_step(loop) == expected
    if expected is not None:
        loop.loop_step = expected
        assert schedule.due(loop)


# bad arguments -------------------------------------------------------------------------
def _fn(loop, metrics):
    pass


@pytest.mark.parametrize(
    "register, args, error, match",
    [
        (ktl.every_n_steps, (0, "x", 0, _fn), ValueError, r"n >= 1. Received: n=0"),
        (ktl.every_n_steps, (-2, "x", 0, _fn), ValueError, r"Received: n=-2"),
        (ktl.every_n_steps, (2.0, "x", 0, _fn), TypeError, r"int n. Received: n=2.0"),
        (ktl.every_n_steps, (True, "x", 0, _fn), TypeError, r"Received: n=True"),
        (ktl.every_n_steps, (2, "x", 0, "f"), TypeError, r"must be a function.*Received: fn='f'"),
        (ktl.every_n_steps, (2, "x", 0, lambda lp: 0), TypeError, r"2 positional arguments"),
        (ktl.every_n_steps, (2, None, 0, _fn), TypeError, r"string name. Received: name=None"),
        (ktl.n_times_during_loop, (0, "x", 0, _fn), ValueError, r"n >= 1. Received: n=0"),
        (
            ktl.periodic_callback,
            (0, False, "x", 0, _fn),
            ValueError,
            r"period > 0. Received: period=0",
        ),
        (ktl.periodic_callback, (-1.5, False, "x", 0, _fn), ValueError, r"period=-1.5"),
        (
            ktl.periodic_callback,
            (datetime.timedelta(0), False, "x", 0, _fn),
            ValueError,
            r"period=datetime.timedelta\(0\)",
        ),
        (ktl.periodic_callback, ("1s", False, "x", 0, _fn), TypeError, r"period='1s'"),
        (
            ktl.exponential_callback,
            (0, 1.2, False, "x", 0, _fn),
            ValueError,
            r"start_step >= 1. Received: start_step=0",
        ),
        (
            ktl.exponential_callback,
            (10, 1.0, False, "x", 0, _fn),
            ValueError,
            r"factor > 1. Received: factor=1.0",
        ),
        (ktl.exponential_callback, (10, 0.5, False, "x", 0, _fn), ValueError, r"factor=0.5"),
        (ktl.exponential_callback, (10, "2", False, "x", 0, _fn), TypeError, r"factor='2'"),
    ],
    ids=[
        "every-zero",
        "every-negative",
        "every-float",
        "every-bool",
        "every-not-callable",
        "every-one-arg",
        "every-bad-name",
        "ntimes-zero",
        "periodic-zero",
        "periodic-negative",
        "periodic-zero-timedelta",
        "periodic-string",
        "exp-start-zero",
        "exp-factor-one",
        "exp-factor-below-one",
        "exp-factor-string",
    ],
)
def test_bad_schedule_arguments_are_rejected_with_their_value(register, args, error, match):
    loop = ktl.Loop(None)
    with pytest.raises(error, match=match):
        register(loop, *args)
    assert not loop._on_step.hooks and not loop._on_end.hooks
