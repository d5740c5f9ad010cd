"""Side by side with `model.fit`: one model, data and initial weights, trained both ways."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_trainloop as ktl

BATCH = 50


def digits_data(n_train: int = 300, n_val: int = 100):
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 64)
    y = d.target.astype(np.int32)
    return x[:n_train], y[:n_train], x[n_train : n_train + n_val], y[n_train : n_train + n_val]


def sequential(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def twin_models(seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """Two models of one architecture with the same initial weights."""
    a, b = sequential(seed), sequential(seed + 1)
    b.set_weights(a.get_weights())
    return a, b


def fit_run(
    model,
    data,
    callbacks,
    epochs,
    *,
    optimizer=None,
    metrics=("accuracy",),
    validation=True,
    verbose=0,
):
    """`model.fit` on the data, unshuffled; returns its History."""
    x, y, xv, yv = data
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=list(metrics),
    )
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=verbose,
        validation_data=(xv, yv) if validation else None,
        callbacks=callbacks,
    )


def loop_run(
    model,
    data,
    callbacks,
    epochs,
    *,
    optimizer=None,
    metrics=("accuracy",),
    validation=True,
    **loop_kwargs,
):
    """The same run with a Trainer and a Loop; returns the loop."""
    x, y, xv, yv = data
    trainer = ktl.Trainer(
        model,
        "sparse_categorical_crossentropy",
        optimizer or keras.optimizers.Adam(1e-2),
        train_metrics=list(metrics),
        eval_metrics=list(metrics),
    )
    loop = ktl.Loop(trainer, **loop_kwargs)
    for callback in callbacks:
        loop.add_keras_callback(callback)
    val = ktl.ArrayDataset(xv, yv, batch_size=BATCH) if validation else None
    loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=BATCH), epochs, validation_data=val)
    return loop
