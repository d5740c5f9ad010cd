"""Device prefetching: copy the next batches to the accelerator while a step runs."""

from __future__ import annotations

import collections
import numbers
from collections.abc import Callable
from typing import Any

from keras_trainloop.data._common import short_repr
from keras_trainloop.data._protocol import Dataset
from keras_trainloop.data._tf_state import decode_stacks, encode_stacks


def _to_host(arrays: Any) -> Any:
    import jax

    return jax.device_get(arrays)


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(
            "The prefetch size must be a positive integer (the batches kept in flight). "
            f"Received: size={size!r}. Fix: pass e.g. size=2."
        )
    return int(size)


class DevicePrefetcher:
    """A Dataset that keeps the next `size` batches of another one in flight to the device.

    Each batch's `(inputs, labels)` is sent with a single asynchronous
    `jax.device_put(..., sharding)` (or `put(spec, inputs, labels)`) as soon as
    it is read, so the host-to-device copy of the next batches overlaps the
    current step. `spec` stays on the host. The wrapped dataset is read ahead:
    an `EOFError` (or any other exception) it raises is held until the batches
    read before it have been yielded.

    To feed a Trainer, pass `put=trainer.put_batch` (the Loop does): each batch
    is then laid out as the steps read it (split over a distribution's data
    axis; with several processes, global arrays built from this process's part),
    so the step neither copies it again nor reads it back.

    It pays on accelerators only; use `maybe_prefetch_to_device`, which skips it
    on the CPU backend, where it only adds cost.

    Args:
        dataset: the `Dataset` to read from.
        size: the number of batches kept in flight, at least 1.
        sharding: where to put each batch: `None` (the default device), a
            `jax.Device`, or a `jax.sharding.Sharding` (e.g.
            `NamedSharding(mesh, P("batch"))`), applied to every array.
        put: instead of `sharding`, `put(spec, inputs, labels) -> (inputs,
            labels)` placing a batch (e.g. `trainer.put_batch`).

    Raises:
        TypeError: `dataset` is not a `Dataset`, or `put` is not callable.
        ValueError: `size` is not a positive integer.

    Example:
        ds = DevicePrefetcher(ktl.ArrayDataset(x, y, batch_size=256), size=2)
        spec, inputs, labels = ds.yield_batch()   # jax.Array on the default device
    """

    def __init__(
        self,
        dataset: Dataset,
        size: int = 2,
        sharding: Any = None,
        *,
        put: Callable[[Any, list, list], tuple] | None = None,
    ):
        if put is not None and not callable(put):
            raise TypeError(
                "put must be a function put(spec, inputs, labels) -> (inputs, labels). "
                f"Received: put={short_repr(put)}. Fix: pass e.g. put=trainer.put_batch."
            )
        if not isinstance(dataset, Dataset):
            raise TypeError(
                "DevicePrefetcher wraps a Dataset (with name, yield_batch() and reset()). "
                f"Received: dataset={short_repr(dataset)} of type {type(dataset).__name__}. "
                "Fix: wrap your data in ktl.ArrayDataset, ktl.IterableDataset or ktl.TFDataset."
            )
        import jax

        self._device_put = jax.device_put
        self._dataset = dataset
        self._size = _check_size(size)
        self._sharding = sharding
        self._put = put if put is not None else self._put_with_sharding
        # (spec, the placed (inputs, labels), the host ones: kept for get_state, no copy).
        self._queue: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        self._error: BaseException | None = None  # Raised by the dataset while reading ahead.

    @property
    def name(self) -> str:
        """The wrapped dataset's name."""
        return self._dataset.name

    @property
    def dataset(self) -> Dataset:
        """The wrapped dataset."""
        return self._dataset

    def __repr__(self) -> str:
        return f"DevicePrefetcher({self._dataset!r}, size={self._size})"

    def _put_with_sharding(self, spec: Any, inputs: Any, labels: Any) -> Any:
        del spec
        return self._device_put((inputs, labels), self._sharding)

    def _fill(self) -> None:
        while len(self._queue) < self._size and self._error is None:
            try:
                spec, inputs, labels = self._dataset.yield_batch()
            except Exception as error:  # noqa: BLE001 - re-raised in order by yield_batch.
                self._error = error
                return
            self._queue.append((spec, self._put(spec, inputs, labels), (inputs, labels)))

    def yield_batch(self) -> tuple[Any, list[Any], list[Any]]:
        """Returns the next batch, with its arrays on the device.

        Returns:
            `(spec, inputs, labels)`, `inputs` and `labels` being lists of `jax.Array`.

        Raises:
            EOFError: the wrapped dataset is at its end (after its earlier batches).
            Exception: whatever the wrapped dataset raised, in its turn.
        """
        if not self._queue:
            self._fill()
            if not self._queue:
                error, self._error = self._error, None
                raise error
        spec, (inputs, labels), _ = self._queue.popleft()
        self._fill()
        return spec, list(inputs), list(labels)

    def get_state(self) -> dict:
        """The position of the batches yielded so far: the wrapped dataset's, plus those in flight.

        The batches read ahead are kept in the state as the wrapped dataset
        yielded them (host arrays: nothing is read back from the devices; specs
        must be None, str, int, float or bool), so a dataset restored from it
        yields exactly what this one yields next.

        Raises:
            AttributeError: the wrapped dataset has no `get_state`.
            ValueError: a batch in flight has a spec JSON cannot hold.
        """
        inner = self._dataset.get_state()
        specs = [spec for spec, _, _ in self._queue]
        for spec in specs:
            if spec is not None and not isinstance(spec, (str, int, float, bool)):
                raise ValueError(
                    f"DevicePrefetcher {self.name!r} cannot save a batch in flight with "
                    f"spec={short_repr(spec)}. Fix: use a spec of None, str or a number."
                )
        stacks = [tuple(_to_host(host)) for _, _, host in self._queue]
        return {
            "type": "DevicePrefetcher",
            "inner": inner,
            "specs": specs,
            "in_flight": encode_stacks(stacks),
            "ended": isinstance(self._error, EOFError),
        }

    def set_state(self, state: dict) -> None:
        """Continues from `get_state()`'s position: the wrapped dataset's, then the batches in flight.

        Raises:
            ValueError: `state` is not a DevicePrefetcher state.
        """
        if not isinstance(state, dict) or state.get("type") != "DevicePrefetcher":
            raise ValueError(
                f"Not a DevicePrefetcher state for {self.name!r}. Received: "
                f"{short_repr(state)}. Fix: pass what get_state() returned."
            )
        stacks = decode_stacks(state["in_flight"])
        self._dataset.set_state(state["inner"])
        self._queue.clear()
        for spec, (inputs, labels) in zip(state["specs"], stacks):
            self._queue.append((spec, self._put(spec, inputs, labels), (inputs, labels)))
        self._error = EOFError() if state.get("ended") else None

    def reset(self) -> None:
        """Drops the batches in flight and resets the wrapped dataset."""
        self._queue.clear()
        self._error = None
        self._dataset.reset()


