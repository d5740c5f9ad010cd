"""The fusion gate: fused calls are kept only where they measured no slower than single steps."""

from __future__ import annotations

import types

import numpy as np
import pytest
from test_loop_fused import SumTrainer

import keras_trainloop as ktl
from keras_trainloop.loop import _fusion_gate
from keras_trainloop.loop import _step_loop as _loop
from keras_trainloop.loop._fusion_gate import FusionGate


def _probe(gate, single_seconds, fused_seconds_per_step, spec="s", calls=_fusion_gate.PROBE_FUSED):
    """Feeds the gate the calls it asks for (their first of each size compiling: 99 s)."""
    compiled = set()
    fused_calls = 0
    while gate.probing(spec) and fused_calls < calls:
        n = gate.cap(spec, 8)
        if n not in compiled:
            compiled.add(n)
            gate.record(spec, n, 99.0)
            continue
        fused_calls += n > 1
        gate.record(spec, n, single_seconds if n == 1 else fused_seconds_per_step * n)


def test_gate_measures_single_steps_then_short_fused_calls_alternating_with_singles():
    gate = FusionGate()
    assert gate.cap("s", 8) == 1  # a spec not seen yet: single steps first
    gate.record("s", 1, 5.0)  # compiles: not timed
    for _ in range(_fusion_gate.HOST_CHECK_SINGLE):
        assert gate.cap("s", 8) == 1
        gate.record("s", 1, 1.0)
    assert gate.cap("s", 8) == _fusion_gate.PROBE_CALL_STEPS  # compiles the fused size
    gate.record("s", 2, 9.0)
    sizes = []
    while gate.probing("s"):
        sizes.append(gate.cap("s", 8))
        gate.record("s", sizes[-1], 0.5 * sizes[-1])
    assert sizes[:4] == [2, 1, 2, 1]  # alternating: load drift hits both alike
    assert sizes.count(2) == _fusion_gate.PROBE_FUSED
    assert sizes.count(1) + _fusion_gate.HOST_CHECK_SINGLE >= _fusion_gate.PROBE_SINGLE
    assert gate.decisions() == {"s": True}


def test_gate_drops_fusion_when_fused_steps_are_slower():
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=1.2)
    assert gate.decisions() == {"s": False}
    assert gate.cap("s", 8) == 1
    assert not gate.probing("s")


def test_gate_keeps_fusion_when_fused_steps_are_cheaper():
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=0.7)
    assert gate.decisions() == {"s": True}
    assert gate.cap("s", 8) == 8


def test_much_slower_fused_calls_end_the_probe_at_once():
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=20.0, calls=1)
    assert gate.decisions() == {"s": None}  # one slow call may be noise
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=20.0, calls=1)
    assert gate.decisions() == {"s": False}


def test_two_fused_calls_twice_as_slow_as_warm_steps_do_not_end_the_probe():
    # A run's first calls are often slow (allocations, compile threads finishing): the
    # early no is for a badly compiled scan (20x), the full probe decides the rest.
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=2.0, calls=2)
    assert gate.decisions() == {"s": None}
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=0.5)
    assert gate.decisions() == {"s": True}


def test_a_compute_bound_step_is_decided_without_compiling_a_fused_call():
    gate = FusionGate()
    gate.record("s", 1, 9.0, host_seconds=0.01)  # the compiling step
    for _ in range(_fusion_gate.HOST_CHECK_SINGLE):
        gate.record("s", 1, 1.0, host_seconds=0.01)  # 1% of the step is the host's
    assert gate.decisions() == {"s": False} and gate.cap("s", 8) == 1


def test_a_host_bound_step_goes_on_to_measure_fused_calls():
    gate = FusionGate()
    gate.record("s", 1, 9.0, host_seconds=0.5)
    for _ in range(_fusion_gate.HOST_CHECK_SINGLE):
        gate.record("s", 1, 1.0, host_seconds=0.5)
    assert gate.decisions() == {"s": None} and gate.cap("s", 8) == 2


def test_compiling_calls_are_not_timed():
    gate = FusionGate()
    _probe(gate, single_seconds=1.0, fused_seconds_per_step=0.5)
    assert gate.decisions() == {"s": True}  # the 99 s compile calls were not counted


def test_each_spec_is_decided_on_its_own_and_unhashable_specs_by_repr():
    gate = FusionGate()
    _probe(gate, 1.0, 2.0, spec="slow")
    _probe(gate, 1.0, 0.5, spec=["list", "spec"])
    assert gate.decisions() == {"slow": False, repr(["list", "spec"]): True}
    assert gate.cap("slow", 8) == 1 and gate.cap(["list", "spec"], 8) == 8


