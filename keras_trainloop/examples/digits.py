"""Trains a classifier on scikit-learn's digits (or a TFDS image dataset on disk).

The README's first command. GoMLX-demo style flags:

    python -m keras_trainloop.examples.digits --steps 2000 --plot digits.png
    python -m keras_trainloop.examples.digits --checkpoint /tmp/digits --keep 2 \\
        --set "learning_rate=0.003;hidden=256"
    python -m keras_trainloop.examples.digits --tfds digits_local --data-dir /tmp/tfds

It attaches a progress bar, collects plot points (train and eval metrics at
exponentially spaced steps), optionally checkpoints (a second run with the
same --checkpoint resumes where the first stopped), and ends with an eval
report and the plot's path.

The arguments are parsed before Keras and JAX load (`--help` and usage
errors answer at once); TensorFlow loads only with `--tfds`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras_trainloop as ktl  # Selects Keras' JAX backend; loads nothing else yet.
from keras_trainloop.commandline import create_context_settings_flag  # Needs no Keras.

DEFAULTS = {
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "hidden": 128,
    "num_hidden_layers": 1,
    "dropout": 0.0,
    "l2": 0.0,
}
TRAIN_EXAMPLES = 1500


def create_context(defaults: Mapping[str, Any] = DEFAULTS) -> ktl.Context:
    """A context holding the example's hyperparameters and their defaults (loads Keras)."""
    ctx = ktl.Context()
    for key, value in defaults.items():
        ctx.set_param(key, value)
    return ctx


def make_model_fn(num_classes: int, seed: int = 0):
    """An MLP over flattened images; integer pixels are scaled to [0, 1].

    `seed` fixes the initial weights and the dropout masks: each layer gets
    its own seed from it (no global seed, which would load TensorFlow).
    """
    import keras

    def model_fn(ctx: ktl.Context, spec: Any, inputs: list) -> list:
        del spec
        x = inputs[0]
        if keras.backend.standardize_dtype(x.dtype).startswith(("uint", "int")):
            x = keras.ops.cast(x, "float32") / 255.0
        x = keras.ops.reshape(x, (x.shape[0], -1))
        l2 = float(ctx.get_param("l2"))
        regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
        layers = int(ctx.get_param("num_hidden_layers"))
        for i in range(layers):
            scope = ctx.in_scope(f"hidden_{i}")
            x = scope.layer(
                "dense",
                lambda i=i: keras.layers.Dense(
                    int(ctx.get_param("hidden")),
                    activation="relu",
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2 * i),
                    kernel_regularizer=regularizer,
                ),
            )(x)
            rate = float(ctx.get_param("dropout"))
            if rate > 0:
                x = scope.layer(
                    "dropout", lambda r=rate, i=i: keras.layers.Dropout(r, seed=seed + 2 * i + 1)
                )(x)
        return [
            ctx.layer(
                "logits",
                lambda: keras.layers.Dense(
                    num_classes,
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2 * layers),
                ),
            )(x)
        ]

    return model_fn


