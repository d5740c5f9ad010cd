"""Helpers shared by the Trainer tests."""

from __future__ import annotations

import numpy as np


def stack_batches(x: np.ndarray, y: np.ndarray, steps: int, batch: int) -> tuple:
    """The first `steps` batches of `batch` examples, stacked: `(steps, batch, ...)` arrays."""
    n = steps * batch
    return x[:n].reshape(steps, batch, -1), y[:n].reshape(steps, batch)
