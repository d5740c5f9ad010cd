"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="session")
def tfds_digits_dir(tmp_path_factory):
    """A TFDS data_dir holding "digits_local" (tests/_tfds_digits.py), prepared once offline."""
    from _tfds_digits import prepare_digits  # Imports TFDS and TensorFlow: only when used.

    return prepare_digits(str(tmp_path_factory.mktemp("tfds")))
