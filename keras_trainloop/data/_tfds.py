"""The steps of `from_tfds`: checks of a prepared TFDS dataset, its size, cache and shuffling.

TFDS itself is passed in (`tfds`), imported by `_tf` only when used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Datasets whose decoded examples are estimated to fit in this many bytes are
# cached in memory by `from_tfds` (cache=None): MNIST, CIFAR-10/100 and the like.
AUTO_CACHE_MAX_BYTES = 256 * 1024 * 1024
# Shuffle buffer of `from_tfds` for datasets that are not cached in memory.
SHUFFLE_BUFFER_SIZE = 10_000

# tfds.load arguments that from_tfds sets itself.
_RESERVED_LOAD_KWARGS = ("as_supervised", "download", "try_gcs", "with_info", "batch_size")


def decoded_bytes(builder: Any, num_examples: int) -> int | None:
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


def check_load_kwargs(load_kwargs: dict[str, Any]) -> None:
    """Raises if `load_kwargs` holds a `tfds.load` argument that `from_tfds` sets."""
    for key in _RESERVED_LOAD_KWARGS:
        if key in load_kwargs:
            raise TypeError(
                f"from_tfds sets tfds.load's {key!r} itself. Received: {key}="
                f"{load_kwargs[key]!r}. Fix: drop it; for other pipelines use "
                "ktl.TFDataset(tfds.load(...)...)."
            )


def default_data_dir(tfds: Any) -> str:
    """TFDS' default data directory, for messages."""
    return getattr(getattr(tfds.core, "constants", None), "DATA_DIR", "~/tensorflow_datasets")


def prepared_builder(
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


def split_num_examples(
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


def shuffle_files(tfds: Any, load_kwargs: dict[str, Any], seed: int | None) -> None:
    """Makes `tfds.load` shuffle the files, seeded, unless `load_kwargs` says otherwise."""
    load_kwargs.setdefault("shuffle_files", True)
    if seed is not None and "read_config" not in load_kwargs:
        load_kwargs["read_config"] = tfds.ReadConfig(shuffle_seed=seed)


def cached_and_shuffled(
    ds: Any, num_examples: int, *, cache: bool, shuffle: bool, seed: int | None,
) -> Any:
    """`ds` cached in memory and shuffled (whole-dataset when cached), as asked."""
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = num_examples if cache else min(num_examples, SHUFFLE_BUFFER_SIZE)
        ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    return ds
