"""Run by test_checkpoint_faults.py: train to a total step count, resuming from a directory.

`python _fault_run.py DIR TOTAL [KILL_AT]`: trains a digits MLP on a shuffled stream with a
checkpoint every 5 steps, exactly as a user script would (no data skipping by hand). With
KILL_AT, the process kills itself with SIGKILL right after step KILL_AT, after the
checkpoint hook of that step has started its (asynchronous) write. At the end it writes the
weights to DIR/final.npz.
"""

import os
import signal
import sys

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_trainloop as ktl


def model_fn(ctx, spec, inputs):
    x = ctx.layer("hidden", lambda: keras.layers.Dense(32, activation="relu"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]


def main(directory, total, kill_at):
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 64)[:512]
    y = digits.target.astype(np.int32)[:512]
    keras.utils.set_random_seed(0)
    trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")
    checkpoint = ktl.checkpoints.Checkpoint(trainer, directory, keep=2)
    loop = ktl.Loop(trainer)
    ktl.checkpoints.attach_checkpoint(loop, checkpoint, every_n_steps=5)
    if kill_at is not None:

        def kill(loop, metrics):
            if loop.loop_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        loop.on_step("kill", 1000, kill)  # After the checkpoint hook (priority 100).
    train = ktl.ArrayDataset(x, y, batch_size=32, shuffle=True, seed=7, loop_forever=True)
    loop.run_steps(train, total - loop.loop_step)
    np.savez(os.path.join(directory, "final.npz"), *trainer.model.get_weights())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
