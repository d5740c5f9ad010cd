"""Fixtures for the Loop tests: a real Trainer on a tiny regression."""

from __future__ import annotations

import os

# keras_trainloop needs Keras on JAX; set it before this module imports Keras itself.
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import pytest
from loop_helpers import Recorder, linear_model_fn

import keras_trainloop as ktl


@pytest.fixture
def make_trainer():
    """A factory of fresh Trainers (global step 0) on a one-layer regression."""

    def make(learning_rate=0.01):
        return ktl.Trainer(
            linear_model_fn, "mean_squared_error", keras.optimizers.SGD(learning_rate)
        )

    return make


@pytest.fixture
def trainer(make_trainer):
    return make_trainer()


@pytest.fixture
def recorder():
    return Recorder()
