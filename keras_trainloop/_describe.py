"""Short descriptions of user values for error messages: never a whole array's repr."""

from __future__ import annotations

from typing import Any

_MAX_REPR = 80


def short_repr(value: Any, limit: int = _MAX_REPR) -> str:
    """`value` described in one line: arrays by type, shape and dtype; others cut to `limit`.

    Example:
        short_repr(np.zeros((1000, 64)))  # '<ndarray shape=(1000, 64) dtype=float64>'
    """
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, type):
        return f"<{type(value).__name__} shape={tuple(shape)} dtype={dtype}>"
    text = " ".join(repr(value).split())  # One line.
    return text if len(text) <= limit else text[: limit - 3] + "..."
