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
