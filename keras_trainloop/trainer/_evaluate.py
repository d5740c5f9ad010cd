"""Evaluation over a finite dataset: every batch through the eval step, in-flight steps bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:
    from keras_trainloop.data import Dataset


def evaluate(
    eval_step: Callable[[Any, Any, Any], list],
    ds: Dataset,
    sync_every: int,
    on_batch_begin: Callable[[int], object] | None = None,
    on_batch_end: Callable[[int, list], object] | None = None,
) -> list:
    """Runs `eval_step` on each batch of `ds` until EOF; returns the last values.

    Waits on the device every `sync_every` batches, which bounds the steps in
    flight (too many can deadlock XLA's CPU all-reduce on multiple devices).
    `on_batch_begin(batch)` and `on_batch_end(batch, values)`, when given, are
    called around each batch (numbered from 0), `values` the values so far.

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
        if on_batch_begin is not None:
            on_batch_begin(batches)
        values = eval_step(spec, inputs, labels)
        if on_batch_end is not None:
            on_batch_end(batches, values)
        batches += 1
        if batches % sync_every == 0:
            jax.block_until_ready(values)
    if values is None:
        raise ValueError(
            f"Dataset {getattr(ds, 'name', ds)!r} yielded no batch to evaluate. "
            "Fix: check that it is not empty and that reset() starts a new pass."
        )
    return values
