"""Run in a subprocess by test_trainer_interrupts.py: Ctrl-C at the worst moments of a step."""

import json
import os
import signal
import sys

import keras
import numpy as np

import keras_trainloop as ktl


def model_fn(ctx, spec, inputs):
    x = ctx.layer("hidden", lambda: keras.layers.Dense(8, activation="relu"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(3))(x)]


def new_trainer():
    return ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


def interrupted(fn, *args):
    try:
        fn(*args)
    except KeyboardInterrupt:
        return True
    return False


def main(case):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16).astype(np.int32)
    trainer = new_trainer()
    result = {}
    if case == "optimizer_build":
        original = trainer.optimizer.add_optimizer_variables

        def add_then_interrupted(*args, **kwargs):
            ctrl_c()  # Keras has set `built` already: Adam's slots come next.
            return original(*args, **kwargs)

        trainer.optimizer.add_optimizer_variables = add_then_interrupted
        result["interrupted"] = interrupted(trainer.train_step, None, [x], [y])
        del trainer.optimizer.add_optimizer_variables
    else:
        for _ in range(3):
            trainer.train_step(None, [x], [y])
        (executor,) = trainer._cache.executors()
        original = executor.fn

        def returns_then_interrupted(*args):
            outputs = original(*args)  # The inputs are donated now.
            ctrl_c()
            return outputs

        executor.fn = returns_then_interrupted
        result["interrupted"] = interrupted(trainer.train_step, None, [x], [y])
        executor.fn = original
        result["step_after_interrupt"] = trainer.global_step
        result["weights_finite"] = bool(
            all(np.isfinite(w).all() for w in trainer.model.get_weights())
        )
    trainer.train_step(None, [x], [y])
    result["step_after_next"] = trainer.global_step
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
