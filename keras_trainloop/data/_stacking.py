"""Stacking batches read one by one, for datasets whose source yields single batches.

`layout`, `join` and `ReadAhead` also serve `ChunkReader`, which stacks batches
read a chunk at a time.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_trainloop.data._common import check_batch_size

Batch = tuple[Any, list[Any], list[Any]]


def layout(inputs: list, labels: list, skip: int = 0) -> tuple:
    """What must agree for batches to stack: the number, shapes and dtypes of the arrays.

    `skip` leading dimensions of each shape are left out (1 for stacks of batches).
    """
    return (
        tuple((np.shape(a)[skip:], np.asarray(a).dtype) for a in inputs)
        + (None,)
        + tuple((np.shape(a)[skip:], np.asarray(a).dtype) for a in labels)
    )


def join(parts: list[tuple[list, list]], combine: Callable[[list], Any]) -> tuple[list, list]:
    """`(inputs, labels)` whose arrays are `combine` of each array position across `parts`.

    Args:
        parts: `(inputs, labels)` pairs with the same number of arrays on each side.
        combine: joins a list of arrays, e.g. `np.stack` or `np.concatenate`.
    """
    inputs = [combine([p[0][i] for p in parts]) for i in range(len(parts[0][0]))]
    labels = [combine([p[1][i] for p in parts]) for i in range(len(parts[0][1]))]
    return inputs, labels


def _same_spec(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - specs that cannot be compared are different
        return False


class ReadAhead:
    """Calls `read` ahead of need, keeping an exception it raises for its turn.

    A reader that buffers what `read` returns uses `fill` to read ahead and,
    once its buffer is empty, `raise_held` to raise the exception that `read`
    raised after the buffered items (`EOFError` at the end of a pass).

    Args:
        read: returns the next item.
    """

    def __init__(self, read: Callable[[], Any]):
        self.read = read
        self._error: BaseException | None = None

    def fill(self, keep: Callable[[Any], Any]) -> bool:
        """Reads one more item into `keep`; False when an exception is held (none read)."""
        if self._error is not None:
            return False
        try:
            item = self.read()
        except Exception as error:  # noqa: BLE001 - raised in order by raise_held()
            self._error = error
            return False
        keep(item)
        return True

    def raise_held(self) -> None:
        """Raises the held exception, if any, and forgets it."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def clear(self) -> None:
        """Forgets the held exception (a new pass begins)."""
        self._error = None

    @property
    def held(self) -> BaseException | None:
        """The exception `read` raised and `raise_held` has not raised yet, or None."""
        return self._error

    def hold(self, error: BaseException | None) -> None:
        """Holds `error` as if `read` had raised it (a restored position)."""
        self._error = error


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
        self._ahead = ReadAhead(read)
        self._buffer: collections.deque[Batch] = collections.deque()

    def next(self) -> Batch:
        """The next batch: a buffered one, else a new read."""
        if self._buffer:
            return self._buffer.popleft()
        self._ahead.raise_held()
        return self._ahead.read()

    def stacked(self, n: int) -> Batch | None:
        """The next `n` batches stacked (`(n, batch_size, ...)` arrays), or None."""
        check_batch_size(n, "n")
        while len(self._buffer) < n and self._ahead.fill(self._buffer.append):
            pass
        batches = self._stackable_head(n)
        if batches is None:
            return None
        for _ in range(n):
            self._buffer.popleft()
        inputs, labels = join([b[1:] for b in batches], np.stack)
        return batches[0][0], inputs, labels

    def _stackable_head(self, n: int) -> list[Batch] | None:
        """The first `n` buffered batches when there are `n` that stack together, else None."""
        if len(self._buffer) < n:
            return None
        batches = [self._buffer[i] for i in range(n)]
        spec, first = batches[0][0], layout(*batches[0][1:])
        if not all(_same_spec(spec, b[0]) and layout(*b[1:]) == first for b in batches[1:]):
            return None
        return batches

    def clear(self) -> None:
        """Drops the buffered batches and any held exception (a new pass begins)."""
        self._buffer.clear()
        self._ahead.clear()

    def pending(self) -> list[tuple[list, list]]:
        """The batches read ahead and not yet returned, as `(inputs, labels)` stacks of one.

        Each array has a new leading axis of size 1, as `ChunkReader.pending` returns them.
        """
        return [
            ([np.asarray(a)[None] for a in batch[1]], [np.asarray(a)[None] for a in batch[2]])
            for batch in self._buffer
        ]

    @property
    def held(self) -> BaseException | None:
        """The exception `read` raised after the pending batches, or None."""
        return self._ahead.held

    def restore(self, batches: list[Batch], held: BaseException | None) -> None:
        """Replaces the pending batches and the held exception (a restored position)."""
        self.clear()
        self._buffer.extend(batches)
        self._ahead.hold(held)
