"""Agreement across processes (loop/_agreement.py), with "processes" played by threads.

Each thread runs its own loop, with its own clock, and their collectives meet at a barrier
(a hang fails the test after 20 s). The real job (2 processes, gloo) is
tests/scale/test_multi_process.py.
"""

from __future__ import annotations

import threading
import time
import types

import numpy as np
import pytest
from test_loop_fused import SumTrainer

import keras_trainloop as ktl
from keras_trainloop.loop import _agreement, _fusion_gate
from keras_trainloop.loop._agreement import AgreedSchedule, Agreement
from keras_trainloop.loop._fusion_gate import FusionGate


class FakeJob:
    """Processes played by threads: `gather(i)` is process i's collective (a barrier)."""

    def __init__(self, processes: int = 2):
        self.barrier = threading.Barrier(processes, timeout=20)  # A hang fails the test.
        self.rows: list = [None] * processes
        self.calls = [0] * processes

    def gather(self, process: int):
        def gather(values):
            self.calls[process] += 1
            self.rows[process] = np.array(values)
            self.barrier.wait()  # Everyone sent.
            rows = np.stack(self.rows)
            self.barrier.wait()  # Everyone read.
            return rows

        return gather


def _run_process(job, process, clock, results, steps=400, extra_timed=False, period=0.002):
    """Process `process`'s loop: a periodic hook, maybe an output-only timed one."""
    trainer = SumTrainer()
    loop = ktl.Loop(trainer, max_fused_steps=8, measure_fusion=False)
    fired, drawn = [], []
    ktl.periodic_callback(
        loop, period, True, "periodic", 0, lambda lp, m: fired.append(lp.loop_step), clock=clock
    )
    if extra_timed:  # Like the progress bar, attached on process 0 only.
        ktl.periodic_callback(
            loop, 0.001, False, "bar", 1, lambda lp, m: drawn.append(lp.loop_step), clock=clock
        )
    original = _agreement.agree
    x = np.arange(96, dtype=np.float32).reshape(32, 3)
    try:
        _agreement.agree(loop, job.gather(process))  # The run's own call then keeps it.
        loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), steps)
    except BaseException as error:  # noqa: BLE001 - reported to the test.
        job.barrier.abort()
        results[process] = error
        return
    finally:
        assert _agreement.agree is original
    results[process] = (fired, drawn, trainer.fused_calls, loop)


