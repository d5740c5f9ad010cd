"""Stacking batches read one by one, for datasets whose source yields single batches."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_trainloop.data._common import check_batch_size

Batch = tuple[Any, list[Any], list[Any]]


def _layout(batch: Batch) -> tuple:
    """What must agree for batches to stack: the number, shapes and dtypes of the arrays."""
    _, inputs, labels = batch
    return tuple((np.shape(a), np.asarray(a).dtype) for a in inputs) + (None,) + tuple(
        (np.shape(a), np.asarray(a).dtype) for a in labels
    )


def _same_spec(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - specs that cannot be compared are different
        return False


class BatchStacker:
    """Reads batches ahead so that `n` of them can be stacked, keeping any it cannot stack.

    `next()` returns the batches in their order (those read ahead first);
    `stacked(n)` returns the next `n` stacked on a new leading axis when they
    share the spec and the array shapes and dtypes, else None (they stay
    buffered, so nothing is lost or reordered). An exception raised by `read`
    while reading ahead (`EOFError` at the end of a pass) is raised by `next()`
    after the batches read before it.

    Args:
        read: returns the next batch `(spec, inputs, labels)`.
    """

    def __init__(self, read: Callable[[], Batch]):
        self._read = read
        self._buffer: collections.deque[Batch] = collections.deque()
        self._error: BaseException | None = None

    def next(self) -> Batch:
        """The next batch: a buffered one, else a new read."""
        if self._buffer:
            return self._buffer.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._read()

    def stacked(self, n: int) -> Batch | None:
        """The next `n` batches stacked (`(n, batch_size, ...)` arrays), or None."""
        check_batch_size(n, "n")
        buffer = self._buffer
        while len(buffer) < n and self._error is None:
            try:
                buffer.append(self._read())
            except Exception as error:  # noqa: BLE001 - raised in order by next()
                self._error = error
        if len(buffer) < n:
            return None
        batches = [buffer[i] for i in range(n)]
        spec, first = batches[0][0], _layout(batches[0])
        if not all(_same_spec(spec, b[0]) and _layout(b) == first for b in batches[1:]):
            return None
        for _ in range(n):
            buffer.popleft()
        inputs = [np.stack([b[1][i] for b in batches]) for i in range(len(batches[0][1]))]
        labels = [np.stack([b[2][i] for b in batches]) for i in range(len(batches[0][2]))]
        return spec, inputs, labels

    def clear(self) -> None:
        """Drops the buffered batches and any held exception (a new pass begins)."""
        self._buffer.clear()
        self._error = None
