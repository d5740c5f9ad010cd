"""Checkpoints: exact resume, keep-N, hyperparameters, atomicity, mismatches."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.checkpoints import Checkpoint, attach_checkpoint


def _weights(trainer) -> list[np.ndarray]:
    return [np.asarray(v) for v in trainer.model.get_weights()]


def _optimizer_state(trainer) -> list[np.ndarray]:
    trainer.model  # noqa: B018 - reading it syncs the training state
    return [np.asarray(v.value) for v in trainer.optimizer.variables]


def test_resumed_training_matches_uninterrupted_training(tmp_path, make_trainer, make_ds):
    # 30 uninterrupted steps, saving a checkpoint at step 20 on the way.
    first = make_trainer()
    checkpoint = Checkpoint(first, tmp_path, keep=1)
    loop = ktl.Loop(first)
    attach_checkpoint(loop, checkpoint, every_n_steps=20, on_end=False)
    loop.run_steps(make_ds(), 30)
    checkpoint.wait()
    assert checkpoint.steps() == [20]

    # A fresh trainer restores step 20 and trains 10 more steps on the same batches.
    second = make_trainer()
    restored = Checkpoint(second, tmp_path)
    assert restored.restored_step == 20
    assert second.global_step == 20
    resumed = ktl.Loop(second)
    assert resumed.loop_step == 20
    resumed.run_steps(make_ds(), 10)  # batch 20 is batch 0 of an epoch of 10 batches

    assert second.global_step == 30
    for got, want in zip(_weights(second), _weights(first), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for got, want in zip(_optimizer_state(second), _optimizer_state(first), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_restore_into_a_trainer_that_already_trained_is_immediate(tmp_path, make_trainer, make_ds):
    source = make_trainer()
    ktl.Loop(source).run_steps(make_ds(), 12)
    with Checkpoint(source, tmp_path, async_save=False) as checkpoint:
        assert checkpoint.save() == 12

    target = make_trainer()
    ktl.Loop(target).run_steps(make_ds(), 3)
    loop = ktl.Loop(target)
    restored = Checkpoint(target, tmp_path)

    assert target.global_step == 12
    for got, want in zip(_weights(target), _weights(source), strict=True):
        np.testing.assert_array_equal(got, want)
    # A loop created before the restore is moved to the restored step by attach.
    assert loop.loop_step == 3
    attach_checkpoint(loop, restored)
    assert loop.loop_step == 12


def test_keep_prunes_all_but_the_last_checkpoints(tmp_path, make_trainer, make_ds):
    trainer = make_trainer()
    checkpoint = Checkpoint(trainer, tmp_path, keep=2)
    loop = ktl.Loop(trainer)
    attach_checkpoint(loop, checkpoint, every_n_steps=5)
    loop.run_steps(make_ds(), 17)  # saves at 5, 10, 15, and 17 at the end

    assert checkpoint.steps() == [15, 17]
    assert sorted(os.listdir(tmp_path)) == ["15", "17"]


def test_a_step_saved_by_a_schedule_and_at_the_end_is_saved_once(tmp_path, make_trainer, make_ds):
    trainer = make_trainer()
    checkpoint = Checkpoint(trainer, tmp_path, keep=None)
    loop = ktl.Loop(trainer)
    attach_checkpoint(loop, checkpoint, every_n_steps=10, exponential=(5, 2.0))
    loop.run_steps(make_ds(), 20)  # exponential: steps 5, 15; every 10: 10, 20; end: 20

    assert checkpoint.steps() == [6, 10, 16, 20]


def test_hyperparameters_are_saved_and_restored(tmp_path, make_trainer, make_ds):
    ctx = ktl.Context()
    ctx.set_param("learning_rate", 0.01).set_param("hidden", 16).set_param("shape", (2, 3))
    ctx.set_param("name", "digits").set_param("use_bias", True)
    ctx.in_scope("decoder").set_param("hidden", 8)
    trainer = make_trainer(context=ctx)
    checkpoint = Checkpoint(trainer, tmp_path)
    loop = ktl.Loop(trainer)
    attach_checkpoint(loop, checkpoint)
    loop.run_steps(make_ds(), 4)
    ctx.set_param("callback", print)
    with pytest.warns(UserWarning, match="'callback' in scope '/' is not saved"):
        loop.run_steps(make_ds(), 1)

    fresh = ktl.Context().set_param("hidden", 99)
    Checkpoint(make_trainer(context=fresh), tmp_path)
    expected = ctx.params()
    del expected["/"]["callback"]
    assert fresh.params() == expected
    assert fresh.get_param("shape") == (2, 3)
    assert isinstance(fresh.get_param("learning_rate"), float)


def test_unfinished_checkpoint_left_by_a_crash_is_ignored(tmp_path, make_trainer, make_ds):
    trainer = make_trainer()
    checkpoint = Checkpoint(trainer, tmp_path)
    loop = ktl.Loop(trainer)
    attach_checkpoint(loop, checkpoint)
    loop.run_steps(make_ds(), 10)
    saved = _weights(trainer)

    # A save of step 20 that crashed half way: orbax's temporary directory, truncated files.
    partial = tmp_path / "20.orbax-checkpoint-tmp-1700000000000000"
    shutil.copytree(tmp_path / "10", partial)
    for root, _, files in os.walk(partial):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(os.path.getsize(f.name) // 2)

    fresh = make_trainer()
    restored = Checkpoint(fresh, tmp_path)
    assert restored.steps() == [10]
    assert restored.restored_step == 10
    fresh.eval_step(None, [np.zeros((2, 64), np.float32)], [np.zeros(2, np.int32)])
    for got, want in zip(_weights(fresh), saved, strict=True):
        np.testing.assert_array_equal(got, want)

    # Training goes on and saves step 20 over the leftover.
    loop = ktl.Loop(fresh)
    attach_checkpoint(loop, restored)
    loop.run_steps(make_ds(), 10)
    assert restored.steps() == [20]


@pytest.mark.parametrize(
    "hidden, layers, match",
    [
        (
            32,
            1,
            (
                r"model variable #0 '/hidden/kernel' is float32\(64, 16\), but the model's "
                r"variable #0 '/hidden/kernel' is float32\(64, 32\)"
            ),
        ),
        (
            16,
            2,
            (
                r"model variable #2 '/logits/kernel' is float32\(16, 10\), but the model's "
                r"variable #2 '/hidden_1/kernel' is float32\(16, 16\)"
            ),
        ),
    ],
    ids=["wider", "deeper"],
)
def test_restoring_another_models_checkpoint_names_the_variable(
    tmp_path, make_trainer, make_ds, hidden, layers, match
):
    source = make_trainer(hidden=16)
    checkpoint = Checkpoint(source, tmp_path)
    loop = ktl.Loop(source)
    attach_checkpoint(loop, checkpoint)
    loop.run_steps(make_ds(), 2)

    other = make_trainer(hidden=hidden, layers=layers)
    Checkpoint(other, tmp_path)  # the variables are restored by the first step
    with pytest.raises(ValueError, match=match):
        ktl.Loop(other).run_steps(make_ds(), 1)


def test_a_checkpoint_with_more_variables_names_the_first_one_without_a_match(
    tmp_path, make_trainer, make_ds
):
    # hidden=10: the deeper model's first 4 variables have the shallower one's shapes.
    source = make_trainer(hidden=10, layers=2)
    ktl.Loop(source).run_steps(make_ds(), 1)
    with Checkpoint(source, tmp_path, async_save=False) as checkpoint:
        checkpoint.save()

    shallower = make_trainer(hidden=10, layers=1)
    ktl.Loop(shallower).run_steps(make_ds(), 1)
    with pytest.raises(
        ValueError,
        match=r"holds 6 model variables, the model has 4 \(first "
        r"variable without a match: '/logits/kernel'\)",
    ):
        Checkpoint(shallower, tmp_path)


@pytest.mark.parametrize("keep", [0, -2, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_keep_is_rejected(tmp_path, make_trainer, keep):
    with pytest.raises(ValueError, match="keep must be a positive number"):
        Checkpoint(make_trainer(), tmp_path, keep=keep)


def test_restoring_a_missing_step_lists_the_available_ones(tmp_path, make_trainer, make_ds):
    trainer = make_trainer()
    checkpoint = Checkpoint(trainer, tmp_path, async_save=False)
    with pytest.raises(ValueError, match="no checkpoint to restore"):
        checkpoint.restore()
    ktl.Loop(trainer).run_steps(make_ds(), 2)
    checkpoint.save()
    with pytest.raises(ValueError, match=r"no checkpoint at step 5.*available steps: \[2\]"):
        checkpoint.restore(5)


def test_attach_rejects_a_checkpoint_of_another_trainer(tmp_path, make_trainer):
    checkpoint = Checkpoint(make_trainer(), tmp_path)
    with pytest.raises(TypeError, match="must belong to the loop's trainer"):
        attach_checkpoint(ktl.Loop(make_trainer()), checkpoint)
