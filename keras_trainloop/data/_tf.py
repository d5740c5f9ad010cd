"""TFDataset and from_tfds: batches from tf.data pipelines and TensorFlow Datasets.

TensorFlow and TFDS are imported only when one of these is used, never by
`import keras_trainloop.data`.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_trainloop.data._common import check_batch_size, check_name, short_repr
from keras_trainloop.data._stacking import BatchStacker
from keras_trainloop.data._tf_chunks import ChunkReader, can_chunk, chunked, static_shapes

# Datasets whose decoded examples are estimated to fit in this many bytes are
# cached in memory by `from_tfds` (cache=None): MNIST, CIFAR-10/100 and the like.
AUTO_CACHE_MAX_BYTES = 256 * 1024 * 1024
# Shuffle buffer of `from_tfds` for datasets that are not cached in memory.
SHUFFLE_BUFFER_SIZE = 10_000

# tfds.load arguments that from_tfds sets itself.
_RESERVED_LOAD_KWARGS = ("as_supervised", "download", "try_gcs", "with_info", "batch_size")


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


@functools.cache
def _import_tfds() -> Any:
    _import_tf()
    import tensorflow_datasets as tfds

    return tfds


def _side_extractor(
    tf: Any, side: str, spec: Any, index: int,
) -> tuple[Callable[[tuple], list], list[tuple[str, Any]], tuple | None]:
    """Returns (element -> list of arrays, named leaf specs, dict keys or None) for one side."""
    if isinstance(spec, dict):
        keys = tuple(spec)
        leaves = [(f"{side}[{key!r}]", spec[key]) for key in keys]

        def extract(element):
            value = element[index]
            return [value[key] for key in keys]
    elif isinstance(spec, (tuple, list)):
        keys = None
        leaves = [(f"{side}[{i}]", leaf) for i, leaf in enumerate(spec)]

        def extract(element):
            return list(element[index])  # [] for an empty tuple.
    else:
        keys = None
        leaves = [(side, spec)]

        def extract(element):
            return [element[index]]

    for name, leaf in leaves:
        if not isinstance(leaf, tf.TensorSpec):
            raise TypeError(
                "TFDataset takes elements (inputs, labels) where each side is a tensor, a "
                "tuple/list of tensors or a dict of tensors. "
                f"Received: {name} with spec {leaf!r}. Fix: flatten nested structures with "
                "ds.map(...); pad ragged tensors (.to_tensor()) or densify sparse ones."
            )
    return extract, leaves, keys


def _check_batched(leaves: list[tuple[str, Any]], element_spec: Any) -> None:
    """Raises if a leaf has rank 0 or the known leading dimensions differ."""
    leading = None
    for name, leaf in leaves:
        rank = leaf.shape.rank
        if rank is None:
            continue
        if rank == 0:
            raise ValueError(
                "TFDataset needs a batched tf.data.Dataset: every tensor must have a "
                f"leading batch dimension. Received: {name} of shape {leaf.shape} "
                f"(element_spec={element_spec!r}). Fix: call .batch(batch_size) on the "
                "dataset before wrapping it."
            )
        size = leaf.shape[0]
        if size is None:
            continue
        if leading is None:
            leading = (name, size)
        elif size != leading[1]:
            raise ValueError(
                "TFDataset needs a batched tf.data.Dataset whose tensors share the leading "
                f"batch dimension. Received: {name} with leading dimension {size} but "
                f"{leading[0]} with {leading[1]} (element_spec={element_spec!r}). "
                "Fix: call .batch(batch_size) on the dataset of examples, not on its parts."
            )


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

    Args:
        tf_dataset: a batched `tf.data.Dataset`.
        name: the dataset's name; defaults to "tf.data".
        spec: the `spec` returned with every batch (see above for its default).

    Raises:
        TypeError: `tf_dataset` is not a `tf.data.Dataset`, its elements are not
            `(inputs, labels)` pairs, or a side holds a nested, ragged or sparse
            structure.
        ValueError: the dataset is not batched (a rank-0 tensor, or known leading
            dimensions that differ).

    Example:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024).batch(64)
        train = ktl.TFDataset(ds.prefetch(tf.data.AUTOTUNE), name="train")
    """

    def __init__(self, tf_dataset: Any, *, name: str | None = None, spec: Any = None):
        if "tensorflow" not in sys.modules:  # Then it can not be a tf.data.Dataset.
            self._raise_not_a_dataset(tf_dataset)
        tf = _import_tf()
        if not isinstance(tf_dataset, tf.data.Dataset):
            self._raise_not_a_dataset(tf_dataset)
        element_spec = tf_dataset.element_spec
        if not isinstance(element_spec, tuple) or len(element_spec) != 2:
            received = (
                f"a tuple of {len(element_spec)} items" if isinstance(element_spec, tuple)
                else type(element_spec).__name__
            )
            raise TypeError(
                "TFDataset needs elements that are (inputs, labels) pairs. "
                f"Received: {received}, element_spec={element_spec!r}. "
                "Fix: map the dataset to pairs, e.g. ds.map(lambda ex: (ex['image'], "
                "ex['label'])) (with TFDS, load it with as_supervised=True), or "
                "ds.map(lambda x: (x, ())) for inputs without labels."
            )
        get_inputs, input_leaves, input_keys = _side_extractor(tf, "inputs", element_spec[0], 0)
        get_labels, label_leaves, _ = _side_extractor(tf, "labels", element_spec[1], 1)
        if not input_leaves:
            raise ValueError(
                "TFDataset needs at least one input tensor. "
                f"Received: element_spec={element_spec!r}. Fix: put the model's inputs "
                "first in each (inputs, labels) element."
            )
        _check_batched(input_leaves + label_leaves, element_spec)
        self._dataset = tf_dataset
        self._get_inputs, self._get_labels = get_inputs, get_labels
        self.name = check_name("tf.data" if name is None else name)
        self._spec = input_keys if spec is None and input_keys is not None else spec
        self._iterator: Any = None
        if can_chunk(input_leaves + label_leaves):  # Up to 8 batches per iterator call.
            self._chunks, self._chunk_shapes = chunked(tf, tf_dataset)
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
        element = self._next_element(self._chunks)
        if not self._chunk_shapes:  # Static shapes: every batch has the stack's.
            inputs, labels = self._get_inputs(element), self._get_labels(element)
            return inputs, labels, static_shapes(inputs), static_shapes(labels)
        element, shapes = element
        return (self._get_inputs(element), self._get_labels(element),
                self._get_inputs(shapes), self._get_labels(shapes))

    def reset(self) -> None:
        """Starts a fresh pass; the pipeline is restarted on the next `yield_batch()`."""
        self._iterator = None
        self._stacker.clear()


