"""Run by test_checkpoint_interrupts.py: a loop with a checkpoint, stopped by a real signal."""

import os
import signal
import sys

import keras
import numpy as np

import keras_trainloop as ktl


def model_fn(ctx, spec, inputs):
    x = ctx.layer("hidden", lambda: keras.layers.Dense(8, activation="relu"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(3))(x)]


def main(directory, signal_name, at_step):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
    trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")
    checkpoint = ktl.checkpoints.Checkpoint(trainer, directory, keep=3)
    loop = ktl.Loop(trainer)
    ktl.checkpoints.attach_checkpoint(loop, checkpoint, every_n_steps=1000)
    signum = getattr(signal, signal_name)

    def send(loop, metrics):
        if loop.loop_step == at_step:
            os.kill(os.getpid(), signum)

    loop.on_step("send signal", 0, send)
    loop.run_steps(ktl.ArrayDataset(x, y, batch_size=8, loop_forever=True), 50)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
