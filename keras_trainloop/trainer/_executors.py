"""Executors: a spec's compiled steps, created on first use and then looked up.

Creating one checks the batch, fixes the placement at the first spec,
creates the variables the spec needs (`_build`), and jits the step from the
pure step maths (`_steps`) with the placement's shardings; the cache
(`_cache`) keeps it under its spec and enforces the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from keras_trainloop.context import Context
from keras_trainloop.trainer import _inputs
from keras_trainloop.trainer import _interrupts as interrupts
from keras_trainloop.trainer._background import WORKER
from keras_trainloop.trainer._build import create_variables
from keras_trainloop.trainer._cache import Executor, ExecutorCache, GraphType
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._placement import Placement
from keras_trainloop.trainer._state import TrainState
from keras_trainloop.trainer._steps import StepMaths, fuse


def _output_shapes(model: Any) -> list | None:
    """A built Keras model's output shapes (stand-ins with `.shape`), when it declares them."""
    outputs = getattr(model, "outputs", None)
    return list(outputs) if outputs else None


class StepCompiler:
    """Finds or creates the executor of a spec; jits single and fused steps.

    Args:
        cache: the executor cache (spec -> executor, with the limit).
        placement: the trainer's placement policy.
        state: the trainer's state (synced before variables are created).
        maths: the step functions to jit.
        context: where `model_fn` creates its variables.
        model_fn: the user's `model_fn`, named in errors.
        takes_class_ids: whether the loss reads the labels as class ids (their range
            is then checked on each spec's first batch).
    """

    def __init__(
        self,
        cache: ExecutorCache,
        placement: Placement,
        state: TrainState,
        maths: StepMaths,
        context: Context,
        model_fn: Any,
        takes_class_ids: bool = False,
    ):
        self.cache = cache
        self.takes_class_ids = takes_class_ids  # Whether the loss reads labels as class ids.
        self._placement = placement
        self._state = state
        self._maths = maths
        self._context = context
        self._model_fn = model_fn

    def executor(
        self, graph_type: GraphType, spec: Any, inputs: list, labels: list, stacked: bool = False
    ) -> Executor:
        """The executor of `spec`, created on first use; the batch checked against it.

        `stacked`: the arrays hold batches on a leading axis; the first is sliced
        out only to create the executor (slicing a device array is a dispatch).
        """
        executor = self.cache.get(graph_type, spec)
        if executor is None:
            if stacked:
                inputs, labels = [x[0] for x in inputs], [y[0] for y in labels]
            return self._create(graph_type, spec, inputs, labels)
        _inputs.check_batch(executor, spec, inputs, labels)
        return executor

    def _create(self, graph_type: GraphType, spec: Any, inputs: list, labels: list) -> Executor:
        _inputs.check_new_batch(spec, inputs, labels)
        self.cache.check_room(graph_type, spec)
        placement = self._placement
        if not placement.fixed:
            placement.fix(self._state.variables())
            self._state.place_metric_states(placement.replicated)
        distribution = placement.distribution
        if distribution is not None:
            # Checks the batch size and builds on a sharded batch, before anything runs.
            inputs, labels = placement.put_batch(spec, inputs, labels)
        self._state.sync()
        interrupts.install()
        with interrupts.guard():  # Half-built layers or optimizers are never rebuilt by Keras.
            predictions = create_variables(
                self._state.model,
                self._state.optimizer,
                self._context,
                spec,
                inputs,
                graph_type is GraphType.TRAIN,
                distribution,
                self._model_fn,
            )
        outputs = predictions or _output_shapes(self._state.model)
        if self.takes_class_ids:
            _inputs.check_class_ids(spec, labels, outputs)
        if outputs is not None:
            if not isinstance(self._state.model, FnModel):
                metric_sets = (self._maths.train_metrics, self._maths.eval_metrics)
                _inputs.check_metrics_for_outputs(metric_sets, outputs)
            self._build_metric_variables(labels, outputs)
        if distribution is not None and placement.update_state_shardings(self._state.variables()):
            for existing in self.cache.executors():  # Compiled for other variables.
                self._jit(existing)
        executor = Executor(spec, graph_type, len(inputs), len(labels))
        self._jit(executor)
        self.cache.add(executor)
        return executor

    def _build_metric_variables(self, labels: list, outputs: list) -> None:
        """Keras metrics that make their variables at a first update get them now (F1Score).

        Before any step used them: a metric set whose metrics created variables
        gets fresh states (nothing was accumulated into the stale ones).
        """
        state, maths, sharding = self._state, self._maths, self._placement.replicated
        if maths.train_metrics.build_variables(labels, outputs):
            state.train_mstates = maths.train_metrics.new_states(sharding)
        if maths.eval_metrics.build_variables(labels, outputs):
            state.eval_mstates = maths.eval_metrics.new_states(sharding)

    def _jit(self, executor: Executor) -> None:
        """Sets `executor.fn`: the step jitted with the state's shardings, if distributed."""
        train = executor.graph_type is GraphType.TRAIN
        maths = self._maths
        step_fn = maths.train_fn(executor.spec) if train else maths.eval_fn(executor.spec)

        def fn(*args):
            executor.trace_count += 1
            return step_fn(*args)

        executor.fused_fns.clear()
        executor.background.clear()
        executor.fn = self._placement.jit(
            fn, (0, 1) if train else (1,), "train" if train else "eval"
        )

    def fused_fn(self, executor: Executor, num_steps: int) -> Callable:
        """The jitted function running `num_steps` train steps in one `lax.scan`."""
        fn = executor.fused_fns.get(num_steps)
        if fn is None:
            executor.fused_trace_counts.setdefault(num_steps, 0)

            def on_trace(unrolled: bool) -> None:
                executor.fused_trace_counts[num_steps] += 1
                executor.fused_unrolled[num_steps] = unrolled

            fused = fuse(self._maths.train_fn(executor.spec), on_trace)
            fn = executor.fused_fns[num_steps] = self._placement.jit(fused, (0, 1), "fused")
        return fn

    def compiling(self) -> bool:
        """Whether a fused function of an executor still compiles in the background."""
        return any(not job.done() for e in self.cache.executors() for job in e.background.values())

    def compiles_in_background(self, arrays: list) -> bool:
        """Whether a fused call on `arrays` may compile in the background: one process,
        no distribution or device placement, numpy batches (so the compiled argument
        types are exactly those of the call)."""
        placement = self._placement
        return (
            placement.distribution is None
            and placement.put_batch is None
            and jax.process_count() == 1
            and all(isinstance(a, np.ndarray) for a in arrays)
        )

    def fused_ready(self, executor: Executor, num_steps: int, args: tuple, start: bool) -> bool:
        """Whether the fused call of `num_steps` on `args` is compiled (see
        `Trainer.prepare_train_steps`); if not and `start`, traces it here and has
        it compiled in the background."""
        inputs, labels = args[2], args[3]
        key = (num_steps, tuple((a.shape, a.dtype) for a in inputs + labels))
        job = executor.background.get(key)
        if job is None:
            if start:
                lowered = self.fused_fn(executor, num_steps).lower(*args)
                executor.background[key] = WORKER.submit(lowered)
            return False
        return job.done()  # A failed compile: the call compiles (and raises) in front.
