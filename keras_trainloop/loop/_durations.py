"""StepDurations: the seconds of a run's most recent steps, in a bounded window.

`loop.train_step_durations` grows by one float per step; over a run of millions of
steps a plain list would hold tens of MB for a median that needs far fewer. It keeps
the last `DURATIONS_WINDOW` durations (oldest dropped first) and reads like the list it
replaces: `len`, indexing (negative too), slicing (a list), iteration, `==` with a list.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

DURATIONS_WINDOW = 10_000
"""How many step durations `loop.train_step_durations` keeps (the most recent ones)."""


class StepDurations(collections.deque):
    """The last `window` step durations in seconds, oldest first; a list-like deque.

    `append` / `extend` are the deque's own (no Python call per step), and
    drop the oldest values beyond `window`. Slicing returns a list, and it
    compares equal to a list (or another sequence of this type) with the same
    values, so code written for a list of durations keeps working.

    Args:
        values: initial durations (only the last `window` are kept).
        window: how many to keep; default `DURATIONS_WINDOW` (read when created).
    """

    def __init__(self, values: Iterable[float] = (), window: int | None = None):
        super().__init__(values, DURATIONS_WINDOW if window is None else window)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        return super().__getitem__(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, collections.deque)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # Mutable, as a list.

    def median(self) -> float | None:
        """The median (the upper middle value for an even count); None when empty."""
        if not self:
            return None
        return sorted(self)[len(self) // 2]

    def __repr__(self) -> str:
        return f"StepDurations({len(self)} durations, window={self.maxlen})"
