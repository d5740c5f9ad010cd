"""docs/coming-from-gomlx.md: each behaviour it lists as differing from GoMLX v0.9.1, pinned.

One test per row of the page's tables (schedules, loop, trainer, command line), on a tiny
regression trained one step per call (so no fused steps are compiled). The GoMLX side of
each row is described on the page; these tests pin ours.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.commandline import parse_context_settings
from keras_trainloop.trainer import ExecutorLimitError

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
Y = X.sum(axis=1, keepdims=True)


def _model_fn(ctx, spec, inputs):
    return [ctx.layer("dense", lambda: keras.layers.Dense(1))(inputs[0])]


@pytest.fixture
def trainer():
    return ktl.Trainer(_model_fn, "mean_squared_error", keras.optimizers.SGD(0.01))


def _loop(trainer):
    return ktl.Loop(trainer, max_fused_steps=1)


def _forever():
    return ktl.ArrayDataset(X, Y, batch_size=4, loop_forever=True)


def _record(register, loop, *args):
    steps = []
    register(loop, *args, "record", 0, lambda loop, metrics: steps.append(loop.loop_step))
    return steps


class _Epochs:
    """A dataset whose passes yield the given numbers of batches."""

    name = "epochs"

    def __init__(self, lengths):
        self.lengths, self.done, self.index = list(lengths), 0, 0

    def yield_batch(self):
        if self.index >= self.lengths[min(self.done, len(self.lengths) - 1)]:
            raise EOFError
        self.index += 1
        return None, [X[:4]], [Y[:4]]

    def reset(self):
        self.done, self.index = self.done + 1, 0


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# Schedules -------------------------------------------------------------------------------------
def test_exponential_call_on_end_skips_a_second_call_after_a_firing_last_step(trainer):
    loop = _loop(trainer)
    steps = _record(ktl.exponential_callback, loop, 2, 1.5, True)
    loop.run_steps(_forever(), 11)  # Fires after steps 2, 5 and 10, the last one.
    assert steps == [2, 5, 10]


def test_periodic_call_on_end_skips_a_second_call_after_a_firing_last_step(trainer):
    clock = _Clock()
    loop = _loop(trainer)
    calls = []

    def fn(loop, metrics):
        calls.append(loop.loop_step)

    ktl.periodic_callback(loop, 1.0, True, "record", 0, fn, clock=clock)
    loop.on_step("tick", -1, lambda loop, metrics: setattr(clock, "now", clock.now + 0.6))
    loop.run_steps(_forever(), 5)
    assert calls == [2, 4]  # The clock starts after step 0; steps 2 and 4 are 1.2 s later.


def test_exponential_resumed_exactly_at_a_firing_step_fires_there(trainer):
    _loop(trainer).run_steps(_forever(), 5)
    resumed = _loop(trainer)
    steps = _record(ktl.exponential_callback, resumed, 2, 1.5, False)
    resumed.run_steps(_forever(), 6)
    assert resumed.start_step == 5 and steps == [5, 10]


@pytest.mark.parametrize(
    "start_step, factor, match",
    [
        (0, 1.5, r"start_step >= 1\. Received: start_step=0"),
        (2, 1.0, r"factor > 1\. Received: factor=1\.0"),
    ],
    ids=["start-step-0", "factor-1"],
)
def test_exponential_refuses_arguments_that_never_advance(start_step, factor, match):
    with pytest.raises(ValueError, match=match):
        ktl.exponential_callback(
            ktl.Loop(None), start_step, factor, False, "e", 0, lambda loop, metrics: None
        )


def test_n_times_during_loop_counts_n_calls_in_each_run(trainer):
    loop = _loop(trainer)
    steps = _record(ktl.n_times_during_loop, loop, 2)
    loop.run_steps(_forever(), 4)
    loop.run_steps(_forever(), 4)
    assert steps == [1, 3, 5, 7]  # n per run, the last at each run's last step; not n + 1.


def test_periodic_clock_restarts_at_each_run(trainer):
    clock = _Clock()
    loop = _loop(trainer)
    steps = _record(lambda *a: ktl.periodic_callback(*a, clock=clock), loop, 1.0, False)
    loop.run_steps(_forever(), 2)
    clock.now = 100.0  # A long pause between runs does not count.
    loop.run_steps(_forever(), 2)
    assert steps == []


# Loop ------------------------------------------------------------------------------------------
def test_loop_step_after_an_on_step_error_counts_the_trained_step(trainer):
    loop = _loop(trainer)

    def explode(loop, metrics):
        if loop.loop_step == 2:
            raise RuntimeError("boom")

    loop.on_step("explode", 0, explode)
    with pytest.raises(ktl.HookError):
        loop.run_steps(_forever(), 10)
    assert loop.loop_step == 3 == trainer.global_step


def test_run_steps_sets_epoch_to_zero(trainer):
    loop = _loop(trainer)
    loop.run_epochs(ktl.ArrayDataset(X, Y, batch_size=4), 2)
    assert loop.epoch == 2
    loop.run_steps(_forever(), 1)
    assert loop.epoch == 0


def test_run_epochs_of_zero_runs_no_hook(trainer):
    loop = _loop(trainer)
    events = []
    loop.on_start("start", 0, lambda loop, ds: events.append("start"))
    loop.on_end("end", 0, lambda loop, metrics: events.append("end"))
    assert loop.run_epochs(ktl.ArrayDataset(X, Y, batch_size=4), 0) == []
    assert events == []


def test_negative_counts_and_empty_epochs_are_errors(trainer):
    with pytest.raises(ValueError, match=r"Received: steps=-1"):
        _loop(trainer).run_steps(_forever(), -1)
    with pytest.raises(ValueError, match=r"Received: epochs=-2"):
        _loop(trainer).run_epochs(ktl.ArrayDataset(X, Y, batch_size=4), -2)
    with pytest.raises(ValueError, match=r"'epochs' yielded no batch in epoch 1"):
        _loop(trainer).run_epochs(_Epochs([2, 0]), 3)


def test_step_durations_are_a_bounded_window_the_median_leaves_alone():
    from keras_trainloop.loop._durations import DURATIONS_WINDOW

    loop = ktl.Loop(None)
    loop.train_step_durations = [3.0, 1.0, 2.0]
    assert loop.median_train_step_duration() == 2.0
    assert loop.train_step_durations == [3.0, 1.0, 2.0]
    assert DURATIONS_WINDOW == 10_000


# Trainer ---------------------------------------------------------------------------------------
def test_the_executor_limit_allows_exactly_max_executors(trainer):
    trainer.max_executors = 2
    trainer.train_step("a", [X], [Y])
    trainer.eval_step("a", [X], [Y])
    with pytest.raises(ExecutorLimitError, match=r"spec='b'.*max_executors=2"):
        trainer.train_step("b", [X], [Y])


def test_the_batch_loss_short_name_is_batch_loss(trainer):
    assert [m.short_name for m in trainer.train_metrics][:2] == ["batch_loss", "~loss+"]


# Command line ----------------------------------------------------------------------------------
def test_context_settings_apply_all_or_nothing():
    ctx = ktl.Context().set_param("a", 1).set_param("b", True)
    with pytest.raises(ValueError):
        parse_context_settings(ctx, "a=2;b=maybe")
    assert ctx.get_param("a") == 1


def test_context_settings_values_keep_equals_and_read_any_case_and_underscores():
    ctx = ktl.Context().set_param("a", 1).set_param("b", False).set_param("s", "x")
    parse_context_settings(ctx, "a=1_000;b=TRUE;s=k=v")
    assert (ctx.get_param("a"), ctx.get_param("b"), ctx.get_param("s")) == (1000, True, "k=v")
