"""Helpers shared by the dataset adapters: argument checks and batch structure."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from keras_trainloop._describe import short_repr


def is_array_like(value: Any) -> bool:
    """Whether `value` is an array (numpy, JAX, or anything with `__array__`)."""
    return hasattr(value, "__array__") and not isinstance(value, (str, bytes))


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """Returns `batch_size` as an int, or raises if it is not a positive integer.

    `name` is the argument's name in the message (e.g. "n" for a batch count).
    """
    example = f"{name}=64" if name == "batch_size" else f"{name}=8"
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(
            f"{name} must be a positive integer. "
            f"Received: {name}={batch_size!r} of type {type(batch_size).__name__}. "
            f"Fix: pass e.g. {example}."
        )
    if batch_size <= 0:
        raise ValueError(
            f"{name} must be a positive integer. Received: {name}={batch_size}. "
            f"Fix: pass e.g. {example}."
        )
    return int(batch_size)


def check_name(name: Any) -> str:
    """Returns `name`, or raises if it is not a string."""
    if not isinstance(name, str):
        raise TypeError(
            f"A dataset name must be a string. Received: name={name!r}. "
            'Fix: pass e.g. name="train".'
        )
    return name


def side_to_list(side: str, value: Any, where: str) -> list[Any]:
    """Normalizes one side of an element (`inputs` or `labels`) to a list of arrays.

    An array becomes `[array]`; a list or tuple becomes a list; a dict becomes
    the list of its values in key order; `None` or `()` becomes `[]`. Leaves are
    returned as they are (no copy, no conversion).

    Args:
        side: "inputs" or "labels", for error messages.
        value: the value to normalize.
        where: where the value came from, for error messages (e.g. "element 3").

    Returns:
        A list of arrays.

    Raises:
        TypeError: a leaf is not an array.
    """
    if value is None:
        return []
    if isinstance(value, dict):
        leaves, names = list(value.values()), [f"{side}[{key!r}]" for key in value]
    elif isinstance(value, (list, tuple)):
        leaves, names = list(value), [f"{side}[{i}]" for i in range(len(value))]
    else:
        leaves, names = [value], [side]
    for leaf, leaf_name in zip(leaves, names):
        if not is_array_like(leaf):
            raise TypeError(
                f"Each of {side} must be an array (numpy or JAX) with a leading batch "
                f"dimension. Received: {leaf_name}={short_repr(leaf)} in {where}. "
                f"Fix: yield arrays, e.g. np.asarray(...), or a list/tuple/dict of arrays."
            )
    return leaves


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into plain ints, floats and lists."""
    if isinstance(value, dict):
        return {str(key): plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