def test_disabled_gate_always_allows_fusion():
    gate = FusionGate(enabled=False)
    assert gate.cap("s", 8) == 8 and not gate.probing("s")
    gate.record("s", 1, 1.0)
    assert gate.decisions() == {}


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class _TimedTrainer(SumTrainer):
    """SumTrainer whose calls advance a fake clock: single steps and fused steps cost as given."""

    def __init__(self, clock, single, fused_per_step):
        super().__init__()
        self.clock, self.single, self.fused_per_step = clock, single, fused_per_step
        self.calls: list[int] = []

    def train_step(self, spec, inputs, labels):
        if not self._in_fused:
            self.calls.append(1)
            self.clock.now += self.single
        return super().train_step(spec, inputs, labels)

    _in_fused = False

    def train_steps(self, spec, inputs, labels):
        n = inputs[0].shape[0]
        self.calls.append(n)
        self.clock.now += self.fused_per_step * n
        self._in_fused = True
        try:
            return super().train_steps(spec, inputs, labels)
        finally:
            self._in_fused = False


def _run(monkeypatch, single, fused_per_step, steps=64):
    clock = _FakeClock()
    monkeypatch.setattr(_loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    trainer = _TimedTrainer(clock, single, fused_per_step)
    loop = ktl.Loop(trainer)
    x = np.ones((512, 2), np.float32)
    ds = ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True)
    plan = loop.plan(steps)
    loop.run_steps(ds, steps)
    return loop, trainer, plan


def test_loop_falls_back_to_single_steps_when_fused_calls_are_slower(monkeypatch):
    loop, trainer, _ = _run(monkeypatch, single=1.0, fused_per_step=1.3)
    assert loop.fusion_decisions() == {None: False}
    probe = FusionGate().planned_caps()
    assert trainer.calls[: len(probe)] == probe  # the whole probe ran
    assert set(trainer.calls[len(probe) :]) == {1}
    assert sum(trainer.calls) == 64 == trainer.steps
    # The next run of this loop runs single steps from the start, and its plan says so.
    assert loop.plan(10).calls == [(64 + i, 1) for i in range(10)]


def test_loop_keeps_fused_calls_when_they_pay(monkeypatch):
    loop, trainer, plan = _run(monkeypatch, single=1.0, fused_per_step=0.5)
    assert loop.fusion_decisions() == {None: True}
    probe = FusionGate().planned_caps()
    assert probe[:4] == [1, 1, 1, 2] and trainer.calls[: len(probe)] == probe
    assert 8 in trainer.calls[len(probe) :]
    # The plan made before the run predicted its calls, probe included.
    assert [n for _, n in plan.calls] == trainer.calls


def test_reading_the_single_steps_losses_before_a_fused_call_is_not_timed_as_that_call(
    monkeypatch,
):
    # While probing, single steps and fused calls alternate, so each fused call starts by
    # reading the losses of the single step before it (a wait and a small reduction). A
    # loop of fused calls never pays that, so the gate must not see it as the call's.
    clock = _FakeClock()
    monkeypatch.setattr(_loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    trainer = _TimedTrainer(clock, single=1.0, fused_per_step=0.8)
    loop = ktl.Loop(trainer)
    check = loop._nonfinite
    read = check.call_starting

    def slow_read(metrics, step):
        if check.pending:
            clock.now += 5.0  # Far more than the fused call's whole gain.
        read(metrics, step)

    monkeypatch.setattr(check, "call_starting", slow_read)
    x = np.ones((512, 2), np.float32)
    loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 64)
    assert loop.fusion_decisions() == {None: True}
    assert 8 in trainer.calls


def test_loop_stops_probing_at_much_slower_fused_calls(monkeypatch):
    loop, trainer, _ = _run(monkeypatch, single=1.0, fused_per_step=30.0)
    # Compile, two timed singles, the fused compile, fused, single, fused: dropped.
    assert trainer.calls[:7] == [1, 1, 1, 2, 2, 1, 2]
    assert set(trainer.calls[7:]) == {1}
    assert loop.fusion_decisions() == {None: False}


def test_measure_fusion_false_fuses_from_the_first_call(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(_loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    trainer = _TimedTrainer(clock, single=1.0, fused_per_step=5.0)
    loop = ktl.Loop(trainer, measure_fusion=False)
    x = np.ones((64, 2), np.float32)
    loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 16)
    assert trainer.calls == [8, 8] and loop.fusion_decisions() == {}


@pytest.mark.parametrize("cap", [1, 8])
def test_fusion_gate_keeps_results_identical_on_a_real_model(cap):
    import keras

    def run(measure):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, "relu"), keras.layers.Dense(1)]
        )
        trainer = ktl.Trainer(model, "mse", keras.optimizers.Adam(1e-2))
        loop = ktl.Loop(trainer, max_fused_steps=cap, measure_fusion=measure)
        x = np.random.default_rng(0).normal(size=(96, 3)).astype(np.float32)
        loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=8, loop_forever=True), 40)
        return model.get_weights()

    for a, b in zip(run(True), run(False)):
        np.testing.assert_array_equal(a, b)