def _decoded_bytes(builder: Any, num_examples: int) -> int | None:
    """Estimates the decoded size of the supervised features of `num_examples`, or None."""
    try:
        total = 0
        for key in _flatten(builder.info.supervised_keys):
            feature = builder.info.features[key]
            shapes, dtypes = _flatten(feature.shape), _flatten(feature.np_dtype)
            for shape, dtype in zip(shapes, dtypes):
                if shape is None or any(dim is None for dim in shape):
                    return None
                total += math.prod(shape) * np.dtype(dtype).itemsize
        return total * num_examples
    except Exception:  # noqa: BLE001 - an unusual feature: no estimate, no cache.
        return None


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _flatten(v)]
    if isinstance(value, list) or (isinstance(value, tuple) and not _is_shape(value)):
        return [leaf for v in value for leaf in _flatten(v)]
    return [value]


def _is_shape(value: tuple) -> bool:
    return all(dim is None or isinstance(dim, int) for dim in value)


def _not_prepared(
    name: str, split: str, data_dir: str | None, default_dir: str, why: str, fix: str | None = None,
) -> ValueError:
    where = f"data_dir={data_dir!r}" if data_dir is not None else (
        f"data_dir=None (TFDS' default, {default_dir!r})"
    )
    if fix is None:
        fix = (
            f"on a machine with network access run tfds.builder({name!r}, "
            "data_dir=DIR).download_and_prepare() and copy DIR here, or pass data_dir= "
            "pointing at a directory that holds it."
        )
    return ValueError(
        f"from_tfds reads datasets already prepared on disk and never downloads. {why} "
        f"Received: name={name!r}, split={split!r}, {where}. Fix: {fix}"
    )


def _check_load_kwargs(load_kwargs: dict[str, Any]) -> None:
    """Raises if `load_kwargs` holds a `tfds.load` argument that `from_tfds` sets."""
    for key in _RESERVED_LOAD_KWARGS:
        if key in load_kwargs:
            raise TypeError(
                f"from_tfds sets tfds.load's {key!r} itself. Received: {key}="
                f"{load_kwargs[key]!r}. Fix: drop it; for other pipelines use "
                "ktl.TFDataset(tfds.load(...)...)."
            )


def _default_data_dir(tfds: Any) -> str:
    """TFDS' default data directory, for messages."""
    return getattr(getattr(tfds.core, "constants", None), "DATA_DIR", "~/tensorflow_datasets")


def _prepared_builder(
    tfds: Any, name: str, split: str, data_dir: str | None, default_dir: str,
    builder_kwargs: dict[str, Any] | None,
) -> Any:
    """The TFDS builder of `name`, or raises if the dataset is not prepared in `data_dir`."""
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False, **dict(builder_kwargs or {}))
    except tfds.core.registered.DatasetNotFoundError:
        raise _not_prepared(name, split, data_dir, default_dir,
                            "No dataset of this name is registered or on disk.") from None
    if not builder.is_prepared():
        raise _not_prepared(name, split, data_dir, default_dir,
                            f"It is not prepared there (looked in {builder.data_dir!r}).")
    return builder


