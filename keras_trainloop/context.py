"""Context: scoped layers, variables and hyperparameters, as GoMLX's context.

A `Context` is a view (a scope) over one shared store. `ctx.in_scope("a")`
returns another view over the same store, so layers, variables and
hyperparameters created through any view are seen by all of them.

Layers and variables are owned by a Keras layer inside the store
(`ctx.keras_layer`), which the Trainer's model tracks: whatever a `model_fn`
creates through the context shows up in `trainer.model.summary()`,
`save_weights()` and `load_weights()`.

While a step is traced, one `TraceState` is installed on the store
(`ctx.tracing(state)`, for the duration of the trace): it is what
`ctx.training`, `ctx.global_step` and `ktl.add_loss` read and write. Outside
a trace an idle state stands in (not training; the global step from the
reader its Trainer binds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras

from keras_trainloop._describe import short_repr

SCOPE_SEPARATOR = "/"
ROOT_SCOPE = "/"


class _ContextLayer(keras.layers.Layer):
    """Owns the layers and variables created through a Context."""

    def __init__(self, name: str = "context", **kwargs):
        super().__init__(name=name, **kwargs)
        self.built = True
        # Tracked containers: Keras tracks layers and variables put in them.
        self.scoped_layers = {}
        self.scoped_variables = {}

    def call(self, *args, **kwargs):  # pragma: no cover - never called as a layer
        raise TypeError("The context layer only owns variables; it is not callable.")


class TraceState:
    """What a `model_fn` sees while one step is traced.

    Attributes:
        training: whether the train step is traced.
        global_step: the step counter (a traced scalar inside a compiled
            step); None reads the Context's bound step reader.
        spec: the dataset spec of the batch.
        losses: the terms `ktl.add_loss` adds during this trace.
    """

    def __init__(self, *, training: bool = False, global_step: Any = None, spec: Any = None):
        self.training = bool(training)
        self.global_step = global_step
        self.spec = spec
        self.losses: list[Any] = []

    def with_training(self, training: bool) -> TraceState:
        """A copy with another `training` flag that adds to the same loss terms."""
        state = TraceState(training=training, global_step=self.global_step, spec=self.spec)
        state.losses = self.losses
        return state


def _no_step() -> int:
    return 0


class _Store:
    """State shared by all scopes of one Context."""

    def __init__(self):
        self.params: dict[str, dict[str, Any]] = {}
        self.layer = _ContextLayer()
        self.idle = TraceState()
        self.trace: TraceState | None = None
        self.step_reader: Callable[[], int] = _no_step
        self.per_step_update_fns: dict[str, tuple[Context, Callable[[Context], None]]] = {}


def _join(scope: str, name: str) -> str:
    return scope + name if scope.endswith(SCOPE_SEPARATOR) else scope + SCOPE_SEPARATOR + name


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or SCOPE_SEPARATOR in name:
        raise ValueError(
            f"A {kind} name must be a non-empty string without {SCOPE_SEPARATOR!r}. "
            f"Received: name={name!r}. Fix: use ctx.in_scope(...) to nest names."
        )


class Context:
    """Scoped variables, layers and hyperparameters for a `model_fn`.

    Example:
        ctx = ktl.Context()
        ctx.set_param("hidden", 128)
        dense = ctx.in_scope("mlp").layer("dense", lambda: keras.layers.Dense(128))
    """

    def __init__(self, *, _store: _Store | None = None, _scope: str = ROOT_SCOPE):
        self._store = _store if _store is not None else _Store()
        self._scope = _scope

    # Scopes ---------------------------------------------------------------
    @property
    def scope(self) -> str:
        """The current scope, e.g. "/" or "/a/b"."""
        return self._scope

    def in_scope(self, name: str) -> Context:
        """Returns a view of the same store nested into scope `name`."""
        _check_name("scope", name)
        return Context(_store=self._store, _scope=_join(self._scope, name))

    def root(self) -> Context:
        """The root scope of the same store (this context itself if it is the root)."""
        return self if self._scope == ROOT_SCOPE else Context(_store=self._store)

    def _key(self, name: str) -> str:
        return _join(self._scope, name)

    # Layers and variables -------------------------------------------------
    @property
    def keras_layer(self) -> keras.layers.Layer:
        """The Keras layer that owns everything created through this context."""
        return self._store.layer

    def layer(self, name: str, factory: Callable[[], keras.layers.Layer]) -> keras.layers.Layer:
        """Returns the layer `name` of this scope, created by `factory()` on first use.

        Args:
            name: name of the layer within the current scope.
            factory: called with no arguments the first time; must return a
                `keras.layers.Layer`.

        Returns:
            The same layer instance for every call with this scope and name.

        Raises:
            TypeError: `factory` did not return a Keras layer.
        """
        _check_name("layer", name)
        key = self._key(name)
        layers = self._store.layer.scoped_layers
        if key not in layers:
            if not callable(factory):
                raise TypeError(
                    f"ctx.layer() expects a factory: a callable returning a keras Layer. "
                    f"Received: factory={factory!r} for layer {key!r}. Fix: pass a function, "
                    "e.g. ctx.layer(name, lambda: keras.layers.Dense(10))."
                )
            created = factory()
            if not isinstance(created, keras.layers.Layer):
                raise TypeError(
                    f"The factory for layer {key!r} must return a keras.layers.Layer. "
                    f"Received: {short_repr(created)}. Fix: return a layer instance, e.g. "
                    "lambda: keras.layers.Dense(10)."
                )
            layers[key] = created
        return layers[key]

    def variable(
        self,
        name: str,
        shape,
        initializer: Any = "glorot_uniform",
        dtype: str = "float32",
        trainable: bool = True,
    ) -> keras.Variable:
        """Returns the variable `name` of this scope, created on first use.

        Raises:
            ValueError: an existing variable is requested with another shape.
        """
        _check_name("variable", name)
        key = self._key(name)
        variables = self._store.layer.scoped_variables
        shape = tuple(int(d) for d in shape)
        if key in variables:
            existing = variables[key]
            if tuple(existing.shape) != shape:
                raise ValueError(
                    f"Variable {key!r} already exists with shape {tuple(existing.shape)}. "
                    f"Received: shape={shape}. Fix: use another name or scope for a new variable."
                )
            return existing
        created = self._store.layer.add_weight(
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            trainable=trainable,
            name=name,
        )
        variables[key] = created
        return created

    def named_variables(self) -> dict[str, keras.Variable]:
        """Every variable created through this context's store, by scoped name.

        A layer's variables are named after the layer's key and the
        variable's path inside the layer (`"/mlp/dense/kernel"`); a variable
        of `ctx.variable` by its key (`"/w"`). The names do not depend on the
        unique names Keras gives layers per process.
        """
        named: dict[str, keras.Variable] = {}
        owner = self._store.layer
        for key, layer in owner.scoped_layers.items():
            prefix = f"{layer.name}/"
            for variable in layer.variables:
                path = str(variable.path)
                relative = path.rsplit(prefix, 1)[-1] if prefix in path else variable.name
                named[f"{key}/{relative}"] = variable
        named.update(owner.scoped_variables)
        return named

    # Hyperparameters ------------------------------------------------------
    def set_param(self, key: str, value: Any) -> Context:
        """Sets hyperparameter `key` in the current scope; returns self."""
        _check_name("parameter", key)
        self._store.params.setdefault(self._scope, {})[key] = value
        return self

    def get_param(self, key: str, default: Any = None) -> Any:
        """Looks `key` up in the current scope, then its parents up to the root."""
        scope = self._scope
        while True:
            values = self._store.params.get(scope)
            if values is not None and key in values:
                return values[key]
            if scope == ROOT_SCOPE:
                return default
            scope = scope.rsplit(SCOPE_SEPARATOR, 1)[0] or ROOT_SCOPE

    def params(self) -> dict[str, dict[str, Any]]:
        """A copy of all hyperparameters: scope -> {key: value}."""
        return {scope: dict(values) for scope, values in self._store.params.items()}

    # Training state -------------------------------------------------------
    @property
    def trace(self) -> TraceState:
        """The state of the step being traced; outside a trace, the idle state."""
        trace = self._store.trace
        return trace if trace is not None else self._store.idle

    @contextlib.contextmanager
    def tracing(self, state: TraceState) -> Iterator[TraceState]:
        """Installs `state` as the trace state of this store while the block runs."""
        previous = self._store.trace
        self._store.trace = state
        try:
            yield state
        finally:
            self._store.trace = previous

    def bind_global_step(self, reader: Callable[[], int]) -> None:
        """Sets what `global_step` reads outside a trace (the Trainer binds its own)."""
        self._store.step_reader = reader

    @property
    def training(self) -> bool:
        """True while the train step is traced."""
        return self.trace.training

    @property
    def global_step(self) -> Any:
        """The step counter: a traced scalar inside the compiled step, an int outside."""
        step = self.trace.global_step
        return self._store.step_reader() if step is None else step

    @property
    def per_step_update_fns(self) -> list[tuple[Context, Callable[[Context], None]]]:
        """The functions registered with `ktl.add_per_step_update_fn`: (context, fn) pairs."""
        return list(self._store.per_step_update_fns.values())

    def set_per_step_update_fn(self, fn: Callable[[Context], None]) -> None:
        """Registers `fn` as this scope's per-step update (replacing an earlier one)."""
        self._store.per_step_update_fns[self._scope] = (self, fn)

    def __repr__(self) -> str:
        return f"Context(scope={self._scope!r})"
