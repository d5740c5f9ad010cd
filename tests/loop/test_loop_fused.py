"""Fused execution: several steps per compiled call, hooks still at their exact steps."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loop_helpers import Batches, classifier_data, classifier_trainer

import keras_trainloop as ktl


def _record(events, label):
    def fn(loop, metrics):
        events.append((label, loop.loop_step, [np.asarray(m).tolist() for m in metrics]))

    return fn


def _attach_all_schedules(loop, events, ticks):
    """One hook of every schedule type, plus a ticker that advances a fake clock."""

    def tick(loop, metrics):
        ticks[0] += 1.0

    ktl.every_n_steps(loop, 7, "ticker", -1, tick)
    ktl.every_n_steps(loop, 10, "every10", 0, _record(events, "every10"))
    ktl.n_times_during_loop(loop, 3, "ntimes3", 1, _record(events, "ntimes3"))
    ktl.exponential_callback(loop, 5, 1.5, True, "exp", 2, _record(events, "exp"))
    ktl.periodic_callback(
        loop, 2.0, True, "periodic", 3, _record(events, "periodic"), clock=lambda: ticks[0]
    )
    loop.on_end("end", 4, _record(events, "end"))


def _train(max_fused_steps, runs):
    trainer = classifier_trainer()
    loop = ktl.Loop(trainer, max_fused_steps=max_fused_steps)
    events, ticks = [], [0.0]
    _attach_all_schedules(loop, events, ticks)
    x, y = classifier_data()
    forever = ktl.ArrayDataset(x, y, batch_size=32, shuffle=True, seed=3, loop_forever=True)
    finite = ktl.ArrayDataset(x, y, batch_size=32, shuffle=True, seed=4)
    for kind, length in runs:
        if kind == "steps":
            loop.run_steps(forever, length)
        else:
            loop.run_epochs(finite, length)
    return trainer, loop, events


def test_every_schedule_fires_at_the_same_steps_with_the_same_metrics_fused_or_not():
    runs = [("steps", 100), ("steps", 37), ("epochs", 3)]
    fused_trainer, fused_loop, fused = _train(8, runs)
    plain_trainer, plain_loop, plain = _train(1, runs)
    assert fused == plain  # labels, steps and metric values, bit for bit
    labels = {label for label, _, _ in fused}
    assert labels == {"every10", "ntimes3", "exp", "periodic", "end"}
    for a, b in zip(fused_trainer.model.get_weights(), plain_trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Fusion happened, and only with power-of-two sizes up to the cap, each compiled once.
    (executor,) = fused_trainer._cache.executors()
    assert executor.fused_fns and set(executor.fused_fns) <= {2, 4, 8}
    assert all(count == 1 for count in executor.fused_trace_counts.values())
    assert not plain_trainer._cache.executors()[0].fused_fns
    assert len(fused_loop.train_step_durations) == len(plain_loop.train_step_durations)


def test_number_of_compiled_sizes_stays_bounded_over_a_long_run():
    trainer = classifier_trainer()
    loop = ktl.Loop(trainer)
    ktl.exponential_callback(loop, 3, 1.3, False, "exp", 0, lambda loop, m: None)
    ktl.every_n_steps(loop, 13, "every13", 0, lambda loop, m: None)
    x, y = classifier_data()
    loop.run_steps(ktl.ArrayDataset(x, y, batch_size=16, loop_forever=True), 1500)
    (executor,) = trainer._cache.executors()
    assert set(executor.fused_fns) <= {2, 4, 8}
    assert executor.fused_trace_counts == {n: 1 for n in executor.fused_fns}
    assert executor.trace_count <= 1


# The loop's logic against a fake trainer, for many schedule mixes ---------------------------------
class SumTrainer:
    """A trainer double: its "loss" is the running sum of the inputs, its second metric the step."""

    can_fuse_steps = True
    train_metrics = ()

    def __init__(self):
        self.total = np.float64(0)
        self.steps = 0
        self.fused_calls: list[int] = []

    @property
    def global_step(self):
        return self.steps

    def reset_train_metrics(self):
        pass

    def train_step(self, spec, inputs, labels):
        self.total += np.sum(inputs[0], dtype=np.float64)
        self.steps += 1
        return [np.float32(self.total), np.int32(self.steps)]

    def train_steps(self, spec, inputs, labels):
        self.fused_calls.append(inputs[0].shape[0])
        losses = []
        for i in range(inputs[0].shape[0]):
            metrics = self.train_step(spec, [inputs[0][i]], [labels[0][i]])
            losses.append(metrics[0])
        return metrics, np.asarray(losses)


_hook_specs = st.lists(
    st.one_of(
        st.tuples(st.just("every"), st.integers(1, 40)),
        st.tuples(st.just("ntimes"), st.integers(1, 12)),
        st.tuples(st.just("exp"), st.integers(1, 60), st.sampled_from([1.1, 1.5, 2.0, 3.0])),
        st.tuples(st.just("periodic"), st.integers(1, 3), st.integers(1, 9)),
    ),
    max_size=4,
)
_runs = st.lists(
    st.one_of(
        st.tuples(st.just("steps"), st.integers(0, 150)),
        st.tuples(st.just("epochs"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=3,
)


def _fake_run(specs, runs, cap):
    trainer = SumTrainer()
    loop = ktl.Loop(trainer, max_fused_steps=cap)
    events, ticks = [], [0.0]
    for i, spec in enumerate(specs):
        name = f"h{i}"
        if spec[0] == "every":
            ktl.every_n_steps(loop, spec[1], name, i, _record(events, name))
        elif spec[0] == "ntimes":
            ktl.n_times_during_loop(loop, spec[1], name, i, _record(events, name))
        elif spec[0] == "exp":
            ktl.exponential_callback(loop, spec[1], spec[2], True, name, i, _record(events, name))
        else:  # periodic on a fake clock, advanced by a ticker every `spec[2]` steps

            def tick(loop, metrics):
                ticks[0] += 1.0

            ktl.every_n_steps(loop, spec[2], f"tick{i}", -1, tick)
            ktl.periodic_callback(
                loop, float(spec[1]), False, name, i, _record(events, name), clock=lambda: ticks[0]
            )
    x = np.arange(90 * 2, dtype=np.float32).reshape(90, 2)
    forever = ktl.ArrayDataset(x, x[:, :1], batch_size=4, shuffle=True, seed=1, loop_forever=True)
    finite = ktl.ArrayDataset(x, x[:, :1], batch_size=4, shuffle=True, seed=2)
    planned = []
    for kind, length in runs:
        if kind == "steps":
            plan = loop.plan(length)
            expected = {
                (h.event, h.name.split(": ")[-1]): h.steps
                for h in plan.hooks
                if not h.timed and h.name.split(": ")[-1].startswith("h")
            }
            start = len(events)
            loop.run_steps(forever, length)
            fired = {key: [] for key in expected}
            for label, step, _ in events[start:]:
                event = "OnEnd" if step == plan.end_step else "OnStep"
                fired.setdefault((event, label), []).append(step)
            planned.append((expected, {k: v for k, v in fired.items() if k in expected}))
        else:
            loop.run_epochs(finite, length)
    return trainer, events, planned


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=_hook_specs, runs=_runs, cap=st.sampled_from([2, 4, 8, 32]))
def test_schedule_mixes_fire_identically_fused_or_not_and_as_planned(specs, runs, cap):
    fused_trainer, fused, fused_plans = _fake_run(specs, runs, cap)
    plain_trainer, plain, _ = _fake_run(specs, runs, 1)
    assert fused == plain
    assert fused_trainer.total == plain_trainer.total
    assert not plain_trainer.fused_calls
    assert all(n in {2, 4, 8, 16, 32} and n <= cap for n in fused_trainer.fused_calls)
    for expected, fired in fused_plans:  # The plan told the recording hooks' steps.
        assert fired == expected


# Fallbacks -----------------------------------------------------------------------------------------
def test_a_dataset_without_stacked_batches_runs_one_step_per_call(make_trainer, recorder):
    trainer = make_trainer()
    calls = []
    original = trainer.train_steps
    trainer.train_steps = lambda *args: calls.append(1) or original(*args)
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 4, "every4", 0, recorder.hook("every4"))
    loop.run_epochs(Batches([9]), 2)  # Batches has no yield_batches
    assert not calls
    assert recorder.steps("every4") == [3, 7, 11, 15]
    assert loop.loop_step == 18


def test_a_hook_without_schedule_keeps_one_step_per_call(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    seen = []
    loop.on_step("every step", 0, lambda loop, metrics: seen.append(loop.loop_step))
    x = np.ones((40, 3), np.float32)
    loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 20)
    assert seen == list(range(20))
    assert not trainer._cache.executors()[0].fused_fns


def test_a_hook_with_a_schedule_object_fires_when_due_and_lets_steps_fuse(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer, measure_fusion=False)  # exact call sizes
    seen = []
    loop.on_step(
        "every 5", 0, lambda loop, m: seen.append(loop.loop_step), schedule=ktl.loop.EveryNSteps(5)
    )
    x = np.ones((40, 3), np.float32)
    loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 20)
    assert seen == [4, 9, 14, 19]
    assert set(trainer._cache.executors()[0].fused_fns) == {4}  # 1 + 4, then 5-step spans: 4+1


def test_epoch_ends_fall_back_to_single_steps(make_trainer):
    trainer = make_trainer()
    calls = []
    original = trainer.train_steps
    trainer.train_steps = lambda spec, i, l: calls.append(i[0].shape[0]) or original(spec, i, l)
    loop = ktl.Loop(trainer, measure_fusion=False)  # exact call sizes
    x = np.random.default_rng(0).normal(size=(46, 3)).astype(np.float32)
    loop.run_epochs(ktl.ArrayDataset(x, x[:, :1], batch_size=4), 2)  # 12 batches, last short
    assert calls == [8, 2, 8, 2]  # then one full batch and the short one, one by one
    assert loop.loop_step == 24


def test_non_finite_loss_in_a_fused_call_names_the_first_bad_step(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer, measure_fusion=False)  # exact call sizes
    x = np.ones((64, 3), np.float32)
    x[4 * 10] = np.nan  # batch 10
    with pytest.raises(ktl.NonFiniteLossError) as info:
        loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 40)
    assert info.value.step == 10
    # Steps 8-15 ran in one call, checked once the next call (16-23) was dispatched.
    assert info.value.detected_at == 23 and info.value.detected_at - info.value.step < 16
    assert loop.loop_step == 24


def test_stop_from_a_scheduled_hook_ends_at_its_step(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 6, "stop", 0, lambda loop, m: loop.stop())
    x = np.ones((40, 3), np.float32)
    loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 100)
    assert loop.loop_step == 6 and trainer.global_step == 6


@pytest.mark.parametrize("bad", [0, 3, 64, 2.0, True])
def test_max_fused_steps_must_be_a_power_of_two_up_to_32(make_trainer, bad):
    with pytest.raises(ValueError, match="max_fused_steps"):
        ktl.Loop(make_trainer(), max_fused_steps=bad)


def test_a_nan_in_calls_of_32_steps_surfaces_within_2_times_32_minus_1_steps(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer, max_fused_steps=32, measure_fusion=False)  # exact call sizes
    x = np.ones((4 * 32, 3), np.float32)
    x[4 * 32 - 4] = np.nan  # batch 31: the last step of the first call of 32
    with pytest.raises(ktl.NonFiniteLossError) as info:
        loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 200)
    assert info.value.step == 31
    # Steps 0-31 ran in one call, checked once the next call (32-63) was dispatched.
    assert info.value.detected_at == 63 and info.value.detected_at - info.value.step <= 2 * 32 - 1
    assert loop.loop_step == 64
    (executor,) = trainer._cache.executors()
    assert set(executor.fused_fns) == {32}


def test_progress_bar_redraws_let_steps_fuse_and_draw_at_the_same_steps(make_trainer):
    def run(cap):
        keras.utils.set_random_seed(0)
        trainer = make_trainer()
        # Fused calls as planned: a run this short compiles none when the gate measures.
        loop = ktl.Loop(trainer, max_fused_steps=cap, measure_fusion=False)
        now = [0.0]
        ktl.every_n_steps(loop, 5, "clock", -1, lambda loop, m: now.__setitem__(0, now[0] + 1))
        drawn = []
        bar = ktl.commandline.attach_progress_bar(
            loop, output="plain", interval=2, clock=lambda: now[0], file=_Lines(drawn)
        )
        x = np.ones((40, 3), np.float32)
        loop.run_steps(ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True), 30)
        return drawn, bar.draws, trainer

    fused, fused_draws, fused_trainer = run(8)
    plain, plain_draws, _ = run(1)
    assert fused == plain and fused_draws == plain_draws == 4  # steps 0, 9, 19, 29 (clock 0-6)
    assert fused_trainer._cache.executors()[0].fused_fns


class _Lines:
    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        if text.strip():
            self.lines.append(text)

    def flush(self):
        pass


def test_a_periodic_hook_bounds_how_long_a_fused_call_takes():
    class SlowTrainer(SumTrainer):
        def train_step(self, spec, inputs, labels):
            time.sleep(0.002)  # at least 2 ms a step
            return super().train_step(spec, inputs, labels)

    def run(period):
        trainer = SlowTrainer()
        loop = ktl.Loop(trainer, measure_fusion=False)  # sleeping steps: fusion cannot pay
        if period is not None:
            ktl.periodic_callback(loop, period, False, "p", 0, lambda loop, m: None)
        x = np.ones((64, 2), np.float32)
        loop.run_steps(ktl.ArrayDataset(x, x, batch_size=2, loop_forever=True), 60)
        return trainer.fused_calls

    assert max(run(None)) == 8
    bounded = run(0.01)  # 10 ms at >= 2 ms a step: calls of at most 4 steps
    assert bounded and max(bounded) <= 4
