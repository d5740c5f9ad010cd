"""Batches read from tf.data `CHUNK` at a time: one iterator call, stacked inside the graph.

tf.data's host iterator costs ~150-250 µs a call on this kind of machine, about
the compute of a small model's step. So `TFDataset` reads its batches through
`ds.padded_batch(CHUNK)`: one call returns up to `CHUNK` batches stacked
(`(k, batch_size, ...)`), each with its true shapes. Batches whose shapes all
agree with the stack's are used as they are: `yield_batches(n)` hands out
slices of the stack (no copy) and `yield_batch` single rows; a batch that was
padded (a short last batch, or another length of a variable dimension) is
cut back to its true shape, so order, remainder and shapes are exactly those
of the pipeline. A run of batches that cannot stack with the next (other
shapes) makes `yield_batches` return None, as `BatchStacker` does.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_trainloop.data._common import check_batch_size
from keras_trainloop.data._stacking import ReadAhead, join, layout

CHUNK = 8
"""Batches per tf.data iterator call (the Loop's largest fused call by default)."""


def chunked(
    tf: Any, dataset: Any, get_inputs: Callable[[tuple], list], get_labels: Callable[[tuple], list]
) -> tuple[Any, bool]:
    """`dataset` of `(inputs, labels)` in chunks of `CHUNK` stacked batches.

    Each chunk is one flat tuple of tensors, the inputs' leaves then the
    labels' (`get_inputs`/`get_labels` of an `(inputs, labels)` element give
    them), so that reading one costs tf.data no nested structure to pack.
    Returns the chunked dataset and whether the tuple also carries each
    batch's shapes (one int tensor per leaf after the leaves), from
    `padded_batch`, when a dimension is unknown (a short last batch, variable
    lengths); with every shape static it is `batch`, with no per-batch
    function (tf.data's per-element calls cost tens of µs). The shape function
    runs as a parallel, deterministic `map` (order kept; tf.data tunes its
    threads): on W5 of bench/ the Loop went from 1.37-1.41x to 1.37-1.55x (median 1.50) the
    loop over `as_numpy_iterator()` (paired, alternated runs on a loaded
    2-core machine).
    """

    def leaves(inputs: Any, labels: Any) -> list:
        element = (inputs, labels)
        return get_inputs(element) + get_labels(element)

    static = all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(dataset.element_spec))
    if static:
        return dataset.batch(CHUNK).map(lambda *e: tuple(leaves(*e))).prefetch(2), False

    def with_shapes(inputs: Any, labels: Any) -> tuple:
        tensors = leaves(inputs, labels)
        return (*tensors, *(tf.shape(t) for t in tensors))

    return (
        dataset.map(with_shapes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .padded_batch(CHUNK)
        .prefetch(2),
        True,
    )


def static_shapes(arrays: list) -> list:
    """Per-batch shapes of stacks whose batches all have the array's shape."""
    return [
        np.broadcast_to(np.asarray(a.shape[1:], np.int64), (len(a), a.ndim - 1)) for a in arrays
    ]


def can_chunk(leaves: list[tuple[str, Any]]) -> bool:
    """Whether every tensor has a known rank (`padded_batch` needs it)."""
    return all(leaf.shape.rank is not None for _, leaf in leaves)


class _Run:
    """Consecutive batches of one layout: arrays with a leading axis, a read offset."""

    __slots__ = ("count", "inputs", "labels", "layout", "offset")

    def __init__(self, inputs: list, labels: list):
        self.inputs, self.labels = inputs, labels
        self.count = len(inputs[0])
        self.offset = 0
        self.layout = layout(inputs, labels, skip=1)

    @property
    def left(self) -> int:
        return self.count - self.offset

    def rest(self) -> tuple[list, list]:
        """The batches not taken yet, stacked (views)."""
        i = self.offset
        return [a[i:] for a in self.inputs], [a[i:] for a in self.labels]

    def take(self, n: int) -> tuple[list, list]:
        """The next `n` batches, stacked (views)."""
        i, self.offset = self.offset, self.offset + n
        return [a[i : i + n] for a in self.inputs], [a[i : i + n] for a in self.labels]


def _runs(inputs: list, labels: list, in_shapes: list, label_shapes: list) -> list[_Run]:
    """Splits a chunk into runs of batches with the same true shapes, cut to them."""
    arrays, shapes = inputs + labels, in_shapes + label_shapes
    k = len(inputs[0])
    true = [tuple(tuple(int(d) for d in s[i]) for s in shapes) for i in range(k)]
    runs: list[_Run] = []
    start = 0
    for i in range(1, k + 1):
        if i < k and true[i] == true[start]:
            continue
        cut = [
            a[start:i][(slice(None), *(slice(0, d) for d in dims))]
            for a, dims in zip(arrays, true[start])
        ]
        runs.append(_Run(cut[: len(inputs)], cut[len(inputs) :]))
        start = i
    return runs


class ChunkReader:
    """Serves batches from chunks read by `read_chunk` (see the module docstring).

    Args:
        read_chunk: returns the next chunk as `(inputs, labels, input_shapes,
            label_shapes)` lists of numpy arrays with a leading chunk axis;
            raises `EOFError` at the end of a pass (raised again by `next()`
            once the batches read before it are used).
        spec: the spec returned with every batch.
    """

    def __init__(self, read_chunk: Callable[[], tuple[list, list, list, list]], spec: Any):
        self._ahead = ReadAhead(read_chunk)
        self._spec = spec
        self._runs: collections.deque[_Run] = collections.deque()

    def _fill(self) -> bool:
        """Reads one more chunk; False at the end of the pass (or on an error, kept)."""
        return self._ahead.fill(lambda chunk: self._runs.extend(_runs(*chunk)))

    def next(self) -> tuple[Any, list, list]:
        """The next batch (numpy views into its chunk)."""
        while not self._runs:
            if not self._fill():
                self._ahead.raise_held()
        inputs, labels = self._take(1)
        return self._spec, [a[0] for a in inputs], [a[0] for a in labels]

    def _stackable(self) -> tuple[int, bool]:
        """Buffered batches that stack with the first, and whether another layout follows."""
        count = 0
        for run in self._runs:
            if run.layout != self._runs[0].layout:
                return count, True
            count += run.left
        return count, False

    def _read_until_stackable(self, n: int) -> bool:
        """Reads chunks until `n` batches that stack are buffered; False if they never will be."""
        while True:
            available, blocked = self._stackable()
            if available >= n:
                return True
            if blocked or not self._fill():
                return False

    def _take(self, n: int) -> tuple[list, list]:
        """Consumes the next `n` batches (of one layout), stacked.

        Within one run they are views, no copy; across runs, a concatenation.
        """
        parts = []
        while n:
            run = self._runs[0]
            take = min(n, run.left)
            parts.append(run.take(take))
            n -= take
            if not run.left:
                self._runs.popleft()
        return parts[0] if len(parts) == 1 else join(parts, np.concatenate)

    def stacked(self, n: int) -> tuple[Any, list, list] | None:
        """The next `n` batches stacked, or None (then nothing is consumed)."""
        check_batch_size(n, "n")
        if not self._read_until_stackable(n):
            return None
        inputs, labels = self._take(n)
        return self._spec, inputs, labels

    def clear(self) -> None:
        """Drops the buffered batches and any held exception (a new pass begins)."""
        self._runs.clear()
        self._ahead.clear()

    def pending(self) -> list[tuple[list, list]]:
        """The batches read and not yet returned: `(inputs, labels)` stacks, one per run."""
        return [run.rest() for run in self._runs]

    @property
    def held(self) -> BaseException | None:
        """The exception `read_chunk` raised after the pending batches, or None."""
        return self._ahead.held

    def restore(self, stacks: list[tuple[list, list]], held: BaseException | None) -> None:
        """Replaces the pending batches (stacks as `pending` returns) and the held exception."""
        self.clear()
        self._runs.extend(_Run(inputs, labels) for inputs, labels in stacks)
        self._ahead.hold(held)
