"""`from_tfds`: a TensorFlow Datasets split as a `TFDataset` (prepared, or downloaded first)."""

from __future__ import annotations

import functools
import os
from typing import Any

from keras_trainloop.data._common import check_batch_size
from keras_trainloop.data._shard import check_shard
from keras_trainloop.data._tf import TFDataset, _import_tf
from keras_trainloop.data._tfds import (
    AUTO_CACHE_MAX_BYTES,
    cached_and_shuffled,
    check_load_kwargs,
    decoded_bytes,
    default_data_dir,
    prepared_builder,
    shuffle_files,
    split_num_examples,
)


@functools.cache
def _import_tfds() -> Any:
    _import_tf()
    import tensorflow_datasets as tfds

    return tfds


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
    download: bool = True,
    shard: tuple[int, int] | None = None,
    **load_kwargs: Any,
) -> TFDataset:
    """Reads a TensorFlow Datasets dataset as `(image, label)`-style batches.

    As `tfds.load`: a dataset missing from `data_dir` is downloaded and
    prepared there first (`download=True`, the default;
    `builder.download_and_prepare(**download_and_prepare_kwargs)`), and
    `download=False` reads only what is already prepared in `data_dir`,
    for offline machines and tests. The dataset is then loaded with
    `tfds.load(name, split=split, data_dir=data_dir, as_supervised=True,
    download=False, try_gcs=False, **load_kwargs)`. The pipeline caches the
    decoded examples in memory (when they fit, see `cache`), shuffles them
    with a seeded buffer (whole-dataset when cached, `SHUFFLE_BUFFER_SIZE`
    otherwise; reshuffled each pass), repeats when `loop_forever`, batches
    and prefetches (`tf.data.AUTOTUNE`). Values keep their stored dtypes:
    images stay uint8 in 0..255, so rescale them in the model (e.g.
    `keras.layers.Rescaling(1 / 255)`) or map the `tf_dataset`.

    To prepare a dataset for an offline machine: on one with network access,
    `tfds.builder(name, data_dir=DIR).download_and_prepare()` (or
    `tfds build NAME --data_dir=DIR`), copy `DIR` over, then
    `from_tfds(name, ..., data_dir=DIR, download=False)`.

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
        download: whether to download and prepare the dataset into
            `data_dir` when it is not prepared there (as `tfds.load`).
        shard: `(index, count)`: read only this shard of `split`, one of
            `count` equal parts (`tfds.even_splits(split, count,
            drop_remainder=True)[index]`, as `tfds.split_for_jax_process`);
            with several processes `ktl.data.process_shard()`. `batch_size` is
            then per process: the global batch is `batch_size * count`.
        **load_kwargs: more arguments for `tfds.load` (e.g. `decoders`,
            `read_config`, `builder_kwargs`, `download_and_prepare_kwargs`),
            except those set here.

    Returns:
        A `TFDataset` named "{name}/{split}"; its `tf_dataset` is the pipeline.

    Raises:
        ValueError: the dataset name is unknown, the dataset is not prepared
            in `data_dir` and `download=False`, the split is not there, the
            dataset has no supervised keys, or `batch_size <= 0`. The message
            names the `data_dir` searched and how to prepare it offline.
        RuntimeError: downloading or preparing failed (no network, say); the
            message names the `data_dir` and how to prepare it offline, the
            `__cause__` is TFDS' error.
        TypeError: `load_kwargs` holds an argument that `from_tfds` sets.

    Example:
        train = ktl.from_tfds("mnist", split="train", batch_size=64, data_dir="~/tfds",
                              shuffle=True, seed=0, loop_forever=True)
        offline = ktl.from_tfds("mnist", split="test", batch_size=256, data_dir="~/tfds",
                                download=False)
    """
    batch_size = check_batch_size(batch_size)
    shard = check_shard(shard, "from_tfds")
    check_load_kwargs(load_kwargs)
    tf = _import_tf()
    tfds = _import_tfds()
    read = (
        split if shard is None else tfds.even_splits(split, shard[1], drop_remainder=True)[shard[0]]
    )
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    default_dir = default_data_dir(tfds)
    builder = prepared_builder(
        tfds,
        name,
        split,
        data_dir,
        default_dir,
        load_kwargs.get("builder_kwargs"),
        download=bool(download),
        prepare_kwargs=load_kwargs.pop("download_and_prepare_kwargs", None),
    )
    num_examples = split_num_examples(builder, name, split, data_dir, default_dir, read)
    if shuffle:
        shuffle_files(tfds, load_kwargs, seed)
    ds = tfds.load(
        name,
        split=read,
        data_dir=data_dir,
        as_supervised=True,
        download=False,
        try_gcs=False,
        **load_kwargs,
    )
    if cache is None:
        size = decoded_bytes(builder, num_examples)
        cache = size is not None and size <= AUTO_CACHE_MAX_BYTES
    ds = cached_and_shuffled(ds, num_examples, cache=cache, shuffle=shuffle, seed=seed)
    if loop_forever:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return TFDataset(ds, name=f"{name}/{split}")
