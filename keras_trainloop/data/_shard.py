"""Per-process shards: each process of a multi-process job reads its own part of the data.

With several JAX processes every process feeds its own part of each global batch
(`Trainer` builds the global arrays from the parts), so each dataset takes a
`shard=(index, count)` argument: `ktl.data.process_shard()` is this process's,
`(jax.process_index(), jax.process_count())`. `batch_size` stays per process: the
global batch has `batch_size * count` examples. The shards hold equally many
examples (up to `count - 1` left over are dropped), so every process yields the
same number of batches and no process waits at a step that another never runs.
"""

from __future__ import annotations

import numbers
from typing import Any

from keras_trainloop._describe import short_repr


def process_shard() -> tuple[int, int]:
    """This process's shard: `(jax.process_index(), jax.process_count())`.

    Pass it as `shard=` to a dataset (`ktl.ArrayDataset`, `ktl.TFDataset`,
    `ktl.from_tfds`) in a job of several processes; with one process it is
    `(0, 1)`, the whole data. Call it after `keras.distribution.initialize()`
    (or `jax.distributed.initialize()`): it starts JAX's backends.

    Example:
        keras.distribution.initialize()
        train = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0,
                                 shard=ktl.data.process_shard())  # 64 per process
    """
    import jax

    return jax.process_index(), jax.process_count()


def check_shard(shard: Any, where: str) -> tuple[int, int] | None:
    """`shard` as `(index, count)`, None for None; raises naming `where` when it is bad."""
    if shard is None:
        return None
    fix = "pass shard=(index, count) with 0 <= index < count, e.g. shard=ktl.data.process_shard()"
    if (
        not isinstance(shard, (tuple, list))
        or len(shard) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shard)
    ):
        raise TypeError(
            f"{where} expects shard as a pair of ints (index, count). "
            f"Received: shard={short_repr(shard)}. Fix: {fix}."
        )
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"{where} expects 0 <= index < count in shard=(index, count). "
            f"Received: shard={short_repr(shard)}. Fix: {fix}."
        )
    return index, count


def shard_arrays(
    shard: tuple[int, int] | None, arrays: list, num_examples: int, where: str
) -> tuple[list, int]:
    """Every `count`-th example from `index` on, `num_examples // count` of them (views).

    Returns:
        The arrays of the shard and its number of examples.

    Raises:
        ValueError: fewer examples than shards.
    """
    if shard is None:
        return arrays, num_examples
    index, count = shard
    size = num_examples // count
    if size == 0:
        raise ValueError(
            f"{where} cannot give each of {count} shards an example: it has "
            f"{num_examples}. Received: shard={shard}. Fix: pass more examples, or fewer "
            "shards."
        )
    return [a[index : size * count : count] for a in arrays], size


def shard_batches(tf_dataset: Any, shard: tuple[int, int] | None) -> Any:
    """A batched tf.data pipeline's shard: every `count`-th batch from `index` on.

    With a known number of batches, each shard keeps `batches // count` of them
    (equal shards); an unknown number (-2, e.g. after `filter`) leaves shards that
    may differ by one batch.
    """
    if shard is None:
        return tf_dataset
    index, count = shard
    batches = int(tf_dataset.cardinality())
    sharded = tf_dataset.shard(count, index)
    return sharded.take(batches // count) if batches >= 0 else sharded
