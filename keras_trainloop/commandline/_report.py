"""GoMLX's ReportEval: evaluate datasets and print every eval metric."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from keras_trainloop.commandline._detect import is_output_process

if TYPE_CHECKING:
    from keras_trainloop.data import Dataset
    from keras_trainloop.trainer import Trainer


def _host(value: Any) -> float | np.ndarray:
    array = np.asarray(value)
    return float(array.reshape(())) if array.size == 1 else array


def report_eval(trainer: Trainer, *datasets: Dataset, file: TextIO | None = None) -> list[list]:
    """Evaluates `trainer` on each dataset and prints its eval metrics.

    For each dataset it prints `Results on <name>:`, then one line per eval
    metric: `name (short_name): pretty value`, as GoMLX's
    `commandline.ReportEval`. Each dataset is reset before (by
    `trainer.eval`) and after its evaluation.

    Args:
        trainer: the `ktl.Trainer`.
        *datasets: finite datasets to evaluate, in order.
        file: where to print; `sys.stdout` when None. With several JAX
            processes all evaluate and only process 0 prints.

    Returns:
        One list per dataset with its eval metric values (Python floats for
        scalars, numpy arrays otherwise), in `trainer.eval_metrics` order.

    Raises:
        ValueError: a dataset yielded no batch (from `trainer.eval`).

    Example:
        ktl.commandline.report_eval(trainer, train_eval_ds, test_ds)
        # Results on test:
        #     Mean Loss+Regularization (#loss+): 0.123
        #     Mean Loss (#loss): 0.123
        #     Mean Accuracy (#acc): 96.12%
    """
    out = file if file is not None else sys.stdout
    printing = is_output_process()  # Every process evaluates (the steps are collective).
    metrics = trainer.eval_metrics
    results = []
    for ds in datasets:
        values = trainer.eval(ds)
        host = [_host(v) for v in values]
        lines = [f"Results on {getattr(ds, 'name', type(ds).__name__)}:"]
        for metric, value in zip(metrics, host):
            lines.append(f"\t{metric.name} ({metric.short_name}): {metric.pretty_print(value)}")
        if printing:
            print("\n".join(lines), file=out, flush=True)
        ds.reset()
        results.append(host)
    return results
