"""TFDataset's position as JSON values: a tf.data iterator checkpoint and the batches read ahead.

tf.data saves an iterator exactly (`tf.train.Checkpoint(iterator=...)`): the
position of every op, its buffers (shuffle, prefetch) and its random state,
also the seed generator a reshuffling `shuffle` draws each pass's seeds from.
`TFDataset` reads its iterator 8 batches at a time (`_tf_chunks`), so the
iterator is ahead of the caller by the batches read and not yet returned;
those are saved beside the checkpoint (an `.npz`) and served first after a
restore. Both are base64 text, so the state is plain JSON.

The checkpoint holds the pipeline's graph, including the constants of
`from_tensor_slices` (the arrays themselves), and its buffers: a state is
about as large as the arrays a pipeline embeds plus its shuffle buffer.

Pipelines with Python code (`from_generator`, `py_function`,
`numpy_function`) cannot be saved (tf.data refuses: "PyFunc is stateful");
their state says why, and `set_state` warns that the data order restarts.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from keras_trainloop.data._common import short_repr

STATE_VERSION = 2
"""Version of the TFDataset state; `set_state` refuses others."""

_PREFIX = "iterator"


class Unsaveable(Exception):
    """The position cannot be saved; the message says why."""


class UnsaveableBatches(Unsaveable):
    """The batches read ahead cannot be saved (at this position only)."""


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def save_iterator(tf: Any, iterator: Any) -> dict[str, str]:
    """The checkpoint of `iterator`: base64 file contents by file-name suffix.

    Raises:
        Unsaveable: tf.data cannot save this pipeline (Python code in it).
    """
    with tempfile.TemporaryDirectory(prefix="ktl_tf_state_") as directory:
        prefix = os.path.join(directory, _PREFIX)
        try:
            tf.train.Checkpoint(iterator=iterator).write(prefix)
        except tf.errors.OpError as error:
            message = " ".join(str(error.message).split())
            raise Unsaveable(f"tf.data cannot save its iterator: {message}") from None
        files = {}
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                files[name[len(_PREFIX) :]] = _text(f.read())
        return files


def restore_iterator(tf: Any, iterator: Any, files: dict[str, str]) -> None:
    """Restores `iterator` from `save_iterator`'s files.

    Raises:
        TypeError: `files` is not a dict.
        ValueError: the files are not such a checkpoint, or it does not fit
            the iterator's pipeline (tf.data's reason in the message).
    """
    if not isinstance(files, dict):
        raise TypeError(f"its iterator is not a dict of checkpoint files: {short_repr(files)}")
    with tempfile.TemporaryDirectory(prefix="ktl_tf_state_") as directory:
        prefix = os.path.join(directory, _PREFIX)
        for suffix, text in files.items():
            if not isinstance(suffix, str) or "/" in suffix or os.sep in suffix:
                raise ValueError(f"a checkpoint file name {suffix!r} that is not a suffix")
            with open(prefix + suffix, "wb") as f:
                f.write(_bytes(text))
        try:
            tf.train.Checkpoint(iterator=iterator).read(prefix).assert_consumed()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            message = " ".join(str(getattr(error, "message", error)).split())
            raise ValueError(f"tf.data could not restore the iterator: {message}") from None


def encode_stacks(stacks: list[tuple[list, list]]) -> dict[str, Any]:
    """`(inputs, labels)` stacks of batches as `{"sides": [[n_in, n_lab], ...], "npz": base64}`.

    Raises:
        Unsaveable: an array holds Python objects (strings), which `.npz`
            keeps only through pickle.
    """
    arrays = {}
    for i, (inputs, labels) in enumerate(stacks):
        for j, array in enumerate([*inputs, *labels]):
            array = np.asarray(array)
            if array.dtype == object:
                raise UnsaveableBatches(
                    "the batches read ahead hold strings (dtype=object), which are not saved"
                )
            arrays[f"{i}_{j}"] = array
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return {
        "sides": [[len(inputs), len(labels)] for inputs, labels in stacks],
        "npz": _text(buffer.getvalue()),
    }


def decode_stacks(encoded: Any) -> list[tuple[list, list]]:
    """The stacks `encode_stacks` encoded.

    Raises:
        ValueError: `encoded` is not what `encode_stacks` returns.
    """
    try:
        sides = [(int(n_in), int(n_lab)) for n_in, n_lab in encoded["sides"]]
        with np.load(io.BytesIO(_bytes(encoded["npz"])), allow_pickle=False) as npz:
            stacks = []
            for i, (n_in, n_lab) in enumerate(sides):
                arrays = [npz[f"{i}_{j}"] for j in range(n_in + n_lab)]
                stacks.append((arrays[:n_in], arrays[n_in:]))
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"its pending batches are not readable ({error})") from None
    return stacks


def check_state(state: Any, name: str, element_spec: str, shard: list[int] | None) -> None:
    """Raises unless `state` is a TFDataset state of a pipeline with this `element_spec` repr,
    reading this `shard` (`[index, count]`, None: all the data; a state without one, from
    before shards were recorded, is taken as this shard's)."""
    if not isinstance(state, dict) or state.get("dataset") != "TFDataset":
        raise ValueError(
            "TFDataset.set_state takes the dict that TFDataset.get_state() returns. "
            f"Received: state={short_repr(state)}. Fix: pass the state saved from a "
            "TFDataset (its 'dataset' entry is 'TFDataset')."
        )
    if state.get("version") != STATE_VERSION:
        raise bad_state(name, state, f"version={state.get('version')!r}, expected {STATE_VERSION}")
    if state.get("element_spec") != element_spec:
        raise ValueError(
            f"TFDataset {name!r} cannot take a state saved from a pipeline with another "
            f"element_spec: {state.get('element_spec')!r} in the state but {element_spec!r} "
            "here. Fix: build the pipeline with the same code and arguments as the one "
            "whose state was saved, or start without the saved state."
        )
    saved = state.get("shard", shard)
    if saved != shard:
        raise ValueError(
            f"TFDataset {name!r} cannot take a state saved from another shard of the data: "
            f"shard={_shard_text(saved)} in the state but shard={_shard_text(shard)} here "
            "(its tf.data checkpoint would read the other shard's batches). Fix: restore "
            "each process's own state (ktl.checkpoints.Checkpoint keeps one per process), "
            "or build the dataset with the saved shard."
        )


def _shard_text(shard: Any) -> str:
    return "None" if shard is None else repr(tuple(shard))


def bad_state(name: str, state: dict[str, Any], what: str) -> ValueError:
    """The error for a state that `set_state` cannot use: `what` says why."""
    return ValueError(
        f"TFDataset {name!r} cannot take this state: {what}. Received: a state from "
        f"dataset {state.get('name')!r}. Fix: build the pipeline with the same code and "
        "arguments as the one whose state was saved (the same ops in the same order) and "
        "pass get_state()'s dict unchanged, or start without the saved state."
    )


def restart_warning(name: str, reason: Any) -> str:
    """The warning of `set_state` for a state whose position was not saved."""
    return (
        f"TFDataset {name!r}: its position was not saved ({reason}), so its data order "
        "restarts from a fresh pass instead of resuming where the saved run stopped. "
        "Fix, for an exact resume: build the pipeline from tf.data ops only (no "
        "from_generator / py_function / numpy_function), or use ktl.ArrayDataset for "
        "in-memory data."
    )
