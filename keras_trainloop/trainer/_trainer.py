"""Trainer: a `model_fn` and a `loss_fn` turned into compiled train and eval steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras.src.backend.common.stateless_scope import StatelessScope

from keras_trainloop import losses as losses_lib
from keras_trainloop import metrics as metrics_lib
from keras_trainloop import optimizers as optimizers_lib
from keras_trainloop.context import Context
from keras_trainloop.trainer import _distribution as distribution_lib
from keras_trainloop.trainer import _keras_state
from keras_trainloop.trainer._cache import Executor, ExecutorCache, GraphType
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._model_losses import get_losses

_EVAL_SYNC_EVERY = 16

DEFAULT_MAX_EXECUTORS = 20
"""Default `trainer.max_executors`, read when a Trainer is constructed (as in GoMLX)."""


def _default_max_executors() -> int:
    import keras_trainloop

    # Users may set ktl.DEFAULT_MAX_EXECUTORS; the package attribute wins.
    return int(getattr(keras_trainloop, "DEFAULT_MAX_EXECUTORS", DEFAULT_MAX_EXECUTORS))


def _copy_shared_arrays(groups: tuple[list, ...]) -> None:
    """Replaces each array already seen in `groups` by a copy (in place)."""
    seen: set[int] = set()
    for group in groups:
        for i, array in enumerate(group):
            if id(array) in seen:
                group[i] = jnp.copy(array)
            seen.add(id(group[i]))


def _as_array_list(kind: str, values: Any, spec: Any) -> list:
    if values is None:
        return []
    if isinstance(values, (list, tuple)):
        return list(values)
    if isinstance(values, dict):
        raise TypeError(
            f"{kind} must be a list of arrays. Received: a dict for spec={spec!r}. "
            "Fix: pass list(d.values()) and use the spec to name them."
        )
    return [values]


def _call_model(model: keras.Model, spec: Any, inputs: list, training: bool) -> list:
    """Calls the model on a batch's inputs; returns its predictions as a list.

    An `FnModel` gets the list (and the spec); a user's Keras model gets one
    input as is and several as a list, as `fit` would pass them.
    """
    if isinstance(model, FnModel):
        model._spec = spec
        outputs = keras.Model.__call__(model, inputs, training=training)  # No sync: traced.
    else:
        outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=training)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


_CONVOLUTIONS = frozenset({"conv_general_dilated"})


def _uses_convolution(jaxpr: Any) -> bool:
    """Whether `jaxpr` (or any jaxpr nested in it: pjit, custom_vjp, cond...) convolves."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _CONVOLUTIONS:
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns") and _uses_convolution(inner):
                    return True
    return False


def _check_max_executors(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"max_executors must be a positive int. Received: max_executors={value!r}."
        )
    return value


def _keras_names(metric: Any) -> tuple[str, ...]:
    """A user metric's log names: the one Keras gives it, then its short name if different."""
    keras_name = getattr(metric, "keras_name", None) or metric.name
    return (keras_name,) if metric.short_name == keras_name else (keras_name, metric.short_name)


def _named(names: list[tuple[str, ...]], values: Sequence[Any]) -> dict[str, Any]:
    """`{name: value}` for each value under each of its names; scalars as Python floats."""
    logs: dict[str, Any] = {}
    for value_names, value in zip(names, jax.device_get(list(values))):
        value = np.asarray(value)
        value = float(value.reshape(())) if value.size == 1 else value
        for name in value_names:
            logs.setdefault(name, value)
    return logs


def _loss_metrics(mean_kind: str) -> tuple[Any, Any]:
    """The two loss entries GoMLX puts first: loss+regularization, and loss_fn alone."""
    if mean_kind == "train":
        return (
            metrics_lib.MovingAverageMetric(
                "Moving Average Loss+Regularization", "~loss+", "loss", None
            ),
            metrics_lib.MovingAverageMetric("Moving Average Loss", "~loss", "loss", None),
        )
    return (
        metrics_lib.MeanMetric("Mean Loss+Regularization", "#loss+", "loss", None),
        metrics_lib.MeanMetric("Mean Loss", "#loss", "loss", None),
    )


def _update_metrics(metrics, mstates, loss_values, labels, predictions) -> tuple[list, list]:
    """Updates the metric states inside a step: loss entries first, then the user's.

    The loss entries accumulate the given loss values (weighted by the batch
    size); the others compute theirs from labels and predictions.
    """
    batch_size = predictions[0].shape[0] if predictions[0].ndim else 1
    n_loss = len(loss_values)
    new_mstates, values = [], []
    for metric, state, value in zip(metrics[:n_loss], mstates[:n_loss], loss_values):
        state, result = metric.accumulate(state, value, batch_size)
        new_mstates.append(state)
        values.append(result)
    for metric, state in zip(metrics[n_loss:], mstates[n_loss:]):
        state, result = metric.update(state, labels, predictions)
        new_mstates.append(state)
        values.append(result)
    return new_mstates, values


