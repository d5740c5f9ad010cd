"""run_steps / run_epochs: GoMLX's semantics, stop(), durations."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from loop_helpers import Batches

import keras_trainloop as ktl


def _positions(loop):
    """An on_step hook recording (loop_step, start_step, end_step, epoch)."""
    seen = []
    loop.on_step(
        "positions",
        0,
        lambda lp, m: seen.append((lp.loop_step, lp.start_step, lp.end_step, lp.epoch)),
    )
    return seen


def test_loop_step_starts_at_the_trainers_global_step(make_trainer):
    trainer = make_trainer()
    ktl.Loop(trainer).run_steps(Batches(loop_forever=True), 3)
    loop = ktl.Loop(trainer)
    assert (loop.loop_step, trainer.global_step) == (3, 3)
    assert loop.shared_data == {} and loop.train_step_durations == []


def test_run_steps_continues_from_loop_step(trainer):
    loop = ktl.Loop(trainer)
    seen = _positions(loop)
    ds = Batches(loop_forever=True)
    loop.run_steps(ds, 3)
    loop.run_steps(ds, 2)
    assert seen == [(0, 0, 3, 0), (1, 0, 3, 0), (2, 0, 3, 0), (3, 3, 5, 0), (4, 3, 5, 0)]
    assert (loop.loop_step, loop.start_step, loop.end_step) == (5, 3, 5)
    assert trainer.global_step == 5
    assert ds.resets == 0


def test_run_steps_returns_the_last_steps_metrics_as_device_arrays(trainer):
    loop = ktl.Loop(trainer)
    last = []
    loop.on_step("keep", 0, lambda lp, m: last.append(m))
    metrics = loop.run_steps(Batches(loop_forever=True), 4)
    assert metrics is last[-1]
    assert len(metrics) == len(trainer.train_metrics)
    assert all(isinstance(v, jax.Array) for v in metrics)


@pytest.mark.parametrize("method", ["run_steps", "run_epochs"])
def test_zero_steps_or_epochs_do_nothing(trainer, recorder, method):
    loop = ktl.Loop(trainer)
    loop.on_start("start", 0, recorder.hook("start"))
    loop.on_end("end", 0, recorder.hook("end"))
    assert getattr(loop, method)(Batches(), 0) == []
    assert recorder.events == []


@pytest.mark.parametrize(
    "method, arg, match",
    [
        ("run_steps", -1, r"run_steps\(\) expects a non-negative int steps. Received: steps=-1"),
        ("run_steps", 2.5, r"Received: steps=2.5"),
        (
            "run_epochs",
            -3,
            r"run_epochs\(\) expects a non-negative int epochs. Received: epochs=-3",
        ),
    ],
    ids=["negative-steps", "float-steps", "negative-epochs"],
)
def test_bad_step_or_epoch_counts_are_rejected(trainer, method, arg, match):
    with pytest.raises(ValueError, match=match):
        getattr(ktl.Loop(trainer), method)(Batches(), arg)


def test_a_non_dataset_is_rejected(trainer):
    with pytest.raises(TypeError, match=r"yield_batch\(\) and reset\(\).*Received: ds=\[1, 2\]"):
        ktl.Loop(trainer).run_steps([1, 2], 2)


def test_finite_dataset_ending_inside_run_steps_says_how_many_steps_ran(trainer, recorder):
    loop = ktl.Loop(trainer)
    loop.on_end("end", 0, recorder.hook("end"))
    with pytest.raises(
        ValueError,
        match=(
            r"Dataset 'batches' ended after 5 steps, before the requested 8.*"
            r"loop.run_epochs\(ds, epochs\).*loops forever"
        ),
    ):
        loop.run_steps(Batches([5]), 8)
    assert recorder.events == []
    assert loop.loop_step == trainer.global_step == 5


def test_run_epochs_extrapolates_end_step_after_the_first_epoch(trainer):
    loop = ktl.Loop(trainer)
    seen = _positions(loop)
    ends = []
    loop.on_end("end", 0, lambda lp, m: ends.append((lp.loop_step, lp.end_step, lp.epoch)))
    ds = Batches([3])
    loop.run_epochs(ds, 3)
    assert [s[2] for s in seen] == [-1, -1, -1, 9, 9, 9, 9, 9, 9]
    assert [s[3] for s in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [s[0] for s in seen] == list(range(9))
    assert ends == [(9, 9, 3)]
    assert ds.resets == 3


def test_run_epochs_re_extrapolates_when_epoch_lengths_change(trainer):
    loop = ktl.Loop(trainer)
    seen = _positions(loop)
    loop.run_epochs(Batches([2, 4, 3]), 3)
    # After epoch 0 (2 steps): 2 + 2*2 = 6; after epoch 1 (4 steps): 6 + 4 = 10; the end: 9.
    assert [s[2] for s in seen] == [-1, -1, 6, 6, 6, 6, 10, 10, 10]
    assert loop.loop_step == loop.end_step == 9


def test_run_epochs_continues_from_loop_step_and_resets_metrics(trainer, monkeypatch):
    loop = ktl.Loop(trainer)
    resets = []
    original = trainer.reset_train_metrics
    monkeypatch.setattr(trainer, "reset_train_metrics", lambda: (resets.append(1), original()))
    ds = Batches([2])
    loop.run_steps(Batches(loop_forever=True), 3)
    seen = _positions(loop)
    loop.run_epochs(ds, 2)
    assert [s[:2] for s in seen] == [(3, 3), (4, 3), (5, 3), (6, 3)]
    assert len(resets) == 3  # run_steps, then run_epochs at each epoch (as fit does)
    assert trainer.global_step == 7


def test_empty_epoch_is_an_error(trainer):
    with pytest.raises(ValueError, match=r"Dataset 'batches' yielded no batch in epoch 1"):
        ktl.Loop(trainer).run_epochs(Batches([2, 0]), 3)


def test_dataset_errors_propagate_unchanged(trainer, recorder):
    loop = ktl.Loop(trainer)
    loop.on_end("end", 0, recorder.hook("end"))
    with pytest.raises(KeyError, match="broken record"):
        loop.run_steps(Batches(loop_forever=True, error_at=2), 5)
    assert recorder.events == []
    assert loop.loop_step == trainer.global_step == 2


@pytest.mark.parametrize("method, arg", [("run_steps", 10), ("run_epochs", 2)])
def test_stop_ends_the_run_after_the_current_step_and_runs_on_end(trainer, recorder, method, arg):
    loop = ktl.Loop(trainer)
    loop.on_step("stopper", 0, lambda lp, m: lp.stop() if lp.loop_step == 3 else None)
    loop.on_step("after", 1, recorder.hook("after"))
    loop.on_end("end", 0, lambda lp, m: recorder.events.append(("end", lp.end_step)))
    ds = Batches([5], loop_forever=method == "run_steps")
    metrics = getattr(loop, method)(ds, arg)
    assert recorder.steps("after") == [0, 1, 2, 3]
    assert recorder.steps("end") == [4]
    assert loop.loop_step == loop.end_step == trainer.global_step == 4
    assert len(metrics) == len(trainer.train_metrics)
    assert ds.yields == 4


def test_stop_in_run_epochs_resets_the_dataset_and_skips_later_epochs(trainer):
    loop = ktl.Loop(trainer)
    loop.on_step("stopper", 0, lambda lp, m: lp.stop() if lp.loop_step == 6 else None)
    ds = Batches([5])
    loop.run_epochs(ds, 4)
    assert ds.resets == 2
    assert loop.epoch == 2  # one past the epoch that was cut short
    assert loop.loop_step == 7


def test_stop_from_on_start_runs_no_step_and_on_end_gets_no_metrics(trainer):
    loop = ktl.Loop(trainer)
    loop.on_start("stopper", 0, lambda lp, ds: lp.stop())
    ends = []
    loop.on_end("end", 0, lambda lp, m: ends.append((lp.loop_step, lp.end_step, m)))
    assert loop.run_steps(Batches(loop_forever=True), 5) == []
    assert ends == [(0, 0, [])]


def test_stop_request_is_forgotten_at_the_next_run(trainer):
    loop = ktl.Loop(trainer)
    loop.on_step("stopper", 0, lambda lp, m: lp.stop())
    ds = Batches(loop_forever=True)
    loop.run_steps(ds, 5)
    assert loop.stop_requested
    loop.run_steps(ds, 5)
    assert loop.loop_step == 2


def test_on_start_hooks_receive_the_dataset(trainer):
    loop = ktl.Loop(trainer)
    got = []
    loop.on_start("ds", 0, lambda lp, ds: got.append(ds))
    ds = Batches(loop_forever=True)
    loop.run_steps(ds, 1)
    assert got == [ds]


def test_a_hook_cannot_start_a_nested_run(trainer):
    loop = ktl.Loop(trainer)
    loop.on_step("nested", 0, lambda lp, m: lp.run_steps(Batches(loop_forever=True), 1))
    with pytest.raises(ktl.HookError) as info:
        loop.run_steps(Batches(loop_forever=True), 2)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "already running" in str(info.value.__cause__)
    loop.run_steps(Batches(loop_forever=True), 0)  # not stuck in the running state


@pytest.mark.parametrize("method", ["run_steps", "run_epochs"])
def test_loop_without_trainer_cannot_run(method):
    with pytest.raises(ValueError, match=r"needs a trainer.*trainer=None.*ktl.Loop\(trainer\)"):
        getattr(ktl.Loop(None), method)(Batches(), 1)


def test_loop_rejects_something_that_is_not_a_trainer():
    with pytest.raises(TypeError, match=r"Loop expects a ktl.Trainer.*Received: trainer='x'"):
        ktl.Loop("x")


def test_train_step_durations_has_one_entry_per_step_of_the_last_run(trainer):
    loop = ktl.Loop(trainer)
    ds = Batches(loop_forever=True)
    loop.run_steps(ds, 7)
    assert len(loop.train_step_durations) == 7
    assert all(d > 0 for d in loop.train_step_durations)
    loop.run_steps(ds, 3)
    assert len(loop.train_step_durations) == 3


@pytest.mark.parametrize(
    "durations, expected",
    [([], 0.001), ([0.5], 0.5), ([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 3.0, 2.0], 3.0)],
    ids=["empty", "one", "odd", "even-takes-upper-middle"],
)
def test_median_train_step_duration(durations, expected):
    loop = ktl.Loop(None)
    loop.train_step_durations = list(durations)
    assert loop.median_train_step_duration() == expected
    assert loop.train_step_durations == durations  # not sorted in place


def test_loop_waits_on_the_device_only_every_16_steps_and_at_the_end(trainer, monkeypatch):
    from keras_trainloop.loop import _loss_watch

    loop = ktl.Loop(trainer)
    steps_at_check = []
    original = _loss_watch._first_nonfinite_and_sum
    monkeypatch.setattr(
        _loss_watch,
        "_first_nonfinite_and_sum",
        lambda losses, sizes: (
            steps_at_check.append((loop.loop_step, int((sizes > 0).sum()))),
            original(losses, sizes),
        )[1],
    )
    loop.run_steps(Batches(loop_forever=True), 40)
    assert ktl.loop.SYNC_EVERY == 16
    assert steps_at_check == [(15, 16), (31, 16), (40, 8)]  # (step, losses read)


def test_run_epochs_and_run_steps_with_an_array_dataset(trainer):
    x = np.arange(30, dtype=np.float32).reshape(10, 3) / 30
    y = x.sum(axis=1, keepdims=True)
    loop = ktl.Loop(trainer)
    seen = _positions(loop)
    loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=4), 2)  # batches of 4, 4 and 2
    assert [s[2] for s in seen] == [-1, -1, -1, 6, 6, 6]
    loop.run_steps(ktl.ArrayDataset(x, y, batch_size=4, loop_forever=True), 5)
    assert loop.loop_step == trainer.global_step == 11


def test_a_users_keras_model_holds_the_trained_weights_after_a_run():
    import keras

    model = keras.Sequential([keras.layers.Dense(1)])
    trainer = ktl.Trainer(model, ktl.losses.mean_squared_error, keras.optimizers.SGD(0.1))
    x = np.ones((4, 3), np.float32)
    trainer.train_step(None, [x], [np.zeros((4, 1), np.float32)])  # builds the variables
    before = np.array(trainer.model.get_weights()[0])
    ktl.Loop(trainer).run_steps(
        ktl.ArrayDataset(x, np.ones((4, 1), np.float32), batch_size=4, loop_forever=True), 3
    )
    after = np.asarray(model.layers[0].kernel.value)  # no trainer.model read in between
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, trainer.model.get_weights()[0])
