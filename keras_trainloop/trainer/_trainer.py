"""Trainer: a `model_fn` and a `loss_fn` turned into compiled train and eval steps.

The facade over the trainer's parts: `_metric_set` (the values a step
returns, by name), `_state` (the state pytree, held once, synced to and from
the Keras variables), `_placement` (one device, `in_device`, or a
distribution; jit with shardings), `_steps` (the pure step maths and their
fusion), `_executors` (a spec's compiled steps, its variables created by
`_build`) and `_cache` (one executor per spec, with the limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import keras

from keras_trainloop import losses as losses_lib
from keras_trainloop import optimizers as optimizers_lib
from keras_trainloop.context import Context
from keras_trainloop.data import Dataset
from keras_trainloop.trainer import _cache as cache_lib
from keras_trainloop.trainer import _distribution as distribution_lib
from keras_trainloop.trainer import _inputs
from keras_trainloop.trainer._cache import Executor, ExecutorCache, GraphType
from keras_trainloop.trainer._evaluate import evaluate
from keras_trainloop.trainer._executors import StepCompiler
from keras_trainloop.trainer._keras_compile import compile_like_trainer
from keras_trainloop.trainer._metric_set import metric_sets
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._placement import Placement
from keras_trainloop.trainer._state import TrainState
from keras_trainloop.trainer._steps import StepMaths

_EVAL_SYNC_EVERY = 16


def _loss_scaled(optimizer: keras.optimizers.Optimizer, model_fn: Any) -> Any:
    """`optimizer` in a `LossScaleOptimizer` under the "mixed_float16" policy, as `fit` wraps it."""
    policy = getattr(model_fn, "dtype_policy", None) or keras.config.dtype_policy()
    if policy.name != "mixed_float16" or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


class Trainer:
    """Compiles and runs train and eval steps of a model built from plain functions.

    Args:
        model_fn: `model_fn(ctx, spec, inputs: list) -> list` of predictions (a
            single array is wrapped), or a `keras.Layer`/`keras.Model` called
            on the inputs (one input as is, several as a list; a functional
            model built on a dict of named inputs gets a dict, matched by
            the keys of the data's dict `x`, which the spec holds). A
            `keras.Model` (Functional, Sequential or subclassed) is used as
            is: `trainer.model is model_fn`, its `optimizer` is set to this
            trainer's, and its variables hold the trained weights whenever
            they are read through Keras' JAX state protocol (a callback's
            `.model`, `trainer.model`) and after every run. If it is not
            compiled, it is compiled with this trainer's optimizer and its
            Keras loss and metrics, so that a `.keras` file saved from it
            (`ModelCheckpoint`) loads compiled, as one saved during `fit`.
        loss_fn: `loss_fn(labels: list, predictions: list) -> array`
            (mean-reduced if not scalar), a `keras.losses.Loss`, a Keras loss
            name, or None to optimize only `ktl.add_loss` terms. With a Keras
            model of several outputs (a list), a Keras loss applies to each
            output and its label and the losses are summed, as `fit` does (a
            sample weight may follow the labels); a list of losses, one per
            output (None for an output without one), is summed as `compile`
            sums it; dict outputs are refused (labels are positional: build
            the model with a list of outputs).
        optimizer: a `keras.optimizers.Optimizer` or a Keras optimizer name.
            Under the "mixed_float16" dtype policy (the model's, else the
            global one) it is wrapped in a `keras.optimizers.LossScaleOptimizer`
            (`trainer.optimizer` is the wrapper), as `fit` does; the loss is
            scaled by the optimizer's `scale_loss` before the gradients.
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

    Multiple devices: see the `ktl.trainer` package docstring (`help(ktl.trainer)`).

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
        _inputs.check_arguments(model_fn, context, max_executors)
        self._placement = Placement(distribution)
        self._loss_fn = losses_lib.as_loss_fn(loss_fn, per_output=isinstance(model_fn, keras.Model))
        self._takes_class_ids = _inputs.takes_class_ids(loss_fn)
        with distribution_lib.scope(distribution):
            self.optimizer = _loss_scaled(optimizers_lib.get(optimizer), model_fn)
            self._train, self._eval = metric_sets(train_metrics, eval_metrics, self._loss_fn)
            if isinstance(model_fn, keras.Model):  # Saved whole, it loads compiled.
                compile_like_trainer(
                    model_fn, self.optimizer, loss_fn, eval_metrics or train_metrics
                )
        self._model_fn = model_fn
        self._cache = ExecutorCache(max_executors or cache_lib.DEFAULT_MAX_EXECUTORS)
        self._last_train: tuple[Any, Executor | None] = (None, None)
        self._set_model(context if context is not None else Context())

    def _set_model(self, context: Context) -> None:
        """The user's `keras.Model` itself, or an `FnModel` around a function or layer."""
        self._context = context
        model = model_fn = self._model_fn
        if not isinstance(model, keras.Model):
            model = FnModel(model, context)
        model.optimizer = self.optimizer
        self._model = model
        state = self._state = TrainState(model, self.optimizer)
        refs, optimizer = state.refs_and_step_index, self.optimizer
        maths = StepMaths(model, context, self._loss_fn, optimizer, self._train, self._eval, refs)
        self._compiler = StepCompiler(
            self._cache, self._placement, state, maths, context, model_fn, self._takes_class_ids
        )
        context.bind_global_step(lambda: self.global_step)
        self.reset_train_metrics()
        self._reset_eval_metrics()

    # Public properties ------------------------------------------------------
    @property
    def model(self) -> keras.Model:
        """The `keras.Model`, with the current weights (synced on every read)."""
        self._state.sync()
        return self._model

    @property
    def context(self) -> Context:
        return self._context

    def set_context(self, ctx: Context) -> Trainer:
        """Uses `ctx` for the model's variables and hyperparameters; returns self.

        Raises:
            ValueError: a step already ran (the model's variables exist).
        """
        _inputs.check_new_context(ctx, len(self._cache))
        self._set_model(ctx)
        return self

    @property
    def max_executors(self) -> int:
        return self._cache.max_executors

    @max_executors.setter
    def max_executors(self, value: int) -> None:
        self._cache.max_executors = cache_lib.check_max_executors(value)

    @property
    def train_metrics(self) -> list:
        """Metric objects for `train_step`'s values, loss entries first."""
        return list(self._train.all)

    @property
    def eval_metrics(self) -> list:
        """Metric objects for `eval_step`/`eval`'s values, loss entries first."""
        return list(self._eval.all)

    @property
    def metrics(self) -> list:
        """The eval metrics (GoMLX's Trainer.Metrics)."""
        return self.eval_metrics

    @property
    def global_step(self) -> int:
        """The optimizer's iteration count (reads the device)."""
        return self._state.global_step

    def on_exec_creation(self, handler: Callable[[Executor, GraphType], None]) -> None:
        """Registers `handler(executor, graph_type)`, called for each new executor once the
        variables exist, before its first step (which uses values assigned to them then)."""
        self._cache.on_creation(handler)

    @property
    def distribution(self) -> distribution_lib.Distribution | None:
        """The `keras.distribution` this trainer runs under; None: one device.

        The `distribution` argument if given, else the global distribution
        active at the first step (before it: the one active now).
        """
        return self._placement.distribution

    def in_device(self, device_num: int) -> Trainer:
        """Runs the steps on `jax.local_devices()[device_num]`; returns self.

        The index counts this process's devices only (with several processes,
        `jax.devices()` also lists the others', which this process cannot use).

        Raises:
            ValueError: `device_num` is not a device of this process, or a
                `keras.distribution` places this trainer's state and batches.
        """
        self._state.sync()
        self._placement.in_device(device_num)
        return self

    def reset_train_metrics(self) -> None:
        """Resets the train metrics (moving averages start over)."""
        self._state.train_mstates = self._train.new_states(self._placement.replicated)

    def _reset_eval_metrics(self) -> None:
        self._state.eval_mstates = self._eval.new_states(self._placement.replicated)

    # Running -----------------------------------------------------------------
    def train_step(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> list:
        """Runs one train step on a batch; returns metric values as device arrays.

        The values are, in order: the batch loss (loss + regularization), its
        moving average, the moving average of `loss_fn`'s loss alone (when
        `loss_fn` is set), then the train metrics. Nothing is copied to the
        host: read a value (e.g. `float(metrics[0])`) only when needed.

        Raises:
            ValueError: no input, a None input, input/label counts other than
                earlier batches' of the spec; a batch size the data-parallel
                devices do not divide.
        """
        inputs = _inputs.as_array_list("inputs", inputs, spec)
        labels = _inputs.as_array_list("labels", labels, spec)
        # Fast path for the common case, the same spec object as the last step; anything
        # unusual goes through the full look-up, which raises the errors.
        last_spec, executor = self._last_train
        if spec is not last_spec or not _inputs.fits(executor, inputs, labels):
            executor = self._compiler.executor(GraphType.TRAIN, spec, inputs, labels)
            self._last_train = (spec, executor)
        state = self._state
        if state.values is None:
            state.pull(self._placement.place_state)
        put_batch = self._placement.put_batch
        if put_batch is not None:
            inputs, labels = put_batch(spec, inputs, labels)
        return state.train(executor.fn, inputs, labels)

    @property
    def can_fuse_steps(self) -> bool:
        """Whether `train_steps` can run: yes, also with several processes."""
        return self._placement.can_fuse

    def put_batch(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> tuple:
        """`(inputs, labels)` placed where the steps read them (the Loop's device prefetcher
        calls it ahead of the step): split over the distribution's data axis (several
        processes: global arrays from this process's part), else on the device of the steps."""
        return self._placement.put_ahead(spec, list(inputs), list(labels))

    def train_steps(
        self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]
    ) -> tuple[list, jax.Array]:
        """Runs `n` train steps in one compiled call (`lax.scan`) over stacked batches.

        Each array holds `n` batches stacked on a new leading axis (shape `(n,
        batch_size, ...)`, split over the data axis under a distribution as in
        `train_step`); the results equal `n` calls of `train_step` on `x[0]`,
        `x[1]`, ... One function is compiled per spec and `n`: keep `n` to a
        few values (the Loop uses powers of two).

        Returns:
            `(metrics, batch_losses)`: the last step's metric values and the `n`
            batch losses (a device array of shape `(n,)`); nothing is copied.

        Raises:
            ValueError: no shared leading axis >= 1, or `train_step`'s errors for x[0].
        """
        inputs = _inputs.as_array_list("inputs", inputs, spec)
        labels = _inputs.as_array_list("labels", labels, spec)
        num_steps = _inputs.stacked_count(spec, inputs, labels)
        executor = self._compiler.executor(GraphType.TRAIN, spec, inputs, labels, stacked=True)
        self._state.ensure_pulled(self._placement.place_state)
        fn = self._compiler.fused_fn(executor, num_steps)
        inputs, labels = self._placement.put_stacked(spec, inputs, labels)
        return self._state.train_fused(fn, inputs, labels)

    def prepare_train_steps(
        self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any], *, start: bool = True
    ) -> bool:
        """Whether `train_steps` on stacked batches like these runs without compiling.

        If its call is not compiled yet and `start`, it is traced now and XLA
        compiles it on a background thread while steps go on (`train_step` on
        each batch trains them meanwhile); this returns False until that is
        done. Where the fused call compiles in the foreground only (several
        processes, a distribution or device placement, batches that are not
        numpy arrays) it returns True: `train_steps` then compiles it.
        """
        inputs = _inputs.as_array_list("inputs", inputs, spec)
        labels = _inputs.as_array_list("labels", labels, spec)
        num_steps = _inputs.stacked_count(spec, inputs, labels)
        compiler = self._compiler
        executor = compiler.executor(GraphType.TRAIN, spec, inputs, labels, stacked=True)
        if not compiler.compiles_in_background(inputs + labels):
            return True
        state = self._state
        state.ensure_pulled(self._placement.place_state)
        args = (state.values, state.train_mstates, inputs, labels)
        return compiler.fused_ready(executor, num_steps, args, start)

    def eval_step(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> list:
        """Runs one eval step; returns the eval metrics accumulated so far.

        The values are the mean loss + regularization, the mean `loss_fn` loss
        (when set), then the eval metrics, all since the last reset (see `eval`).
        """
        inputs = _inputs.as_array_list("inputs", inputs, spec)
        labels = _inputs.as_array_list("labels", labels, spec)
        executor = self._compiler.executor(GraphType.EVAL, spec, inputs, labels)
        self._state.ensure_pulled(self._placement.place_state)
        if self._placement.put_batch is not None:
            inputs, labels = self._placement.put_batch(spec, inputs, labels)
        return self._state.eval(executor.fn, inputs, labels)

    def eval(
        self,
        ds: Dataset,
        *,
        return_dict: bool = False,
        on_batch_begin: Callable[[int], object] | None = None,
        on_batch_end: Callable[[int, dict[str, Any]], object] | None = None,
    ) -> list | dict[str, Any]:
        """Evaluates the model on a finite dataset (reset first, with the eval metrics).

        Args:
            ds: a finite `ktl.Dataset`.
            return_dict: False: the values (device arrays) in the order of
                `eval_metrics`. True: `{name: float}` as
                `model.evaluate(..., return_dict=True)`: `"loss"` (loss +
                regularization), then each eval metric under its Keras name.
            on_batch_begin: called as `on_batch_begin(batch)` before each batch
                (numbered from 0), as Keras' `on_test_batch_begin`.
            on_batch_end: called as `on_batch_end(batch, logs)` after each batch,
                `logs` the values so far by name (as `return_dict=True` gives
                them, and Keras' `on_test_batch_end` gets them); it waits for
                the device after every batch.

        Raises:
            ValueError: `ds` yielded no batch.
        """
        ds = _inputs.as_eval_dataset(ds)
        ds.reset()
        self._reset_eval_metrics()
        batch_end = None
        if on_batch_end is not None:

            def batch_end(batch: int, values: list) -> None:
                on_batch_end(batch, self.eval_logs(values))

        values = evaluate(self.eval_step, ds, _EVAL_SYNC_EVERY, on_batch_begin, batch_end)
        return self.eval_logs(values) if return_dict else values

    # Keras-shaped names ----------------------------------------------------------
    def train_logs(self, values: Sequence[Any]) -> dict[str, Any]:
        """`train_step`'s values by name, as Keras logs (one host transfer).

        The loss entries appear under their short names (`"batch_loss"`,
        `"~loss+"`, `"~loss"`), each train metric under the name Keras gives
        it (`metric.keras_name`, e.g. `"accuracy"`) and under its short name.
        Scalars are Python floats. The Loop adds `"loss"`, the running mean
        of the batch loss, as `fit` does.
        """
        return self._train.logs(values)

    def eval_logs(self, values: Sequence[Any]) -> dict[str, Any]:
        """`eval`'s values by name, as `model.evaluate(return_dict=True)` names them."""
        return self._eval.logs(values)

    @property
    def compiling(self) -> bool:
        """Whether fused calls (`prepare_train_steps`) still compile in the background."""
        return self._compiler.compiling()

    # Keras' run protocol ------------------------------------------------------
    @property
    def built(self) -> bool:
        """Whether the model's variables exist (`trainer.model.built`)."""
        return bool(self._model.built)

    def build(self, spec: Any, inputs: Sequence[Any], labels: Sequence[Any]) -> None:
        """Creates the model's and optimizer's variables for a batch; trains nothing.

        The first `train_step` does it; call it for a built model before
        training (Keras' `BackupAndRestore` at `on_train_begin`; see
        `Loop.request_built_model`). Raises the errors of `train_step`.
        """
        inputs = _inputs.as_array_list("inputs", inputs, spec)
        labels = _inputs.as_array_list("labels", labels, spec)
        self._compiler.executor(GraphType.TRAIN, spec, inputs, labels)

    def finalize(self) -> None:
        """Ends a run as `fit` does: the state into the Keras variables, EMA applied.

        With `use_ema=True` the trainable variables get their moving averages
        (`optimizer.finalize_variable_values`); the next step continues from them.
        """
        self._state.finalize()
