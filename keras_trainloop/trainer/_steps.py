"""The pure step maths: a model, a loss and an optimizer as jit-able step functions.

`StepMaths` builds, per spec, `train_fn(variables, mstates, inputs, labels)
-> ((variables, mstates), values)` and `eval_fn(...) -> (mstates, values)`:
pure functions of the state pytree (trainable, non-trainable and optimizer
variable values), run statelessly over the Keras variables. `fuse(step_fn)`
runs a train step once per stacked batch in one `lax.scan`. Nothing here holds state
or places arrays: the Trainer jits these functions and feeds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
from jax.extend.core import jaxpr_as_fun

from keras_trainloop.context import Context, TraceState
from keras_trainloop.trainer._metric_set import MetricSet
from keras_trainloop.trainer._model import FnModel
from keras_trainloop.trainer._model_losses import get_losses

_CONVOLUTIONS = frozenset({"conv_general_dilated"})


def keras_inputs(model: keras.Model, inputs: list, spec: Any) -> Any:
    """A batch's inputs as `fit` would pass them to the user's Keras model.

    A model built on a dict of named inputs (a functional model's
    `keras.Input`s by name) gets a dict when the spec names the inputs (the
    keys of a dict `x`, the spec the datasets give by default), whatever the
    order of those keys; otherwise one input as is and several as a list.
    """
    struct = getattr(model, "_inputs_struct", None)  # Functional models' input structure.
    if (
        isinstance(struct, dict)
        and isinstance(spec, tuple)
        and len(spec) == len(inputs)
        and set(spec) == set(struct)
    ):
        return dict(zip(spec, inputs))
    return inputs[0] if len(inputs) == 1 else inputs


def call_model(model: keras.Model, inputs: list, training: bool, spec: Any = None) -> list:
    """Calls the model on a batch's inputs; returns its predictions as a list.

    An `FnModel` gets the list (the spec comes from the trace state); a
    user's Keras model gets them as `fit` would pass them (`keras_inputs`).
    """
    if isinstance(model, FnModel):
        outputs = keras.Model.__call__(model, inputs, training=training)  # No sync: traced.
    else:
        outputs = model(keras_inputs(model, inputs, spec), training=training)
        if isinstance(outputs, dict):
            raise TypeError(
                f"The model returns a dict of outputs {tuple(outputs)}; the Trainer pairs "
                "predictions with labels by position (labels are lists). Fix: build the "
                "model with a list of outputs, e.g. keras.Model(inputs, [out_a, out_b]), "
                "and give the labels in the same order."
            )
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def uses_convolution(jaxpr: Any) -> bool:
    """Whether `jaxpr` (or any jaxpr nested in it: pjit, custom_vjp, cond...) convolves."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _CONVOLUTIONS:
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns") and uses_convolution(inner):
                    return True
    return False


def fuse(step_fn: Callable, on_trace: Callable[[bool], None]) -> Callable:
    """`step_fn` run once per stacked batch, in one `lax.scan`.

    The result `fused_fn(variables, mstates, inputs, labels)` takes inputs
    and labels stacked on a leading axis of size `n` and returns the new
    state, the metric values of the last step and the batch losses of all
    steps (shape `(n,)`). `on_trace(unrolled)` is called each time it is
    traced.
    """

    def fused_fn(variables, mstates, inputs, labels):
        # The metric values ride in the carry: stacking them per step as scan outputs
        # cost 15-20 us a step on the CPU (measured on the digits MLP); only the batch
        # losses are stacked.
        first = jax.tree.map(lambda a: a[0], (inputs, labels))
        step_jaxpr, shapes = jax.make_jaxpr(step_fn, return_shape=True)(variables, mstates, *first)
        no_values = [jnp.zeros(v.shape, v.dtype) for v in shapes[1]]
        # XLA:CPU compiles convolutions inside a scan's loop body without its fast
        # convolution path (measured 20x slower on a small convnet); unrolled, the
        # body is straight-line code compiled like the single step.
        unroll = bool(uses_convolution(step_jaxpr.jaxpr)) or 1
        on_trace(unroll is True)

        # The body evaluates the step's jaxpr, traced once above, instead of tracing the
        # model again (half the fused call's trace time; the same operations).
        step_flat, out_tree = jaxpr_as_fun(step_jaxpr), jax.tree.structure(shapes)

        def body(carry, batch):
            state, _ = carry
            state, values = jax.tree.unflatten(
                out_tree, step_flat(*jax.tree.leaves((*state, *batch)))
            )
            return (state, values), values[0]

        (state, values), batch_losses = jax.lax.scan(
            body, ((variables, mstates), no_values), (inputs, labels), unroll=unroll
        )
        return state, values, batch_losses

    return fused_fn


def _checked_loss(loss_fn: Callable, labels: list, predictions: list, spec: Any) -> Any:
    """`loss_fn`'s value, refused with the fix unless it is an array or a number."""
    value = loss_fn(labels, predictions)
    if value is None or isinstance(value, (str, bytes, dict, list, tuple)):
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(
            "loss_fn must return the loss: an array (mean-reduced if not scalar). Received: "
            f"{type(value).__name__} {str(value)[:60]!r} from loss_fn={name} for spec={spec!r}. "
            "Fix: return the loss value, e.g. return jnp.mean(per_example_loss)."
        )
    return value


