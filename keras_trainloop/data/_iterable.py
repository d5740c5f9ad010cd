"""IterableDataset: batches from a Python iterable or a generator function."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from keras_trainloop.data._common import check_name, short_repr, side_to_list

_ONE_SHOT, _FACTORY, _REITERABLE = "one-shot iterator", "factory", "re-iterable"


class IterableDataset:
    """Batches from a Python iterable, a generator function, or an iterator.

    Each element of the source is one batch, either a tuple `(inputs, labels)`
    or `inputs` alone (then `labels` is `[]`). Each side is an array, a list or
    tuple of arrays, or a dict of arrays (its values in key order); labels may
    also be `None` or `()`. Only a tuple of exactly two items is read as
    `(inputs, labels)`: to yield two inputs and no labels, yield a list
    `[x1, x2]` or `((x1, x2), None)`. Arrays are passed on as they are.

    What `reset()` does depends on `source`:
      - a zero-argument callable (e.g. a generator function) is called again
        for a fresh iterator;
      - an iterable that is not an iterator (list, tuple, `range`-like object)
        is iterated again with `iter(source)`;
      - an iterator (e.g. a generator object) gives a single pass: `reset()`
        before its first batch is fine, after it raises `ValueError`.

    The source is opened on the first `yield_batch()`, not at construction.

    Args:
        source: a zero-argument callable returning an iterator, a re-iterable,
            or a one-shot iterator, whose elements are batches.
        name: the dataset's name.
        spec: the `spec` returned with every batch.

    Raises:
        TypeError: `source` is none of the above (e.g. a generator function
            that takes arguments is only found out when called), or `name` is
            not a string.

    Example:
        def batches():
            for start in range(0, len(x), 64):
                yield x[start:start + 64], y[start:start + 64]

        ds = ktl.IterableDataset(batches, name="train")  # the function, not batches()
    """

    def __init__(self, source: Any, *, name: str = "iterable", spec: Any = None):
        if isinstance(source, Iterator):
            self._kind = _ONE_SHOT
        elif callable(source):
            self._kind = _FACTORY
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, dict)):
            self._kind = _REITERABLE
        else:
            raise TypeError(
                "IterableDataset takes an iterable of batches or a zero-argument function "
                "returning an iterator of batches (e.g. a generator function). "
                f"Received: source={short_repr(source)} of type {type(source).__name__}. "
                "Fix: pass a list of (inputs, labels) tuples or a generator function; "
                "for arrays use ktl.ArrayDataset."
            )
        self._source = source
        self.name = check_name(name)
        self._spec = spec
        self._iterator: Iterator[Any] | None = source if self._kind == _ONE_SHOT else None
        self._count = 0  # Batches read in the current pass.
        self._exhausted = False

    def __repr__(self) -> str:
        return f"IterableDataset(name={self.name!r}, source={self._kind})"

    def _open(self) -> Iterator[Any]:
        if self._kind == _FACTORY:
            factory: Callable[[], Any] = self._source
            iterator = factory()
            if not isinstance(iterator, Iterable):
                raise TypeError(
                    "IterableDataset's source function must return an iterator of batches. "
                    f"Received: {short_repr(iterator)} from source={short_repr(self._source)}. "
                    "Fix: make it a generator function (one that `yield`s batches) or "
                    "return iter(...)."
                )
            return iter(iterator)
        return iter(self._source)

    def yield_batch(self) -> tuple[Any, list[Any], list[Any]]:
        """Returns the next element as `(spec, inputs, labels)`.

        Returns:
            `(spec, inputs, labels)` with `inputs` and `labels` as lists.

        Raises:
            EOFError: the source is exhausted; call `reset()` to start again.
            TypeError: the element is not `(inputs, labels)` or `inputs` made of arrays.
            ValueError: the element has no input.
        """
        if self._iterator is None:
            self._iterator = self._open()
        try:
            element = next(self._iterator)
        except StopIteration:
            self._exhausted = True
            raise EOFError(
                f"End of dataset {self.name!r}; call reset() to start a new pass."
            ) from None
        where = f"element {self._count} of dataset {self.name!r}"
        self._count += 1
        return self._batch(element, where)

    def _batch(self, element: Any, where: str) -> tuple[Any, list[Any], list[Any]]:
        """`(spec, inputs, labels)` of one element; `where` names it in error messages."""
        if isinstance(element, tuple):
            if len(element) != 2:
                raise TypeError(
                    "IterableDataset elements must be (inputs, labels) tuples or inputs "
                    f"alone. Received: a tuple of {len(element)} items in {where}. "
                    "Fix: yield (inputs, labels), or a list [x1, x2, ...] for inputs only."
                )
            raw_inputs, raw_labels = element
        else:
            raw_inputs, raw_labels = element, None
        inputs = side_to_list("inputs", raw_inputs, where)
        labels = side_to_list("labels", raw_labels, where)
        if not inputs:
            raise ValueError(
                f"Each batch needs at least one input. Received: inputs={raw_inputs!r} in "
                f"{where}. Fix: yield (inputs, labels) with at least one input array."
            )
        return self._spec, inputs, labels

    def reset(self) -> None:
        """Starts a fresh pass over the source.

        Raises:
            ValueError: the source is a one-shot iterator (e.g. a generator
                object) from which a batch was already read.
        """
        if self._kind == _ONE_SHOT:
            if self._count or self._exhausted:
                raise ValueError(
                    f"Dataset {self.name!r} reads a one-shot iterator, which can not be "
                    f"restarted. Received: source={short_repr(self._source)}, already read. "
                    "Fix: pass the generator function itself (e.g. IterableDataset(batches) "
                    "instead of IterableDataset(batches())), or a list."
                )
            return
        self._iterator = None
        self._count = 0
        self._exhausted = False
