"""StepLoop: runs a chunk of steps, one compiled call at a time, and fires their hooks.

One iteration is one call: `StepSource` reads its batches (n stacked ones, or one), the
trainer trains on them (`train_steps`, or `on_batch_begin` hooks then `train_step`),
`NonFiniteCheck` is told what was dispatched, the fusion gate's probe times the calls it
measures, the `on_step` hooks fire once with `loop.loop_step` at the call's last step,
and the call's time is spread over its steps in `train_step_durations`.

Contract:
- A call ends at the next step where a hook may fire, so hooks fire at the same steps,
  with the same metrics, fused or not.
- `loop.loop_step` advances in one place: past the call's last step once the call was
  dispatched, also when what follows (its loss check, the gate's wait, its hooks)
  raises, since those steps were trained. So after a `NonFiniteLossError`, `loop_step`
  is `error.detected_at + 1`. A call that did not start (end of data, a failing read,
  `on_batch_begin` hook or train step) leaves `loop_step` at its first step.
"""

from __future__ import annotations

import time
from typing import Any

import jax

from keras_trainloop.loop._fusion_gate import FusionGate, GateProbe
from keras_trainloop.loop._loss_watch import batch_size_of
from keras_trainloop.loop._nonfinite import NonFiniteCheck
from keras_trainloop.loop._step_source import StepSource, can_fuse

NO_SPEC = object()
"""`last_spec` before any batch: fusion waits for the gate's probe."""


class StepLoop:
    """The steps of a loop's runs, and what they leave for the next call.

    Args:
        gate: the loop's `FusionGate`.
        nonfinite: the loop's `NonFiniteCheck`.

    Attributes:
        last_spec: the spec of the last call (the gate caps the next one by it).
        step_seconds: the last measured seconds per step (bounds calls for timed hooks).
    """

    def __init__(self, gate: FusionGate, nonfinite: NonFiniteCheck):
        self.gate = gate
        self.nonfinite = nonfinite
        self.last_spec: Any = NO_SPEC
        self.step_seconds: float | None = None

    def run(self, loop: Any, ds: Any, limit: int, metrics: list) -> tuple[list, bool]:
        """Runs steps until `loop.loop_step == limit` (-1: no limit), the data ends or a stop.

        Returns:
            The last metrics (`metrics` if no step ran) and whether the data
            ended (`EOFError`).
        """
        fuse = can_fuse(ds, loop.trainer, loop.max_fused_steps)
        probe = GateProbe(self.gate if fuse else None, loop.max_fused_steps)
        source = StepSource(loop, ds, fuse, probe)
        train_step = loop.trainer.train_step
        train_steps = loop.trainer.train_steps if fuse else None
        on_step = loop._on_step
        durations = loop.train_step_durations
        check = self.nonfinite
        clock = time.perf_counter
        last = clock()
        step = loop.loop_step
        while step != limit and not loop._stop_requested:
            read = source.read(limit, self.last_spec, self.step_seconds)
            if read is None:
                return metrics, True
            n, batch = read
            start = timed_from = last
            if n == 1:
                losses = None
                metrics, dispatch = self._train_one(loop, train_step, step, batch, probe, clock)
            else:
                flushed = clock()
                check.call_starting(metrics, step)  # Reads single steps' losses: theirs ...
                timed_from += clock() - flushed  # ... not this call's, for the gate's probe.
                metrics, losses = train_steps(*batch)
                dispatch = None
            try:
                check.dispatched(metrics, step, n, batch_size_of(batch[1], stacked=n > 1), losses)
                spec = batch[0]
                if probe.active and probe.measures(spec):  # Its whole cost, waited on.
                    jax.block_until_ready(metrics)
                    probe.record(spec, n, clock() - timed_from, dispatch)
                self.last_spec = spec
                loop.loop_step = step + n - 1  # The step that just finished, for the hooks.
                if on_step.hooks:
                    loop._event_logs = None
                    on_step.fire(loop, metrics)
                    check.raise_if_bad(step + n - 1)  # Found by a hook reading loop.logs.
                last = clock()
                self.step_seconds = seconds = (last - start) / n
                if n == 1:
                    durations.append(seconds)
                else:
                    durations.extend([seconds] * n)
            finally:
                step += n
                loop.loop_step = step  # The one advance: the call's steps were trained.
        return metrics, False

    def _train_one(
        self, loop: Any, train_step: Any, step: int, batch: tuple, probe: GateProbe, clock: Any
    ) -> tuple[list, float | None]:
        """Fires the `on_batch_begin` hooks, then dispatches one step.

        Returns:
            Its metrics, and how long the dispatch kept the host when the gate
            may time the call (else None).
        """
        spec, inputs, labels = batch
        on_batch_begin = loop._on_batch_begin
        if on_batch_begin.hooks:
            loop._event_logs = None
            on_batch_begin.fire(loop, step)
        if not probe.active or self.last_spec is probe.settled:  # Decided: not timed.
            return train_step(spec, inputs, labels), None
        dispatch = clock()
        metrics = train_step(spec, inputs, labels)
        return metrics, clock() - dispatch  # The host's share (async dispatch).
