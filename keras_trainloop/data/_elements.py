"""Keras-style elements and a base for datasets that read them one pass at a time.

`model.fit` reads each element of a generator, a `keras.utils.PyDataset`, a
grain dataset or a `tf.data.Dataset` as `x`, `(x,)`, `(x, y)` or
`(x, y, sample_weight)` (a list is read as a tuple, as Keras'
`unpack_x_y_sample_weight` does). `split_element` turns one into this
package's batch: `inputs` is `[x]`, or the list of the arrays of a tuple,
list or dict `x` (dict values in key order); `labels` is `y`'s arrays followed
by `sample_weight`'s, so a weighted loss reads `labels[-1]` as the weights.

`ElementSource` is what the grain and PyDataset sources share: one iterator
per pass, opened on the first batch; `EOFError` at its end, raised again until
`reset()`; and `yield_batches(n)`, which stacks `n` batches on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from keras_trainloop.data._common import check_name, short_repr, side_to_list
from keras_trainloop.data._stacking import Batch, BatchStacker


def split_element(element: Any, where: str) -> tuple[list[Any], list[Any], tuple | None]:
    """`(inputs, labels, keys)` of a Keras-style element (see the module docstring).

    Args:
        element: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        where: where the element came from, for error messages.

    Returns:
        The lists of input and label arrays, and the keys of `x` when it is a
        dict (else None).

    Raises:
        TypeError: a tuple of another length, or a leaf that is not an array.
        ValueError: the element has no input array.
    """
    if isinstance(element, list):
        element = tuple(element)
    if not isinstance(element, tuple):
        element = (element,)
    if not 1 <= len(element) <= 3:
        raise TypeError(
            "Each element must be x, (x,), (x, y) or (x, y, sample_weight), as model.fit "
            f"reads them. Received: a tuple of {len(element)} items in {where}. Fix: pack "
            "several inputs into one tuple or dict, e.g. ((x1, x2), y)."
        )
    x, y, weights = (*element, None, None)[:3]
    inputs = side_to_list("inputs", x, where)
    if not inputs:
        raise ValueError(
            f"Each batch needs at least one input array. Received: x={short_repr(x)} in "
            f"{where}. Fix: yield (x, y) with x an array, a tuple or a dict of arrays."
        )
    labels = side_to_list("labels", y, where) + side_to_list("sample_weight", weights, where)
    return inputs, labels, tuple(x) if isinstance(x, dict) else None


def check_batched(arrays: list[Any], where: str, what: str, fix: str) -> None:
    """Raises if an array has no leading (batch) dimension: the elements are examples.

    Args:
        arrays: the arrays of one element.
        where: the element, for the message; `what`: its source ("grain dataset").
        fix: how to batch the elements.
    """
    for array in arrays:
        if np.ndim(array) == 0:
            raise ValueError(
                f"Each element of a {what} must be a batch: every array needs a leading "
                f"batch dimension. Received: {short_repr(array)} of shape () in {where}, so "
                f"the elements look like single examples. Fix: {fix}"
            )


class ElementSource:
    """Batches from an iterator of Keras-style elements opened for each pass.

    Subclasses define `_open()` (a fresh iterator, at the start of a pass)
    and may define `_closed(ended)` (the pass's iterator is dropped: `ended`
    says whether it was read to its end). `spec` is passed on with every
    batch; when it is None and `x` is a dict, the spec is the tuple of its
    keys, as `ktl.TFDataset` gives it.

    Args:
        name: the dataset's name.
        spec: the `spec` returned with every batch.
        what: what the elements come from, for error messages ("grain dataset").
        batch_fix: how to batch the elements, for the error on unbatched ones.
    """

    def __init__(self, *, name: str, spec: Any, what: str, batch_fix: str):
        self.name = check_name(name)
        self._spec = spec
        self._what = what
        self._batch_fix = batch_fix
        self._iterator: Iterator[Any] | None = None
        self._count = 0  # Elements read from the current pass's iterator.
        self._ended = False  # The current pass's iterator was read to its end.
        self._keys: tuple | None = None  # The keys of the last dict `x` read.
        self._stacker = BatchStacker(self._read)

    def _open(self) -> Iterator[Any]:
        raise NotImplementedError

    def _closed(self, ended: bool) -> None:
        """Called when the pass's iterator is dropped; `ended`: it was read to its end."""

    def _eof(self) -> EOFError:
        return EOFError(f"End of dataset {self.name!r}; call reset() to start a new pass.")

    def _read(self) -> Batch:
        if self._ended:
            raise self._eof()
        if self._iterator is None:
            self._iterator, self._count = self._open(), 0
        try:
            element = next(self._iterator)
        except StopIteration:
            self._ended = True
            self._closed(True)
            raise self._eof() from None
        where = f"element {self._count} of {self._what} {self.name!r}"
        self._count += 1
        inputs, labels, keys = split_element(element, where)
        if self._count == 1:  # A pass's first element: batches, not examples?
            check_batched(inputs + labels, where, self._what, self._batch_fix)
        if keys is not None:
            self._keys = keys
        spec = keys if self._spec is None and keys is not None else self._spec
        return spec, inputs, labels

    def yield_batch(self) -> Batch:
        """Returns the next batch as `(spec, inputs, labels)`.

        Raises:
            EOFError: the pass is over; call `reset()` to start another.
            TypeError: an element is not a Keras-style `(x, y)` element of arrays.
        """
        return self._stacker.next()

    def yield_batches(self, n: int) -> Batch | None:
        """Returns the next `n` batches stacked on a new leading axis, or None.

        The arrays have shape `(n, batch_size, ...)`: the batches `n` calls of
        `yield_batch` would return, stacked on the host (`np.stack`). When
        fewer than `n` are left in the pass or their shapes or specs differ
        (a short last batch), it returns None; the batches read stay buffered
        and `yield_batch` returns them next. The Loop uses it to run `n` steps
        in one compiled call.

        Raises:
            ValueError: `n` is not a positive integer.
        """
        return self._stacker.stacked(n)

    def reset(self) -> None:
        """Starts a fresh pass; the source is opened again on the next batch."""
        if self._iterator is not None and not self._ended:
            self._closed(False)
        self._iterator, self._count, self._ended = None, 0, False
        self._stacker.clear()