class Trainer:
    """Compiles and runs train and eval steps of a model built from plain functions.

    Args:
        model_fn: `model_fn(ctx, spec, inputs: list) -> list` of predictions (a
            single array is wrapped), or a `keras.Layer`/`keras.Model` called
            on the inputs (one input as is, several as a list). A
            `keras.Model` (Functional, Sequential or subclassed) is used as
            is: `trainer.model is model_fn`, its `optimizer` is set to this
            trainer's, and its variables hold the trained weights whenever
            they are read through Keras' JAX state protocol (a callback's
            `.model`, `trainer.model`) and after every run.
        loss_fn: `loss_fn(labels: list, predictions: list) -> array`
            (mean-reduced if not scalar), a `keras.losses.Loss`, a Keras loss
            name, or None to optimize only `ktl.add_loss` terms.
        optimizer: a `keras.optimizers.Optimizer` or a Keras optimizer name.
        train_metrics: metrics reported by `train_step` after the loss entries
            (moving averages recommended): `ktl.metrics` objects, Keras
            metrics or names, or functions `fn(labels, predictions)`.
        eval_metrics: metrics reported by `eval_step`/`eval` after the loss
            entries (means recommended).
        context: the Context holding variables and hyperparameters; a new one
            when None.
        max_executors: the most compiled executors (train and eval together);
            None reads `ktl.DEFAULT_MAX_EXECUTORS` (20).
        distribution: a Keras distribution for this trainer
            (`keras.distribution.DataParallel`, or `ModelParallel` with a
            `LayoutMap`); None (the default) uses the global one
            (`keras.distribution.distribution()`). See "Multiple devices".

    Multiple devices:
        The trainer runs under the `distribution` argument when given (it
        takes precedence), else under the global distribution active at its
        first step (`keras.distribution.set_distribution(...)`, or inside
        `with distribution.scope():`); it is fixed from then on and is used as
        the scope when the variables, the optimizer and the metrics are
        created. The variables, the optimizer state and the metric states are
        laid out as the distribution says (replicated by `DataParallel`, split
        per the `LayoutMap` by `ModelParallel`; metric states replicated) and
        keep that layout across steps. Each batch is split over the data axis
        with one `jax.device_put`; its size must be a multiple of the number
        of data-parallel devices (else a `ValueError`, before the step runs).
        With several processes (`jax.distributed.initialize()`), each process
        passes its own part of the global batch, as with Keras' `fit`.
        `in_device()` is refused under a distribution. Without one nothing
        changes: one device, no extra work per step. On simulated CPU devices,
        a loop of your own over `train_step` must wait on a result (e.g.
        `jax.block_until_ready(metrics)`) every 16 steps or so: XLA's CPU
        all-reduce deadlocks with more steps in flight (`ktl.Loop` does it).

    Example:
        def model_fn(ctx, spec, inputs):
            x = ctx.layer("hidden", lambda: keras.layers.Dense(64, "relu"))(inputs[0])
            return [ctx.layer("logits", lambda: keras.layers.Dense(10))(x)]

        trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits,
                              "adam", eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()])
        metrics = trainer.train_step(None, [x_batch], [y_batch])
    """

    def __init__(
        self,
        model_fn: Callable | keras.layers.Layer,
        loss_fn: Any,
        optimizer: Any,
        train_metrics: Sequence[Any] | None = None,
        eval_metrics: Sequence[Any] | None = None,
        *,
        context: Context | None = None,
        max_executors: int | None = None,
        distribution: distribution_lib.Distribution | None = None,
    ):
        if not (callable(model_fn) or isinstance(model_fn, keras.layers.Layer)):
            raise TypeError(
                "model_fn must be a function model_fn(ctx, spec, inputs) or a keras Layer/Model. "
                f"Received: model_fn={model_fn!r}."
            )
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"context must be a ktl.Context. Received: context={context!r}.")
        if max_executors is not None:
            _check_max_executors(max_executors)
        self._explicit_distribution = distribution_lib.check_distribution(distribution)
        self._loss_fn = losses_lib.as_loss_fn(loss_fn)
        with distribution_lib.scope(distribution):
            self.optimizer = optimizers_lib.get(optimizer)
            user_train = [metrics_lib.as_metric(m) for m in (train_metrics or [])]
            user_eval = [metrics_lib.as_metric(m) for m in (eval_metrics or [])]

        batch_loss = metrics_lib.BatchMetric("Batch Loss+Regularization", "batch_loss", "loss", None)
        train_total, train_loss = _loss_metrics("train")
        eval_total, eval_loss = _loss_metrics("eval")
        has_loss = self._loss_fn is not None
        self._train_metrics = [batch_loss, train_total] + ([train_loss] if has_loss else [])
        self._train_metrics += user_train
        self._eval_metrics = [eval_total] + ([eval_loss] if has_loss else []) + user_eval
        self._num_train_loss_metrics = 3 if has_loss else 2
        self._num_eval_loss_metrics = 2 if has_loss else 1
        self._train_log_names, self._eval_log_names = self._log_names()

        self._context = context if context is not None else Context()
        self._model_fn = model_fn
        self._live_state = _keras_state.LiveState(self._sync_to_model)
        self._model = self._new_model()
        self._cache = ExecutorCache(_default_max_executors())
        if max_executors is not None:
            self.max_executors = max_executors
        self._device = None

        # Placement, fixed at the first step: the distribution (None: one device), the
        # shardings of the state, and the function that places each batch (None: as given).
        self._placement_fixed = False
        self._distribution: distribution_lib.Distribution | None = None
        self._state_shardings: tuple[list, list, list] | None = None
        self._replicated = None
        self._metric_templates: dict[int, list] = {}
        self._last_train: tuple[Any, Executor | None] = (None, None)
        self._put_batch: Callable[[Any, list, list], tuple[list, list]] | None = None

        # State: variable values while training (None: the Keras variables hold them).
        self._vars: tuple[list, list, list] | None = None
        self._var_refs: tuple[list, list, list] | None = None
        self._iterations_index = -1
        self._train_mstates = None
        self._eval_mstates = None
        self.reset_train_metrics()
        self._reset_eval_metrics()

    # Construction helpers -------------------------------------------------
    def _new_model(self) -> keras.Model:
        """The user's `keras.Model` itself, or an `FnModel` around a function or layer."""
        if isinstance(self._model_fn, keras.Model):
            model = self._model_fn
        else:
            model = FnModel(self._model_fn, self._context)
        model.optimizer = self.optimizer
        self._context._store.global_step = lambda: self.global_step
        return model

    # Public properties ------------------------------------------------------
    @property
    def model(self) -> keras.Model:
        """The `keras.Model`, with the current weights (synced on every read)."""
        self._sync_to_model()
        return self._model

    @property
    def context(self) -> Context:
        return self._context

    def set_context(self, ctx: Context) -> Trainer:
        """Uses `ctx` for the model's variables and hyperparameters; returns self.

        Raises:
            ValueError: a step already ran (the model's variables exist).
        """
        if not isinstance(ctx, Context):
            raise TypeError(f"set_context() expects a ktl.Context. Received: ctx={ctx!r}.")
        if len(self._cache):
            raise ValueError(
                "set_context() must be called before the first train or eval step: this "
                f"trainer already compiled {len(self._cache)} executor(s). "
                "Fix: create a new Trainer with context=ctx."
            )
        self._context = ctx
        self._model = self._new_model()
        return self

    @property
    def max_executors(self) -> int:
        return self._cache.max_executors

    @max_executors.setter
    def max_executors(self, value: int) -> None:
        self._cache.max_executors = _check_max_executors(value)

    @property
    def train_metrics(self) -> list:
        """Metric objects for `train_step`'s values, loss entries first."""
        return list(self._train_metrics)

    @property
    def eval_metrics(self) -> list:
        """Metric objects for `eval_step`/`eval`'s values, loss entries first."""
        return list(self._eval_metrics)

    @property
    def metrics(self) -> list:
        """The eval metrics (GoMLX's Trainer.Metrics)."""
        return self.eval_metrics

    @property
    def global_step(self) -> int:
        """The optimizer's iteration count (reads the device)."""
        if self._vars is not None:
            return int(self._vars[2][self._iterations_index])
        return int(self.optimizer.iterations.value)

    def on_exec_creation(self, handler: Callable[[Executor, GraphType], None]) -> None:
        """Registers `handler(executor, graph_type)`, called for each new executor.

        It runs after the model's and optimizer's variables exist and before
        the executor's first step; values assigned to those variables then are
        used by that step.
        """
        self._cache.on_creation(handler)

    @property
    def distribution(self) -> distribution_lib.Distribution | None:
        """The `keras.distribution` this trainer runs under; None: one device.

        The `distribution` argument if given, else the global distribution
        active at the first step (before it: the one active now).
        """
        if self._placement_fixed:
            return self._distribution
        if self._explicit_distribution is not None:
            return self._explicit_distribution
        return keras.distribution.distribution()

    def in_device(self, device_num: int) -> Trainer:
        """Runs the steps on `jax.devices()[device_num]`; returns self.

        Raises:
            ValueError: `device_num` is not a device of this machine, or a
                `keras.distribution` places this trainer's state and batches.
        """
        distribution = self.distribution
        if distribution is not None:
            raise self._device_and_distribution_error(device_num, distribution)
        devices = jax.devices()
        if not isinstance(device_num, int) or not 0 <= device_num < len(devices):
            raise ValueError(
                f"device_num must be in [0, {len(devices)}) for this machine's devices "
                f"{[str(d) for d in devices]}. Received: device_num={device_num!r}."
            )
        self._sync_to_model()
        self._device = devices[device_num]
        self._put_batch = self._put_on_device
        return self

    @staticmethod
    def _device_and_distribution_error(
        device_num: Any, distribution: distribution_lib.Distribution
    ) -> ValueError:
        return ValueError(
            "in_device() runs the steps on one device, so it cannot be used while a "
            "keras.distribution places this trainer's variables and batches. Received: "
            f"device_num={device_num!r} under {distribution_lib.describe(distribution)}. Fix: "
            "to use some devices only, list them in the distribution (e.g. "
            "keras.distribution.DataParallel(devices=['gpu:0', 'gpu:1'])); to run on one "
            "device, create and run the Trainer with no distribution set "
            "(keras.distribution.set_distribution(None)) and call in_device() then."
        )

    def reset_train_metrics(self) -> None:
        """Resets the train metrics (moving averages start over)."""
        self._train_mstates = self._new_metric_states(self._train_metrics)

    def _reset_eval_metrics(self) -> None:
        self._eval_mstates = self._new_metric_states(self._eval_metrics)

    def _new_metric_states(self, metrics: list) -> list:
        """Fresh metric states: one device_put of host templates made once per metric list.

        Each leaf gets its own buffer (the steps donate them).
        """
        key = id(metrics)
        template = self._metric_templates.get(key)
        if template is None:
            template = jax.device_get([m.init_state() for m in metrics])
            self._metric_templates[key] = template
        return jax.device_put(template, self._replicated)

    def _put_on_device(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        del spec
        return jax.device_put((inputs, labels), self._device)

    # State sync -------------------------------------------------------------
    def _all_variables(self) -> tuple[list, list, list]:
        return (
            list(self._model.trainable_variables),
            list(self._model.non_trainable_variables),
            list(self.optimizer.variables),
        )

    def _sync_to_model(self) -> None:
        """Writes the training state into the Keras variables; they own it afterwards."""
        if self._vars is None:
            return
        values, self._vars = self._vars, None
        for refs in self._var_refs:
            _keras_state.release(refs)
        for refs, group in zip(self._var_refs, values):
            for ref, value in zip(refs, group):
                ref.assign(value)
        _keras_state.disarm(self._model)

    def _pull_from_model(self) -> None:
        """Takes the state from the Keras variables, which hold nothing meanwhile.

        No copy: the arrays are donated by the next step, so the state is held
        once (as `fit` does); a read of a variable syncs it back first.
        """
        refs = self._all_variables()
        values = tuple(_keras_state.own(group, self._sync_to_model) for group in refs)
        _copy_shared_arrays(values)  # A buffer may be donated once only.
        if self._state_shardings is not None:
            values = jax.device_put(values, self._state_shardings)
        elif self._device is not None:
            values = jax.device_put(values, self._device)
        self._vars = values
        self._var_refs = refs
        self._iterations_index = next(
            i for i, v in enumerate(refs[2]) if v is self.optimizer.iterations
        )
        _keras_state.arm(self._model, self._live_state)

    # Executors ---------------------------------------------------------------
    def _executor(self, graph_type: GraphType, spec: Any, inputs: list, labels: list) -> Executor:
        executor = self._cache.get(graph_type, spec)
        if executor is None:
            executor = self._create_executor(graph_type, spec, inputs, labels)
        elif len(inputs) != executor.num_inputs or len(labels) != executor.num_labels:
            raise ValueError(
                f"The number of inputs and labels must stay the same for one spec. "
                f"spec={spec!r} was compiled with {executor.num_inputs} input(s) and "
                f"{executor.num_labels} label(s). Received: {len(inputs)} input(s) and "
                f"{len(labels)} label(s). Fix: yield a different spec for differently "
                "structured batches."
            )
        for x in inputs:
            if x is None:
                raise ValueError(
                    f"Inputs may not be None. Received: inputs with a None entry for "
                    f"spec={spec!r} ({len(inputs)} input(s), {len(labels)} label(s))."
                )
        return executor

    def _create_executor(
        self, graph_type: GraphType, spec: Any, inputs: list, labels: list
    ) -> Executor:
        if not inputs:
            raise ValueError(
                f"At least one input is required. Received: 0 inputs and {len(labels)} "
                f"label(s) for spec={spec!r}."
            )
        if any(x is None for x in inputs):
            raise ValueError(
                f"Inputs may not be None. Received: inputs with a None entry for spec={spec!r} "
                f"({len(inputs)} input(s), {len(labels)} label(s))."
            )
        self._cache.check_room(graph_type, spec)
        if not self._placement_fixed:
            self._fix_placement()
        if self._distribution is not None:
            # Checks the batch size and builds on a sharded batch, before anything runs.
            inputs, labels = self._put_batch(spec, inputs, labels)
        self._build(graph_type, spec, inputs)
        executor = Executor(spec, graph_type, len(inputs), len(labels))
        self._jit(executor)
        self._cache.add(executor)
        return executor

    def _fix_placement(self) -> None:
        """Fixes the distribution (the argument, else the global one) at the first step."""
        distribution = self._explicit_distribution
        if distribution is None:
            distribution = keras.distribution.distribution()
        if distribution is not None and self._device is not None:
            raise self._device_and_distribution_error(self._device.id, distribution)
        if distribution is None:
            self._check_no_distributed_variables()
        self._placement_fixed = True
        self._distribution = distribution
        if distribution is None:
            return
        self._replicated = distribution_lib.replicated(distribution)
        self._put_batch = distribution_lib.BatchSharder(distribution)
        self._train_mstates = jax.device_put(self._train_mstates, self._replicated)
        self._eval_mstates = jax.device_put(self._eval_mstates, self._replicated)

    def _check_no_distributed_variables(self) -> None:
        """Variables already spread over devices need a distribution for the steps too."""
        for group in self._all_variables():
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

    def _jit(self, executor: Executor) -> None:
        """Sets `executor.fn`: the step jitted with the state's shardings, if distributed."""
        train = executor.graph_type is GraphType.TRAIN
        step_fn = self._make_train_fn(executor) if train else self._make_eval_fn(executor)

        def fn(*args):
            executor.trace_count += 1
            return step_fn(*args)

        executor.fused_fns.clear()
        replicated = self._replicated
        # Metric states and values are replicated; the variables keep their layouts.
        out_shardings = (
            ((self._state_shardings, replicated), replicated) if train
            else (replicated, replicated)
        )
        executor.fn = self._jit_fn(fn, (0, 1) if train else (1,), out_shardings)

    def _jit_fn(self, fn: Callable, donate: tuple, out_shardings: Any) -> Callable:
        """`jax.jit(fn)`; under a distribution, traced in its scope with `out_shardings`."""
        distribution = self._distribution
        if distribution is None:
            return jax.jit(fn, donate_argnums=donate)

        def scoped_fn(*args):
            # Traced under the distribution, for layers that ask it for tensor layouts.
            with distribution_lib.scope(distribution):
                return fn(*args)

        return jax.jit(scoped_fn, donate_argnums=donate, out_shardings=out_shardings)

    def _build(self, graph_type: GraphType, spec: Any, inputs: list) -> None:
        """Creates the variables a new spec needs with one eager call, outside jit."""
        self._sync_to_model()
        store = self._context._store
        model = self._model
        had_trainable = len(model.trainable_variables)
        optimizer_built = self.optimizer.built
        distribution = self._distribution
        # A built Keras model of the user's has all its variables: no call needed (it would
        # hold a full batch of activations in memory for nothing).
        needs_call = isinstance(model, FnModel) or not model.built
        with distribution_lib.scope(distribution):
            try:
                # Stateless: the call only creates variables; its updates (BatchNorm
                # statistics, dropout seeds) are dropped, as a symbolic build would.
                if needs_call:
                    with StatelessScope():
                        _call_model(model, spec, inputs, graph_type is GraphType.TRAIN)
            finally:
                store.losses = []
            if graph_type is GraphType.TRAIN and not model.trainable_variables:
                raise ValueError(
                    f"model_fn={self._model_fn!r} has no trainable variable to train "
                    f"(0 trainable variables for spec={spec!r}): the layers it calls were "
                    "not created through the context, so nothing tracks them. Fix: create "
                    "layers inside model_fn with ctx.layer(name, lambda: keras.layers...) "
                    "(variables with ctx.variable), or pass the keras.Model itself as "
                    "model_fn."
                )
            if optimizer_built and len(model.trainable_variables) != had_trainable:
                raise ValueError(
                    f"spec={spec!r} created new trainable variables after the optimizer was "
                    f"built ({had_trainable} -> {len(model.trainable_variables)}). Fix: create "
                    "all variables on the first spec (e.g. call every branch of model_fn once)."
                )
            if not optimizer_built:
                self.optimizer.build(model.trainable_variables)
        if distribution is not None:
            self._update_state_shardings()

    def _update_state_shardings(self) -> None:
        """The variables' shardings; steps compiled for other variables are jitted anew."""
        refs = self._all_variables()
        shardings = tuple(
            distribution_lib.variable_shardings(self._distribution, group) for group in refs
        )
        old = self._state_shardings
        self._state_shardings = shardings
        if old is not None and [len(g) for g in old] != [len(g) for g in shardings]:
            for executor in self._cache.executors():
                self._jit(executor)

    # Step functions ------------------------------------------------------------
    def _forward(self, spec, tv, ntv, inputs, training: bool, step):
        """Runs model_fn statelessly; returns predictions, new non-trainables, extra losses."""
        store = self._context._store
        model = self._model
        refs_t, refs_n, _ = self._var_refs
        mapping = list(zip(refs_t, tv)) + list(zip(refs_n, ntv))
        store.losses = []
        store.global_step = step
        try:
            with StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                predictions = _call_model(model, spec, inputs, training)
                layer_losses = list(model.losses)
            extra = get_losses(self._context)
        finally:
            store.losses = []
            store.global_step = lambda: self.global_step
        new_ntv = [scope.get_current_value(v) for v in refs_n]
        for term in layer_losses:
            extra = term if extra is None else extra + term
        return predictions, new_ntv, extra

    def _losses(self, spec, labels, predictions, extra):
        loss = None
        if self._loss_fn is not None:
            loss = jnp.mean(jnp.asarray(self._loss_fn(labels, predictions)))
        if loss is None and extra is None:
            raise ValueError(
                f"Nothing to optimize for spec={spec!r}: loss_fn is None and model_fn added "
                "no loss with ktl.add_loss(). Fix: pass a loss_fn or call ktl.add_loss(ctx, ...)."
            )
        total = loss if extra is None else (extra if loss is None else loss + extra)
        return total, loss

    def _make_train_fn(self, executor: Executor):
        spec = executor.spec
        metrics = self._train_metrics
        n_loss = self._num_train_loss_metrics

        def train_fn(variables, mstates, inputs, labels):
            tv, ntv, ov = variables
            step = ov[self._iterations_index]

            def loss_and_aux(trainable):
                predictions, new_ntv, extra = self._forward(spec, trainable, ntv, inputs, True, step)
                total, loss = self._losses(spec, labels, predictions, extra)
                return total, (predictions, new_ntv, loss)

            (total, (predictions, new_ntv, loss)), grads = jax.value_and_grad(
                loss_and_aux, has_aux=True
            )(tv)
            new_tv, new_ov = self.optimizer.stateless_apply(ov, grads, tv)
            new_tv, new_ntv = self._per_step_updates(new_tv, new_ntv, step)

            new_mstates, values = _update_metrics(
                metrics, mstates, [total, total, loss][:n_loss], labels, predictions
            )
            return ((list(new_tv), list(new_ntv), list(new_ov)), new_mstates), values

        return train_fn

    def _fused_fn(self, executor: Executor, num_steps: int) -> Callable:
        """The jitted function running `num_steps` train steps in one `lax.scan`.

        It returns the new state, the metric values of the last step and the
        batch losses of all steps (shape `(num_steps,)`).
        """
        fn = executor.fused_fns.get(num_steps)
        if fn is not None:
            return fn
        step_fn = self._make_train_fn(executor)
        executor.fused_trace_counts.setdefault(num_steps, 0)

        def fused_fn(variables, mstates, inputs, labels):
            executor.fused_trace_counts[num_steps] += 1
            # The metric values ride in the carry: stacking them per step as scan outputs
            # cost 15-20 us a step on the CPU (measured on the digits MLP); only the batch
            # losses are stacked.
            first = jax.tree.map(lambda a: a[0], (inputs, labels))
            step_jaxpr, shapes = jax.make_jaxpr(step_fn, return_shape=True)(
                variables, mstates, *first)
            no_values = [jnp.zeros(v.shape, v.dtype) for v in shapes[1]]
            # XLA:CPU compiles convolutions inside a scan's loop body without its fast
            # convolution path (measured 20x slower on a small convnet); unrolled, the
            # body is straight-line code compiled like the single step.
            unroll = bool(_uses_convolution(step_jaxpr.jaxpr)) or 1
            executor.fused_unrolled[num_steps] = unroll is True

            def body(carry, batch):
                state, _ = carry
                state, values = step_fn(*state, *batch)
                return (state, values), values[0]

            (state, values), batch_losses = jax.lax.scan(
                body, ((variables, mstates), no_values), (inputs, labels), unroll=unroll
            )
            return state, values, batch_losses

        replicated = self._replicated
        out_shardings = ((self._state_shardings, replicated), replicated, replicated)
        fn = self._jit_fn(fused_fn, (0, 1), out_shardings)
        executor.fused_fns[num_steps] = fn
        return fn

    def _per_step_updates(self, tv, ntv, step):
        fns = list(self._context._store.per_step_update_fns.values())
        if not fns:
            return tv, ntv
        refs_t, refs_n, _ = self._var_refs
        store = self._context._store
        mapping = list(zip(refs_t, tv)) + list(zip(refs_n, ntv))
        store.global_step = step
        store.training = True
        try:
            with StatelessScope(state_mapping=mapping) as scope:
                for ctx, fn in fns:
                    fn(ctx)
        finally:
            store.training = False
            store.global_step = lambda: self.global_step
        return (
            [scope.get_current_value(v) for v in refs_t],
            [scope.get_current_value(v) for v in refs_n],
        )

    def _make_eval_fn(self, executor: Executor):
        spec = executor.spec
        metrics = self._eval_metrics
        n_loss = self._num_eval_loss_metrics

        def eval_fn(variables, mstates, inputs, labels):
            tv, ntv, ov = variables
            step = ov[self._iterations_index]
            predictions, _, extra = self._forward(spec, tv, ntv, inputs, False, step)
            total, loss = self._losses(spec, labels, predictions, extra)
            return _update_metrics(metrics, mstates, [total, loss][:n_loss], labels, predictions)

        return eval_fn

    # Running -----------------------------------------------------------------
    def train_step(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> list:
        """Runs one train step on a batch; returns metric values as device arrays.

        The values are, in order: the batch loss (loss + regularization), its
        moving average, the moving average of `loss_fn`'s loss alone (when
        `loss_fn` is set), then the train metrics. Nothing is copied to the
        host: read a value (e.g. `float(metrics[0])`) only when needed.

        Raises:
            ValueError: no input, a None input, or input/label counts that
                differ from earlier batches with the same spec; under a
                distribution, a batch size that the data-parallel devices do
                not divide.
        """
        inputs = _as_array_list("inputs", inputs, spec)
        labels = _as_array_list("labels", labels, spec)
        # Fast path for the common case, the same spec object as the last step; anything
        # unusual goes through the full look-up, which raises the errors.
        last_spec, executor = self._last_train
        if (
            spec is not last_spec or executor is None
            or len(inputs) != executor.num_inputs or len(labels) != executor.num_labels
            or any(x is None for x in inputs)
        ):
            executor = self._executor(GraphType.TRAIN, spec, inputs, labels)
            self._last_train = (spec, executor)
        if self._vars is None:
            self._pull_from_model()
        if self._put_batch is not None:
            inputs, labels = self._put_batch(spec, inputs, labels)
        (self._vars, self._train_mstates), values = executor.fn(
            self._vars, self._train_mstates, inputs, labels
        )
        return values

    @property
    def can_fuse_steps(self) -> bool:
        """Whether `train_steps` can run: not with several processes (not supported yet)."""
        return self.distribution is None or jax.process_count() == 1

    def train_steps(
        self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]
    ) -> tuple[list, jax.Array]:
        """Runs several train steps in one compiled call (`lax.scan`) over stacked batches.

        Each array of `inputs` and `labels` holds `n` batches stacked on a new
        leading axis (shape `(n, batch_size, ...)`); the steps are those that
        `n` calls of `train_step` on the batches `x[0]`, `x[1]`, ... would run,
        with the same results. One function is compiled per spec and per `n`,
        so keep `n` to a few values (the Loop uses powers of two).

        Returns:
            `(metrics, batch_losses)`: the metric values of the last step (as
            `train_step` returns them) and the `n` batch losses, a device array
            of shape `(n,)`. Nothing is copied to the host.

        Under a `keras.distribution` each batch is split over the data axis
        as in `train_step` (the stacking axis is not split).

        Raises:
            ValueError: the arrays do not share a leading axis of size >= 1,
                or any error of `train_step` for the first batch; with several
                processes (see `can_fuse_steps`).
        """
        inputs = _as_array_list("inputs", inputs, spec)
        labels = _as_array_list("labels", labels, spec)
        if not self.can_fuse_steps:
            raise ValueError(
                "train_steps() does not run with several processes yet. Received: "
                f"spec={spec!r} on process {jax.process_index()} of {jax.process_count()}. "
                "Fix: call train_step() once per batch (ktl.Loop does so itself when "
                "trainer.can_fuse_steps is False)."
            )
        num_steps = self._stacked_count(spec, inputs, labels)
        executor = self._executor(
            GraphType.TRAIN, spec, [x[0] for x in inputs], [y[0] for y in labels]
        )
        fn = self._fused_fn(executor, num_steps)
        if self._vars is None:
            self._pull_from_model()
        if self._distribution is not None:
            inputs, labels = self._put_batch.stacked(spec, inputs, labels)
        elif self._put_batch is not None:
            inputs, labels = self._put_batch(spec, inputs, labels)
        (self._vars, self._train_mstates), values, batch_losses = fn(
            self._vars, self._train_mstates, inputs, labels
        )
        return values, batch_losses

    @staticmethod
    def _stacked_count(spec: Any, inputs: list, labels: list) -> int:
        """The number of stacked batches: the leading axis shared by every array."""
        shapes = [None if x is None else tuple(getattr(x, "shape", ())) for x in inputs + labels]
        leading = {shape[0] if shape else None for shape in shapes}
        if len(leading) != 1 or None in leading or min(leading) < 1:
            raise ValueError(
                "train_steps() expects every input and label stacked on a leading axis of "
                f"the same size n >= 1 (shape (n, batch_size, ...)). Received: spec={spec!r} "
                f"with shapes {shapes}. Fix: stack n batches with np.stack, or call "
                "train_step() for a single batch."
            )
        return int(leading.pop())

    def eval_step(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> list:
        """Runs one eval step; returns the eval metrics accumulated so far.

        The values are the mean loss + regularization, the mean `loss_fn` loss
        (when set), then the eval metrics, all since the last reset (see `eval`).
        """
        inputs = _as_array_list("inputs", inputs, spec)
        labels = _as_array_list("labels", labels, spec)
        executor = self._executor(GraphType.EVAL, spec, inputs, labels)
        if self._vars is None:
            self._pull_from_model()
        if self._put_batch is not None:
            inputs, labels = self._put_batch(spec, inputs, labels)
        self._eval_mstates, values = executor.fn(self._vars, self._eval_mstates, inputs, labels)
        return values

    def eval(self, ds: Any, *, return_dict: bool = False) -> list | dict[str, Any]:
        """Evaluates the model on a finite dataset; returns the eval metric values.

        Resets `ds` and the eval metrics first. Waits on the device every
        `_EVAL_SYNC_EVERY` batches, which bounds the steps in flight (as the
        Loop does for training; too many in flight can deadlock XLA's CPU
        all-reduce on multiple devices).

        Args:
            ds: a finite `ktl.Dataset`.
            return_dict: False: the list of values (device arrays), in the
                order of `eval_metrics`. True: `{name: value}` as
                `model.evaluate(..., return_dict=True)` gives it: `"loss"`
                (loss + regularization), then each eval metric under the
                name Keras gives it (`metric.keras_name`, e.g. `"accuracy"`);
                scalars as Python floats.

        Raises:
            ValueError: `ds` yielded no batch.
        """
        ds.reset()
        self._reset_eval_metrics()
        values = None
        batches = 0
        while True:
            try:
                spec, inputs, labels = ds.yield_batch()
            except EOFError:
                break
            values = self.eval_step(spec, inputs, labels)
            batches += 1
            if batches % _EVAL_SYNC_EVERY == 0:
                jax.block_until_ready(values)
        if values is None:
            raise ValueError(
                f"Dataset {getattr(ds, 'name', ds)!r} yielded no batch to evaluate. "
                "Fix: check that it is not empty and that reset() starts a new pass."
            )
        if return_dict:
            return self.eval_logs(values)
        return values

    # Keras-shaped names ----------------------------------------------------------
    def train_logs(self, values: Sequence[Any]) -> dict[str, Any]:
        """`train_step`'s values by name, as Keras logs (one host transfer).

        The loss entries appear under their short names (`"batch_loss"`,
        `"~loss+"`, `"~loss"`), each train metric under the name Keras gives
        it (`metric.keras_name`, e.g. `"accuracy"`) and under its short name.
        Scalars are Python floats. The Loop adds `"loss"`, the running mean
        of the batch loss, as `fit` does.
        """
        return _named(self._train_log_names, values)

    def eval_logs(self, values: Sequence[Any]) -> dict[str, Any]:
        """`eval`'s values by name, as `model.evaluate(return_dict=True)` names them."""
        return _named(self._eval_log_names, values)

    def _log_names(self) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        """The log names of each train and each eval value (fixed with the metrics)."""
        n_train, n_eval = self._num_train_loss_metrics, self._num_eval_loss_metrics
        train = [(m.short_name,) for m in self._train_metrics[:n_train]]
        train += [_keras_names(m) for m in self._train_metrics[n_train:]]
        evals = [("loss",)] + [()] * (n_eval - 1)
        evals += [_keras_names(m)[:1] for m in self._eval_metrics[n_eval:]]
        return train, evals

    # Keras' run protocol ------------------------------------------------------
    @property
    def built(self) -> bool:
        """Whether the model's variables exist (`trainer.model.built`)."""
        return bool(self._model.built)

    def build(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> None:
        """Creates the model's and the optimizer's variables for a batch; compiles nothing.

        The first `train_step` does this itself; call it to have a built
        model before training (Keras' `BackupAndRestore` needs one at
        `on_train_begin`; the Loop does it when asked to, see
        `Loop.request_built_model`). Nothing is trained.

        Raises:
            ValueError: the errors of `train_step` for this batch.
        """
        inputs = _as_array_list("inputs", inputs, spec)
        labels = _as_array_list("labels", labels, spec)
        self._executor(GraphType.TRAIN, spec, inputs, labels)

    def finalize(self) -> None:
        """Ends a run as `fit` does: the Keras variables get the state, EMA weights applied.

        Writes the trained state into the model's variables and, for an
        optimizer with `use_ema=True`, sets the trainable variables to their
        moving averages (`optimizer.finalize_variable_values`); the next step
        continues from those values.
        """
        self._sync_to_model()
        if self.optimizer.built and getattr(self.optimizer, "use_ema", False):
            self.optimizer.finalize_variable_values(self._model.trainable_variables)
