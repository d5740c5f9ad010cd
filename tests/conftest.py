"""Shared test fixtures."""

import os

# Before any test module imports Keras: the JAX backend, quiet TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest


@pytest.fixture(scope="session")
def tfds_digits_dir(tmp_path_factory):
    """A TFDS data_dir holding "digits_local" (tests/_tfds_digits.py), prepared once offline."""
    from _tfds_digits import prepare_digits  # Imports TFDS and TensorFlow: only when used.

    return prepare_digits(str(tmp_path_factory.mktemp("tfds")))


class HeldCompiles:
    """A stand-in for the trainer's compile worker: its compiles run when `finish` says."""

    def __init__(self):
        self.jobs = []

    def submit(self, lowered):
        from concurrent.futures import Future

        future = Future()
        self.jobs.append((future, lowered))
        return future

    def finish(self):
        for future, lowered in self.jobs:
            if not future.done():
                lowered.compile()
                future.set_result(None)


@pytest.fixture
def held_compiles(monkeypatch):
    """Background compiles held until `held_compiles.finish()` (trainer/_background)."""
    from keras_trainloop.trainer import _executors

    worker = HeldCompiles()
    monkeypatch.setattr(_executors, "WORKER", worker)
    return worker
