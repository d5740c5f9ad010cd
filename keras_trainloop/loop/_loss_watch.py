"""LossWatch: the batch losses the loop has not read yet: the NaN check and the running mean.

The loop does not wait on the device after each step. It hands every batch
loss to a `LossWatch`, which reads them later in groups: the losses of single
steps in one dispatch (at least every `SYNC_EVERY` steps, padded to one length), a
fused call's `n` losses on the host once the next call has been dispatched
(`check_call`). Each read checks that the losses are finite (else
`NonFiniteLossError`, naming the first bad step) and adds them, weighted by
their batch sizes, to a running mean: the `"loss"` of Keras' logs (`fit`'s
epoch mean of the batch losses, weighted by batch size as Keras does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from keras_trainloop.loop._errors import NonFiniteLossError

READ_GROUP = 16
"""Single steps' losses are read in groups of this many (padded): one compiled read."""


@jax.jit
def _first_nonfinite_and_sum(losses: list, sizes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the first non-finite loss (or -1) and the size-weighted sum (one dispatch)."""
    stacked = jnp.stack([jnp.mean(loss) for loss in losses])
    bad = ~jnp.isfinite(stacked)
    index = jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
    return index, jnp.sum(stacked * sizes)


class PendingCall:
    """A fused call's batch losses, not yet read."""

    __slots__ = ("batch_size", "first_step", "losses", "num_steps")

    def __init__(self, losses: jax.Array, first_step: int, num_steps: int, batch_size: int):
        self.losses = losses
        self.first_step = first_step
        self.num_steps = num_steps
        self.batch_size = batch_size


class LossWatch:
    """Batch losses waiting to be checked, and the running mean of those checked.

    Attributes:
        call: the last fused call not yet read (None: none).
        bad: the first non-finite loss read (a `NonFiniteLossError` to raise), or None.
    """

    def __init__(self):
        self.call: PendingCall | None = None
        self.bad: NonFiniteLossError | None = None
        self._steps: list = []  # Single steps' losses, oldest first.
        self._sizes: list[int] = []
        self._total = 0.0
        self._weight = 0.0

    def reset(self) -> None:
        """Forgets everything: a new run."""
        self.call = None
        self.bad = None
        self._steps.clear()
        self._sizes.clear()
        self.reset_mean()

    def reset_mean(self) -> None:
        """Starts the running mean over (a new epoch); pending losses are kept."""
        self._total = 0.0
        self._weight = 0.0

    @property
    def has_steps(self) -> bool:
        """Whether single steps' losses wait to be read."""
        return bool(self._steps)

    @property
    def pending(self) -> bool:
        """Whether any loss waits to be read."""
        return self.call is not None or bool(self._steps)

    def add_step(self, loss: jax.Array, batch_size: int) -> None:
        self._steps.append(loss)
        self._sizes.append(batch_size)

    def add_call(self, call: PendingCall) -> PendingCall | None:
        """Makes `call` the pending fused call; returns the previous one (to check)."""
        previous, self.call = self.call, call
        return previous

    def check_call(self, detected_at: int, call: PendingCall | None = None) -> None:
        """Reads a fused call's losses (the pending call by default) on the host.

        Raises:
            NonFiniteLossError: one was NaN or Inf; `detected_at` is the last
                step dispatched so far.
        """
        self._read_call(detected_at, call)
        self.raise_if_bad()

    def check_all(self, detected_at: int) -> None:
        """Reads everything pending: the fused call (it ran first), then the single steps."""
        self.read_all(detected_at)
        self.raise_if_bad()

    def read_all(self, detected_at: int) -> None:
        """Reads everything pending without raising: a non-finite loss is kept in `bad`.

        For logs read inside a hook (`loop.logs`): the mean turns NaN, Keras'
        `TerminateOnNaN` sees it, and the loop raises `bad` after the hooks.
        """
        self._read_call(detected_at, None)
        self._read_steps(detected_at)

    def raise_if_bad(self) -> None:
        """Raises the first non-finite loss found (`bad`), if any."""
        if self.bad is not None:
            raise self.bad

    def _found(self, step: int, detected_at: int) -> None:
        if self.bad is None:
            self.bad = NonFiniteLossError(step, detected_at)

    def _read_call(self, detected_at: int, call: PendingCall | None) -> None:
        if call is None:
            call, self.call = self.call, None
            if call is None:
                return
        # Read on the host: n floats, cheaper than one more dispatch (measured ~25 us).
        losses = np.asarray(call.losses)
        bad = ~np.isfinite(losses)
        if bad.any():
            self._found(call.first_step + int(bad.argmax()), detected_at)
        self._total += float(losses.sum()) * call.batch_size
        self._weight += call.num_steps * call.batch_size

    def _read_steps(self, detected_at: int) -> None:
        steps = self._steps
        if not steps:
            return
        first_step = detected_at + 1 - len(steps)
        for start in range(0, len(steps), READ_GROUP):
            group = steps[start:start + READ_GROUP]
            sizes = np.zeros(READ_GROUP, np.float32)
            sizes[:len(group)] = self._sizes[start:start + READ_GROUP]
            # Padded to one length (weight 0): one compiled check, whatever the count.
            padded = group + [group[0]] * (READ_GROUP - len(group))
            index, total = jax.device_get(_first_nonfinite_and_sum(padded, sizes))
            if index >= 0:
                self._found(first_step + start + int(index), detected_at)
            self._total += float(total)
            self._weight += float(sizes.sum())
        steps.clear()
        self._sizes.clear()

    def mean(self) -> float:
        """The size-weighted mean of the losses read since `reset_mean` (NaN when none)."""
        return self._total / self._weight if self._weight else float("nan")


def batch_size_of(inputs: list, stacked: bool) -> int:
    """The batch size Keras weighs a batch's loss by: the first input's leading dimension."""
    shape = getattr(inputs[0], "shape", ()) if inputs else ()
    axis = 1 if stacked else 0
    return int(shape[axis]) if len(shape) > axis else 1
