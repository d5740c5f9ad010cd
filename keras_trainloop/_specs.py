"""Dataset specs as dictionary keys (the trainer's executors, the loop's gate and calls)."""

from __future__ import annotations

from typing import Any


def spec_key(spec: Any) -> Any:
    """Hashable specs are keys as they are; unhashable ones are keyed by `repr`."""
    try:
        hash(spec)
    except TypeError:
        return ("repr", repr(spec))
    return spec
