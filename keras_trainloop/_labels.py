"""Labels read as GoMLX reads them, shared by `losses` and `metrics`.

Owns the label list (`as_list`), the optional weights and mask among the extra
labels (`weights_and_mask`), and the checks that fit `labels[0]` to
`predictions[0]` (same shape, same size, sparse class ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["as_list", "same_shape", "same_size", "sparse_class_ids", "weights_and_mask"]


def as_list(values: Any) -> list:
    """A list/tuple as a list; a single array as a one-element list."""
    if isinstance(values, (list, tuple)):
        return list(values)
    return [values]


def _strip_trailing_ones(shape: Sequence[int]) -> tuple[int, ...]:
    """`shape` without its trailing axes of size 1."""
    shape = tuple(shape)
    while shape and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _fit_extra(extra: jax.Array, shape: tuple[int, ...]) -> jax.Array | None:
    """Reshapes `extra` to broadcast against `shape`, or None if it does not fit."""
    stripped = _strip_trailing_ones(extra.shape)
    target = _strip_trailing_ones(shape)
    if target[: len(stripped)] != stripped:
        return None
    return jnp.reshape(extra, stripped + (1,) * (len(shape) - len(stripped)))


def weights_and_mask(
    shape: Sequence[int],
    extras: Sequence[Any],
    fn_name: str,
) -> tuple[jax.Array | None, jax.Array | None]:
    """Finds the optional weights and mask among the extra labels, as GoMLX does.

    Args:
        shape: shape of the loss (or metric) terms the weights and mask apply to.
        extras: the labels after `labels[0]`.
        fn_name: name of the caller, for error messages.

    Returns:
        `(weights, mask)`, each reshaped to broadcast against `shape`, or None
        where absent.

    Raises:
        ValueError: an extra label fits neither role, or a role is given twice.

    Example:
        def my_loss(labels, predictions):
            terms = jnp.abs(labels[0] - predictions[0]) ** 3
            weights, mask = ktl.losses.weights_and_mask(terms.shape, labels[1:], "my_loss")
            return ktl.losses.weighted_masked_mean(terms, weights, mask)
    """
    shape = tuple(int(d) for d in shape)
    weights = mask = None
    for index, extra in enumerate(extras, start=1):
        extra = jnp.asarray(extra)
        is_mask = extra.dtype == jnp.bool_
        fitted = _fit_extra(extra, shape)
        problem = None
        if not (is_mask or jnp.issubdtype(extra.dtype, jnp.number)):
            problem = "it is neither numeric (weights) nor boolean (mask)"
        elif fitted is None:
            problem = f"its shape does not fit the loss terms' shape {shape}"
        elif (mask if is_mask else weights) is not None:
            problem = "a " + ("mask" if is_mask else "weights array") + " was already given"
        if problem is not None:
            raise ValueError(
                f"{fn_name} reads extra labels as weights (numeric) or a mask (bool), shaped "
                f"like the loss terms {shape} or a prefix of that shape. "
                f"Received: labels[{index}] with shape={tuple(extra.shape)}, "
                f"dtype={extra.dtype}: {problem}. "
                "Fix: yield at most one weights array and one boolean mask after the labels."
            )
        if is_mask:
            mask = fitted
        else:
            weights = fitted
    return weights, mask


def same_shape(label: jax.Array, prediction: jax.Array, fn_name: str) -> None:
    """Raises unless labels and predictions have the same shape."""
    if label.shape != prediction.shape:
        raise ValueError(
            f"{fn_name} needs labels[0] and predictions[0] of the same shape. "
            f"Received: labels[0].shape={tuple(label.shape)}, "
            f"predictions[0].shape={tuple(prediction.shape)}. "
            "Fix: reshape the labels in the dataset or the predictions in the model_fn."
        )


def same_size(label: jax.Array, prediction: jax.Array, fn_name: str) -> jax.Array:
    """Labels reshaped to the predictions' shape when only their layout differs."""
    if label.shape == prediction.shape:
        return label
    if label.size != prediction.size:
        raise ValueError(
            f"{fn_name} needs labels[0] with the same number of elements as predictions[0] "
            f"(e.g. [batch] and [batch, 1]). Received: labels[0].shape={tuple(label.shape)}, "
            f"predictions[0].shape={tuple(prediction.shape)}. "
            "Fix: one label per prediction value."
        )
    return jnp.reshape(label, prediction.shape)


def sparse_class_ids(label: jax.Array, logits: jax.Array, fn_name: str) -> jax.Array:
    """Class ids shaped like `logits.shape[:-1]` from labels [..., 1] or [...]."""
    if logits.ndim < 1:
        raise ValueError(
            f"{fn_name} needs predictions[0] with a class axis last. "
            f"Received: predictions[0].shape={tuple(logits.shape)}. "
            "Fix: return logits shaped [batch, num_classes]."
        )
    batch_shape = tuple(logits.shape[:-1])
    if tuple(label.shape) == batch_shape + (1,):
        label = jnp.reshape(label, batch_shape)
    elif tuple(label.shape) != batch_shape:
        raise ValueError(
            f"{fn_name} needs labels[0] of class ids shaped {batch_shape + (1,)} or "
            f"{batch_shape} for predictions[0] shaped {tuple(logits.shape)}. "
            f"Received: labels[0].shape={tuple(label.shape)}. "
            "Fix: yield one integer class id per example, not one-hot vectors "
            "(for one-hot labels use the categorical losses)."
        )
    if not (jnp.issubdtype(label.dtype, jnp.number) or label.dtype == jnp.bool_):
        raise ValueError(
            f"{fn_name} needs numeric class ids. Received: labels[0].dtype={label.dtype}. "
            "Fix: yield integer class ids."
        )
    return label.astype(jnp.int32)
