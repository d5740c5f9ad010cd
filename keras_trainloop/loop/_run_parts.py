"""Small parts of a run: argument checks, and what `fit` users expect (validation, History,
a built model)."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import keras

from keras_trainloop._describe import short_repr
from keras_trainloop.data import ArrayDataset, TFDataset

_TF_INFINITE_CARDINALITY = -1
"""`tf.data.INFINITE_CARDINALITY` (named here so that no check imports TensorFlow)."""

VAL_LOGS_KEY = "val_logs"
"""`loop.shared_data` key: the last validation's logs (`{"val_loss": ..., ...}`)."""


def check_count(name: str, value: Any, method: str) -> int:
    """Returns `value` if it is a non-negative int, else raises ValueError naming `method`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"loop.{method}() expects a non-negative int {name}. Received: "
            f"{name}={short_repr(value)}. Fix: pass {name} as an int >= 0 (e.g. "
            f"{name}=int(value))."
        )
    return value


def _is_dataset(ds: Any) -> bool:
    return callable(getattr(ds, "yield_batch", None)) and callable(getattr(ds, "reset", None))


def _adaptable(ds: Any) -> bool:
    """A source `ktl.as_dataset` reads on its own (tf.data, PyDataset, grain, a generator).

    Arrays are not: `run_steps(ds, ...)` has no place for their labels (wrap them with
    `ktl.as_dataset(x, y)`), and the argument checks explain that.
    """
    if ds is None or _is_dataset(ds) or hasattr(ds, "__array__"):
        return False
    return not isinstance(ds, (tuple, list, dict, str, bytes, int, float))


def adapt_inputs(loop: Any, ds: Any, validation_data: Any) -> tuple[Any, Any]:
    """`ds` and `validation_data` as `ktl.Dataset`s when `fit` would take them.

    A source given again to the same loop gets the same Dataset, so a second
    `run_steps` continues its data instead of starting it over.
    """
    from keras_trainloop.data import as_dataset, as_validation_data

    cache = loop.__dict__.setdefault("_adapted", weakref.WeakKeyDictionary())
    if _adaptable(ds):
        try:
            adapted = cache.get(ds)
        except TypeError:  # Not weak-referenceable: converted each time.
            adapted = None
        if adapted is None:
            adapted = as_dataset(ds)
            with contextlib.suppress(TypeError):
                cache[ds] = adapted
        ds = adapted
    if isinstance(validation_data, (tuple, list)) or _adaptable(validation_data):
        with contextlib.suppress(TypeError, ValueError):  # check_validation explains.
            validation_data = as_validation_data(validation_data)
    return ds, validation_data


def checked_inputs(
    loop: Any,
    method: str,
    ds: Any,
    validation_data: Any,
    validation_freq: Any,
    *,
    finite: bool = False,
) -> tuple[Any, Any]:
    """`adapt_inputs`, then the checks of `ds` and of the validation arguments."""
    ds, validation_data = adapt_inputs(loop, ds, validation_data)
    check_dataset(ds, method, finite=finite)
    check_validation(validation_data, validation_freq, method)
    return ds, validation_data


def check_dataset(ds: Any, method: str, *, finite: bool = False) -> None:
    """Raises TypeError unless `ds` has `yield_batch()` and `reset()` (a `ktl.Dataset`).

    With `finite`, also ValueError when it declares it never ends (`check_ends`).
    """
    if not _is_dataset(ds):
        raise TypeError(
            f"loop.{method}() expects a dataset with yield_batch() and reset() (ktl.Dataset). "
            f"Received: ds={short_repr(ds)}. Fix: wrap arrays in ktl.ArrayDataset or a tf.data "
            "pipeline in ktl.TFDataset."
        )
    if finite:
        check_ends(ds, method)


def dataset_name(ds: Any) -> str:
    return str(getattr(ds, "name", type(ds).__name__))


def endless_reason(ds: Any) -> str | None:
    """How `ds` declares that it never ends, or None when it may end (or nothing says).

    Known cheaply: a `loop_forever` attribute that is True (`ktl.ArrayDataset(...,
    loop_forever=True)`, any dataset declaring it), or a `ktl.TFDataset` whose
    tf.data cardinality is infinite (`.repeat()`, `from_tfds(..., loop_forever=True)`).
    A wrapper exposing the wrapped dataset as `dataset` (the device prefetcher)
    is looked through. Other datasets (an endless generator) are not detected.
    """
    for _ in range(4):  # Wrappers of wrappers, not a cycle.
        if getattr(ds, "loop_forever", None) is True or (
            isinstance(ds, ArrayDataset) and ds._loop_forever  # No public flag (yet).
        ):
            return "loop_forever=True"
        if isinstance(ds, TFDataset) and _tf_cardinality(ds) == _TF_INFINITE_CARDINALITY:
            return "tf.data cardinality infinite, e.g. after .repeat()"
        inner = getattr(ds, "dataset", None)
        if inner is None or inner is ds or not _is_dataset(inner):
            return None
        ds = inner
    return None


def _tf_cardinality(ds: TFDataset) -> int:
    """tf.data's cardinality: the batches of a pass, -1 infinite, -2 unknown (a cheap read)."""
    return int(ds.tf_dataset.cardinality())


