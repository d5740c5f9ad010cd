"""TFDataset: batches from tf.data pipelines (`from_tfds` is in data/_from_tfds.py).

TensorFlow and TFDS are imported only when one of these is used, never by
`import keras_trainloop.data`.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any

from keras_trainloop.data._common import check_name, short_repr
from keras_trainloop.data._shard import check_shard, shard_batches
from keras_trainloop.data._stacking import BatchStacker
from keras_trainloop.data._tf_chunks import ChunkReader, can_chunk, chunked, static_shapes
from keras_trainloop.data._tf_elements import check_batched, side_extractor
from keras_trainloop.data._tf_state import (
    STATE_VERSION,
    Unsaveable,
    UnsaveableBatches,
    bad_state,
    check_state,
    decode_stacks,
    encode_stacks,
    restart_warning,
    restore_iterator,
    save_iterator,
)


@functools.cache
def _import_tf() -> Any:
    """Imports TensorFlow quietly, with its GPUs hidden so that it never competes with JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):
        # TensorFlow's runtime is already initialized: its device setup is the user's.
        pass
    return tf


class TFDataset:
    """Batches from a batched `tf.data.Dataset` of `(inputs, labels)` elements.

    Each side of an element is a tensor, a tuple/list of tensors, or a dict of
    tensors; `labels` may be an empty tuple (`ds.map(lambda x: (x, ()))`). A
    dict becomes the list of its values in its key order, as `element_spec`
    gives it; when `inputs` is a dict and `spec` is `None`, the spec is the
    tuple of its keys, so a `model_fn` can find each input by name:
    `dict(zip(spec, inputs))`. Batches are numpy arrays from
    `as_numpy_iterator()`, dtypes unchanged (uint8 images stay uint8).

    Each pass runs the pipeline once; `reset()` starts a fresh pass (a
    reshuffling `shuffle` reshuffles). A pipeline that `repeat()`s forever
    never raises `EOFError`. TensorFlow's GPUs are hidden on first use so the
    pipeline runs on the CPU and leaves accelerators to JAX.

    `get_state()` saves the position with tf.data's own iterator checkpoint
    (exact: shuffle buffers and seeds included) plus the batches read ahead
    and not yet returned; `set_state(state)` on the same pipeline yields the
    batches that followed. Pipelines running Python code (`from_generator`,
    `py_function`) cannot be saved: `set_state` then warns and starts a
    fresh pass. See `get_state`.

    Args:
        tf_dataset: a batched `tf.data.Dataset`.
        name: the dataset's name; defaults to "tf.data".
        spec: the `spec` returned with every batch (see above for its default).
        shard: `(index, count)`: only every `count`-th batch from `index` on
            (`tf_dataset.shard`; equally many per shard when the number of
            batches is known); with several processes `ktl.data.process_shard()`.
            Each process still reads the whole pipeline: for large data, shard
            the files or examples before batching (`from_tfds(..., shard=)`).
            The batch size is per process (global batch: batch size * count).

    Raises:
        TypeError: `tf_dataset` is not a `tf.data.Dataset`, its elements are not
            `(inputs, labels)` pairs, or a side holds a nested, ragged or sparse
            structure.
        ValueError: the dataset is not batched: its elements come from
            `from_tensor_slices`/`range`/`unbatch()` with no batch op after
            them, a tensor has rank 0, or known leading dimensions differ.

    Example:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024).batch(64)
        train = ktl.TFDataset(ds.prefetch(tf.data.AUTOTUNE), name="train")
    """

    def __init__(
        self,
        tf_dataset: Any,
        *,
        name: str | None = None,
        spec: Any = None,
        shard: tuple[int, int] | None = None,
    ):
        if "tensorflow" not in sys.modules:  # Then it can not be a tf.data.Dataset.
            self._raise_not_a_dataset(tf_dataset)
        tf = _import_tf()
        if not isinstance(tf_dataset, tf.data.Dataset):
            self._raise_not_a_dataset(tf_dataset)
        element_spec = tf_dataset.element_spec
        if not isinstance(element_spec, tuple) or len(element_spec) != 2:
            received = (
                f"a tuple of {len(element_spec)} items"
                if isinstance(element_spec, tuple)
                else type(element_spec).__name__
            )
            raise TypeError(
                "TFDataset needs elements that are (inputs, labels) pairs. "
                f"Received: {received}, element_spec={element_spec!r}. "
                "Fix: map the dataset to pairs, e.g. ds.map(lambda ex: (ex['image'], "
                "ex['label'])) (with TFDS, load it with as_supervised=True), or "
                "ds.map(lambda x: (x, ())) for inputs without labels."
            )
        get_inputs, input_leaves, input_keys = side_extractor(tf, "inputs", element_spec[0], 0)
        get_labels, label_leaves, _ = side_extractor(tf, "labels", element_spec[1], 1)
        if not input_leaves:
            raise ValueError(
                "TFDataset needs at least one input tensor. "
                f"Received: element_spec={element_spec!r}. Fix: put the model's inputs "
                "first in each (inputs, labels) element."
            )
        check_batched(tf_dataset, input_leaves + label_leaves, element_spec)
        shard = check_shard(shard, "TFDataset")
        self._shard = None if shard is None else list(shard)  # Recorded in its states.
        tf_dataset = shard_batches(tf_dataset, shard)
        self._dataset = tf_dataset
        self._get_inputs, self._get_labels = get_inputs, get_labels
        self.name = check_name("tf.data" if name is None else name)
        self._spec = input_keys if spec is None and input_keys is not None else spec
        self._iterator: Any = None
        self._iterator_read = False  # Whether a batch was read from self._iterator.
        self._next_iterator: Any = None  # The next pass's, made (unread) by get_state.
        self._next_files: dict[str, str] | None = None  # Its checkpoint, once saved.
        self._unsaveable: str | None = None  # Why tf.data cannot save the iterator.
        self._warned_restart = False  # set_state warns once that the data order restarts.
        if can_chunk(input_leaves + label_leaves):  # Up to 8 batches per iterator call.
            self._chunks, self._chunk_shapes = chunked(tf, tf_dataset, get_inputs, get_labels)
            self._num_inputs, self._num_leaves = len(input_leaves), len(input_leaves + label_leaves)
            self._stacker: BatchStacker | ChunkReader = ChunkReader(self._read_chunk, self._spec)
        else:  # A tensor of unknown rank: one batch per call, stacked on the host.
            self._chunks = None
            self._stacker = BatchStacker(self._read)

    @staticmethod
    def _raise_not_a_dataset(value: Any) -> None:
        raise TypeError(
            f"TFDataset takes a batched tf.data.Dataset. Received: tf_dataset="
            f"{short_repr(value)} of type {type(value).__name__}. Fix: for in-memory arrays "
            "use ktl.ArrayDataset; for Python iterables or generators, ktl.IterableDataset."
        )

    @property
    def tf_dataset(self) -> Any:
        """The wrapped `tf.data.Dataset`."""
        return self._dataset

    @property
    def spec(self) -> Any:
        """The `spec` returned with every batch."""
        return self._spec

    def __len__(self) -> int:
        """Batches in one pass, when tf.data knows it (`cardinality()`), as Keras reads it.

        Raises:
            TypeError: the length is unknown or infinite (`len()` then fails as
                for any object without a length; `fit` shows no total either).
        """
        cardinality = int(self._dataset.cardinality())
        if cardinality < 0:
            raise TypeError(
                f"TFDataset {self.name!r} has no known length (tf.data cardinality "
                f"{cardinality}: unknown or infinite)."
            )
        return cardinality

    def __repr__(self) -> str:
        return f"TFDataset(name={self.name!r}, element_spec={self._dataset.element_spec!r})"

    def yield_batch(self) -> tuple[Any, list[Any], list[Any]]:
        """Returns the next batch as `(spec, inputs, labels)` of numpy arrays.

        Returns:
            `(spec, inputs, labels)`; `labels` is `[]` when the dataset has none.

        Raises:
            EOFError: the pass is over; call `reset()` to start another.
        """
        return self._stacker.next()

    def yield_batches(self, n: int) -> tuple[Any, list[Any], list[Any]] | None:
        """Returns the next `n` batches stacked on a new leading axis, or None.

        The arrays have shape `(n, batch_size, ...)`: the batches `n` calls of
        `yield_batch` would return. The dataset is read 8 batches per
        iterator call, stacked inside tf.data (`padded_batch`, with each
        batch's true shapes kept), so within such a chunk this is a view, no
        copy. When fewer than `n` are left in the pass or their shapes differ
        (a short last batch), it returns None; the batches it read stay
        buffered and `yield_batch` returns them next. The Loop uses it to run
        `n` steps in one compiled call.

        Raises:
            ValueError: `n` is not a positive integer.
        """
        return self._stacker.stacked(n)

    def _next_element(self, dataset: Any) -> Any:
        if self._iterator is None:
            self._iterator = dataset.as_numpy_iterator()
        self._iterator_read = True
        try:
            return next(self._iterator)
        except StopIteration:
            raise EOFError(
                f"End of dataset {self.name!r}; call reset() to start a new pass."
            ) from None

    def _read(self) -> tuple[Any, list[Any], list[Any]]:
        element = self._next_element(self._dataset)
        return self._spec, self._get_inputs(element), self._get_labels(element)

    def _read_chunk(self) -> tuple[list, list, list, list]:
        element = self._next_element(self._chunks)  # A flat tuple (see `chunked`).
        i, k = self._num_inputs, self._num_leaves
        inputs, labels = list(element[:i]), list(element[i:k])
        if not self._chunk_shapes:  # Static shapes: every batch has the stack's.
            return inputs, labels, static_shapes(inputs), static_shapes(labels)
        return inputs, labels, list(element[k : k + i]), list(element[k + i :])

    def reset(self) -> None:
        """Starts a fresh pass; the pipeline is restarted on the next `yield_batch()`.

        An iterator from which nothing was read yet (made by `get_state`) is
        kept, or used: it already is at the start of a fresh pass.
        """
        if self._iterator_read:
            self._iterator, self._next_iterator = self._next_iterator, None
            self._iterator_read, self._next_files = False, None
        self._stacker.clear()

    def get_state(self) -> dict[str, Any]:
        """The dataset's position, from which `set_state` yields the same batches next.

        The position is tf.data's checkpoint of the iterator (every op's
        position, shuffle and prefetch buffers, random state) and the batches
        already read from it and not yet returned (up to the 8 of a chunk, or
        more after a `yield_batches`). Once a batch op has read the end of a
        pass, tf.data's checkpoint no longer holds the seeds a reshuffling
        `shuffle` draws for the next pass, so for a finite pipeline the next
        pass's iterator is made now (seeds are drawn in the same order) and
        saved too, unread.
        Checkpoints embed the pipeline's graph: one built `from_tensor_slices`
        of arrays carries those arrays (twice, mid-pass), so a state is about
        that size plus the shuffle buffer; it takes tens of ms.

        Pipelines that tf.data cannot save (Python code: `from_generator`,
        `py_function`, `numpy_function`), or batches of strings read ahead,
        give a state with `"saved": False` and the reason; `set_state` then
        warns and restarts the data order.

        Returns:
            A dict of plain JSON values: `saved`, the checkpoint files and the
            pending batches as base64 text, whether the pass had ended, and
            the pipeline's `element_spec` and `shard` (checked by `set_state`).
        """
        tf = _import_tf()
        state = {
            "dataset": "TFDataset",
            "version": STATE_VERSION,
            "name": self.name,
            "element_spec": repr(self._dataset.element_spec),
            "shard": self._shard,
        }
        if self._unsaveable is not None:
            return state | {"saved": False, "reason": self._unsaveable}
        if self._iterator is None:  # Made now, it is this pass's iterator.
            self._iterator = self._source.as_numpy_iterator()
        # An endless pipeline never drops its seeds; making its next iterator early would
        # draw seeds that the current one's next repetition draws otherwise.
        with_next = self._iterator_read and int(self._dataset.cardinality()) != int(
            tf.data.INFINITE_CARDINALITY
        )
        if with_next and self._next_iterator is None:
            self._next_iterator = self._source.as_numpy_iterator()
        try:
            pending = encode_stacks(self._stacker.pending())
            files = save_iterator(tf, self._iterator)
            if with_next and self._next_files is None:  # Unread: saved once.
                self._next_files = save_iterator(tf, self._next_iterator)
        except Unsaveable as why:
            if not isinstance(why, UnsaveableBatches):
                self._unsaveable = str(why)  # The pipeline's ops: for good.
            return state | {"saved": False, "reason": str(why)}
        return state | {
            "saved": True,
            "iterator": files,
            "next_iterator": self._next_files,
            "pending": pending,
            "ended": isinstance(self._stacker.held, EOFError),
            "read": self._iterator_read,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Moves to the position `state` (from `get_state`) records.

        Afterwards the dataset yields exactly the batches that the dataset
        which returned `state` yielded next, also in later passes after
        `reset()` (but for a pipeline that `repeat()`s a reshuffling
        `shuffle`: the seeds of a pass after `reset()` then depend on how far
        tf.data had prefetched, in the saved run too). When the state could
        not be saved (`"saved": False`), it warns once and starts a fresh
        pass: the data order restarts.

        Args:
            state: a dict from `get_state` of a `TFDataset` over the same
                pipeline (built by the same code), also after a JSON round trip.

        Raises:
            ValueError: `state` is not such a dict, comes from a pipeline with
                another `element_spec` or `shard`, or tf.data cannot restore its
                checkpoint into this pipeline (other ops). The position is
                unchanged then.
        """
        tf = _import_tf()
        check_state(state, self.name, repr(self._dataset.element_spec), self._shard)
        if not state.get("saved"):
            if not self._warned_restart:
                self._warned_restart = True
                warnings.warn(restart_warning(self.name, state.get("reason")), stacklevel=2)
            self.reset()
            return
        next_files = state.get("next_iterator")
        try:
            pending = decode_stacks(state.get("pending"))
            iterator = self._restored(tf, state.get("iterator"))
            next_iterator = None if next_files is None else self._restored(tf, next_files)
        except (ValueError, TypeError, AttributeError) as error:
            raise bad_state(self.name, state, str(error)) from None
        if self._iterator is not None or self._next_iterator is not None:
            # The iterators of one pipeline share its reshuffling shuffles' seed generator,
            # which a restore sets: an old iterator still prefetching would draw seeds from
            # it behind the restored one's back. Restored again with the old ones gone.
            self._iterator = self._next_iterator = iterator = next_iterator = None
            iterator = self._restored(tf, state["iterator"])
            next_iterator = None if next_files is None else self._restored(tf, next_files)
        held = None
        if state.get("ended"):
            held = EOFError(f"End of dataset {self.name!r}; call reset() to start a new pass.")
        if self._chunks is None:
            pending = [
                (self._spec, [a[0] for a in ins], [a[0] for a in labs]) for ins, labs in pending
            ]
        self._stacker.restore(pending, held)
        self._iterator, self._next_iterator = iterator, next_iterator
        self._next_files = next_files
        self._iterator_read = bool(state.get("read", True))

    @property
    def _source(self) -> Any:
        """The dataset the iterator reads: the chunked pipeline, or the pipeline itself."""
        return self._dataset if self._chunks is None else self._chunks

    def _restored(self, tf: Any, files: Any) -> Any:
        """A new iterator of the source, restored from `save_iterator`'s files."""
        iterator = self._source.as_numpy_iterator()
        restore_iterator(tf, iterator, files)
        return iterator
