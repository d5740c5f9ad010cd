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

from keras_trainloop._specs import spec_key
from keras_trainloop.loop._fusion_gate import FusionGate, GateProbe
from keras_trainloop.loop._loss_watch import batch_size_of
from keras_trainloop.loop._nonfinite import NonFiniteCheck
from keras_trainloop.loop._step_source import StepSource, can_fuse
from keras_trainloop.trainer import interrupts

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
        self._ready: set[tuple] = set()  # (spec key, n): fused calls compiled.
        self._asks: dict[tuple, int] = {}  # (spec key, n): calls that asked for them.

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
            fused = True  # False: n steps one by one while their fused call compiles.
            if n == 1:
                losses = None
                metrics, dispatch = self._train_one(loop, train_step, step, batch, probe, clock)
            else:
                flushed = clock()
                check.call_starting(metrics, step)  # Reads single steps' losses: theirs ...
                timed_from += clock() - flushed  # ... not this call's, for the gate's probe.
                fused, metrics, losses = self._train_stacked(loop, n, batch, train_steps)
                dispatch = None
            try:
                check.dispatched(metrics, step, n, batch_size_of(batch[1], stacked=n > 1), losses)
                spec = batch[0]
                if fused and probe.active and probe.measures(spec):  # Its whole cost, waited.
                    jax.block_until_ready(metrics)
                    probe.record(spec, n, clock() - timed_from, dispatch)
                self.last_spec = spec
                loop.loop_step = step + n - 1  # The step that just finished, for the hooks.
                if on_step.hooks:
                    loop._event_logs = None
                    on_step.fire(loop, metrics)
                    if loop._stop_requested:  # E.g. TerminateOnNaN: a graceful stop.
                        check.stopped_by_hook()
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

    def _train_stacked(self, loop: Any, n: int, batch: tuple, train_steps: Any) -> tuple:
        """Trains the `n` stacked steps of `batch`: one fused call if it is compiled
        (`_compiled`), else one `train_step` each while it compiles.

        Returns:
            Whether the fused call ran, the last step's metrics and the losses.
        """
        if self._compiled(loop, n, batch):
            return (True, *train_steps(*batch))
        return (False, *_one_by_one(loop.trainer.train_step, batch))

    def _compiled(self, loop: Any, n: int, batch: tuple) -> bool:
        """Whether the fused call of `n` steps on `batch` runs now, compiled (else the
        steps run one by one while XLA compiles it in the background).

        With the gate measuring (one process) the calls' sizes are the loop's own
        choice, so their compiles leave the critical path: a size is compiled in
        the background the second time a call asks for it (a run's odd-sized last
        call compiles nothing), and only when the work ahead, at the fastest timed
        single step, outlasts a compile (`work_ahead`). The trainer knows whether
        it compiles (`prepare_train_steps`). `measure_fusion=False` keeps exact
        fused calls, compiled where they are first made.
        """
        key = (spec_key(batch[0]), n)
        if key in self._ready:
            return True
        gate = self.gate
        prepare = getattr(loop.trainer, "prepare_train_steps", None)
        if prepare is None or not gate.enabled or gate.agree is not None:
            self._ready.add(key)
            return True
        asks = self._asks[key] = self._asks.get(key, 0) + 1
        start = asks >= 2 and self.work_ahead(loop, gate.step_seconds(batch[0])) >= (
            gate.compile_seconds(batch[0]) or 0.0
        )
        if prepare(*batch, start=start):
            self._ready.add(key)
            return True
        return False

    def work_ahead(self, loop: Any, step_seconds: float | None) -> float:
        """Seconds of training ahead, guessed: the run's steps left, or as many as the
        loop trained so far if more (runs tend to be followed by runs), at
        `step_seconds` a step (None: the last call's); infinite while the run's end
        is unknown."""
        step_seconds = step_seconds or self.step_seconds
        if loop.end_step < 0 or step_seconds is None:
            return float("inf")
        return max(loop.end_step - loop.loop_step, loop.loop_step) * step_seconds

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


def _one_by_one(train_step: Any, batch: tuple) -> tuple[list, list]:
    """The steps of a stacked batch, one `train_step` each (their fused call compiles
    meanwhile), all under one Ctrl-C guard as the fused call is: all trained or none.

    Returns:
        The last step's metrics and the batch losses (device scalars), read as a
        fused call's are.
    """
    spec, inputs, labels = batch
    losses = []
    with interrupts.guard():
        for i in range(len(inputs[0])):
            metrics = train_step(spec, [x[i] for x in inputs], [y[i] for y in labels])
            losses.append(metrics[0])
    return metrics, losses
