"""Placement: where a Trainer's state and batches live, and how its steps are jitted.

One policy, fixed at the trainer's first step: one device as given (nothing
placed, no cost per step), one chosen device (`in_device`), or a Keras
distribution (the `distribution` argument, else the global one then
active), which lays the state out per variable, replicates metric states,
splits each batch over the data axis and jits the steps with those
shardings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import keras

from keras_trainloop.trainer import _distribution as distribution_lib


def _device_and_distribution_error(device_num: Any, distribution: Any) -> ValueError:
    return ValueError(
        "in_device() runs the steps on one device, so it cannot be used while a "
        "keras.distribution places this trainer's variables and batches. Received: "
        f"device_num={device_num!r} under {distribution_lib.describe(distribution)}. Fix: "
        "to use some devices only, list them in the distribution (e.g. "
        "keras.distribution.DataParallel(devices=['gpu:0', 'gpu:1'])); to run on one "
        "device, create and run the Trainer with no distribution set "
        "(keras.distribution.set_distribution(None)) and call in_device() then."
    )


def _check_no_distributed_variables(groups: Sequence[list]) -> None:
    """Variables already spread over devices need a distribution for the steps too."""
    for group in groups:
        for variable in group:
            devices = getattr(variable.value, "sharding", None)
            if devices is not None and len(devices.device_set) > 1:
                raise ValueError(
                    "No keras.distribution is active at this trainer's first step, but "
                    "variables were created under one: the steps would mix arrays on one "
                    f"device with arrays on {len(devices.device_set)} devices. Received: "
                    f"variable {variable.path!r} with sharding {devices}. Fix: pass "
                    "Trainer(..., distribution=...), or keep the distribution set (or its "
                    "scope open) while training."
                )


def _warn_unmatched_layouts(distribution: Any, variable_groups: Sequence[list]) -> None:
    model_variables = [v for group in variable_groups[:2] for v in group]
    unmatched = distribution_lib.unmatched_layout_patterns(distribution, model_variables)
    if unmatched:
        paths = ", ".join(str(v.path) for v in model_variables[:8])
        warnings.warn(
            f"LayoutMap key(s) {unmatched} match no variable of this model, so the variables "
            f"they were meant for are replicated. The variable paths are: {paths}"
            f"{', ...' if len(model_variables) > 8 else ''}. Fix: write keys as regular "
            "expressions over those paths (Keras matches them with re.fullmatch), e.g. "
            "'.*dense.*kernel'.",
            stacklevel=5,
        )


class Placement:
    """The placement policy of one Trainer.

    Attributes:
        fixed: whether the first step fixed the policy.
        replicated: the sharding of metric states and values (None: as given).
        state_shardings: the variables' shardings under a distribution, else None.
        put_batch: `put_batch(spec, inputs, labels)` placing a batch, or None
            when batches are used as given.
    """

    def __init__(self, explicit: distribution_lib.Distribution | None):
        self._explicit = distribution_lib.check_distribution(explicit)
        self.fixed = False
        self._distribution: distribution_lib.Distribution | None = None
        self.device: Any = None
        self.replicated: Any = None
        self.state_shardings: tuple[list, list, list] | None = None
        self.put_batch: Callable[[Any, list, list], tuple[list, list]] | None = None
        self._last_sharder: Any = None

    @property
    def distribution(self) -> distribution_lib.Distribution | None:
        """The fixed distribution; before the first step, the one that would be fixed now."""
        if self.fixed:
            return self._distribution
        if self._explicit is not None:
            return self._explicit
        return keras.distribution.distribution()

    @property
    def explicit(self) -> distribution_lib.Distribution | None:
        """The `distribution` argument, used as the scope where objects are created."""
        return self._explicit

    @property
    def can_fuse(self) -> bool:
        """Whether fused steps can run: always. With several processes each passes its part
        of the stacked batches (`BatchSharder.stacked`), and the Loop makes its call sizes
        agree across the processes (loop/_agreement.py)."""
        return True

    def _sharder(self, distribution: distribution_lib.Distribution) -> Any:
        """The `BatchSharder` of `distribution` (one kept, so its shardings are computed once)."""
        sharder = self._last_sharder
        if sharder is None or sharder.distribution is not distribution:
            sharder = self._last_sharder = distribution_lib.BatchSharder(distribution)
        return sharder

    def put_ahead(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        """Places a batch where the steps read it, ahead of its step (device prefetching).

        Under a distribution: split over its data axis (with several processes, global
        arrays made from this process's part, so the step reads nothing back); on the
        `in_device` device; else on the default device. Before the first step fixes the
        policy, the one it would fix now. The step then finds the batch in place.
        """
        put = self.put_batch
        if not self.fixed:
            distribution = self.distribution
            if distribution is not None:
                put = self._sharder(distribution)
        if put is None:
            return jax.device_put((inputs, labels))
        return put(spec, inputs, labels)

    def in_device(self, device_num: Any) -> None:
        """Runs the steps on `jax.local_devices()[device_num]`: this process's (checked first)."""
        distribution = self.distribution
        if distribution is not None:
            raise _device_and_distribution_error(device_num, distribution)
        devices = jax.local_devices()
        if not isinstance(device_num, int) or not 0 <= device_num < len(devices):
            raise ValueError(
                f"device_num must be in [0, {len(devices)}) for this process's devices "
                f"{[str(d) for d in devices]}. Received: device_num={device_num!r}. Fix: "
                "pass an index of jax.local_devices()."
            )
        self.device = devices[device_num]
        self.put_batch = self._put_on_device

    def _put_on_device(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        del spec
        return jax.device_put((inputs, labels), self.device)

    def fix(self, variable_groups: Sequence[list]) -> None:
        """Fixes the distribution (the argument, else the global one) at the first step."""
        distribution = self._explicit
        if distribution is None:
            distribution = keras.distribution.distribution()
        if distribution is not None and self.device is not None:
            raise _device_and_distribution_error(self.device.id, distribution)
        if distribution is None:
            _check_no_distributed_variables(variable_groups)
        self.fixed = True
        self._distribution = distribution
        if distribution is not None:
            self.replicated = distribution_lib.replicated(distribution)
            self.put_batch = self._sharder(distribution)

    def update_state_shardings(self, variable_groups: Sequence[list]) -> bool:
        """Takes the variables' shardings; True when their layout changed (re-jit needed)."""
        shardings = tuple(
            distribution_lib.variable_shardings(self._distribution, group)
            for group in variable_groups
        )
        old = self.state_shardings
        if old is None:
            _warn_unmatched_layouts(self._distribution, variable_groups)
        self.state_shardings = shardings
        return old is not None and [len(g) for g in old] != [len(g) for g in shardings]

    def place_state(self, values: tuple[list, list, list]) -> tuple[list, list, list]:
        """Puts pulled variable values where the steps expect them."""
        if self.state_shardings is not None:
            return jax.device_put(values, self.state_shardings)
        if self.device is not None:
            return jax.device_put(values, self.device)
        return values

    def put_stacked(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        """Places stacked batches (the stacking axis is not split)."""
        if self._distribution is not None:
            return self.put_batch.stacked(spec, inputs, labels)
        if self.put_batch is not None:
            return self.put_batch(spec, inputs, labels)
        return inputs, labels

    def out_shardings(self, kind: str) -> Any:
        """The output shardings of a `"train"`, `"eval"` or `"fused"` step function."""
        replicated = self.replicated
        if kind == "train":
            return (self.state_shardings, replicated), replicated
        if kind == "fused":
            return (self.state_shardings, replicated), replicated, replicated
        return replicated, replicated

    def jit(self, fn: Callable, donate: tuple, kind: str) -> Callable:
        """`jax.jit(fn)`; under a distribution, traced in its scope with its shardings."""
        distribution = self._distribution
        if distribution is None:
            return jax.jit(fn, donate_argnums=donate)

        def scoped_fn(*args):
            # Traced under the distribution, for layers that ask it for tensor layouts.
            with distribution_lib.scope(distribution):
                return fn(*args)

        return jax.jit(scoped_fn, donate_argnums=donate, out_shardings=self.out_shardings(kind))
