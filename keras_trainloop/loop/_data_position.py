"""The position of a run's data, for an exact resume: a mixin of `Loop`.

`data_state()` reads it through what the run reads (read-ahead for the first step, device
prefetching), so restoring it gives exactly the batches the next steps would get;
`restore_data_state()` hands a saved one to the run starting (from an `on_start` hook).
"""

from __future__ import annotations

from typing import Any


class DataPosition:
    """`data_state` and `restore_data_state` of a `Loop` (its run's feed is `_feed`)."""

    _feed: Any

    def data_state(self) -> dict | None:
        """The position of the run's data after the steps done, for an exact resume.

        The dataset's `get_state()`, taken through whatever the loop reads it
        with (read-ahead for the first step or device prefetching included):
        restoring it yields exactly the batches the next steps would get.
        None outside a run, or when the dataset has no `get_state`.
        """
        feed = self._feed
        if feed is None or not callable(getattr(feed, "get_state", None)):
            return None
        return feed.get_state()

    def restore_data_state(self, state: dict) -> bool:
        """Makes this run's data continue from `state` (what `data_state()` returned).

        Call it from an `on_start` hook (the run's first batch is read after
        them); `attach_checkpoint` does, with the state its checkpoint saved.

        Returns:
            Whether the dataset took the state (False: it has no `set_state`).

        Raises:
            RuntimeError: called outside a run.
            ValueError: the dataset refuses the state (another dataset's).
        """
        feed = self._feed
        if feed is None:
            raise RuntimeError(
                "loop.restore_data_state() sets the position of a run's data, but no run is "
                "starting. Fix: call it from an on_start hook."
            )
        if not callable(getattr(feed, "set_state", None)):
            return False
        feed.set_state(state)
        return True
