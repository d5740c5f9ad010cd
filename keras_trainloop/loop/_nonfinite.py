"""NonFiniteCheck: when the loop reads its batch losses, and the error a non-finite one raises.

The loop does not wait on the device after each step, so it cannot check each batch
loss at once. It tells this one object what it dispatched, and the object holds what is
not read yet and reads it (loop/_loss_watch.py) where waiting costs nothing extra:

- single steps (`dispatched`): their losses wait; every `sync_every` of them (the
  loop's `SYNC_EVERY`, 16) the loop waits for the last step and reads them all;
- a fused call (`dispatched` with its losses): they wait until the next call is
  dispatched, so the device is never idle while the host reads them; with calls of at
  most `max_fused_steps` steps (8 by default) a NaN surfaces at most
  `2 * max_fused_steps - 1` steps late (15). Single steps pending before a
  fused call are read first (`call_starting`).

Contract: a `NonFiniteLossError` names the first bad step (`step`) and the last step
dispatched when it is raised (`detected_at`): the steps through `detected_at` were
trained, so the loop's `loop_step` after it is `detected_at + 1`. A read for logs
(`read_all`, from `loop.logs` inside a hook) never raises: the mean turns NaN (Keras'
`TerminateOnNaN` sees it) and the loop raises after the hooks (`raise_if_bad`), unless a
hook that ran then stopped the run (`stopped_by_hook`): the hook handled the loss it saw,
and the run ends gracefully, as Keras' `TerminateOnNaN` ends `fit`. The reads also feed
`mean`, the `"loss"` of the logs.
"""

from __future__ import annotations

from typing import Any

import jax

from keras_trainloop.loop._errors import NonFiniteLossError
from keras_trainloop.loop._loss_watch import LossMean, PendingCall, read_call, read_steps


class NonFiniteCheck:
    """The batch losses not read yet, the countdown to the next read, the first bad step.

    Args:
        sync_every: single steps between two reads (a new run may change it, see `reset`).

    Attributes:
        mean: the size-weighted mean of the losses read since `reset_mean`.
    """

    def __init__(self, sync_every: int):
        self.mean = LossMean()
        self._sync_every = self._countdown = sync_every
        self._call: PendingCall | None = None  # The last fused call, not read yet.
        self._losses: list = []  # Single steps' losses, oldest first ...
        self._sizes: list[int] = []  # ... their batch sizes ...
        self._first = 0  # ... and the step of the oldest.
        self._bad_step: int | None = None  # The first non-finite loss read.
        self._handled = False  # A hook saw it and stopped the run: no error.

    def reset(self, sync_every: int) -> None:
        """Forgets everything: a new run, reading single steps every `sync_every`."""
        self._sync_every = self._countdown = sync_every
        self._call = None
        self._losses.clear()
        self._sizes.clear()
        self._bad_step = None
        self._handled = False
        self.mean.reset()

    def reset_mean(self) -> None:
        """Starts the running mean over (a new epoch); pending losses are kept."""
        self.mean.reset()

    @property
    def pending(self) -> bool:
        """Whether any loss waits to be read."""
        return self._call is not None or bool(self._losses)

    # What the step loop dispatched ----------------------------------------------------
    def dispatched(
        self, metrics: list, step: int, num_steps: int, batch_size: int, call_losses: Any = None
    ) -> None:
        """Steps `step`..`step + num_steps - 1` were dispatched, with these `metrics`.

        A single step (`call_losses` None): a fused call before it ran first,
        so it is read now; the step's batch loss (`metrics[0]`) waits, and
        every `sync_every` single steps the loop waits for `metrics` and reads
        everything. A fused call (`call_losses`: its `num_steps` batch losses):
        they wait until the next call is dispatched; the previous call, which
        ran before it, is read now.

        Raises:
            NonFiniteLossError: a loss read was NaN or Inf (`detected_at` is the
                last step dispatched).
        """
        if call_losses is not None:
            self._call_dispatched(PendingCall(call_losses, step, num_steps, batch_size))
            return
        if self._call is not None:
            self._read_call()
            self.raise_if_bad(step)
        if not self._losses:
            self._first = step
        self._losses.append(metrics[0])
        self._sizes.append(batch_size)
        self._countdown -= 1
        if not self._countdown:
            self._countdown = self._sync_every
            self.sync(metrics, step)

    def call_starting(self, metrics: list, step: int) -> None:
        """A fused call starts at `step`: the single steps before it are read first.

        Raises:
            NonFiniteLossError: one was NaN or Inf (`detected_at` is `step - 1`).
        """
        if self._losses:
            self.sync(metrics, step - 1)

    def _call_dispatched(self, call: PendingCall) -> None:
        previous, self._call = self._call, call
        if previous is not None:
            self._found(read_call(previous, self.mean))
            self.raise_if_bad(call.last_step)
        self._countdown = self._sync_every

    # Reads ------------------------------------------------------------------------------
    def sync(self, metrics: list, detected_at: int) -> None:
        """Waits for `metrics`, then reads every pending loss (`detected_at`: the last step run).

        Raises:
            NonFiniteLossError: a loss was NaN or Inf.
        """
        jax.block_until_ready(metrics)
        self.read_all()
        self.raise_if_bad(detected_at)

    def read_all(self) -> None:
        """Reads everything pending without raising: the fused call (it ran first), then the
        single steps. A non-finite loss is kept for `raise_if_bad`."""
        self._read_call()
        if self._losses:
            self._found(read_steps(self._losses, self._sizes, self._first, self.mean))
            self._losses.clear()
            self._sizes.clear()

    def stopped_by_hook(self) -> None:
        """The hooks that just ran stopped the run: a non-finite loss read so far was
        in the logs they read, so it is theirs to handle and raises nothing (Keras'
        `TerminateOnNaN` stops `fit` so). One read later still raises."""
        if self._bad_step is not None:
            self._handled = True

    def raise_if_bad(self, detected_at: int) -> None:
        """Raises `NonFiniteLossError` if a non-finite loss was read (`detected_at`: the last
        step dispatched), unless a hook that saw it stopped the run."""
        if self._bad_step is not None and not self._handled:
            raise NonFiniteLossError(self._bad_step, detected_at)

    def _read_call(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            self._found(read_call(call, self.mean))

    def _found(self, step: int | None) -> None:
        if step is not None and self._bad_step is None:
            self._bad_step = step
