"""Small parts of a run that `fit` users expect: validation arguments, History, a built model."""

from __future__ import annotations

from typing import Any

import keras


def check_validation(validation_data: Any, validation_freq: Any, method: str) -> None:
    """Raises a clear error for a bad `validation_data` / `validation_freq`, before any state changes.

    `run_steps` takes None or an int >= 1 (steps); `run_epochs` an int >= 1
    or a list of epochs counted from 1, as `fit` does.
    """
    if validation_data is not None and not (
        callable(getattr(validation_data, "yield_batch", None))
        and callable(getattr(validation_data, "reset", None))
    ):
        raise TypeError(
            f"loop.{method}() expects validation_data to be a finite ktl.Dataset (with "
            f"yield_batch() and reset()). Received: validation_data={validation_data!r}. Fix: "
            "wrap arrays as ktl.ArrayDataset(x_val, y_val, batch_size=...) or a tf.data "
            "pipeline as ktl.TFDataset(...)."
        )
    if validation_freq is None and method == "run_steps":
        return
    if isinstance(validation_freq, (list, tuple)) and method == "run_epochs":
        bad = [e for e in validation_freq if isinstance(e, bool) or not isinstance(e, int)
               or e < 1]
        if not bad:
            return
    elif (isinstance(validation_freq, int) and not isinstance(validation_freq, bool)
          and validation_freq >= 1):
        return
    unit = "steps" if method == "run_steps" else "epochs"
    accepted = ("None or an int >= 1" if method == "run_steps"
                else "an int >= 1 or a list of epochs counted from 1")
    raise ValueError(
        f"loop.{method}() expects validation_freq to be {accepted} ({unit} between "
        f"validations). Received: validation_freq={validation_freq!r}."
    )


def validation_due(epoch: int, validation_freq: Any) -> bool:
    """Whether `fit` would validate after `epoch` (from 0) with this `validation_freq`."""
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq


class _RunHistory(keras.callbacks.History):
    """A `keras.callbacks.History` filled by the Loop itself.

    Unlike Keras' own, recording an entry does not sync the training state
    into the model (Keras' `History` reads `self.model` for that, a full
    state sync); it still sets `model.history` to itself, as `fit` does.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        model = self._model
        if model is not None:
            model.history = self


def new_history(trainer: Any) -> keras.callbacks.History:
    """A fresh History for a run (as each `fit` call makes), with the trainer's model set."""
    history = _RunHistory()
    if trainer is not None:
        history._model = getattr(trainer, "model", None)  # At a run's start: nothing to sync.
    history.on_train_begin()
    return history


class FirstBatch:
    """A dataset with its first batch read ahead (to build the model before a run).

    `first` is that batch, or None when the dataset ended at once (the
    `EOFError` is raised again by the first `yield_batch`). While the batch is
    held, `yield_batches` returns None, so the first step runs on it alone.
    """

    def __init__(self, ds: Any):
        self._ds = ds
        self.name = getattr(ds, "name", type(ds).__name__)
        try:
            self.first: tuple | None = ds.yield_batch()
        except EOFError:
            self.first = None
        self._held = True
        if callable(getattr(ds, "yield_batches", None)):
            self.yield_batches = self._yield_batches

    def yield_batch(self) -> tuple:
        if self._held:
            self._held = False
            if self.first is None:
                raise EOFError
            batch, self.first = self.first, None
            return batch
        return self._ds.yield_batch()

    def _yield_batches(self, n: int) -> tuple | None:
        if self._held:
            return None
        return self._ds.yield_batches(n)

    def reset(self) -> None:
        self._held = False
        self.first = None
        self._ds.reset()
