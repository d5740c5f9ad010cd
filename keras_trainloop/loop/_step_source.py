"""StepSource: what the next compiled call trains on, n stacked batches or one batch.

The size of a call (`fusable_steps`) is a power of two up to the gate's cap that ends at
the next step where a hook may fire, at the chunk's limit, and within what time-based
schedules allow; `loop.plan` sizes its calls with the same function. A dataset that
cannot stack that many batches now (`yield_batches(n)` is None) is asked for half as
many, down to one batch (`yield_batch`); the end of the data (`EOFError` from
`yield_batch`) is `None`. Without fusion (no `yield_batches`, a trainer without
`train_steps`, `max_fused_steps=1`, or an `on_batch_begin` hook) every call is one step.

`device_feed` picks the dataset the steps read: a stackable one as it is (each fused call
is one host->device transfer), others through a device prefetcher kept per dataset, which
places each batch with the trainer's own `put_batch` (the distribution's batch layout;
with several processes global arrays, so the step reads nothing back to the host).
"""

from __future__ import annotations

import weakref
from typing import Any

from keras_trainloop._describe import short_repr
from keras_trainloop.data import Dataset, maybe_prefetch_to_device
from keras_trainloop.loop._fusion_gate import GateProbe
from keras_trainloop.loop._hooks import HookList


def check_max_fused_steps(value: Any) -> int:
    """Returns `value` if it is a power of two >= 1, else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(
            "max_fused_steps must be a power of two >= 1 (1 turns fused execution off). "
            f"Received: max_fused_steps={short_repr(value)}. Fix: pass e.g. max_fused_steps=8."
        )
    return value


def trainer_can_fuse(trainer: Any, max_fused_steps: int) -> bool:
    """Whether `trainer` runs fused calls (`train_steps`, `can_fuse_steps`) and they are on."""
    return (
        max_fused_steps > 1
        and callable(getattr(trainer, "train_steps", None))
        and bool(getattr(trainer, "can_fuse_steps", False))
    )


def can_fuse(ds: Any, trainer: Any, max_fused_steps: int) -> bool:
    """Whether steps over `ds` may run fused (some may still run one by one)."""
    return callable(getattr(ds, "yield_batches", None)) and trainer_can_fuse(
        trainer, max_fused_steps
    )


def fusable_steps(
    loop: Any, hooks: HookList, limit: int, cap: int, step_seconds: float | None
) -> int:
    """How many steps from `loop.loop_step` on may run in one call: a power of two <= cap.

    The call must end at the next step where a scheduled hook may fire
    (`schedule.next_step`), at `limit` (-1: none), and, for time-based
    schedules, before `schedule.seconds_left` passes at `step_seconds` a step.
    Hooks without a schedule fire after every step, so they allow one step.
    """
    if cap <= 1 or hooks.unscheduled:
        return 1
    step = loop.loop_step
    if limit >= 0:
        cap = min(cap, limit - step)
    for hook in hooks.hooks:
        schedule = hook.schedule
        next_step = schedule.next_step(loop)
        if next_step is not None:
            cap = min(cap, next_step - step + 1)
        seconds_left = getattr(schedule, "seconds_left", None)
        seconds = seconds_left(loop) if seconds_left is not None else None
        if seconds is not None and step_seconds:
            cap = min(cap, max(1, int(seconds / step_seconds)))
        if cap <= 1:
            return 1
    return 1 << (cap.bit_length() - 1)


class StepSource:
    """The batches of a chunk's calls, read from one dataset.

    Args:
        loop: the running loop (its `on_step` hooks size the calls; an
            `on_batch_begin` hook makes every call one step).
        ds: the dataset (the feed of `device_feed`).
        fuse: whether calls may fuse (`can_fuse`).
        probe: the chunk's `GateProbe`, which caps each call.
    """

    __slots__ = ("_loop", "_on_batch_begin", "_on_step", "_probe", "_yield_batch", "_yield_batches")

    def __init__(self, loop: Any, ds: Any, fuse: bool, probe: GateProbe):
        self._loop = loop
        self._on_step = loop._on_step
        self._on_batch_begin = loop._on_batch_begin
        self._probe = probe
        self._yield_batch = ds.yield_batch
        self._yield_batches = ds.yield_batches if fuse else None

    def read(
        self, limit: int, last_spec: Any, step_seconds: float | None
    ) -> tuple[int, tuple] | None:
        """The next call's `(num_steps, batch)`, from `loop.loop_step` on; None at the end.

        `batch` is `(spec, inputs, labels)`: with `num_steps > 1`, stacked
        (`(n, batch, ...)` arrays). `last_spec` is the spec of the call before
        (the gate's cap depends on it), `step_seconds` the last measured time
        of a step (for time-based schedules).
        """
        yield_batches = self._yield_batches
        if yield_batches is not None and not self._on_batch_begin.hooks:
            n = fusable_steps(
                self._loop, self._on_step, limit, self._probe.call_cap(last_spec), step_seconds
            )
            while n > 1:
                batch = yield_batches(n)
                if batch is not None:
                    return n, batch
                n //= 2
        try:
            return 1, self._yield_batch()
        except EOFError:
            return None


def device_feed(ds: Any, trainer: Any, fuse: bool, feeds: weakref.WeakKeyDictionary) -> Any:
    """The dataset the steps read: `ds`, or its device prefetcher (kept in `feeds`).

    One prefetcher per dataset is kept, so batches read ahead at the end of one
    run are the first of the next (see `maybe_prefetch_to_device`). A stackable
    dataset (`fuse`) is read as it is: each fused call is one transfer. The
    prefetcher places batches with `trainer.put_batch` when the trainer has one.
    """
    if not isinstance(ds, Dataset) or fuse:
        return ds
    put = getattr(trainer, "put_batch", None)
    put = put if callable(put) else None
    try:
        feed = feeds.get(ds)
    except TypeError:  # Not hashable or weak-referenceable: no caching.
        return maybe_prefetch_to_device(ds, put=put)
    if feed is None:
        feed = maybe_prefetch_to_device(ds, put=put)
        feeds[ds] = feed
    return feed
