"""Metric sets: the values a train or eval step returns, loss entries first, by name.

A `MetricSet` is one step kind's metrics as two named slices, the loss
entries GoMLX puts first (`loss_metrics`) and the user's (`user_metrics`);
it updates their states inside a step, makes fresh states, and names the
values as Keras logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from keras_trainloop import metrics as metrics_lib


def _keras_names(metrics: Sequence[Any]) -> list[tuple[str, ...]]:
    """Each user metric's log names: its Keras name, then its short name if different.

    Two metrics of one Keras name (two `AUC()`s, both "auc" without Keras'
    "_1" suffix) keep Keras' own names where those differ ("auc", "auc_1"),
    else get "_1", "_2"...: no value hides another in the logs.
    """
    taken: set[str] = set()
    out = []
    for metric in metrics:
        name = getattr(metric, "keras_name", None) or metric.name
        if name in taken:
            own = getattr(getattr(metric, "keras_metric", None), "name", None)
            if own and own not in taken:
                name = own
            else:
                base, k = name, 1
                while f"{base}_{k}" in taken:
                    k += 1
                name = f"{base}_{k}"
        taken.add(name)
        out.append((name,) if metric.short_name == name else (name, metric.short_name))
    return out


def _named(names: list[tuple[str, ...]], values: Sequence[Any]) -> dict[str, Any]:
    """`{name: value}` for each value under each of its names; scalars as Python floats."""
    logs: dict[str, Any] = {}
    for value_names, value in zip(names, jax.device_get(list(values))):
        value = np.asarray(value)
        value = float(value.reshape(())) if value.size == 1 else value
        for name in value_names:
            logs.setdefault(name, value)
    return logs


def _replicated_array(host: Any, sharding: Any) -> jax.Array:
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


class MetricSet:
    """The metrics of one step kind: `loss_metrics`, then `user_metrics`.

    Args:
        loss_metrics: the loss entries; each accumulates a loss value.
        user_metrics: the user's; each computes its value from labels and
            predictions.
        loss_log_names: the log names of each loss entry.
        keep_short_names: whether a user metric is also logged under its
            short name (train logs) or only under its Keras name (eval logs).
    """

    def __init__(
        self,
        loss_metrics: Sequence[Any],
        user_metrics: Sequence[Any],
        loss_log_names: Sequence[tuple[str, ...]],
        keep_short_names: bool,
    ):
        self.loss_metrics = tuple(loss_metrics)
        self.user_metrics = tuple(user_metrics)
        self.all = list(self.loss_metrics + self.user_metrics)
        names = _keras_names(self.user_metrics)
        self.log_names = list(loss_log_names) + (
            names if keep_short_names else [n[:1] for n in names]
        )
        self._template: list | None = None

    @property
    def n_loss(self) -> int:
        """How many loss entries come first."""
        return len(self.loss_metrics)

    def build_variables(self, labels: list, predictions: list) -> bool:
        """Lets each metric create variables Keras makes at a first update (see KerasMetric).

        Returns whether any did: the states made before are then stale (the
        owner makes new ones).
        """
        built = False
        for metric in self.user_metrics:
            build = getattr(metric, "build_variables", None)
            if build is not None and build(labels, predictions):
                built = True
        if built:
            self._template = None
        return built

    def new_states(self, sharding: Any) -> list:
        """Fresh states from host templates made once (each leaf gets its own buffer).

        With a sharding, each process builds the global arrays from its own
        copy of the template (no cross-process check: no hidden collective,
        so a run or an eval started on one host only does not hang here).
        """
        if self._template is None:
            self._template = jax.device_get([m.init_state() for m in self.all])
        if sharding is None:
            return jax.device_put(self._template)
        return jax.tree.map(lambda host: _replicated_array(host, sharding), self._template)

    def update(self, mstates, loss_values, labels, predictions) -> tuple[list, list]:
        """Updates the states inside a step; returns `(new_states, values)`.

        The loss entries accumulate `loss_values` (weighted by the batch
        size); the user's metrics compute theirs from labels and predictions.
        """
        batch_size = predictions[0].shape[0] if predictions[0].ndim else 1
        n_loss = self.n_loss
        new_mstates, values = [], []
        for metric, state, value in zip(self.loss_metrics, mstates[:n_loss], loss_values):
            state, result = metric.accumulate(state, value, batch_size)
            new_mstates.append(state)
            values.append(result)
        for metric, state in zip(self.user_metrics, mstates[n_loss:]):
            state, result = metric.update(state, labels, predictions)
            new_mstates.append(state)
            values.append(result)
        return new_mstates, values

    def logs(self, values: Sequence[Any]) -> dict[str, Any]:
        """The values by log name (one host transfer)."""
        return _named(self.log_names, values)


def train_metric_set(user_metrics: Sequence[Any], has_loss: bool) -> MetricSet:
    """`train_step`'s metrics: batch loss, its moving average, `loss_fn`'s average, the user's."""
    losses = [
        metrics_lib.BatchMetric("Batch Loss+Regularization", "batch_loss", "loss", None),
        metrics_lib.MovingAverageMetric(
            "Moving Average Loss+Regularization", "~loss+", "loss", None
        ),
    ]
    if has_loss:
        losses.append(metrics_lib.MovingAverageMetric("Moving Average Loss", "~loss", "loss", None))
    return MetricSet(losses, user_metrics, [(m.short_name,) for m in losses], True)


def eval_metric_set(user_metrics: Sequence[Any], has_loss: bool) -> MetricSet:
    """`eval`'s metrics: mean loss + regularization, `loss_fn`'s mean, the user's."""
    losses = [metrics_lib.MeanMetric("Mean Loss+Regularization", "#loss+", "loss", None)]
    if has_loss:
        losses.append(metrics_lib.MeanMetric("Mean Loss", "#loss", "loss", None))
    names = [("loss",)] + [()] * (len(losses) - 1)
    return MetricSet(losses, user_metrics, names, False)


def metric_sets(train_metrics: Any, eval_metrics: Any, loss_fn: Any) -> tuple[MetricSet, MetricSet]:
    """The train and eval metric sets of a Trainer, from the metrics as the user gave them."""
    user_train = [metrics_lib.as_metric(m) for m in (train_metrics or [])]
    user_eval = [metrics_lib.as_metric(m) for m in (eval_metrics or [])]
    return (
        train_metric_set(user_train, loss_fn is not None),
        eval_metric_set(user_eval, loss_fn is not None),
    )
