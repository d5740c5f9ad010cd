"""PyDatasetSource: batches from a `keras.utils.PyDataset`, read through Keras' own adapter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keras_trainloop.data._common import short_repr
from keras_trainloop.data._elements import ElementSource


def _keras_adapter(py_dataset: Any, shuffle: bool) -> Any:
    """Keras' `PyDatasetAdapter` for `py_dataset` (workers, multiprocessing, shuffled order)."""
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    if not isinstance(py_dataset, keras.utils.PyDataset):
        raise TypeError(
            "PyDatasetSource takes a keras.utils.PyDataset. Received: py_dataset="
            f"{short_repr(py_dataset)} of type {type(py_dataset).__name__}. Fix: subclass "
            "keras.utils.PyDataset (with __len__ and __getitem__ returning a batch), or use "
            "ktl.as_dataset(...) for other inputs."
        )
    return PyDatasetAdapter(py_dataset, shuffle=bool(shuffle))


class PyDatasetSource(ElementSource):
    """Batches from a `keras.utils.PyDataset`, as `model.fit` reads it.

    Keras' own `PyDatasetAdapter` does the reading: `py_dataset[i]` for each
    index of a pass (in a shuffled order when `shuffle=True`, drawn from
    Python's `random` as in `fit`), through the dataset's `workers`
    (threads, or processes with `use_multiprocessing=True`) and
    `max_queue_size`. Each pass calls the dataset's `on_epoch_begin()` first
    and its `on_epoch_end()` when it ends, or when `reset()` cuts it short.
    A dataset whose `num_batches` is None is endless (`loop_forever` is True).

    Each `py_dataset[i]` is a batch: `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)` (a dict is `x`). `inputs` is `[x]` (or the arrays
    of a tuple or dict `x`), `labels` is `[y, sample_weight]` (those given);
    see `keras_trainloop/data/_elements.py`. Arrays come out as numpy arrays.
    `yield_batches(n)` stacks `n` batches, so the Loop can fuse steps.

    Several processes: `__getitem__` returns this process's part of each
    batch (e.g. of the indices `jax.process_index()::jax.process_count()`);
    the batch size is then per process.

    Args:
        py_dataset: a `keras.utils.PyDataset`.
        shuffle: whether each pass visits the batch indices in a new random order.
        name: the dataset's name.
        spec: the `spec` returned with every batch; defaults to `None`, or
            to the tuple of keys when `x` is a dict.

    Raises:
        TypeError: `py_dataset` is not a `keras.utils.PyDataset`.

    Example:
        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return len(x) // 64

            def __getitem__(self, i):
                return x[i * 64:(i + 1) * 64], y[i * 64:(i + 1) * 64]

        train = ktl.data.PyDatasetSource(Batches(workers=2), name="train")
    """

    def __init__(
        self,
        py_dataset: Any,
        *,
        shuffle: bool = False,
        name: str = "py_dataset",
        spec: Any = None,
    ):
        self._adapter = _keras_adapter(py_dataset, shuffle)
        super().__init__(
            name=name,
            spec=spec,
            what="PyDataset",
            batch_fix="make __getitem__(i) return the i-th batch, e.g. (x[i * 64:(i + 1) * "
            "64], y[i * 64:(i + 1) * 64]), and __len__ the number of batches.",
        )
        self._py_dataset = py_dataset

    @property
    def py_dataset(self) -> Any:
        """The wrapped `keras.utils.PyDataset`."""
        return self._py_dataset

    @property
    def loop_forever(self) -> bool:
        """Whether the dataset never ends (its `num_batches` is None)."""
        return self._py_dataset.num_batches is None

    def __len__(self) -> int:
        """Batches in one pass (`num_batches`), as `fit` reads it.

        Raises:
            TypeError: the dataset is endless (`num_batches` is None).
        """
        num_batches = self._py_dataset.num_batches
        if num_batches is None:
            raise TypeError(f"PyDataset {self.name!r} is endless (num_batches is None).")
        return int(num_batches)

    def __repr__(self) -> str:
        return f"PyDatasetSource(name={self.name!r}, py_dataset={short_repr(self._py_dataset)})"

    def _open(self) -> Iterator[Any]:
        self._adapter.on_epoch_begin()
        return iter(self._adapter.get_numpy_iterator())

    def _closed(self, ended: bool) -> None:
        self._adapter.on_epoch_end()
