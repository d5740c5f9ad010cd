"""Short descriptions of user values for error messages: never a whole array's repr."""

from __future__ import annotations

from typing import Any

_MAX_REPR = 80


def short_repr(value: Any) -> str:
    """`value` described in at most a line: arrays by type, shape and dtype; others cut.

    Example:
        short_repr(np.zeros((1000, 64)))  # 'ndarray(shape=(1000, 64), dtype=float64)'
    """
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, type):
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={dtype})"
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text
