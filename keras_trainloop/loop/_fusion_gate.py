"""FusionGate: fused steps are kept only where they measured faster than single steps.

A fused call (`lax.scan` over stacked batches) removes per-step dispatch, but
XLA may compile a scan's body worse than the single step (on XLA:CPU the
convolutions of a scan body missed the fast convolution path: 20x slower).
So for each dataset spec the loop measures, once, on its first calls (each
waited on; a call of a size not compiled yet is not timed):

1. `HOST_CHECK_SINGLE` single steps after the first. Fusion removes the
   host's work per step, no more: when dispatching a step takes under
   `MIN_HOST_SHARE` of its whole time (a compute-bound model), the gate
   decides against fusion here, before compiling any fused call.
2. Then fused calls of `PROBE_CALL_STEPS` steps (a bad scan costs little
   while measured) alternating with single steps, so that load drifting on
   the machine hits both alike, until there are `PROBE_FUSED` fused and
   `PROBE_SINGLE` single timings (two fused calls over `EARLY_NO` times a
   single step end it at once).

Fusion is kept for the spec if the fastest fused step costs no more than the
fastest single step (noise only adds time; `TOLERANCE`). The decision holds
for the loop's later runs. Durations are passed in (`record`), so tests
inject them; the gate reads no clock. A `GateProbe` is one chunk of steps'
use of the gate: the cap of each call from the spec of the one before, and
which calls to time.

With several processes the timings differ from process to process, but the
decision must not (a fused call and single steps run different collectives):
there the loop sets `agree` (loop/_agreement.py), and the gate decides only at
fixed points of the probe, which every process reaches at the same call: after
`HOST_CHECK_SINGLE` single steps (the compute-bound check), at the second timed
fused call (the early no), and once `PROBE_FUSED` fused and `PROBE_SINGLE` single
timings were taken; there process 0's verdict is every process's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras_trainloop._specs import spec_key

HOST_CHECK_SINGLE = 2
"""Timed single steps before any fused call (the compute-bound check)."""

PROBE_SINGLE = 5
"""Timed single steps per spec (after the first, which compiles)."""

PROBE_FUSED = 5
"""Timed fused calls per spec (after the first of their size, which compiles)."""

EARLY_NO = 3.0
"""Two timed fused calls costing more than this times a single step drop fusion at once.
It is there for a scan body XLA compiled badly (20-30x a single step), not for noise: a
run's first calls are often 2x slower than later ones (allocations, compile threads)."""

PROBE_CALL_STEPS = 2
"""The size of the fused calls while probing."""

MIN_HOST_SHARE = 0.05
"""Below this share of host dispatch time in a single step, fusion is not even tried."""

TOLERANCE = 1.0
"""A fused step is kept if it costs at most this times a single step."""


def _next_size(singles: int, fused: int, compiled: set[int]) -> int:
    """The probe's next call size from what it timed so far (one rule for run and plan)."""
    if 1 not in compiled or singles < HOST_CHECK_SINGLE:
        return 1
    if PROBE_CALL_STEPS not in compiled:
        return PROBE_CALL_STEPS
    if fused >= PROBE_FUSED:
        return 1
    if singles >= PROBE_SINGLE:
        return PROBE_CALL_STEPS
    return 1 if singles - HOST_CHECK_SINGLE < fused else PROBE_CALL_STEPS


class _Probe:
    """What was measured for one spec, and the decision once made."""

    __slots__ = ("compiled", "decided", "first", "fused", "host", "keep", "label", "single")

    def __init__(self) -> None:
        self.single: list[float] = []  # seconds per single step
        self.host: list[float] = []  # of which the host's dispatch
        self.fused: list[float] = []  # seconds per step of fused calls
        self.compiled: set[int] = set()  # call sizes whose first (compiling) call ran
        self.decided = False
        self.keep = True
        self.label: Any = None  # The spec, or its repr if unhashable (`decisions`' key).
        self.first: float | None = None  # Seconds of the first single step (it compiled).


def _at_host_check(probe: _Probe) -> bool:
    """Whether the single steps timed so far are the compute-bound check's."""
    return not probe.fused and len(probe.single) == len(probe.host) == HOST_CHECK_SINGLE


def _verdict(probe: _Probe) -> bool | None:
    """The decision the timings so far make: True keep, False drop, None measure on."""
    if not probe.fused:
        if _at_host_check(probe):
            share = min(probe.host) / max(min(probe.single), 1e-12)
            if share < MIN_HOST_SHARE:  # Compute-bound: nothing for fusion to remove.
                return False
        return None
    single, fused = min(probe.single), min(probe.fused)
    if len(probe.fused) >= 2 and fused > single * EARLY_NO:
        return False
    if len(probe.fused) >= PROBE_FUSED and len(probe.single) >= PROBE_SINGLE:
        return fused <= single * TOLERANCE
    return None


def _at_fixed_point(probe: _Probe, num_steps: int) -> bool:
    """Whether this timing is one where all processes decide together (see the module docs)."""
    if num_steps == 1 and _at_host_check(probe):
        return True
    if num_steps > 1 and len(probe.fused) == 2:
        return True
    return len(probe.fused) >= PROBE_FUSED and len(probe.single) >= PROBE_SINGLE


