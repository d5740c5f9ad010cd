"""A checkpoint records where the data was: a resumed run sees the batches of an uninterrupted one."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.checkpoints import Checkpoint, attach_checkpoint


def _shuffled(digits):
    x, y = digits
    return ktl.ArrayDataset(
        x, y, batch_size=32, shuffle=True, seed=3, loop_forever=True, name="train"
    )


def _seeded(make_trainer):
    keras.utils.set_random_seed(0)  # The same initial weights for both runs.
    return make_trainer()


def _weights(trainer):
    return [np.asarray(w) for w in trainer.model.get_weights()]


@pytest.mark.parametrize("max_fused_steps", [1, 8], ids=["unfused", "fused"])
def test_resume_after_a_kill_matches_the_uninterrupted_run(
    tmp_path, make_trainer, digits, max_fused_steps
):
    uninterrupted = _seeded(make_trainer)
    ktl.Loop(uninterrupted, max_fused_steps=max_fused_steps).run_steps(_shuffled(digits), 30)

    # A run saving every 7 steps dies at step 20 (its last checkpoint: step 14) ...
    first = _seeded(make_trainer)
    loop = ktl.Loop(first, max_fused_steps=max_fused_steps)
    attach_checkpoint(
        loop, Checkpoint(first, tmp_path, keep=1, async_save=False), every_n_steps=7, on_end=False
    )
    loop.run_steps(_shuffled(digits), 20)

    # ... and a new process starts over with the same script: nothing skips data by hand.
    resumed = make_trainer()
    checkpoint = Checkpoint(resumed, tmp_path)
    assert checkpoint.restored_step == 14 and checkpoint.restored_data_state is not None
    loop = ktl.Loop(resumed, max_fused_steps=max_fused_steps)
    attach_checkpoint(loop, checkpoint, every_n_steps=7)
    loop.run_steps(_shuffled(digits), 30 - loop.loop_step)

    assert resumed.global_step == 30
    for got, want in zip(_weights(resumed), _weights(uninterrupted), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_data_position_that_does_not_fit_the_new_dataset_warns_and_restarts_it(
    tmp_path, make_trainer, digits
):
    first = make_trainer()
    loop = ktl.Loop(first)
    attach_checkpoint(loop, Checkpoint(first, tmp_path, async_save=False), every_n_steps=5)
    loop.run_steps(_shuffled(digits), 5)

    resumed = make_trainer()
    loop = ktl.Loop(resumed)
    attach_checkpoint(loop, Checkpoint(resumed, tmp_path))
    x, y = digits
    other = ktl.ArrayDataset(x, y, batch_size=16, loop_forever=True)  # Another batch size.
    with pytest.warns(UserWarning, match=r"data position saved at step 5 .* does not fit"):
        loop.run_steps(other, 3)
    assert resumed.global_step == 8
