"""Damaged checkpoint folders: skipped with a warning naming them, never a bare traceback."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.checkpoints import Checkpoint


def _tear_metadata_json(step_dir):
    with open(os.path.join(step_dir, "metadata", "metadata"), "w") as f:
        f.write('{"form')


def _remove_metadata(step_dir):
    shutil.rmtree(os.path.join(step_dir, "metadata"))


def _truncate_arrays(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(10)


DAMAGES = {
    "unreadable_json": _tear_metadata_json,
    "missing_metadata": _remove_metadata,
    "truncated_arrays": _truncate_arrays,
}


@pytest.fixture
def two_checkpoints(tmp_path, make_trainer, make_ds):
    """Checkpoints at steps 5 and 10; returns the weights at step 5."""
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    with Checkpoint(trainer, tmp_path, keep=2, async_save=False) as checkpoint:
        loop.run_steps(make_ds(), 5)
        checkpoint.save()
        at_5 = [np.asarray(w) for w in trainer.model.get_weights()]
        loop.run_steps(make_ds(), 5)
        checkpoint.save()
    return tmp_path, at_5


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_complete_one(
    two_checkpoints, make_trainer, make_ds, damage
):
    directory, at_5 = two_checkpoints
    DAMAGES[damage](os.path.join(directory, "10"))
    trainer = make_trainer()
    with pytest.warns(UserWarning, match=r"step 10 in .* is damaged"):
        checkpoint = Checkpoint(trainer, directory)
    assert checkpoint.restored_step == 5 and trainer.global_step == 5
    ktl.Loop(trainer).run_steps(make_ds(), 1)  # Variables restored at the first step.
    trainer2 = make_trainer()
    with pytest.warns(UserWarning):
        Checkpoint(trainer2, directory)
    trainer2.build(None, [np.zeros((2, 64), np.float32)], [np.zeros((2,), np.int32)])
    for got, want in zip(trainer2.model.get_weights(), at_5, strict=True):
        np.testing.assert_array_equal(got, want)


def test_no_complete_checkpoint_names_the_directory_and_each_problem(two_checkpoints, make_trainer):
    directory, _ = two_checkpoints
    _tear_metadata_json(os.path.join(directory, "10"))
    _truncate_arrays(os.path.join(directory, "5"))
    with pytest.warns(UserWarning), pytest.raises(ValueError) as raised:
        Checkpoint(make_trainer(), directory)
    message = str(raised.value)
    assert str(directory) in message and "step 10: its metadata" in message
    assert "step 5: its arrays" in message and "Fix:" in message


def test_restoring_an_explicit_damaged_step_is_an_error_naming_it(two_checkpoints, make_trainer):
    directory, _ = two_checkpoints
    _remove_metadata(os.path.join(directory, "5"))
    checkpoint = Checkpoint(make_trainer(), directory, restore=False)
    with pytest.raises(ValueError, match=r"step 5: its metadata cannot be read"):
        checkpoint.restore(5)
    assert checkpoint.restore() == 10


def test_remote_checkpoint_directories_are_passed_to_orbax_unchanged(tmp_path):
    from keras_trainloop.checkpoints._checkpoint import _local_or_remote

    assert _local_or_remote("gs://bucket/runs/digits") == "gs://bucket/runs/digits"
    local = _local_or_remote(tmp_path / "new" / "dir")
    assert local == str(tmp_path / "new" / "dir") and os.path.isdir(local)


@pytest.mark.parametrize(
    "schedules",
    [
        {"every_n_steps": 5, "exponential": (100, 0.5)},
        {"every_n_steps": 5, "period": float("nan")},
        {"n_times": 3, "exponential": (10,)},
        {"every_n_steps": 0, "n_times": 3},
    ],
    ids=["bad_factor", "nan_period", "not_a_pair", "bad_first"],
)
def test_attach_checkpoint_validates_every_schedule_before_registering_any(
    tmp_path, make_trainer, schedules
):
    from keras_trainloop.checkpoints import attach_checkpoint

    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    with pytest.raises(ValueError, match="Fix"):
        attach_checkpoint(loop, Checkpoint(trainer, tmp_path), **schedules)
    assert "on_start=[], on_step=[], on_end=[]" in repr(loop)  # Nothing registered.