def _run_job(clocks, extra_timed=(False, False), steps=400, period=0.002):
    job = FakeJob(len(clocks))
    results: dict = {}
    threads = [
        threading.Thread(
            target=_run_process, args=(job, i, clock, results, steps, extra_timed[i], period)
        )
        for i, clock in enumerate(clocks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(len(clocks)):
        if isinstance(results.get(i), BaseException):
            raise results[i]
    return job, [results[i] for i in range(len(clocks))]


def _fast_clock():
    return 3 * time.perf_counter() + 100  # Another process's clock: late and fast.


def test_every_process_fires_at_the_same_steps_whatever_its_clock():
    job, results = _run_job([time.perf_counter, _fast_clock])
    (fired0, _, calls0, loop0), (fired1, _, calls1, _) = results
    assert len(fired0) >= 2
    assert fired1 == fired0 and calls1 == calls0  # Same hook steps, same fused call sizes.
    assert calls0 and max(calls0) > 2  # The steps between checks still fuse.
    assert job.calls[0] == job.calls[1] == loop0._agreement.checks
    hooks = loop0._on_step.hooks
    assert hooks[0].name == _agreement.CHECK_HOOK_NAME  # First of the on_step hooks.
    assert isinstance(hooks[1].schedule, AgreedSchedule)


def test_a_timed_hook_on_process_zero_only_does_not_break_agreement():
    job, results = _run_job([time.perf_counter, _fast_clock], extra_timed=(True, False))
    (fired0, drawn0, calls0, _), (fired1, drawn1, calls1, _) = results
    assert fired1 == fired0 and calls1 == calls0
    assert len(drawn0) >= 2 and drawn1 == []  # Only process 0 has it; it fires there.
    assert job.calls[0] == job.calls[1]


def test_checks_come_no_further_apart_than_max_check_gap():
    _, results = _run_job([time.perf_counter] * 2, steps=3000, period=1e9)  # Never due.
    (fired0, _, _, loop0), _ = results
    assert fired0 == [3000]  # Only the end call (at loop_step == end_step).
    # The run's first step, the next (the first step time), then every MAX_CHECK_GAP or so.
    assert 3000 // _agreement.MAX_CHECK_GAP <= loop0._agreement.checks <= 8


def test_agreement_follows_process_zero_and_keeps_own_answers_for_its_own_hooks():
    now = [0.0]
    agreement = Agreement(lambda sent: np.stack([process_zero, sent]))
    mine = AgreedSchedule(ktl.loop.Periodic(10, clock=lambda: now[0]), agreement, 7)
    own = AgreedSchedule(ktl.loop.Periodic(10, clock=lambda: now[0]), agreement, 8)
    agreement.schedules = [mine, own]
    process_zero = np.zeros(2 + 2 * _agreement.MAX_TIMED_HOOKS, np.int32)
    process_zero[:4] = 5, 1, 7, 1  # Next check in 5 steps; hook 7 is due.
    loop = types.SimpleNamespace(
        loop_step=10, start_step=10, end_step=-1, train_step_durations=[0.01]
    )
    assert agreement.due(loop) and agreement.next_step(loop) == 10  # The run's first step.
    agreement.check(loop, [])
    assert mine.due(loop) and not own.due(loop)  # Process 0's answer; its own (not due).
    assert agreement.next_step(loop) == 11  # This process asked for the next step.
    loop.loop_step = 11
    assert not mine.due(loop)  # Not a check step (no check ran at 11).
    assert mine.next_step(loop) is None and mine.seconds_left(loop) is None
    agreement.new_run()
    loop.loop_step = loop.start_step = 30
    assert agreement.next_step(loop) == 30  # A new run starts with a check.
    assert repr(mine) == "Agreed(Periodic(10s))"


def test_local_answer_is_due_and_the_steps_to_the_next_check():
    now = [0.0]
    schedule = AgreedSchedule(ktl.loop.Periodic(1.0, clock=lambda: now[0]), Agreement(), 1)
    loop = types.SimpleNamespace(
        loop_step=0, start_step=0, end_step=-1, train_step_durations=[0.01]
    )
    assert schedule.local_answer(loop) == (False, 1)  # Starts the clock at the first step.
    loop.loop_step, now[0] = 1, 0.25
    assert schedule.local_answer(loop) == (False, 75)  # 0.75 s left at 10 ms a step.
    now[0] = 1.0
    assert schedule.local_answer(loop) == (True, 100)  # Once called: a whole period.
    loop.train_step_durations = [1e-9]
    assert _agreement.steps_for(5.0, loop) == _agreement.MAX_CHECK_GAP


def test_one_process_needs_no_agreement_and_adds_nothing(monkeypatch, trainer):
    def refuse(values):
        raise AssertionError("a collective with one process")

    monkeypatch.setattr(_agreement, "gather_from_processes", refuse)
    loop = ktl.Loop(trainer)
    schedule = ktl.periodic_callback(loop, 0.001, True, "p", 0, lambda lp, m: None)
    loop.run_steps(
        ktl.ArrayDataset(
            np.ones((8, 3), np.float32),
            np.ones((8, 1), np.float32),
            batch_size=4,
            loop_forever=True,
        ),
        20,
    )
    assert [h.schedule for h in loop._on_step.hooks] == [schedule]  # Nothing wrapped or added.
    assert loop._gate.agree is None and getattr(loop, "_agreement", None) is None
    assert not _agreement.needs_agreement(trainer)  # One process.


def test_plans_pair_end_calls_with_wrapped_schedules():
    ticks = iter(range(10**6))
    loop = ktl.Loop(SumTrainer())
    ktl.periodic_callback(
        loop, 0.5, True, "p", 0, lambda lp, m: None, clock=lambda: float(next(ticks))
    )  # Due whenever asked again.
    _agreement.agree(loop, lambda sent: np.stack([sent]))  # One fake process.
    plan = loop.plan(4)  # No collective: the wrapped schedule's snapshot answers.
    assert plan.steps_of("Periodic(0.5s): p") == [1, 2, 3]
    (end,) = [h for h in plan.hooks if h.event == "OnEnd"]
    assert end.steps == []  # It fired after the last step: no end call.
    assert [h.timed for h in plan.hooks if h.event == "OnStep"] == [False, True]


def test_too_many_timed_hooks_are_refused_with_the_fix():
    loop = ktl.Loop(SumTrainer())
    for i in range(_agreement.MAX_TIMED_HOOKS + 1):
        ktl.periodic_callback(loop, 1, False, f"p{i}", 0, lambda lp, m: None)
    with pytest.raises(ValueError, match="at most 16 time-based"):
        _agreement.agree(loop, lambda sent: np.stack([sent]))


# The fusion gate -------------------------------------------------------------------------------
def _probe(gate, single_seconds, fused_per_step, spec="s"):
    """Feeds the gate the calls it asks for until it decides (first calls of a size compile)."""
    compiled = set()
    for _ in range(100):
        if not gate.probing(spec):
            return
        n = gate.cap(spec, 8)
        if n not in compiled:
            compiled.add(n)
            gate.record(spec, n, 99.0, 0.5 if n == 1 else None)
            continue
        gate.record(
            spec,
            n,
            single_seconds if n == 1 else fused_per_step * n,
            0.5 * single_seconds if n == 1 else None,
        )


def test_gate_takes_process_zeros_verdict_at_fixed_points():
    verdicts0, verdicts1 = [], []
    gate0 = FusionGate()
    gate0.agree = lambda verdict: verdicts0.append(verdict) or verdict
    _probe(gate0, single_seconds=1.0, fused_per_step=0.5)  # Process 0: fused pays.
    replay = list(verdicts0)
    gate1 = FusionGate()
    gate1.agree = lambda verdict: verdicts1.append(verdict) or replay.pop(0)
    _probe(gate1, single_seconds=1.0, fused_per_step=4.0)  # Process 1: far slower fused.
    assert gate0.decisions() == gate1.decisions() == {"s": True}
    assert replay == [] and len(verdicts1) == len(verdicts0) == 3
    assert verdicts0 == [None, None, True]  # Host check, second fused call, final.
    assert verdicts1[1] is False  # Alone, process 1 would have dropped fusion there.


def test_gate_alone_decides_from_its_own_timings_as_before():
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_per_step=4.0)  # Over EARLY_NO (3x).
    assert gate.decisions() == {"s": False}
    assert len(gate._probes["s"].fused) == 2  # The early no, after two fused calls.


@pytest.mark.parametrize(
    "host_share, kept", [(0.01, False), (0.5, None)], ids=["compute_bound", "host_bound"]
)
def test_gate_agrees_on_the_compute_bound_check(host_share, kept):
    asked = []
    gate = FusionGate()
    gate.agree = lambda verdict: asked.append(verdict) or verdict
    gate.record("s", 1, 9.0, 9.0)  # Compiles.
    for _ in range(_fusion_gate.HOST_CHECK_SINGLE):
        gate.record("s", 1, 1.0, host_share)
    assert asked == [False if kept is False else None]
    assert gate.decisions() == {"s": kept}
