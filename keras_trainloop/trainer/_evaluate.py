"""Evaluation over a finite dataset: every batch through the eval step, in-flight steps bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:
    from keras_trainloop.data import Dataset


def evaluate(eval_step: Callable[[Any, Any, Any], list], ds: Dataset, sync_every: int) -> list:
    """Runs `eval_step` on each batch of `ds` until EOF; returns the last values.

    Waits on the device every `sync_every` batches, which bounds the steps in
    flight (too many can deadlock XLA's CPU all-reduce on multiple devices).

    Raises:
        ValueError: `ds` yielded no batch.
    """
    values = None
    batches = 0
    while True:
        try:
            spec, inputs, labels = ds.yield_batch()
        except EOFError:
            break
        values = eval_step(spec, inputs, labels)
        batches += 1
        if batches % sync_every == 0:
            jax.block_until_ready(values)
    if values is None:
        raise ValueError(
            f"Dataset {getattr(ds, 'name', ds)!r} yielded no batch to evaluate. "
            "Fix: check that it is not empty and that reset() starts a new pass."
        )
    return values
