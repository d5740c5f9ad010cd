"""The Trainer's state behind Keras' own JAX state protocol.

Keras' JAX trainer keeps the training state outside the model while `fit`
runs and publishes it as `model._jax_state`; `model.jax_state_sync()` (which
every `keras.callbacks.Callback.model` read calls) writes it into the
variables. The Trainer does the same with the user's own model (or its
`FnModel`): while it holds the state it sets `model._jax_state` to a
`LiveState`, whose first read by `jax_state_sync()` writes the Trainer's
current state into the variables (`Trainer._sync_to_model`), and clears it
again once the variables own the state. Arming and disarming happen when the
Trainer takes or hands back the state, never per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LiveState:
    """Stands in `model._jax_state` while a Trainer holds the model's state.

    Keras' `jax_state_sync()` asks it for the values to assign; it performs
    the Trainer's own sync instead (which assigns every variable, the
    optimizer's included) and gives Keras nothing more to assign.
    """

    __slots__ = ("_sync",)

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync

    def __bool__(self) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> Any:
        del key
        self._sync()
        return default


def arm(model: Any, state: LiveState) -> None:
    """Marks `model` as not holding its current state (the Trainer does)."""
    # object.__setattr__: no Keras attribute tracking for these bookkeeping fields.
    object.__setattr__(model, "_jax_state", state)
    object.__setattr__(model, "_jax_state_synced", False)


def disarm(model: Any) -> None:
    """Marks `model`'s variables as holding its current state.

    `_jax_state` becomes an empty dict, not None: `jax_state_sync()` may be
    in the middle of reading it (the `LiveState` disarms from there).
    """
    object.__setattr__(model, "_jax_state", {})
    object.__setattr__(model, "_jax_state_synced", True)
