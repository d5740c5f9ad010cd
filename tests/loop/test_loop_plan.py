"""loop.plan(steps): the hooks' firing steps and the compiled calls, before running anything."""

from __future__ import annotations

import time

import numpy as np
import pytest

import keras_trainloop as ktl


def _forever(batch_size=4):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    return ktl.ArrayDataset(
        x, x.sum(axis=1, keepdims=True) / 3, batch_size=batch_size, loop_forever=True
    )


def test_plan_lists_every_n_steps_and_calls_that_end_at_each_firing(trainer):
    loop = ktl.Loop(trainer, measure_fusion=False)  # the probe: test_fusion_gate.py
    ktl.every_n_steps(loop, 100, "eval", 0, lambda loop, m: None)
    plan = loop.plan(1000)
    assert plan.start_step == 0 and plan.end_step == 1000
    assert plan.steps_of("EveryNSteps(100): eval") == list(range(99, 1000, 100))
    assert sum(n for _, n in plan.calls) == 1000
    ends = {first + n - 1 for first, n in plan.calls}
    assert set(range(99, 1000, 100)) <= ends
    assert {n for _, n in plan.calls} == {8, 4}  # 12 x 8 + 4 between firings
    assert plan.fires_at(199) == ["EveryNSteps(100): eval"] and plan.fires_at(198) == []


def test_plan_changes_nothing_and_matches_the_run(trainer):
    loop = ktl.Loop(trainer)
    fired = []
    ktl.exponential_callback(
        loop, 3, 1.5, True, "exp", 0, lambda loop, m: fired.append(loop.loop_step)
    )
    ktl.n_times_during_loop(loop, 4, "n4", 1, lambda loop, m: fired.append(-loop.loop_step))
    plan = loop.plan(50)
    again = loop.plan(50)
    assert again.hooks[0].steps == plan.hooks[0].steps  # the schedules were not advanced
    loop.run_steps(_forever(), 50)
    expected_exp = [s for s in ktl.loop.Exponential(3, 1.5).steps(10) if s < 50]
    assert plan.steps_of("Exponential(3, 1.5): exp") == expected_exp
    assert plan.steps_of("NTimesDuringLoop(4): n4") == [12, 24, 37, 49]
    assert [s for s in fired if s > 0] == expected_exp + [50]  # + the end call
    assert sorted(-s for s in fired if s <= 0) == [12, 24, 37, 49]
    on_end = {h.name: h.steps for h in plan.hooks if h.event == "OnEnd"}
    assert on_end == {"Exponential(3, 1.5): exp": [50], "NTimesDuringLoop(4): n4": []}


def test_plan_of_a_hook_without_schedule_has_one_step_calls(trainer):
    loop = ktl.Loop(trainer)
    loop.on_step("log", 0, lambda loop, m: None)
    plan = loop.plan(10)
    assert plan.steps_of("log") == list(range(10))
    assert plan.calls == [(i, 1) for i in range(10)]


def test_time_based_hooks_are_marked_and_bound_nothing_in_the_plan(trainer):
    loop = ktl.Loop(trainer)
    ktl.periodic_callback(loop, 60, False, "save", 0, lambda loop, m: None)
    ktl.commandline.attach_progress_bar(loop, output="plain")
    plan = loop.plan(64)
    timed = {h.name: h.timed for h in plan.hooks if h.event == "OnStep"}
    assert timed == {"Periodic(60s): save": True, "progress_bar": True}
    assert plan.calls[0] == (0, 1)  # the first step starts the periodic clock
    assert {n for _, n in plan.calls[1:]} == {8, 4, 2, 1}


def test_plan_with_fusion_off_has_one_step_calls(trainer):
    loop = ktl.Loop(trainer, max_fused_steps=1)
    ktl.every_n_steps(loop, 5, "x", 0, lambda loop, m: None)
    assert loop.plan(7).calls == [(i, 1) for i in range(7)]


def test_report_ranks_hooks_by_estimated_cost(trainer):
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 2, "slow", 0, lambda loop, m: time.sleep(0.002))
    ktl.every_n_steps(loop, 2, "fast", 0, lambda loop, m: None)
    loop.run_steps(_forever(), 10)
    costs = loop.hook_costs()
    slow, fast = costs["OnStep: EveryNSteps(2): slow"], costs["OnStep: EveryNSteps(2): fast"]
    assert slow.calls == fast.calls == 5
    assert slow.median >= 0.002 > fast.median and slow.total >= 0.01
    report = loop.plan(100).report()
    lines = report.splitlines()
    assert lines[0].startswith("Plan: steps 10..109 (100 steps)")
    assert "EveryNSteps(2): slow" in lines[2] and "EveryNSteps(2): fast" in lines[3]
    assert str(loop.plan(100)) == report


def test_plan_rejects_a_bad_length_and_unknown_names(trainer):
    loop = ktl.Loop(trainer)
    with pytest.raises(ValueError, match="steps=-1"):
        loop.plan(-1)
    with pytest.raises(KeyError, match="no_such_hook"):
        loop.plan(5).steps_of("no_such_hook")


def test_hook_costs_add_up_hooks_of_one_event_sharing_a_name(trainer):
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 2, "twin", 0, lambda loop, m: None)
    ktl.every_n_steps(loop, 5, "twin", 0, lambda loop, m: None)
    loop.on_step("same", 0, lambda loop, m: None)
    loop.on_step("same", 1, lambda loop, m: None)
    loop.run_steps(_forever(), 10)
    costs = loop.hook_costs()
    assert costs["OnStep: EveryNSteps(2): twin"].calls == 5
    assert costs["OnStep: same"].calls == 20 and len(costs["OnStep: same"].recent) == 20
