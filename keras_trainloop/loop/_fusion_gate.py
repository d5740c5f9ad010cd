"""FusionGate: fused steps are kept only where they measured faster than single steps.

A fused call (`lax.scan` over stacked batches) removes per-step dispatch, but
XLA may compile a scan's body worse than the single step (on XLA:CPU the
convolutions of a scan body missed the fast convolution path: 20x slower).
So for each dataset spec the loop measures, once, on its first calls:

1. `PROBE_SINGLE` single steps after the first (which compiles), each waited on;
2. `PROBE_FUSED` fused calls of 2 steps after the first (which compiles), each
   waited on (2 steps: a bad scan costs little while it is measured; a call
   clearly slower than `EARLY_NO` single steps ends the probe at once);

and keeps fusion for the spec only if a fused step costs no more than a
single step (the medians; `TOLERANCE`). The decision holds for
the loop's later runs. While probing, the loop waits on the device after each
probed call (a few calls per spec). Durations are passed in (`record`), so
tests inject them; the gate reads no clock.

With several processes fusion is off anyway (`trainer.can_fuse_steps`), so
the gate's decisions, which depend on local timings, never need to agree
across processes.
"""

from __future__ import annotations

import statistics
from typing import Any

PROBE_SINGLE = 3
"""Timed single steps per spec (after the first, which compiles)."""

PROBE_FUSED = 3
"""Timed fused calls per spec (after the first of their size, which compiles)."""

EARLY_NO = 1.5
"""A timed fused step costing more than this times a single step drops fusion at once."""

PROBE_CALL_STEPS = 2
"""The size of the fused calls while probing."""

TOLERANCE = 1.0
"""A fused step is kept if it costs at most this times a single step."""


def _key(spec: Any) -> Any:
    try:
        hash(spec)
    except TypeError:
        return repr(spec)
    return spec


class _Probe:
    """What was measured for one spec, and the decision once made."""

    __slots__ = ("compiled", "decided", "fused", "keep", "single")

    def __init__(self) -> None:
        self.single: list[float] = []  # seconds per single step
        self.fused: list[float] = []  # seconds per step of fused calls
        self.compiled: set[int] = set()  # call sizes whose first (compiling) call ran
        self.decided = False
        self.keep = True


class FusionGate:
    """Per spec: probing (single steps, then fused calls), then fused or not for good.

    Args:
        enabled: False: no probing, fusion always allowed (`decide` is then never
            consulted for timings).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._probes: dict[Any, _Probe] = {}

    def _probe(self, spec: Any) -> _Probe:
        key = _key(spec)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = _Probe()
        return probe

    def cap(self, spec: Any, cap: int) -> int:
        """The most steps a call for `spec` may fuse now (1: single steps).

        A spec not seen yet, or still measuring single steps: 1; measuring
        fused calls: `PROBE_CALL_STEPS`; decided: `cap`, or 1 if fusion did
        not pay.
        """
        if not self.enabled:
            return cap
        probe = self._probes.get(_key(spec))
        if probe is None or (not probe.decided and len(probe.single) < PROBE_SINGLE):
            return 1
        if probe.decided:
            return cap if probe.keep else 1
        return min(cap, PROBE_CALL_STEPS)

    def probing(self, spec: Any) -> bool:
        """Whether calls for `spec` are being timed (the loop then waits on each)."""
        if not self.enabled:
            return False
        return not self._probe(spec).decided

    def record(self, spec: Any, num_steps: int, seconds: float) -> None:
        """A call of `num_steps` steps for `spec` took `seconds`, waited on (while probing)."""
        if not self.enabled:
            return
        probe = self._probe(spec)
        if probe.decided:
            return
        if num_steps not in probe.compiled:
            probe.compiled.add(num_steps)  # Its first call compiled: not timed.
            return
        if num_steps == 1:
            if len(probe.single) < PROBE_SINGLE:
                probe.single.append(seconds)
            return
        probe.fused.append(seconds / num_steps)
        single = statistics.median(probe.single)
        if probe.fused[-1] > single * EARLY_NO:
            probe.keep, probe.decided = False, True
        elif len(probe.fused) >= PROBE_FUSED:
            probe.keep = statistics.median(probe.fused) <= single * TOLERANCE
            probe.decided = True

    def decisions(self) -> dict[Any, bool | None]:
        """Per spec seen: True (fused kept), False (single steps), None (still probing)."""
        return {key: (p.keep if p.decided else None) for key, p in self._probes.items()}

    def planned_caps(self) -> list[int]:
        """The caps of a run's first calls while it probes (for `loop.plan`); then the loop's.

        For a loop that saw no spec: the whole probe; for one spec still
        probing: what is left of it; else (decided, or several specs) none.
        """
        if not self.enabled:
            return []
        fused_calls = [PROBE_CALL_STEPS] * (PROBE_FUSED + 1)  # The first compiles.
        if not self._probes:
            return [1] * (PROBE_SINGLE + 1) + fused_calls
        if len(self._probes) > 1:
            return []
        probe = next(iter(self._probes.values()))
        if probe.decided:
            return []
        singles = max(0, PROBE_SINGLE - len(probe.single))
        timed = len(probe.fused) + (PROBE_CALL_STEPS in probe.compiled)
        return [1] * singles + fused_calls[min(timed, len(fused_calls)):]

    def dropped_fusion(self) -> bool:
        """Whether every spec seen was decided against fusion (the plan then uses cap 1)."""
        return bool(self._probes) and all(p.decided and not p.keep
                                          for p in self._probes.values())