class StepMaths:
    """The train and eval step functions of one model, loss and optimizer.

    Args:
        model: the `keras.Model` (an `FnModel` or the user's).
        context: the Context whose trace state the model reads.
        loss_fn: `loss_fn(labels, predictions)` or None (only `add_loss` terms).
        optimizer: a built-on-demand Keras optimizer (`stateless_apply`).
        train_metrics, eval_metrics: the metric sets the steps update.
        refs: returns the Keras variables the state's values belong to,
            `(trainable, non_trainable, optimizer)`, and the index of the
            optimizer's iteration counter among the optimizer's.
    """

    def __init__(
        self,
        model: keras.Model,
        context: Context,
        loss_fn: Callable | None,
        optimizer: keras.optimizers.Optimizer,
        train_metrics: MetricSet,
        eval_metrics: MetricSet,
        refs: Callable[[], tuple[tuple[list, list, list], int]],
    ):
        self.model = model
        self.context = context
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.train_metrics = train_metrics
        self.eval_metrics = eval_metrics
        self._refs = refs

    def forward(self, spec, tv, ntv, inputs, training: bool, step):
        """Runs the model statelessly; returns predictions, new non-trainables, extra losses."""
        (refs_t, refs_n, _), _ = self._refs()
        mapping = list(zip(refs_t, tv)) + list(zip(refs_n, ntv))
        trace = TraceState(training=training, global_step=step, spec=spec)
        with self.context.tracing(trace):
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                predictions = call_model(self.model, inputs, training, spec)
                layer_losses = list(self.model.losses)
            extra = get_losses(self.context)
        new_ntv = [scope.get_current_value(v) for v in refs_n]
        for term in layer_losses:
            extra = term if extra is None else extra + term
        return predictions, new_ntv, extra

    def losses(self, spec, labels, predictions, extra):
        """`(total, loss)`: loss + regularization, and `loss_fn`'s loss alone (or None)."""
        loss = None
        if self.loss_fn is not None:
            loss = jnp.mean(jnp.asarray(_checked_loss(self.loss_fn, labels, predictions, spec)))
        if loss is None and extra is None:
            raise ValueError(
                f"Nothing to optimize for spec={spec!r}: loss_fn is None and model_fn added "
                "no loss with ktl.add_loss(). Fix: pass a loss_fn or call ktl.add_loss(ctx, ...)."
            )
        total = loss if extra is None else (extra if loss is None else loss + extra)
        return total, loss

    def scale_loss(self, total, ov):
        """`optimizer.scale_loss(total)` with the optimizer's state `ov`, as `fit` scales it.

        A `LossScaleOptimizer` (or any optimizer given `loss_scale_factor`)
        divides the gradients by its scale in `stateless_apply`, so they are
        taken of the scaled loss; other optimizers return the loss as is.
        """
        (_, _, refs_o), _ = self._refs()
        with keras.StatelessScope(state_mapping=list(zip(refs_o, ov))):
            return self.optimizer.scale_loss(total)

    def per_step_updates(self, tv, ntv, step):
        """Runs the `add_per_step_update_fn` functions on the updated variables."""
        fns = self.context.per_step_update_fns
        if not fns:
            return tv, ntv
        (refs_t, refs_n, _), _ = self._refs()
        mapping = list(zip(refs_t, tv)) + list(zip(refs_n, ntv))
        trace = TraceState(training=True, global_step=step)
        with self.context.tracing(trace), keras.StatelessScope(state_mapping=mapping) as scope:
            for ctx, fn in fns:
                fn(ctx)
        return (
            [scope.get_current_value(v) for v in refs_t],
            [scope.get_current_value(v) for v in refs_n],
        )

    def train_fn(self, spec: Any) -> Callable:
        """The train step for `spec`: forward, gradients, optimizer update, metrics."""
        metrics = self.train_metrics

        def train_fn(variables, mstates, inputs, labels):
            tv, ntv, ov = variables
            step = ov[self._refs()[1]]

            def loss_and_aux(trainable):
                predictions, new_ntv, extra = self.forward(spec, trainable, ntv, inputs, True, step)
                total, loss = self.losses(spec, labels, predictions, extra)
                return self.scale_loss(total, ov), (predictions, new_ntv, loss, total)

            (_, (predictions, new_ntv, loss, total)), grads = jax.value_and_grad(
                loss_and_aux, has_aux=True
            )(tv)
            new_tv, new_ov = self.optimizer.stateless_apply(ov, grads, tv)
            new_tv, new_ntv = self.per_step_updates(new_tv, new_ntv, step)
            loss_values = [total, total, loss][: metrics.n_loss]
            new_mstates, values = metrics.update(mstates, loss_values, labels, predictions)
            return ((list(new_tv), list(new_ntv), list(new_ov)), new_mstates), values

        return train_fn

    def eval_fn(self, spec: Any) -> Callable:
        """The eval step for `spec`: forward (not training), losses, metrics."""
        metrics = self.eval_metrics

        def eval_fn(variables, mstates, inputs, labels):
            tv, ntv, ov = variables
            step = ov[self._refs()[1]]
            predictions, _, extra = self.forward(spec, tv, ntv, inputs, False, step)
            total, loss = self.losses(spec, labels, predictions, extra)
            return metrics.update(mstates, [total, loss][: metrics.n_loss], labels, predictions)

        return eval_fn
