"""GeneratorDataset: an IterableDataset whose elements are read as `model.fit` reads a generator's."""

from __future__ import annotations

from typing import Any

from keras_trainloop.data._elements import check_batched, split_element
from keras_trainloop.data._iterable import IterableDataset

_BATCH_FIX = (
    "yield batches, e.g. (x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64), or pass "
    "the arrays themselves: ktl.as_dataset(x, y, batch_size=64)."
)


class GeneratorDataset(IterableDataset):
    """Batches from a generator or an iterable of Keras-style batches.

    As `ktl.IterableDataset` (the same sources and `reset()` rules: a
    generator function or a list restarts, a generator object gives one
    pass), but each element is read as `model.fit` reads a generator's:
    `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, a list being a tuple
    and a dict being `x`. `inputs` is `[x]` (or the arrays of a tuple or dict
    `x`), `labels` is `[y, sample_weight]` (those given); see
    `keras_trainloop/data/_elements.py`. `ktl.as_dataset` builds it for
    generators and iterables.

    Args:
        source: a zero-argument callable returning an iterator, a re-iterable,
            or a one-shot iterator (a generator object), whose elements are batches.
        name: the dataset's name.
        spec: the `spec` returned with every batch; defaults to `None`, or
            to the tuple of keys when `x` is a dict.

    Example:
        def batches():
            for i in range(0, len(x), 64):
                yield x[i:i + 64], y[i:i + 64], weights[i:i + 64]

        ds = ktl.as_dataset(batches)  # labels: [y, weights]
    """

    def __init__(self, source: Any, *, name: str = "generator", spec: Any = None):
        super().__init__(source, name=name, spec=spec)

    def __repr__(self) -> str:
        return f"GeneratorDataset(name={self.name!r}, source={self._kind})"

    def _batch(self, element: Any, where: str) -> tuple[Any, list[Any], list[Any]]:
        inputs, labels, keys = split_element(element, where)
        if self._count == 1:
            check_batched(inputs + labels, where, "generator", _BATCH_FIX)
        spec = keys if self._spec is None and keys is not None else self._spec
        return spec, inputs, labels
