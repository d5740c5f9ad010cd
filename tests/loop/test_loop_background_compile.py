"""Fused calls compile off the critical path: steps run one by one meanwhile, with the
same results and hooks, and a call size compiles only when the loop will use it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from loop_helpers import classifier_data, classifier_trainer

import keras_trainloop as ktl
from keras_trainloop.loop._fusion_gate import FusionGate
from keras_trainloop.loop._nonfinite import NonFiniteCheck
from keras_trainloop.loop._step_loop import StepLoop


@pytest.fixture
def held(held_compiles, monkeypatch):
    worker = held_compiles
    # Compiles "cost nothing": every size asked twice starts (the cost rule is tested below).
    monkeypatch.setattr(FusionGate, "compile_seconds", lambda self, spec: 0.0)
    return worker


def _run(loop, steps, seen):
    x, y = classifier_data(640)
    ds = ktl.ArrayDataset(x, y, batch_size=16, shuffle=True, seed=3, loop_forever=True)
    ktl.every_n_steps(
        loop, 10, "log", 0, lambda lp, m: seen.append((lp.loop_step, dict(lp.logs(m))))
    )
    return loop.run_steps(ds, steps)


def test_steps_run_one_by_one_while_their_fused_call_compiles_with_the_same_results(held):
    single_seen, single = [], ktl.Loop(classifier_trainer(), max_fused_steps=1)
    _run(single, 60, single_seen)
    seen, loop = [], ktl.Loop(classifier_trainer())
    _run(loop, 60, seen)
    assert held.jobs, "no fused call was compiled in the background"
    (executor,) = loop.trainer._cache.executors()
    assert all(not future.done() for future, _ in held.jobs)
    assert loop.fusion_decisions() == {None: None}  # No fused call timed while compiling.
    assert [step for step, _ in seen] == [step for step, _ in single_seen]
    for (_, logs), (_, single_logs) in zip(seen, single_seen):
        # The logs' "loss" is a mean read on the host, summed in another order.
        assert logs.pop("loss") == pytest.approx(single_logs.pop("loss"), rel=1e-6)
        assert logs == single_logs
    for a, b in zip(loop.trainer.model.get_weights(), single.trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Compiled: later calls are fused, found in jit's cache (traced once, here).
    traced = dict(executor.fused_trace_counts)
    held.finish()
    more_seen = []
    _run(loop, 60, more_seen)
    assert set(traced) <= set(executor.fused_trace_counts)
    assert all(executor.fused_trace_counts[n] == 1 for n in traced)
    assert loop.trainer.global_step == 120


def test_measure_fusion_false_compiles_each_size_where_it_is_first_used(held):
    loop = ktl.Loop(classifier_trainer(), measure_fusion=False)
    _run(loop, 40, [])
    assert held.jobs == []
    (executor,) = loop.trainer._cache.executors()
    assert executor.fused_trace_counts == {8: 1, 2: 1}  # 8 + 2 steps between hooks at 10.


# The start rule, on the step loop alone ------------------------------------------------------
class Preparer:
    """A trainer double recording `prepare_train_steps(start=...)`; never ready."""

    def __init__(self):
        self.asked = []

    def prepare_train_steps(self, spec, inputs, labels, *, start=True):
        self.asked.append((len(inputs[0]), start))
        return False


def _step_loop(compile_seconds, step_seconds, enabled=True):
    gate = FusionGate(enabled=enabled)
    gate.compile_seconds = lambda spec: compile_seconds
    gate.step_seconds = lambda spec: step_seconds
    return StepLoop(gate, NonFiniteCheck(16))


def _ask(step_loop, trainer, n, loop_step=10, end_step=1000):
    loop = SimpleNamespace(trainer=trainer, loop_step=loop_step, end_step=end_step)
    batch = (None, [np.zeros((n, 4, 3), np.float32)], [np.zeros((n, 4), np.int32)])
    return step_loop._compiled(loop, n, batch)


def test_a_size_starts_compiling_at_its_second_ask():
    trainer, step_loop = Preparer(), _step_loop(compile_seconds=0.5, step_seconds=0.001)
    assert not _ask(step_loop, trainer, 8)
    assert not _ask(step_loop, trainer, 8)
    assert not _ask(step_loop, trainer, 4)  # Another size: its own count.
    assert trainer.asked == [(8, False), (8, True), (4, False)]


def test_no_compile_starts_when_the_training_ahead_is_shorter_than_a_compile():
    trainer = Preparer()
    # 990 steps left at 0.1 ms: 0.1 s ahead, a compile takes 0.5 s.
    step_loop = _step_loop(compile_seconds=0.5, step_seconds=0.0001)
    for _ in range(3):
        assert not _ask(step_loop, trainer, 8)
    assert trainer.asked == [(8, False)] * 3  # Not worth a compile: none started.
    # As many steps trained before as the compile needs: the loop's runs go on.
    _ask(step_loop, trainer, 8, loop_step=6000, end_step=6100)
    assert trainer.asked[-1] == (8, True)
    # The run's end unknown (the first epoch of run_epochs): worth it.
    trainer.asked.clear()
    fresh = _step_loop(compile_seconds=0.5, step_seconds=0.0001)
    _ask(fresh, trainer, 8, end_step=-1)
    _ask(fresh, trainer, 8, end_step=-1)
    assert trainer.asked == [(8, False), (8, True)]


def test_without_a_measuring_gate_or_with_several_processes_calls_compile_in_front():
    trainer = Preparer()
    assert _ask(_step_loop(0.5, 0.001, enabled=False), trainer, 8)
    agreeing = _step_loop(0.5, 0.001)
    agreeing.gate.agree = lambda verdict: verdict
    assert _ask(agreeing, trainer, 8)
    assert _ask(_step_loop(0.5, 0.001), SimpleNamespace(), 8)  # No prepare_train_steps.
    assert trainer.asked == []
