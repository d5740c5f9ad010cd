"""The structure of TFDataset's elements: `(inputs, labels)` sides and a batch dimension.

Whether a tf.data pipeline yields batches cannot be read from `element_spec`:
8x8 images with 8-way one-hot labels have the shapes `(8, 8)` and `(8,)`,
which look like batches of 8. tf.data has no public API that says whether an
op batched the elements (Keras itself asks `hasattr(dataset, "_batch_size")`,
which a `.prefetch()` after `.batch()` already hides), so `batching` walks the
pipeline's ops, from the last one back, through TensorFlow's private
`Dataset._inputs()` and the ops' class names: a batch op (`batch`,
`padded_batch`, `ragged_batch`, `map_and_batch`, `rebatch`, ...) means
batches; `from_tensor_slices`, `range` or `unbatch()` reached through ops that
keep one element per element (`map`, `filter`, `shuffle`, `repeat`, `cache`,
`prefetch`, ...) means examples. Any other op (`from_generator`,
`interleave`, `flat_map`, `group_by_window`, file readers, ...) can yield
either, so no verdict is given and only the shape checks apply; so is it when
TensorFlow's internals change, so the check can only miss, never refuse a
batched pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BATCHED = "batched"
UNBATCHED = "unbatched"

# Sources of one example per element, by class name (without leading "_"), as users call them.
_EXAMPLE_SOURCES = {
    "TensorSliceDataset": "from_tensor_slices",
    "SparseTensorSliceDataset": "from_tensor_slices",
    "RangeDataset": "range",
}
# Ops that yield at most one element per input element, keeping it an example or a batch.
_PER_ELEMENT_OPS = frozenset(
    {
        "MapDataset",
        "ParallelMapDataset",
        "FilterDataset",
        "PrefetchDataset",
        "RepeatDataset",
        "ShuffleDataset",
        "CacheDataset",
        "TakeDataset",
        "SkipDataset",
        "OptionsDataset",
        "ShardDataset",
        "AssertCardinalityDataset",
        "IgnoreErrorsDataset",
        "TakeWhileDataset",
        "ScanDataset",
        "UniqueDataset",
        "RestructuredDataset",
        "MaxIntraOpParallelismDataset",
        "PrivateThreadPoolDataset",
        "ModelDataset",
        "AutoShardDataset",
        "AssertNextDataset",
        "NonSerializableDataset",
        "DenseToRaggedDataset",
        "SnapshotDataset",
        "SleepDataset",
    }
)
# Ops whose elements are their inputs' elements (batches if all inputs yield batches).
_COMBINING_OPS = frozenset({"ZipDataset", "ConcatenateDataset"})
_MAX_OPS = 10_000


def batching(dataset: Any) -> tuple[str | None, str]:
    """Whether the pipeline's ops batch its elements (see the module docstring).

    Returns:
        `(BATCHED, op)`, `(UNBATCHED, source)` naming what yields examples,
        or `(None, "")` when the ops do not tell.
    """
    try:
        return _batching(dataset)
    except Exception:  # noqa: BLE001 - TensorFlow's internals changed: no verdict.
        return None, ""


def _batching(dataset: Any) -> tuple[str | None, str]:
    for _ in range(_MAX_OPS):
        name = type(dataset).__name__.lstrip("_")
        lower = name.lower()
        if name in _EXAMPLE_SOURCES:
            return UNBATCHED, _EXAMPLE_SOURCES[name]
        if "unbatch" in lower:
            return UNBATCHED, "unbatch()"
        if lower.endswith("batchdataset"):
            return BATCHED, name
        inputs = list(dataset._inputs())  # Private: see the module docstring.
        if name in _COMBINING_OPS:
            return _combined([_batching(d) for d in inputs])
        if name not in _PER_ELEMENT_OPS or len(inputs) != 1:
            return None, ""
        dataset = inputs[0]
    return None, ""


def _combined(verdicts: list[tuple[str | None, str]]) -> tuple[str | None, str]:
    """The inputs' common verdict, or no verdict when they differ."""
    kinds = {kind for kind, _ in verdicts}
    if len(kinds) == 1 and None not in kinds:
        return verdicts[0]
    return None, ""


def side_extractor(
    tf: Any,
    side: str,
    spec: Any,
    index: int,
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


def check_batched(dataset: Any, leaves: list[tuple[str, Any]], element_spec: Any) -> None:
    """Raises if `dataset` looks unbatched: by its ops, a leaf of rank 0, or leading sizes.

    The ops decide first (`batching`); then every leaf needs a leading
    dimension, and the known ones must agree.
    """
    verdict, source = batching(dataset)
    if verdict == UNBATCHED:
        raise ValueError(
            "TFDataset needs a batched tf.data.Dataset, and this one looks unbatched: its "
            f"elements come from {source} with no batch op after it (.batch, .padded_batch, "
            ".ragged_batch), so each element is one example, whatever its shapes. "
            f"Received: element_spec={element_spec!r}. Fix: batch it before wrapping it "
            "(TFDataset does not batch), e.g. ktl.TFDataset(ds.batch(64)); if each element "
            "already is a batch (slices of pre-batched arrays), re-batch it: "
            "ds.unbatch().batch(batch_size)."
        )
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


def _leaves(value: Any) -> tuple:
    """One side's tensors as a flat tuple: a dict's values in key order, a tuple's items."""
    if isinstance(value, dict):
        return tuple(value.values())
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value,)


def keras_pairs(dataset: Any) -> Any:
    """`dataset` with Keras-style elements as TFDataset's `(inputs, labels)` pairs.

    `model.fit` reads a tf.data element as `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)`: `(x, y)` stays as it is; `x` and `(x,)` become
    `(x, ())`; `(x, y, sample_weight)` becomes `(x, (*y, sample_weight))`
    with `y`'s tensors flattened (a dict's in key order), so the weights
    are the last label.

    Raises:
        TypeError: a tuple element of another length.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple):
        return dataset.map(lambda x: (x, ()))
    if len(spec) == 2:
        return dataset
    if len(spec) == 1:
        return dataset.map(lambda x: (x, ()))
    if len(spec) == 3:
        return dataset.map(lambda x, y, weights: (x, _leaves(y) + _leaves(weights)))
    raise TypeError(
        "Each tf.data element must be x, (x,), (x, y) or (x, y, sample_weight), as model.fit "
        f"reads them. Received: element_spec={spec!r}, a tuple of {len(spec)} items. Fix: "
        "map it to (x, y) pairs, e.g. ds.map(lambda a, b, c, d: ((a, b), c))."
    )
