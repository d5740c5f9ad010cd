"""The Trainer's state behind Keras' own JAX state protocol, held once.

Keras' JAX trainer keeps the training state outside the model while `fit`
runs and publishes it as `model._jax_state`; `model.jax_state_sync()` (which
every `keras.callbacks.Callback.model` read calls) writes it into the
variables. The Trainer does the same with the user's own model (or its
`FnModel`): while it holds the state it sets `model._jax_state` to a
`LiveState`, whose first read by `jax_state_sync()` writes the Trainer's
current state into the variables (`Trainer._sync_to_model`), and clears it
again once the variables own the state. Arming and disarming happen when the
Trainer takes or hands back the state, never per step.

While the Trainer holds the state, the variables hold nothing (their arrays
are the state the step donates, as Keras' `fit` purges them), so the state is
in memory once. A variable read in that time (`variable.value`,
`np.asarray(variable)`, `get_weights()`, `assign`) first hands the state back
(`own` gives the variables a subclass whose `value` and `assign` do that), so
code holding a reference to a model or a variable always reads current values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Keras exports only the class (keras.StatelessScope); these two readers have no public name.
from keras.src.backend.common.stateless_scope import get_stateless_scope, in_stateless_scope


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


class _HeldElsewhere:
    """Mixed into a variable's class while the Trainer holds its value (see `own`)."""

    @property
    def value(self):
        if self._value is None and not _mapped(self):
            _sync_back(self)
            return self.value  # Of its own class again.
        return super().value

    def assign(self, value):
        if self._value is None and not in_stateless_scope():
            _sync_back(self)
            return self.assign(value)
        return super().assign(value)


def _mapped(variable: Any) -> bool:
    """Whether a stateless scope gives `variable` a value (inside the Trainer's steps)."""
    return in_stateless_scope() and get_stateless_scope().get_current_value(variable) is not None


def _sync_back(variable: Any) -> None:
    variable._ktl_sync()
    if isinstance(variable, _HeldElsewhere):
        raise RuntimeError(  # noqa: TRY004 (a state error, not a bad argument)
            f"Variable {variable.path!r} is held by a Trainer that did not hand it back. "
            "Fix: read trainer.model before using its variables elsewhere."
        )


_held_classes: dict[type, type] = {}


def _held_class(cls: type) -> type:
    held = _held_classes.get(cls)
    if held is None:
        held = _held_classes[cls] = type(f"Held{cls.__name__}", (_HeldElsewhere, cls), {})
        held._ktl_original_class = cls
    return held


def own(variables: Iterable[Any], sync: Callable[[], None]) -> list:
    """Takes the variables' arrays (no copy) and leaves them empty; returns the arrays.

    Until `release`, reading or assigning one of them calls `sync` first,
    which must `release` them and assign them their current values.
    """
    values = []
    for variable in variables:
        values.append(variable.value)
        variable._ktl_sync = sync
        variable._value = None
        variable.__class__ = _held_class(type(variable))
    return values


def release(variables: Iterable[Any]) -> None:
    """Gives the variables their own class back (they are assigned values next)."""
    for variable in variables:
        original = getattr(type(variable), "_ktl_original_class", None)
        if original is not None:
            variable.__class__ = original
            del variable._ktl_sync