class FusionGate:
    """Per spec: probing (single steps, then fused calls), then fused or not for good.

    Args:
        enabled: False: no probing, fusion always allowed (`decide` is then never
            consulted for timings).

    Attributes:
        agree: None (one process: decide from the local timings), or
            `agree(verdict) -> verdict`, process 0's verdict on every process,
            asked at the probe's fixed points only (set by loop/_agreement.py).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.agree: Callable[[bool | None], bool | None] | None = None
        self._probes: dict[Any, _Probe] = {}

    def _probe(self, spec: Any) -> _Probe:
        key = spec_key(spec)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = _Probe()
            probe.label = spec if key is spec else repr(spec)
        return probe

    def cap(self, spec: Any, cap: int) -> int:
        """The most steps a call for `spec` may fuse now (1: single steps).

        A spec not seen yet, or measuring: the probe's next call size (1 or
        `PROBE_CALL_STEPS`); decided: `cap`, or 1 if fusion did not pay.
        """
        if not self.enabled:
            return cap
        probe = self._probes.get(spec_key(spec))
        if probe is None:
            return 1
        if probe.decided:
            return cap if probe.keep else 1
        return min(cap, _next_size(len(probe.single), len(probe.fused), probe.compiled))

    def probing(self, spec: Any) -> bool:
        """Whether calls for `spec` are being timed (the loop then waits on each)."""
        if not self.enabled:
            return False
        return not self._probe(spec).decided

    def record(
        self, spec: Any, num_steps: int, seconds: float, host_seconds: float | None = None
    ) -> None:
        """A call of `num_steps` steps for `spec` took `seconds`, waited on (while probing).

        `host_seconds`: for a single step, how long its dispatch kept the host
        (the call returning, before the device finished); None: not measured.
        """
        if not self.enabled:
            return
        probe = self._probe(spec)
        if probe.decided:
            return
        if num_steps not in probe.compiled:
            probe.compiled.add(num_steps)  # Its first call compiled: not timed.
            if num_steps == 1:
                probe.first = seconds
            return
        if num_steps == 1:
            probe.single.append(seconds)
            if host_seconds is not None:
                probe.host.append(host_seconds)
        else:
            probe.fused.append(seconds / num_steps)
        agree = self.agree
        if agree is not None and not _at_fixed_point(probe, num_steps):
            return
        verdict = _verdict(probe) if agree is None else agree(_verdict(probe))
        if verdict is not None:
            probe.keep, probe.decided = verdict, True

    def compile_seconds(self, spec: Any) -> float | None:
        """How long the first single step for `spec` took, its compile included (None:
        not timed): what compiling a fused call of it about costs."""
        probe = self._probes.get(spec_key(spec))
        return None if probe is None else probe.first

    def step_seconds(self, spec: Any) -> float | None:
        """The fastest timed single step for `spec` (None: none timed yet)."""
        probe = self._probes.get(spec_key(spec))
        return min(probe.single) if probe is not None and probe.single else None

    def decisions(self) -> dict[Any, bool | None]:
        """Per spec seen: True (fused kept), False (single steps), None (still probing)."""
        return {p.label: (p.keep if p.decided else None) for p in self._probes.values()}

    def planned_caps(self) -> list[int]:
        """The caps of a run's first calls while it probes (for `loop.plan`); then the loop's.

        For a loop that saw no spec: the whole probe; for one spec still
        probing: what is left of it (assuming no early decision); else none.
        """
        if not self.enabled or len(self._probes) > 1:
            return []
        probe = next(iter(self._probes.values()), None) or _Probe()
        if probe.decided:
            return []
        singles, fused, compiled = len(probe.single), len(probe.fused), set(probe.compiled)
        caps = []
        while singles < PROBE_SINGLE or fused < PROBE_FUSED:
            size = _next_size(singles, fused, compiled)
            caps.append(size)
            if size not in compiled:
                compiled.add(size)
            elif size == 1:
                singles += 1
            else:
                fused += 1
        return caps

    def dropped_fusion(self) -> bool:
        """Whether every spec seen was decided against fusion (the plan then uses cap 1)."""
        return bool(self._probes) and all(p.decided and not p.keep for p in self._probes.values())


class GateProbe:
    """One chunk of steps' use of a `FusionGate`: each call's cap, and which calls to time.

    The cap of a call comes from the spec of the call before it (the loop
    keeps that across chunks and runs). A spec the gate has decided is
    settled for the rest of the chunk: its cap is kept, with no gate lookup
    per call, and its calls are not timed.

    Args:
        gate: the loop's gate; None (steps that cannot fuse) or a disabled gate:
            every call may fuse up to `cap` and nothing is timed.
        cap: the loop's `max_fused_steps`.

    Attributes:
        active: whether the gate is consulted at all.
        settled: the last spec found decided. The dispatch of a call after one
            for another spec is timed (the gate may measure it); the step loop
            reads `active` and `settled` itself, on its hot path.
    """

    __slots__ = ("_cap", "_gate", "_settled_cap", "active", "settled")

    def __init__(self, gate: FusionGate | None, cap: int):
        self._gate = gate if gate is not None and gate.enabled else None
        self._cap = cap
        self._settled_cap = cap
        self.active = self._gate is not None
        self.settled: Any = _NOT_SETTLED

    def call_cap(self, last_spec: Any) -> int:
        """The most steps the next call may fuse, after a call for `last_spec`."""
        gate = self._gate
        if gate is None:
            return self._cap
        if last_spec is self.settled:
            return self._settled_cap
        return gate.cap(last_spec, self._cap)

    def measures(self, spec: Any) -> bool:
        """Whether the call just dispatched for `spec` is measured (wait on it, then `record`).

        A spec the gate decided becomes the settled one.
        """
        gate = self._gate
        if gate is None or spec is self.settled:
            return False
        if gate.probing(spec):
            return True
        self.settled, self._settled_cap = spec, gate.cap(spec, self._cap)
        return False

    def record(self, spec: Any, num_steps: int, seconds: float, host_seconds: float | None) -> None:
        """See `FusionGate.record`."""
        self._gate.record(spec, num_steps, seconds, host_seconds)


_NOT_SETTLED = object()
