"""Reading batch losses off the device: the NaN check's reads and the running mean.

`NonFiniteCheck` (loop/_nonfinite.py) decides when to read; the reads are here:

- `read_steps`: single steps' losses, one dispatch per `READ_GROUP` of them (padded to that
  length with weight 0, so one compiled read serves any count);
- `read_call`: a fused call's `n` losses, read on the host (n floats: cheaper than one
  more dispatch, measured ~25 us).

Each read returns the step of its first non-finite loss (None: all finite) and adds the
losses, weighted by their batch sizes, to a `LossMean`: the `"loss"` of Keras' logs
(`fit`'s epoch mean of the batch losses, weighted by batch size as Keras does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

READ_GROUP = 16
"""Single steps' losses are read in groups of this many (padded): one compiled read."""


@jax.jit
def _first_nonfinite_and_sum(losses: list, sizes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the first non-finite loss (or -1) and the size-weighted sum (one dispatch)."""
    stacked = jnp.stack([jnp.mean(loss) for loss in losses])
    bad = ~jnp.isfinite(stacked)
    index = jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
    # The padding (weight 0) adds 0, also after an Inf (0 * Inf is NaN): an Inf loss
    # keeps the mean Inf, as Keras' mean of the losses under fit.
    return index, jnp.sum(jnp.where(sizes > 0, stacked * sizes, 0.0))


class PendingCall:
    """A fused call's batch losses, not yet read."""

    __slots__ = ("batch_size", "first_step", "losses", "num_steps")

    def __init__(self, losses: jax.Array, first_step: int, num_steps: int, batch_size: int):
        self.losses = losses
        self.first_step = first_step
        self.num_steps = num_steps
        self.batch_size = batch_size

    @property
    def last_step(self) -> int:
        return self.first_step + self.num_steps - 1


class LossMean:
    """The size-weighted mean of the batch losses read so far (NaN when none)."""

    __slots__ = ("total", "weight")

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def reset(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def value(self) -> float:
        return self.total / self.weight if self.weight else float("nan")


def read_call(call: PendingCall, mean: LossMean) -> int | None:
    """Reads a fused call's losses into `mean`; returns the step of the first non-finite one."""
    losses = np.asarray(call.losses)
    bad = ~np.isfinite(losses)
    mean.total += float(losses.sum()) * call.batch_size
    mean.weight += call.num_steps * call.batch_size
    return call.first_step + int(bad.argmax()) if bad.any() else None


def read_steps(losses: list, sizes: list[int], first_step: int, mean: LossMean) -> int | None:
    """Reads single steps' losses (of steps `first_step`, ...) into `mean`, in groups.

    Returns:
        The step of the first non-finite loss, or None.
    """
    first_bad = None
    for start in range(0, len(losses), READ_GROUP):
        group = losses[start : start + READ_GROUP]
        weights = np.zeros(READ_GROUP, np.float32)
        weights[: len(group)] = sizes[start : start + READ_GROUP]
        # Padded to one length (weight 0): one compiled check, whatever the count.
        padded = group + [group[0]] * (READ_GROUP - len(group))
        index, total = jax.device_get(_first_nonfinite_and_sum(padded, weights))
        if index >= 0 and first_bad is None:
            first_bad = first_step + start + int(index)
        mean.total += float(total)
        mean.weight += float(weights.sum())
    return first_bad


def batch_size_of(inputs: list, stacked: bool) -> int:
    """The batch size Keras weighs a batch's loss by: the first input's leading dimension."""
    shape = getattr(inputs[0], "shape", ()) if inputs else ()
    axis = 1 if stacked else 0
    return int(shape[axis]) if len(shape) > axis else 1