def digits_datasets(batch_size: int, seed: int) -> tuple[Any, Any, Any, int]:
    """Train (looping, shuffled), train-eval and test datasets of sklearn's digits."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    xtr, ytr, xte, yte = (
        x[:TRAIN_EXAMPLES],
        y[:TRAIN_EXAMPLES],
        x[TRAIN_EXAMPLES:],
        y[TRAIN_EXAMPLES:],
    )
    train = ktl.ArrayDataset(
        xtr, ytr, batch_size=batch_size, shuffle=True, seed=seed, loop_forever=True, name="train"
    )
    train_eval = ktl.ArrayDataset(xtr, ytr, batch_size=256, name="train")
    test = ktl.ArrayDataset(xte, yte, batch_size=256, name="test")
    return train, train_eval, test, 10


def tfds_datasets(name: str, data_dir: str | None, batch_size: int, seed: int):
    """The same from a supervised TFDS image/label dataset already prepared in data_dir."""
    import tensorflow_datasets as tfds

    train = ktl.from_tfds(
        name,
        split="train",
        batch_size=batch_size,
        data_dir=data_dir,
        shuffle=True,
        loop_forever=True,
        seed=seed,
    )
    train_eval = ktl.from_tfds(name, split="train", batch_size=256, data_dir=data_dir)
    test = ktl.from_tfds(name, split="test", batch_size=256, data_dir=data_dir)
    info = tfds.builder(name, data_dir=data_dir).info
    label = info.features[info.supervised_keys[1]]
    return train, train_eval, test, int(label.num_classes)


def build_parser(
    defaults: Mapping[str, Any] = DEFAULTS,
) -> tuple[argparse.ArgumentParser, argparse.Action]:
    """The example's parser and its `--set` flag; needs neither Keras nor JAX."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_trainloop.examples.digits",
        description="Train a classifier on scikit-learn's digits with keras-trainloop.",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="total train steps, counted across resumed runs: a run resumed "
        "from --checkpoint at step N trains --steps minus N more "
        "(default 2000)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="directory to save checkpoints and plot points; resumes from it",
    )
    parser.add_argument("--keep", type=int, default=1, help="checkpoints kept (default 1)")
    parser.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report train and test metrics at the end (default on)",
    )
    parser.add_argument(
        "--plot",
        default=None,
        help="PNG path of the metrics plot (default: in --checkpoint, else digits.png)",
    )
    parser.add_argument(
        "--tfds",
        default=None,
        metavar="NAME",
        help="train on this supervised TFDS dataset instead of sklearn digits",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding --tfds")
    parser.add_argument("--seed", type=int, default=0, help="data and weights seed")
    flag = create_context_settings_flag(defaults, parser)
    return parser, flag


def _check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "keep"):
        if getattr(args, name) <= 0:
            raise SystemExit(
                f"--{name.replace('_', '-')} must be positive. Received: {getattr(args, name)}."
            )


def _context_and_optimizer(
    parser: argparse.ArgumentParser, args: argparse.Namespace, flag: argparse.Action
) -> tuple[ktl.Context, Any]:
    """The context with the --set settings applied, and its optimizer; a bad setting (or an
    unknown optimizer name) is a usage error, as argparse reports its own."""
    ctx = create_context()
    try:
        ktl.commandline.apply_context_settings(ctx, args, flag)
        optimizer = ktl.optimizers.from_context(ctx)
    except ValueError as e:
        parser.error(str(e))
    return ctx, optimizer


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the example; returns the eval report values and the plot path."""
    parser, flag = build_parser()
    args = parser.parse_args(argv)  # Before Keras and JAX load: --help answers at once.
    _check_args(args)
    ctx, optimizer = _context_and_optimizer(parser, args, flag)

    if args.tfds:
        train, train_eval, test, num_classes = tfds_datasets(
            args.tfds, args.data_dir, args.batch_size, args.seed
        )
    else:
        train, train_eval, test, num_classes = digits_datasets(args.batch_size, args.seed)

    trainer = ktl.Trainer(
        make_model_fn(num_classes, args.seed),  # --seed fixes the weights' initial values.
        ktl.losses.sparse_categorical_cross_entropy_logits,
        optimizer,
        train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()],
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()],
        context=ctx,
    )
    loop = ktl.Loop(trainer)
    ktl.commandline.attach_progress_bar(loop)

    checkpoint = None
    if args.checkpoint:
        checkpoint = ktl.checkpoints.Checkpoint(trainer, args.checkpoint, keep=args.keep)
        # Restored hyperparameters replace the defaults; settings given now still win.
        ktl.commandline.apply_context_settings(ctx, args, flag)
        ktl.checkpoints.attach_checkpoint(loop, checkpoint, period=60.0)
        if loop.loop_step:
            print(f"Resuming from {args.checkpoint} at step {loop.loop_step}.")
    plot_path = args.plot or (
        os.path.join(args.checkpoint, "plot.png") if args.checkpoint else "digits.png"
    )
    eval_sets = (train_eval, test) if args.eval else ()
    ktl.plots.attach_plots(loop, *eval_sets, checkpoint=checkpoint, png_path=plot_path)

    remaining = args.steps - loop.loop_step  # --steps counts from the first run
    if remaining > 0:
        loop.run_steps(train, remaining)
    else:
        print(f"Already trained {loop.loop_step} >= --steps {args.steps} steps.")
    result: dict[str, Any] = {"global_step": trainer.global_step, "plot": plot_path}
    if args.eval:
        result["eval"] = ktl.commandline.report_eval(trainer, train_eval, test)
    if checkpoint is not None:
        checkpoint.wait()
    print(f"Plot: {os.path.abspath(plot_path)}")
    return result


if __name__ == "__main__":
    main()
