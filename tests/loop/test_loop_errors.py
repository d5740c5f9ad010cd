"""HookError and NonFiniteLossError."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from loop_helpers import Batches

import keras_trainloop as ktl


class Boom(Exception):
    pass


def _raise_at(step):
    def hook(loop, arg):
        if loop.loop_step == step:
            raise Boom(f"boom at {step}")

    return hook


@pytest.mark.parametrize(
    "event, kind, step",
    [("on_start", "OnStart", 0), ("on_step", "OnStep", 2), ("on_end", "OnEnd", 4)],
    ids=["on_start", "on_step", "on_end"],
)
def test_hook_error_names_kind_hook_and_step_and_keeps_the_cause(
    trainer, recorder, event, kind, step
):
    loop = ktl.Loop(trainer)
    getattr(loop, event)("exploding", 0, _raise_at(step))
    getattr(loop, event)("later", 1, recorder.hook("later"))
    if event != "on_end":
        loop.on_end("end", 0, recorder.hook("end"))
    with pytest.raises(
        ktl.HookError,
        match=(rf"{kind} hook 'exploding' raised Boom at loop step {step}: boom at {step}\."),
    ) as info:
        loop.run_steps(Batches(loop_forever=True), 4)
    error = info.value
    assert isinstance(error.__cause__, Boom)
    assert (error.kind, error.hook_name, error.step) == (kind, "exploding", step)
    assert ("later", step) not in recorder.events
    assert recorder.steps("end") == []


def test_hook_error_in_on_step_leaves_loop_step_after_the_trained_step(trainer):
    loop = ktl.Loop(trainer)
    loop.on_step("exploding", 0, _raise_at(2))
    with pytest.raises(ktl.HookError):
        loop.run_steps(Batches(loop_forever=True), 10)
    assert loop.loop_step == trainer.global_step == 3


def test_hook_error_of_a_schedule_names_the_schedule(trainer):
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 2, "eval", 0, _raise_at(3))
    with pytest.raises(
        ktl.HookError,
        match=r"OnStep hook 'EveryNSteps\(2\): eval' raised Boom "
        r"at loop step 3",
    ):
        loop.run_steps(Batches(loop_forever=True), 10)


def test_errors_survive_pickling():
    error = ktl.HookError("OnStep", "h", 3, ValueError("x"))
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    nonfinite = ktl.NonFiniteLossError(5, 15)
    assert str(pickle.loads(pickle.dumps(nonfinite))) == str(nonfinite)


@pytest.mark.parametrize(
    "steps, nan_at, detected_at",
    [(40, 5, 15), (40, 16, 31), (8, 3, 7), (20, 17, 19)],
    ids=["before-first-sync", "right-after-a-sync", "short-run-found-at-end", "found-at-end"],
)
def test_nonfinite_loss_names_the_first_bad_step(
    make_trainer, recorder, steps, nan_at, detected_at
):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    loop.on_end("end", 0, recorder.hook("end"))
    losses = []
    loop.on_step("loss", 0, lambda lp, m: losses.append(float(m[0])))
    ds = Batches(loop_forever=True, nan_at=nan_at)
    with pytest.raises(
        ktl.NonFiniteLossError,
        match=(rf"non-finite \(NaN or Inf\) at step {nan_at} \(noticed after step {detected_at}\)"),
    ) as info:
        loop.run_steps(ds, steps)
    assert (info.value.step, info.value.detected_at) == (nan_at, detected_at)
    assert ds.yields == detected_at + 1  # at most 16 steps ran past the bad one
    assert np.isnan(losses[nan_at]) and np.all(np.isfinite(losses[:nan_at]))
    assert recorder.events == []
    assert loop.loop_step == trainer.global_step == detected_at + 1


def test_training_continues_after_a_nonfinite_loss_once_weights_are_restored(make_trainer):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    loop.run_steps(Batches(loop_forever=True), 1)
    good_weights = trainer.model.get_weights()
    with pytest.raises(ktl.NonFiniteLossError) as info:
        loop.run_steps(Batches(loop_forever=True, nan_at=2), 10)
    assert info.value.step == 3
    # The steps after the bad one were trained too (the loop does not wait every step).
    assert loop.loop_step == trainer.global_step == 11
    assert not all(np.all(np.isfinite(w)) for w in trainer.model.get_weights())
    trainer.model.set_weights(good_weights)
    metrics = loop.run_steps(Batches(loop_forever=True), 4)
    assert np.isfinite(float(metrics[0]))
    assert loop.loop_step == trainer.global_step == 15


def test_the_loss_check_compiles_once_whatever_the_number_of_pending_steps(trainer):
    from keras_trainloop.loop import _loss_watch

    before = _loss_watch._first_nonfinite_and_sum._cache_size()
    loop = ktl.Loop(trainer, max_fused_steps=1)
    for steps in (1, 2, 3, 5, 17):
        loop.run_steps(Batches(loop_forever=True), steps)
    assert _loss_watch._first_nonfinite_and_sum._cache_size() - before <= 1


def test_a_stop_by_a_hook_that_did_not_read_the_nan_loss_still_raises(trainer):
    loop = ktl.Loop(trainer, max_fused_steps=1)
    ktl.every_n_steps(loop, 6, "stop", 0, lambda lp, metrics: lp.stop())  # reads no loss
    ended = []
    loop.on_end("ended", 0, lambda lp, metrics: ended.append(True))
    with pytest.raises(ktl.NonFiniteLossError) as info:
        loop.run_steps(Batches(loop_forever=True, nan_at=2), 40)
    assert (info.value.step, info.value.detected_at) == (2, 5)
    assert ended == []


def test_a_hook_that_reads_the_nan_loss_and_stops_ends_the_run_gracefully(trainer):
    loop = ktl.Loop(trainer, max_fused_steps=1)
    seen = []

    def stop_on_bad_loss(lp, metrics):
        loss = lp.logs(metrics)["loss"]
        seen.append(loss)
        if not np.isfinite(loss):
            lp.stop()

    ktl.every_n_steps(loop, 1, "watch", 0, stop_on_bad_loss)
    loop.run_steps(Batches(loop_forever=True, nan_at=2), 40)
    assert loop.loop_step == 3 and len(seen) == 3 and np.isnan(seen[-1])


@pytest.mark.parametrize(
    "cause", [TypeError("t"), KeyError("k"), FileNotFoundError(2, "f"), Boom("b")]
)
def test_a_hook_error_is_also_of_the_hooks_exception_type_as_under_fit(trainer, cause):
    def hook(loop, metrics):
        raise cause

    loop = ktl.Loop(trainer)
    loop.on_step("failing", 0, hook)
    with pytest.raises(type(cause)) as info:  # As `except TypeError:` around model.fit.
        loop.run_steps(Batches(loop_forever=True), 3)
    error = info.value
    assert isinstance(error, ktl.HookError) and error.__cause__ is cause
    assert str(error).startswith(f"OnStep hook 'failing' raised {type(cause).__name__}")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)


def test_an_eof_error_from_a_hook_is_never_read_as_the_end_of_the_data(trainer):
    def hook(loop, metrics):
        raise EOFError("not the data's end")

    loop = ktl.Loop(trainer)
    loop.on_step("failing", 0, hook)
    with pytest.raises(ktl.HookError) as info:
        loop.run_epochs(Batches([5]), 2)
    assert not isinstance(info.value, EOFError) and isinstance(info.value.__cause__, EOFError)
