"""Checkpoints (GoMLX's ml/context/checkpoints), stored with orbax-checkpoint.

`Checkpoint(trainer, directory, keep=N)` restores the latest checkpoint in
`directory` (hyperparameters, global step, model and optimizer variables) and
saves new ones, atomically and in the background; `attach_checkpoint(loop,
checkpoint, every_n_steps=...)` saves on a schedule and at the end of each
run. orbax is imported when a Checkpoint is created.

Example:
    trainer = ktl.Trainer(model_fn, loss_fn, "adam", context=ctx)
    ckpt = ktl.checkpoints.Checkpoint(trainer, "/tmp/digits", keep=2)
    loop = ktl.Loop(trainer)  # resumes at the saved step
    ktl.checkpoints.attach_checkpoint(loop, ckpt, every_n_steps=200)
    loop.run_steps(train_ds, 1000)
"""

from keras_trainloop.checkpoints._attach import attach_checkpoint
from keras_trainloop.checkpoints._checkpoint import FORMAT, Checkpoint

__all__ = ["FORMAT", "Checkpoint", "attach_checkpoint"]
