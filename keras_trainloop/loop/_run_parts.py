"""Small parts of a run: argument checks, and what `fit` users expect (validation, History,
a built model)."""

from __future__ import annotations

from typing import Any

import keras

VAL_LOGS_KEY = "val_logs"
"""`loop.shared_data` key: the last validation's logs (`{"val_loss": ..., ...}`)."""


def check_count(name: str, value: Any, method: str) -> int:
    """Returns `value` if it is a non-negative int, else raises ValueError naming `method`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"loop.{method}() expects a non-negative int {name}. Received: {name}={value!r}."
        )
    return value


def _is_dataset(ds: Any) -> bool:
    return callable(getattr(ds, "yield_batch", None)) and callable(getattr(ds, "reset", None))


def check_dataset(ds: Any, method: str) -> None:
    """Raises TypeError unless `ds` has `yield_batch()` and `reset()` (a `ktl.Dataset`)."""
    if not _is_dataset(ds):
        raise TypeError(
            f"loop.{method}() expects a dataset with yield_batch() and reset() (ktl.Dataset). "
            f"Received: ds={ds!r}. Fix: wrap arrays in ktl.ArrayDataset or a tf.data pipeline "
            "in ktl.TFDataset."
        )


def dataset_name(ds: Any) -> str:
    return str(getattr(ds, "name", type(ds).__name__))


def check_validation(validation_data: Any, validation_freq: Any, method: str) -> None:
    """Raises a clear error for a bad `validation_data` / `validation_freq`, before any state changes.

    `run_steps` takes None or an int >= 1 (steps); `run_epochs` an int >= 1
    or a list of epochs counted from 1, as `fit` does.
    """
    if validation_data is not None and not _is_dataset(validation_data):
        raise TypeError(
            f"loop.{method}() expects validation_data to be a finite ktl.Dataset (with "
            f"yield_batch() and reset()). Received: validation_data={validation_data!r}. Fix: "
            "wrap arrays as ktl.ArrayDataset(x_val, y_val, batch_size=...) or a tf.data "
            "pipeline as ktl.TFDataset(...)."
        )
    if not _valid_freq(validation_freq, method):
        _bad_freq(validation_freq, method)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _valid_freq(validation_freq: Any, method: str) -> bool:
    if validation_freq is None:
        return method == "run_steps"
    if isinstance(validation_freq, (list, tuple)):
        return method == "run_epochs" and all(_is_positive_int(e) for e in validation_freq)
    return _is_positive_int(validation_freq)


def _bad_freq(validation_freq: Any, method: str) -> None:
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
