"""Hook registration: order by priority, ties in registration order, validation."""

from __future__ import annotations

import pytest
from loop_helpers import Batches

import keras_trainloop as ktl
from keras_trainloop.loop._hooks import HookList


@pytest.mark.parametrize(
    "priorities, expected",
    [
        ([0, 0, 0], ["h0", "h1", "h2"]),
        ([2, 1, 0], ["h2", "h1", "h0"]),
        ([5, -1, 0, 5, 0], ["h1", "h2", "h4", "h0", "h3"]),
        ([1.5, 1, 2], ["h1", "h0", "h2"]),
    ],
    ids=["ties-keep-registration-order", "reversed", "mixed-with-ties", "float-priorities"],
)
def test_hooks_run_lowest_priority_first_then_registration_order(priorities, expected):
    hooks = HookList("OnStep", "fn(loop, metrics)")
    calls = []
    for i, priority in enumerate(priorities):
        hooks.add(f"h{i}", priority, lambda loop, m, i=i: calls.append(f"h{i}"))
    assert hooks.names() == expected
    hooks.fire(type("FakeLoop", (), {"loop_step": 0})(), [])
    assert calls == expected


@pytest.mark.parametrize("event", ["on_start", "on_step", "on_end"])
def test_every_event_orders_hooks_by_priority_in_a_run(trainer, recorder, event):
    loop = ktl.Loop(trainer)
    register = getattr(loop, event)
    register("late", 10, recorder.hook("late"))
    register("early", -10, recorder.hook("early"))
    register("mid-a", 0, recorder.hook("mid-a"))
    register("mid-b", 0, recorder.hook("mid-b"))
    loop.run_steps(Batches(loop_forever=True), 2)
    per_call = ["early", "mid-a", "mid-b", "late"]
    calls = 2 if event == "on_step" else 1
    assert recorder.labels() == per_call * calls


def test_all_events_fire_in_run_order(trainer, recorder):
    loop = ktl.Loop(trainer)
    loop.on_end("end", 0, recorder.hook("end"))
    loop.on_step("step", 0, recorder.hook("step"))
    loop.on_start("start", 0, recorder.hook("start"))
    loop.run_steps(Batches(loop_forever=True), 3)
    assert recorder.events == [("start", 0), ("step", 0), ("step", 1), ("step", 2), ("end", 3)]


def test_hook_added_while_running_fires_from_the_next_step(trainer, recorder):
    loop = ktl.Loop(trainer)

    def add_once(loop, metrics):
        if loop.loop_step == 1:
            loop.on_step("added", 0, recorder.hook("added"))

    loop.on_step("adder", 0, add_once)
    loop.run_steps(Batches(loop_forever=True), 4)
    assert recorder.steps("added") == [2, 3]


def _no_args():
    pass


def _one_arg(loop):
    pass


def _kw_only(loop, *, metrics):
    pass


@pytest.mark.parametrize(
    "fn, match",
    [
        (42, r"OnStep hook 'bad' must be a function fn\(loop, metrics\). Received: fn=42"),
        (_no_args, r"OnStep hook 'bad' must accept 2 positional arguments"),
        (_one_arg, r"OnStep hook 'bad' must accept 2 positional arguments.*\(loop\)"),
        (_kw_only, r"OnStep hook 'bad' must accept 2 positional arguments"),
        (lambda loop: None, r"Received: fn=<function <lambda>"),
    ],
    ids=["not-callable", "no-args", "one-arg", "keyword-only", "lambda-one-arg"],
)
def test_hook_with_wrong_signature_is_rejected_when_added(fn, match):
    loop = ktl.Loop(None)
    with pytest.raises(TypeError, match=match):
        loop.on_step("bad", 0, fn)


@pytest.mark.parametrize(
    "fn",
    [lambda loop, metrics: None, lambda *args: None, lambda loop, metrics, extra=1: None, print],
    ids=["two-args", "varargs", "defaulted-third", "builtin"],
)
def test_hook_accepting_two_positional_arguments_is_accepted(fn):
    loop = ktl.Loop(None)
    loop.on_start("ok", 0, fn)
    assert loop._on_start.names() == ["ok"]


@pytest.mark.parametrize(
    "name, priority, match",
    [
        (1, 0, r"hook names must be strings. Received: name=1"),
        ("p", "high", r"priority must be a number .* Received: priority='high'"),
        ("p", True, r"Received: priority=True"),
        ("p", None, r"Received: priority=None"),
    ],
    ids=["int-name", "str-priority", "bool-priority", "none-priority"],
)
def test_bad_hook_name_or_priority_is_rejected(name, priority, match):
    loop = ktl.Loop(None)
    with pytest.raises(TypeError, match=match):
        loop.on_end(name, priority, lambda loop, metrics: None)
