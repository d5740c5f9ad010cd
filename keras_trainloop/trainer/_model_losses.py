"""Loss terms and per-step update functions registered through a Context.

GoMLX keeps these in the context's graph parameters; here loss terms go into
the context's trace state (`ctx.trace`, one per traced step) and per-step
update functions are registered on the context, read by the Trainer while it
traces a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from keras_trainloop._describe import short_repr
from keras_trainloop.context import Context


def _check_context(ctx: Any, fn_name: str) -> None:
    if not isinstance(ctx, Context):
        raise TypeError(
            f"{fn_name}() expects a ktl.Context as its first argument. Received: ctx={ctx!r}. "
            "Fix: pass the `ctx` your model_fn receives."
        )


def add_loss(ctx: Context, loss: Any) -> None:
    """Adds a loss term to be optimized by the Trainer's train step.

    Terms accumulate: each call adds to the previous ones. A non-scalar term is
    reduced with its mean. With only `add_loss` terms, pass `loss_fn=None` to
    the Trainer.

    Args:
        ctx: the context given to `model_fn`.
        loss: an array; mean-reduced if not scalar.

    Example:
        def model_fn(ctx, spec, inputs):
            logits = ctx.layer("out", lambda: keras.layers.Dense(10))(inputs[0])
            ktl.add_loss(ctx, 1e-4 * jnp.sum(logits ** 2))
            return [logits]
    """
    _check_context(ctx, "add_loss")
    loss = jnp.asarray(loss)
    if loss.ndim > 0:
        loss = jnp.mean(loss)
    ctx.trace.losses.append(loss)


def get_losses(ctx: Context) -> Any:
    """Returns the sum of the loss terms added with `add_loss`, or None if none was."""
    _check_context(ctx, "get_losses")
    losses = ctx.trace.losses
    if not losses:
        return None
    total = losses[0]
    for term in losses[1:]:
        total = total + term
    return total


def add_per_step_update_fn(ctx: Context, fn: Callable[[Context], None]) -> None:
    """Registers `fn(ctx)` to run inside the train step, after the optimizer update.

    Inside `fn`, reading a variable gives its value after the optimizer update,
    and `variable.assign(...)` sets that step's result (e.g. weight
    constraints). There is one function per scope: registering again in the
    same scope replaces it. Eval steps do not run it. Changes made here are not
    reflected in the loss or metrics of the same step.

    Args:
        ctx: a context; `fn` receives a context in the same scope.
        fn: a function of one argument, the context.

    Example:
        ktl.add_per_step_update_fn(ctx, lambda c: w.assign(jnp.clip(w.value, -1, 1)))
    """
    _check_context(ctx, "add_per_step_update_fn")
    if not callable(fn):
        raise TypeError(
            f"add_per_step_update_fn() expects a callable fn(ctx). Received: fn={short_repr(fn)}. "
            "Fix: pass a function of the context, e.g. lambda ctx: w.assign(...)."
        )
    ctx.set_per_step_update_fn(fn)