def maybe_prefetch_to_device(
    dataset: Dataset,
    size: int = 2,
    sharding: Any = None,
    *,
    put: Callable[[Any, list, list], tuple] | None = None,
) -> Dataset:
    """Wraps `dataset` in a `DevicePrefetcher` where that pays: off the CPU backend.

    On the CPU backend (`jax.default_backend() == "cpu"`) the batches are
    already in host memory and prefetching only adds work (measured: slower
    per step), so `dataset` is returned unchanged, as Keras' own JAX trainer
    does. A dataset that is already a `DevicePrefetcher` is returned as is.

    Args:
        dataset: the `Dataset` to read from.
        size: the number of batches kept in flight on the device.
        sharding: `None`, a `jax.Device` or a `jax.sharding.Sharding` for each batch.
        put: instead of `sharding`, `put(spec, inputs, labels)` placing a batch
            (`trainer.put_batch`: the trainer's own layout; see `DevicePrefetcher`).

    Returns:
        `dataset` itself on the CPU backend, a prefetching wrapper otherwise.

    Raises:
        TypeError: `dataset` is not a `Dataset`.
        ValueError: `size` is not a positive integer.

    Example:
        train = ktl.data.maybe_prefetch_to_device(train, size=2)
    """
    _check_size(size)
    if isinstance(dataset, DevicePrefetcher):
        return dataset
    if not isinstance(dataset, Dataset):
        DevicePrefetcher(dataset)  # Raises the TypeError.
    import jax

    if jax.default_backend() == "cpu":
        return dataset
    return DevicePrefetcher(dataset, size, sharding, put=put)
