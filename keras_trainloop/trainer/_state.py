"""The training state, held once: variable values while a run owns them, else Keras'.

`TrainState.pull` takes the values of the model's and the optimizer's
variables without a copy (the steps donate them) and arms Keras' JAX state
protocol on the model, so any read of the model or a variable writes them
back first (`sync`); the steps then replace `values` with their results.
Between runs, and whenever someone reads, the Keras variables own the values
and `values` is None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from keras_trainloop.trainer import _interrupts as interrupts
from keras_trainloop.trainer import _keras_state

Groups = tuple[list, list, list]
"""Trainable, non-trainable and optimizer variables (or their values), in that order."""


def _copy_shared_arrays(groups: Groups) -> None:
    """Replaces each array already seen in `groups` by a copy (in place)."""
    seen: set[int] = set()
    for group in groups:
        for i, array in enumerate(group):
            if id(array) in seen:
                group[i] = jnp.copy(array)
            seen.add(id(group[i]))


class TrainState:
    """The values of one model's and optimizer's variables while a run owns them.

    Attributes:
        values: `(trainable, non_trainable, optimizer)` value lists, or None
            while the Keras variables hold them.
        refs: the Keras variables those values belong to (same layout).
        iterations_index: the position of `optimizer.iterations` in
            `refs[2]`.
        train_mstates, eval_mstates: the train and eval metric states (the
            steps donate and return them).
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer):
        self.model = model
        self.optimizer = optimizer
        self.values: Groups | None = None
        self.refs: Groups | None = None
        self.iterations_index = -1
        self.train_mstates: list | None = None
        self.eval_mstates: list | None = None
        self._live = _keras_state.LiveState(self.sync)

    def variables(self) -> Groups:
        """The Keras variables, as the steps see them."""
        return (
            list(self.model.trainable_variables),
            list(self.model.non_trainable_variables),
            list(self.optimizer.variables),
        )

    def refs_and_step_index(self) -> tuple[Groups, int]:
        """What the step functions map their values to (read while tracing)."""
        return self.refs, self.iterations_index

    @property
    def global_step(self) -> int:
        """The optimizer's iteration count (reads the device, syncs nothing)."""
        if self.values is not None:
            return int(self.values[2][self.iterations_index])
        return int(self.optimizer.iterations.value)

    def sync(self) -> None:
        """Writes the values into the Keras variables; they own them afterwards."""
        if self.values is None:
            return
        with interrupts.guard():  # Half synced, the values would be in neither place.
            values, self.values = self.values, None
            for refs in self.refs:
                _keras_state.release(refs)
            for refs, group in zip(self.refs, values):
                for ref, value in zip(refs, group):
                    ref.assign(value)
            _keras_state.disarm(self.model)

    def pull(self, place: Callable[[Groups], Groups] | None) -> None:
        """Takes the values from the Keras variables, which hold nothing meanwhile.

        No copy: the arrays are donated by the next step, so the state is
        held once (as `fit` does); a read of a variable syncs it back first.
        `place` puts the values where the steps expect them (None: as they are).
        """
        refs = self.variables()
        with interrupts.guard():  # Half pulled, some variables would hold nothing.
            values = tuple(_keras_state.own(group, self.sync) for group in refs)
            _copy_shared_arrays(values)  # A buffer may be donated once only.
            self.values = place(values) if place is not None else values
            self.refs = refs
            self.iterations_index = next(
                i for i, v in enumerate(refs[2]) if v is self.optimizer.iterations
            )
            _keras_state.arm(self.model, self._live)

    def ensure_pulled(self, place: Callable[[Groups], Groups] | None) -> Groups:
        """The values, pulled from the Keras variables first if they hold them."""
        if self.values is None:
            self.pull(place)
        return self.values

    # The steps: each donates the state it is given, so its results replace it before a
    # deferred Ctrl-C may surface (see `_interrupts`).
    def train(self, fn: Callable, inputs: list, labels: list) -> list:
        """Runs a jitted train step on the state; returns its metric values."""
        interrupts.enter()
        try:
            (self.values, self.train_mstates), values = fn(
                self.values, self.train_mstates, inputs, labels
            )
        finally:
            interrupts.leave()
        return values

    def train_fused(self, fn: Callable, inputs: list, labels: list) -> tuple[list, Any]:
        """Runs a jitted fused train step; returns the last values and the batch losses."""
        with interrupts.guard():
            (self.values, self.train_mstates), values, batch_losses = fn(
                self.values, self.train_mstates, inputs, labels
            )
        return values, batch_losses

    def eval(self, fn: Callable, inputs: list, labels: list) -> list:
        """Runs a jitted eval step on the state; returns the metric values so far."""
        with interrupts.guard():
            self.eval_mstates, values = fn(self.values, self.eval_mstates, inputs, labels)
        return values

    def place_metric_states(self, sharding: Any) -> None:
        """Lays the metric states out with `sharding` (None: as they are)."""
        if sharding is not None:
            self.train_mstates = jax.device_put(self.train_mstates, sharding)
            self.eval_mstates = jax.device_put(self.eval_mstates, sharding)

    def finalize(self) -> None:
        """Syncs, then lets the optimizer finalize the weights, as `fit` ends: EMA weights
        with `use_ema=True`, also inside a `LossScaleOptimizer` (it asks its inner one)."""
        self.sync()
        if self.optimizer.built:
            self.optimizer.finalize_variable_values(self.model.trainable_variables)
