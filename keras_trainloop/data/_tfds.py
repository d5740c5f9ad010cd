"""The steps of `from_tfds`: a prepared (or downloaded) TFDS dataset, its size, cache, shuffling.

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
_RESERVED_LOAD_KWARGS = ("as_supervised", "try_gcs", "with_info", "batch_size")


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


def _where(data_dir: str | None, default_dir: str) -> str:
    return (
        f"data_dir={data_dir!r}"
        if data_dir is not None
        else (f"data_dir=None (TFDS' default, {default_dir!r})")
    )


def _offline_fix(name: str) -> str:
    return (
        f"prepare it offline: on a machine with network access run tfds.builder({name!r}, "
        f"data_dir=DIR).download_and_prepare() (or `tfds build {name} --data_dir=DIR`), copy "
        "DIR here and pass data_dir=DIR, download=False; or pass data_dir= pointing at a "
        "directory that holds it."
    )


def _not_prepared(
    name: str,
    split: str,
    data_dir: str | None,
    default_dir: str,
    why: str,
    fix: str | None = None,
) -> ValueError:
    if fix is None:
        fix = _offline_fix(name)
    return ValueError(
        f"from_tfds found no prepared copy of the dataset. {why} Received: name={name!r}, "
        f"split={split!r}, {_where(data_dir, default_dir)}. Fix: {fix}"
    )


def _download_failed(
    name: str,
    split: str,
    data_dir: str | None,
    default_dir: str,
    searched: str,
    error: Exception,
) -> RuntimeError:
    cause = " ".join(f"{type(error).__name__}: {error}".split())
    return RuntimeError(
        f"from_tfds could not download and prepare the dataset into {searched!r} (it was "
        f"not prepared there): {cause}. Received: name={name!r}, split={split!r}, "
        f"{_where(data_dir, default_dir)}, download=True. Fix: check the network "
        f"connection and retry, or {_offline_fix(name)}"
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
    tfds: Any,
    name: str,
    split: str,
    data_dir: str | None,
    default_dir: str,
    builder_kwargs: dict[str, Any] | None,
    *,
    download: bool = False,
    prepare_kwargs: dict[str, Any] | None = None,
) -> Any:
    """The TFDS builder of `name`, prepared in `data_dir`: downloaded there if asked.

    As `tfds.load`: a dataset missing from `data_dir` is downloaded and
    prepared there when `download` (`builder.download_and_prepare(
    **prepare_kwargs)`), else refused.

    Raises:
        ValueError: the name is unknown, or the dataset is missing and not `download`.
        RuntimeError: downloading or preparing it failed (e.g. no network); the
            original exception is the `__cause__`.
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False, **dict(builder_kwargs or {}))
    except tfds.core.registered.DatasetNotFoundError:
        raise _not_prepared(
            name, split, data_dir, default_dir, "No dataset of this name is registered or on disk."
        ) from None
    if builder.is_prepared():
        return builder
    if not download:
        raise _not_prepared(
            name,
            split,
            data_dir,
            default_dir,
            f"It is not prepared there (looked in {builder.data_dir!r}) and download=False.",
        )
    try:
        builder.download_and_prepare(**dict(prepare_kwargs or {}))
    except Exception as error:  # Network, checksum, manual-download errors...
        raise _download_failed(
            name, split, data_dir, default_dir, str(builder.data_dir), error
        ) from error
    return builder


def split_num_examples(
    builder: Any,
    name: str,
    split: str,
    data_dir: str | None,
    default_dir: str,
    read: Any = None,
) -> int:
    """Examples in `split` (or its part `read`, a shard), or raises if it is not prepared
    or has no supervised keys."""
    try:
        num_examples = builder.info.splits[split if read is None else read].num_examples
    except (ValueError, KeyError) as err:
        raise _not_prepared(
            name,
            split,
            data_dir,
            default_dir,
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
    ds: Any,
    num_examples: int,
    *,
    cache: bool,
    shuffle: bool,
    seed: int | None,
) -> Any:
    """`ds` cached in memory and shuffled (whole-dataset when cached), as asked."""
    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = num_examples if cache else min(num_examples, SHUFFLE_BUFFER_SIZE)
        ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    return ds
