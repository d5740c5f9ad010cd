"""The data positions a checkpoint keeps: one per process.

With several JAX processes every process reads its own shard of the data, so the
position of one (process 0's, the one that writes the metadata) does not say where
the others are: restored there, a tf.data checkpoint would even read process 0's
shard. So `save` gathers every process's `data_state` (one collective; every
process saves at the same steps, as orbax needs anyway) and the metadata holds the
list; a resumed process takes its own entry. With one process the metadata holds
the one state as before (`data_state`).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np


def saved_entries(data_state: dict | None) -> dict[str, Any]:
    """The metadata entries recording `data_state`, this process's, and every other's.

    With several processes, every one must call this at the same point (a collective).
    """
    import jax

    text = json.dumps(data_state)  # "null" for None.
    if jax.process_count() == 1:
        return {"data_state": _or_none(text)}
    return {"data_state": None, "data_states": [_or_none(t) for t in _gathered(text)]}


def restored_state(metadata: dict[str, Any], step: int, directory: str) -> dict | None:
    """This process's data position in a checkpoint's `metadata` (None: none saved).

    A checkpoint saved by another number of processes has no position for this
    job's shards: it warns and returns None (the data order starts afresh).
    """
    import jax

    states = metadata.get("data_states")
    if states is None:
        return _loaded(metadata.get("data_state"))
    count = jax.process_count()
    if len(states) != count:
        warnings.warn(
            f"The checkpoint at step {step} in {directory!r} holds the data positions of "
            f"{len(states)} processes, but this job runs {count}: the weights, the optimizer "
            "and the step are restored, and a run resumed from it starts each process's data "
            "order afresh. Fix, for an exact resume: run as many processes as saved it.",
            stacklevel=3,
        )
        return None
    return _loaded(states[jax.process_index()])


def _or_none(text: str) -> str | None:
    """A state's JSON text as the metadata holds it: None for no state."""
    return None if text == "null" else text


def _loaded(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _gathered(text: str) -> list[str]:
    """`text` of every process, by process index (two small all-gathers)."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(row[:size]).decode("utf-8") for row, size in zip(rows, sizes)]