def check_ends(ds: Any, method: str, argument: str = "ds") -> None:
    """Raises ValueError when `ds` declares that it never ends (see `endless_reason`).

    `run_epochs` needs each epoch to end (`EOFError`), and so does a validation.
    """
    reason = endless_reason(ds)
    if reason is None:
        return
    if argument == "ds":
        fix = (
            "use loop.run_steps(ds, steps) to train on a dataset that loops forever, "
            "or create it with loop_forever=False (a tf.data pipeline without .repeat())"
        )
    else:
        fix = (
            f"pass a finite {argument} (created with loop_forever=False, a tf.data "
            "pipeline without .repeat())"
        )
    raise ValueError(
        f"loop.{method}() needs a finite {argument} (it must end with EOFError), but "
        f"dataset {short_repr(dataset_name(ds))} never ends ({reason}). Received: "
        f"{argument}={short_repr(ds)}. Fix: {fix}."
    )


def check_validation(validation_data: Any, validation_freq: Any, method: str) -> None:
    """Raises a clear error for a bad `validation_data` / `validation_freq`, before any state changes.

    `run_steps` takes None or an int >= 1 (steps); `run_epochs` an int >= 1
    or a list of epochs counted from 1, as `fit` does.
    """
    if validation_data is not None and not _is_dataset(validation_data):
        raise TypeError(
            f"loop.{method}() expects validation_data to be a finite ktl.Dataset (with "
            f"yield_batch() and reset()). Received: validation_data="
            f"{short_repr(validation_data)}. Fix: "
            "wrap arrays as ktl.ArrayDataset(x_val, y_val, batch_size=...) or a tf.data "
            "pipeline as ktl.TFDataset(...)."
        )
    if validation_data is not None:
        check_ends(validation_data, method, "validation_data")
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
    accepted = (
        "None or an int >= 1"
        if method == "run_steps"
        else "an int >= 1 or a list of epochs counted from 1"
    )
    fix = (
        "validation_freq=1000 (steps), or None to validate only at the end of the run"
        if method == "run_steps"
        else "validation_freq=1 (after every epoch), 2, ..., or a list such as [1, 5, 10]"
    )
    raise ValueError(
        f"loop.{method}() expects validation_freq to be {accepted} ({unit} between "
        f"validations). Received: validation_freq={short_repr(validation_freq)}. "
        f"Fix: pass {fix}."
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
        # The position before the batch read ahead: what the first step has not consumed.
        has_state = callable(getattr(ds, "get_state", None))
        self._state_before = ds.get_state() if has_state else None
        try:
            self.first: tuple | None = ds.yield_batch()
        except EOFError:
            self.first = None
        self._held = True
        if callable(getattr(ds, "yield_batches", None)):
            self.yield_batches = self._yield_batches
        if has_state:
            self.get_state = self._get_state
            self.set_state = self._set_state

    def _get_state(self) -> dict:
        return self._state_before if self._held else self._ds.get_state()

    def _set_state(self, state: dict) -> None:
        self._held, self.first = False, None  # The batch read ahead is not the one to come.
        self._ds.set_state(state)

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