def _num_examples(
    builder: Any, name: str, split: str, data_dir: str | None, default_dir: str,
) -> int:
    """Examples in `split`, or raises if it is not prepared or has no supervised keys."""
    try:
        num_examples = builder.info.splits[split].num_examples
    except (ValueError, KeyError) as err:
        raise _not_prepared(
            name, split, data_dir, default_dir,
            f"The split is not there ({err}).",
            f"pass one of the prepared splits {sorted(builder.info.splits)} (slices such as "
            "'train[:90%]' and unions such as 'train+test' work too).",
        ) from None
    if builder.info.supervised_keys is None:
        raise ValueError(
            "from_tfds reads (input, label) pairs, but this dataset has no supervised keys. "
            f"Received: name={name!r}. Fix: build the pipeline yourself, e.g. "
            f"ktl.TFDataset(tfds.load({name!r}, split=..., data_dir=...).map(lambda ex: "
            "(ex['image'], ex['label'])).batch(64))."
        )
    return num_examples


def _shuffle_files(tfds: Any, load_kwargs: dict[str, Any], seed: int | None) -> None:
    """Makes `tfds.load` shuffle the files, seeded, unless `load_kwargs` says otherwise."""
    load_kwargs.setdefault("shuffle_files", True)
    if seed is not None and "read_config" not in load_kwargs:
        load_kwargs["read_config"] = tfds.ReadConfig(shuffle_seed=seed)


def _cached_and_shuffled(
    ds: Any, num_examples: int, *, cache: bool, shuffle: bool, seed: int | None,
) -> Any:
    """`ds` cached in memory and shuffled (whole-dataset when cached), as asked."""
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = num_examples if cache else min(num_examples, SHUFFLE_BUFFER_SIZE)
        ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    return ds


def from_tfds(
    name: str,
    *,
    split: str,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    shuffle: bool = False,
    loop_forever: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    cache: bool | None = None,
    **load_kwargs: Any,
) -> TFDataset:
    """Reads a prepared TensorFlow Datasets dataset as `(image, label)`-style batches.

    The dataset is loaded with `tfds.load(name, split=split, data_dir=data_dir,
    as_supervised=True, download=False, try_gcs=False, **load_kwargs)`: it must
    already be prepared in `data_dir`, and nothing is ever downloaded. The
    pipeline then caches the decoded examples in memory (when they fit, see
    `cache`), shuffles them with a seeded buffer (whole-dataset when cached,
    `SHUFFLE_BUFFER_SIZE` otherwise; reshuffled each pass), repeats when
    `loop_forever`, batches and prefetches (`tf.data.AUTOTUNE`). Values keep
    their stored dtypes: images stay uint8 in 0..255, so rescale them in the
    model (e.g. `keras.layers.Rescaling(1 / 255)`) or map the `tf_dataset`.

    Args:
        name: the TFDS name, e.g. "mnist" or "mnist:3.*.*".
        split: the split, e.g. "train", "test" or "train[:90%]".
        batch_size: examples per batch.
        data_dir: the TFDS data directory; `None` uses TFDS' default
            (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`).
        shuffle: whether to shuffle the examples (and the files) each pass.
        loop_forever: whether to repeat the data endlessly (never `EOFError`);
            batches then span pass boundaries and are all full.
        seed: seed of the shuffling; `None` for a fresh one.
        drop_remainder: whether to drop the short last batch.
        cache: whether to cache the decoded examples in memory; `None` caches
            when their estimated size is at most `AUTO_CACHE_MAX_BYTES`.
        **load_kwargs: more arguments for `tfds.load` (e.g. `decoders`,
            `read_config`, `builder_kwargs`), except those set here.

    Returns:
        A `TFDataset` named "{name}/{split}"; its `tf_dataset` is the pipeline.

    Raises:
        ValueError: the dataset or split is not prepared in `data_dir`, the
            dataset has no supervised keys, or `batch_size <= 0`.
        TypeError: `load_kwargs` holds an argument that `from_tfds` sets.

    Example:
        train = ktl.from_tfds("mnist", split="train", batch_size=64, data_dir="~/tfds",
                              shuffle=True, seed=0, loop_forever=True)
    """
    batch_size = check_batch_size(batch_size)
    _check_load_kwargs(load_kwargs)
    tf = _import_tf()
    tfds = _import_tfds()
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    default_dir = _default_data_dir(tfds)
    builder = _prepared_builder(tfds, name, split, data_dir, default_dir,
                                load_kwargs.get("builder_kwargs"))
    num_examples = _num_examples(builder, name, split, data_dir, default_dir)
    if shuffle:
        _shuffle_files(tfds, load_kwargs, seed)
    ds = tfds.load(
        name, split=split, data_dir=data_dir, as_supervised=True, download=False,
        try_gcs=False, **load_kwargs,
    )
    if cache is None:
        size = _decoded_bytes(builder, num_examples)
        cache = size is not None and size <= AUTO_CACHE_MAX_BYTES
    ds = _cached_and_shuffled(ds, num_examples, cache=cache, shuffle=shuffle, seed=seed)
    if loop_forever:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return TFDataset(ds, name=f"{name}/{split}")
