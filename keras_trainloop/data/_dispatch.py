"""as_dataset: what `model.fit` accepts as data, as a `ktl.Dataset`.

The kind of `x` is told by Keras' own tests (`keras.src.trainers.data_adapters`:
`is_tf_dataset`, `is_grain_dataset`, `PyDataset`), which look at the class
names, so neither TensorFlow nor grain is imported to tell them; then each
kind is read by its adapter: `ArrayDataset`, `TFDataset`, `PyDatasetSource`
(through Keras' `PyDatasetAdapter`), `GrainDataset` or `GeneratorDataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from keras_trainloop.data._common import is_array_like, short_repr
from keras_trainloop.data._protocol import Dataset

_ARRAYS, _DATASET, _TF, _PY_DATASET, _GRAIN, _GENERATOR = (
    "arrays",
    "ktl.Dataset",
    "tf.data.Dataset",
    "keras.utils.PyDataset",
    "grain dataset",
    "generator or iterable of batches",
)
# The options of as_dataset each kind of data takes (arrays take all).
_OPTIONS = {
    _DATASET: frozenset(),
    _TF: frozenset({"name", "spec"}),
    _PY_DATASET: frozenset({"name", "spec", "shuffle"}),
    _GRAIN: frozenset({"name", "spec"}),
    _GENERATOR: frozenset({"name", "spec"}),
}
# How to get what an option would do, for data that does not take it.
_FIXES = {
    "y": "yield the targets in the data's elements, (x, y) or (x, y, sample_weight)",
    "sample_weight": "yield the weights in the data's elements, (x, y, sample_weight)",
    "class_weight": "yield per-example weights in the data's elements, (x, y, sample_weight), "
    "e.g. tf.data .map(lambda x, y: (x, y, tf.gather(weights, y)))",
    "batch_size": "batch the data in its source (it must yield batches), or pass arrays",
    "shuffle": "shuffle in the source (tf.data .shuffle(n, seed=...), grain "
    ".shuffle(seed=...)); shuffle=True is for arrays and PyDatasets",
    "seed": "seed the source's own shuffling; seed= is for arrays",
    "loop_forever": "repeat in the source (tf.data and grain: .repeat())",
    "drop_remainder": "drop it where the source batches (.batch(n, drop_remainder=True))",
    "name": "set it where the dataset is built",
    "spec": "set it where the dataset is built",
}
_DEFAULT_BATCH_SIZE = 32  # As model.fit's.


def _is_arrays(x: Any) -> bool:
    """An array, or a non-empty dict, list or tuple of arrays (one or several inputs)."""
    if is_array_like(x):
        return True
    items = list(x.values()) if isinstance(x, dict) else x
    return isinstance(items, (list, tuple)) and bool(items) and all(map(is_array_like, items))


def _is_iterable(x: Any) -> bool:
    """A generator, an iterator, a zero-argument function or an iterable of batches."""
    if isinstance(x, (str, bytes, dict)):
        return False
    return isinstance(x, Iterable) or callable(x)


def _kind(x: Any) -> str:
    """Which of the kinds above `x` is (Keras' tests first), or raises TypeError."""
    from keras.src.trainers.data_adapters import is_grain_dataset, is_tf_dataset
    from keras.utils import PyDataset

    if isinstance(x, Dataset):
        return _DATASET
    if is_tf_dataset(x):
        return _TF
    if isinstance(x, PyDataset):
        return _PY_DATASET
    if is_grain_dataset(x):
        return _GRAIN
    if _is_arrays(x):
        return _ARRAYS
    if _is_iterable(x):
        return _GENERATOR
    raise TypeError(
        "as_dataset takes what model.fit takes as data: arrays (numpy, JAX; one, or a "
        "list/tuple/dict of them) with y, a tf.data.Dataset, a keras.utils.PyDataset, a grain "
        "MapDataset/IterDataset/DataLoader, a generator or iterable of batches, or a "
        f"ktl.Dataset. Received: x={short_repr(x)} of type {type(x).__name__}. Fix: convert "
        "it to one of those, e.g. ktl.as_dataset(np.asarray(x), y, batch_size=64), or "
        "implement the ktl.Dataset protocol (name, yield_batch(), reset())."
    )


def _check_options(kind: str, given: dict[str, Any]) -> None:
    """Raises ValueError for an option that data of this kind does not take."""
    for option, value in given.items():
        if option not in _OPTIONS[kind]:
            raise ValueError(
                f"as_dataset takes no {option}= when x is a {kind}: the data itself "
                f"decides it. Received: {option}={short_repr(value)}. Fix: "
                f"{_FIXES[option]}."
            )


def _class_weights(labels: list, class_weight: Any, sample_weight: Any) -> np.ndarray:
    """Per-example weights from `class_weight`, as `fit` computes them for arrays."""
    if not isinstance(class_weight, Mapping):
        raise TypeError(
            "class_weight must map class ids to weights, as in model.fit. Received: "
            f"class_weight={short_repr(class_weight)}. Fix: e.g. class_weight={{0: 1.0, 1: 5.0}}."
        )
    if sample_weight is not None:
        raise ValueError(
            "class_weight and sample_weight cannot be given together (model.fit refuses it "
            f"too). Received: class_weight={short_repr(class_weight)} and a sample_weight. "
            "Fix: multiply the class weights into sample_weight yourself."
        )
    if len(labels) != 1:
        raise ValueError(
            "class_weight needs a single array of targets (model.fit's rule: one output). "
            f"Received: {len(labels)} target arrays. Fix: pass sample_weight instead."
        )
    classes = np.asarray(labels[0])
    if classes.ndim > 1:  # One-hot rows (their argmax), or a trailing axis of 1.
        classes = classes.argmax(-1) if classes.shape[-1] != 1 else classes[..., 0]
    classes = np.round(classes).astype(np.int64).reshape(len(classes), -1)[:, 0]
    weights = {int(k): float(v) for k, v in class_weight.items()}
    return np.array([weights.get(int(c), 1.0) for c in classes], np.float32)


def _arrays(
    x: Any, y: Any, sample_weight: Any, class_weight: Any, options: dict[str, Any]
) -> Dataset:
    from keras_trainloop.data._array import ArrayDataset

    if y is None:
        labels = []
    elif isinstance(y, dict):  # Several outputs, by name: their arrays in key order.
        labels = list(y.values())
    else:
        labels = list(y) if isinstance(y, (list, tuple)) else [y]
    if class_weight is not None:
        sample_weight = _class_weights(labels, class_weight, sample_weight)
    if sample_weight is not None:
        labels.append(sample_weight)
    options.setdefault("batch_size", _DEFAULT_BATCH_SIZE)
    return ArrayDataset(x, labels or None, **options)


def _tf_data(x: Any, options: dict[str, Any]) -> Dataset:
    from keras_trainloop.data._tf import TFDataset, _import_tf
    from keras_trainloop.data._tf_elements import keras_pairs

    _import_tf()  # Quiet, GPUs hidden from TensorFlow (x is TensorFlow's: it is imported).
    return TFDataset(keras_pairs(x), **options)


def _py_dataset(x: Any, options: dict[str, Any]) -> Dataset:
    from keras_trainloop.data._pydataset import PyDatasetSource

    return PyDatasetSource(x, **options)


def _grain(x: Any, options: dict[str, Any]) -> Dataset:
    from keras_trainloop.data._grain import GrainDataset

    return GrainDataset(x, **options)


def _generator(x: Any, options: dict[str, Any]) -> Dataset:
    from keras_trainloop.data._generator import GeneratorDataset

    return GeneratorDataset(x, **options)


_BUILDERS: dict[str, Callable[[Any, dict[str, Any]], Dataset]] = {
    _TF: _tf_data,
    _PY_DATASET: _py_dataset,
    _GRAIN: _grain,
    _GENERATOR: _generator,
}


def as_dataset(
    x: Any,
    y: Any = None,
    *,
    batch_size: int | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    shuffle: bool = False,
    seed: int | None = None,
    loop_forever: bool = False,
    drop_remainder: bool = False,
    name: str | None = None,
    spec: Any = None,
) -> Dataset:
    """Turns what `model.fit` accepts as data into a `ktl.Dataset`.

    `x` is read as `fit` reads it:
      - arrays (numpy, JAX, anything with `__array__`; one, or a list, tuple
        or dict of them for several inputs) with `y` (the same, or None) and
        `sample_weight`: a `ktl.ArrayDataset` of batches of `batch_size`
        (default 32, as in `fit`); `inputs` is `x`'s arrays, `labels` is
        `y`'s arrays then `sample_weight`. `shuffle`, `seed`,
        `loop_forever`, `drop_remainder` are `ArrayDataset`'s.
      - a batched `tf.data.Dataset`: a `ktl.TFDataset`.
      - a `keras.utils.PyDataset`: a `ktl.data.PyDatasetSource`, read
        through Keras' own adapter (its workers; `shuffle` shuffles the
        batch order each pass, as in `fit`).
      - a grain `MapDataset`, `IterDataset` or `DataLoader` of batches: a
        `ktl.data.GrainDataset`.
      - a generator, an iterator, a zero-argument function returning one
        (restarted by `reset()`), or an iterable of batches (a list): a
        `ktl.data.GeneratorDataset`.
      - a `ktl.Dataset`: returned as it is.

    Each element of a dataset, PyDataset, grain dataset or generator is a
    batch read as `fit` reads it: `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)`, a list being a tuple and a dict being `x`.
    `inputs` is `[x]`, or the arrays of a tuple or dict `x` (values in key
    order; the spec then defaults to the keys); `labels` is `y`'s arrays then
    `sample_weight` (`[]` when neither is given), so a weighted loss finds
    the weights last. The sources that stack batches (`yield_batches`)
    let the Loop fuse steps: all but the generator one.

    The options other than `name` and `spec` are for arrays (`shuffle` also
    for a PyDataset): the other kinds of data decide them themselves, so
    passing one is an error that says where to set it.

    Args:
        x: the data (see above).
        y: the targets, with arrays `x` only.
        batch_size: examples per batch, with arrays only; default 32.
        sample_weight: per-example weights, with arrays only; the last label.
        class_weight: `{class_id: weight}`, with arrays only, as in `fit`: the
            weight of each example's class (one-hot targets by their argmax;
            classes not listed weigh 1) becomes its sample weight. Not with
            `sample_weight`, and for a single target array only.
        shuffle: visit the examples (arrays) or batches (PyDataset) in a new
            order each pass.
        seed: seed of the shuffling of arrays.
        loop_forever: arrays: start a new pass instead of ending.
        drop_remainder: arrays: drop the short last batch of a pass.
        name: the dataset's name; defaults to the kind's ("array", "tf.data",
            "py_dataset", "grain", "generator").
        spec: the `spec` returned with every batch.

    Returns:
        A `ktl.Dataset`; `x` itself when it already is one.

    Raises:
        TypeError: `x` is none of the above (the message names its type).
        ValueError: an option that this kind of data does not take, or what
            the adapter refuses (e.g. an unbatched `tf.data.Dataset`).

    Example:
        train = ktl.as_dataset(x_train, y_train, batch_size=64, shuffle=True, seed=0)
        test = ktl.as_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(256))
        grain_train = ktl.as_dataset(grain.MapDataset.source(records).batch(64))
        assert ktl.as_dataset(train) is train
    """
    kind = _kind(x)
    options = {"name": name, "spec": spec, "batch_size": batch_size, "seed": seed}
    options = {k: v for k, v in options.items() if v is not None}
    flags = {"shuffle": shuffle, "loop_forever": loop_forever, "drop_remainder": drop_remainder}
    options.update({k: v for k, v in flags.items() if v})
    if kind == _ARRAYS:
        return _arrays(x, y, sample_weight, class_weight, options)
    targets = {"y": y, "sample_weight": sample_weight, "class_weight": class_weight}
    _check_options(kind, {k: v for k, v in targets.items() if v is not None} | options)
    if kind == _DATASET:
        return x
    return _BUILDERS[kind](x, options)


def as_validation_data(validation_data: Any, *, batch_size: int | None = None) -> Dataset:
    """`validation_data` as `model.fit` reads it, as a `ktl.Dataset` (for `Loop` runs).

    As `as_dataset`, except that a tuple (or list) of 2 or 3 items whose first
    item is arrays is `(x_val, y_val)` or `(x_val, y_val, val_sample_weight)`,
    as `fit(validation_data=...)` unpacks it (where `as_dataset((a, b))` reads
    two inputs).

    Args:
        validation_data: the data (see above).
        batch_size: examples per batch for arrays (`fit`'s
            `validation_batch_size`); default 32.
    """
    if (
        isinstance(validation_data, (tuple, list))
        and len(validation_data) in (2, 3)
        and _is_arrays(validation_data[0])
    ):
        x, y, weights = (*validation_data, None)[:3]
        return as_dataset(x, y, sample_weight=weights, batch_size=batch_size, name="validation")
    return as_dataset(validation_data, batch_size=batch_size)
