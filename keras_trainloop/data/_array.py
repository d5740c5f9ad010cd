"""ArrayDataset: batches sliced from in-memory numpy (or JAX) arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_trainloop.data._common import (
    check_batch_size,
    check_name,
    is_array_like,
    is_int,
    plain,
    short_repr,
)
from keras_trainloop.data._shard import check_shard, shard_arrays

_STATE_VERSION = 1
"""Version of the `get_state` dict; `set_state` refuses others."""

_PASS_COPY_BYTES = 64 * 2**20
"""Shuffled datasets up to this size are permuted once per pass (one extra copy), so each
batch is a slice (~1 µs) rather than a gather (~4 µs for digits)."""


def _to_numpy_list(side: str, value: Any) -> tuple[list[np.ndarray], tuple[str, ...] | None]:
    """Converts one side to a list of numpy arrays; also returns the dict keys, if a dict."""
    if value is None:
        if side == "inputs":
            raise TypeError(
                "ArrayDataset needs at least one input array. Received: inputs=None. "
                "Fix: pass an array or a list of arrays, e.g. ArrayDataset(x, y, batch_size=64)."
            )
        return [], None
    items, keys = _named_items(side, value)
    if side == "inputs" and not items:
        raise ValueError(
            f"ArrayDataset needs at least one input array. Received: inputs={value!r}. "
            "Fix: pass an array or a non-empty list of arrays."
        )
    return [_to_numpy(name, item) for name, item in items], keys


def _named_items(side: str, value: Any) -> tuple[list[tuple[str, Any]], tuple[str, ...] | None]:
    """The `(name, item)` pairs of one side, and its dict keys if it is a dict."""
    if isinstance(value, dict):
        return [(f"{side}[{key!r}]", v) for key, v in value.items()], tuple(value)
    if isinstance(value, (list, tuple)):
        return [(f"{side}[{i}]", v) for i, v in enumerate(value)], None
    if is_array_like(value):
        return [(side, value)], None
    raise TypeError(
        f"ArrayDataset takes an array or a list of arrays for {side}. "
        f"Received: {side}={short_repr(value)}. "
        f"Fix: convert it with np.asarray(...) or pass a list of arrays."
    )


def _to_numpy(name: str, item: Any) -> np.ndarray:
    """`item` as a numeric numpy array with a leading dimension, or raises naming it."""
    if not is_array_like(item):
        raise TypeError(
            f"ArrayDataset takes arrays (numpy, JAX, or anything np.asarray accepts "
            f"through __array__). Received: {name}={short_repr(item)}. "
            f"Fix: convert it with np.asarray(...)."
        )
    array = np.asarray(item)
    if array.dtype == object:
        raise TypeError(
            f"ArrayDataset takes numeric arrays. Received: {name} with dtype=object "
            f"and shape={array.shape}. Fix: pad ragged data to a common shape and "
            f"convert it to a numeric dtype."
        )
    if array.ndim == 0:
        raise ValueError(
            f"Each array needs a leading dimension indexing the examples. "
            f"Received: {name}={short_repr(item)} with shape=(). "
            f"Fix: pass arrays of shape (num_examples, ...)."
        )
    return array


class ArrayDataset:
    """Batches from in-memory numpy or JAX arrays, optionally shuffled and endless.

    Arrays are converted to numpy once, at construction (`np.asarray`: no copy
    for numpy arrays, nor for JAX arrays on the CPU; one device-to-host copy for
    JAX arrays on an accelerator), and batches are numpy slices: about 2 µs a
    batch, where indexing JAX arrays costs 80-600 µs a batch on the CPU. The
    compiled step (or `maybe_prefetch_to_device`) moves them to the device.
    Unshuffled batches are views of the arrays (no copy); shuffled ones are
    gathered copies (`array[indices]`), so no second copy of the data is kept.

    Each pass (epoch) visits every example once. With `shuffle=True` each pass
    has its own order, drawn from `np.random.default_rng(seed)`: the same seed
    gives the same sequence of epochs in every instance and every run. `reset()`
    starts a fresh pass with a new order; calling it when no batch was read
    since the pass began changes nothing, so an extra `reset()` before training
    does not shift the sequence.

    `get_state()` returns the position (pass, offset in it, shuffling state) as
    plain JSON values, and `set_state(state)` moves a dataset built with the
    same arguments there: it then yields exactly the batches the saved one
    yielded next, across passes, `reset()` and `yield_batches` alike.

    With `loop_forever=True` the passes follow each other without end and
    `yield_batch` never raises `EOFError`; every batch is full, a batch that
    reaches the end of a pass being completed from the start of the next one
    (like `tf.data`'s `repeat().batch()`), so `drop_remainder` does not apply.
    Otherwise the last batch of a pass is short unless `drop_remainder=True`.

    Args:
        inputs: an array, a list/tuple of arrays, or a dict of arrays (its values
            in key order) sharing the leading (example) dimension.
        labels: the same, or `None` / `[]` for no labels.
        batch_size: examples per batch, a positive integer.
        shuffle: whether to visit the examples in a new random order each pass.
        seed: seed of the shuffling generator; `None` draws a fresh one.
        loop_forever: whether to start a new pass at the end of each one
            instead of raising `EOFError`.
        drop_remainder: whether to drop the short last batch of a pass.
        name: the dataset's name.
        spec: the `spec` returned with every batch. Defaults to `None`, or to
            the tuple of keys when `inputs` is a dict.
        shard: `(index, count)`: every `count`-th example from `index` on, as many
            per shard (`ktl.data.process_shard()` with several processes); `batch_size`
            is then per process (the global batch: `batch_size * count`).

    Raises:
        TypeError: `inputs` is `None`, or an array is not array-like, or the
            batch size or name has the wrong type.
        ValueError: no input array, arrays with different numbers of examples,
            zero examples, a rank-0 array, `batch_size <= 0`, or
            `drop_remainder=True` with fewer examples than `batch_size`.

    Example:
        ds = ktl.ArrayDataset(x_train, y_train, batch_size=64, shuffle=True, seed=0)
        spec, inputs, labels = ds.yield_batch()   # None, [x (64, ...)], [y (64,)]
    """

    def __init__(
        self,
        inputs: Any,
        labels: Any,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        loop_forever: bool = False,
        drop_remainder: bool = False,
        name: str = "array",
        spec: Any = None,
        shard: tuple[int, int] | None = None,
    ):
        input_arrays, input_keys = _to_numpy_list("inputs", inputs)
        label_arrays, _ = _to_numpy_list("labels", labels)
        self._batch_size = check_batch_size(batch_size)
        self.name = check_name(name)
        self._arrays = input_arrays + label_arrays
        self._num_inputs = len(input_arrays)
        self._num_examples = self._check_num_examples(input_arrays, label_arrays)
        self._arrays, self._num_examples = shard_arrays(
            check_shard(shard, "ArrayDataset"), self._arrays, self._num_examples, "ArrayDataset"
        )
        self._spec = input_keys if spec is None and input_keys is not None else spec
        self._loop_forever = bool(loop_forever)
        self._drop_remainder = bool(drop_remainder)
        if (
            self._drop_remainder
            and not self._loop_forever
            and (self._num_examples < self._batch_size)
        ):
            raise ValueError(
                "With drop_remainder=True a pass needs at least batch_size examples, "
                f"or it yields no batch. Received: batch_size={self._batch_size} for "
                f"{self._num_examples} examples. Fix: use a smaller batch_size or "
                "drop_remainder=False."
            )
        self._rng = np.random.default_rng(seed) if shuffle else None
        self._pass_rng_state: dict | None = None  # The RNG state that drew the pass's order.
        self._pass = -1  # Passes begun before the current one (_begin_pass counts it).
        self._order: np.ndarray | None = None  # None: examples in their stored order.
        # Small shuffled datasets are gathered once per pass, so batches are cheap slices.
        self._copy_passes = shuffle and sum(a.nbytes for a in self._arrays) <= _PASS_COPY_BYTES
        self._pass_arrays: list[np.ndarray] | None = None
        self._pos = 0
        self._untouched = True  # No batch was read since the current pass began.
        self._begin_pass()

    @staticmethod
    def _check_num_examples(inputs: list[np.ndarray], labels: list[np.ndarray]) -> int:
        named = [(f"inputs[{i}]", a) for i, a in enumerate(inputs)]
        named += [(f"labels[{i}]", a) for i, a in enumerate(labels)]
        first_name, first = named[0]
        num_examples = first.shape[0]
        for name, array in named[1:]:
            if array.shape[0] != num_examples:
                raise ValueError(
                    "All arrays must have the same number of examples (leading dimension). "
                    f"Received: {name} with {array.shape[0]} examples (shape={array.shape}) "
                    f"but {first_name} with {num_examples} (shape={first.shape}). "
                    "Fix: pass arrays whose first dimension indexes the same examples."
                )
        if num_examples == 0:
            raise ValueError(
                f"ArrayDataset needs at least one example. Received: {first_name} with "
                f"shape={first.shape}. Fix: pass non-empty arrays."
            )
        return num_examples

    @property
    def batch_size(self) -> int:
        """Examples per batch."""
        return self._batch_size

    @property
    def num_examples(self) -> int:
        """Examples in one pass."""
        return self._num_examples

    def __len__(self) -> int:
        """Batches in one pass (for `loop_forever=True`, full batches in one pass)."""
        if self._drop_remainder or self._loop_forever:
            return self._num_examples // self._batch_size
        return (self._num_examples + self._batch_size - 1) // self._batch_size

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, num_examples={self._num_examples}, "
            f"batch_size={self._batch_size}, shuffle={self._rng is not None}, "
            f"loop_forever={self._loop_forever})"
        )

    def _begin_pass(self) -> None:
        self._pass += 1
        self._pos = 0
        self._untouched = True
        self._pass_arrays = None
        if self._rng is not None:
            self._pass_rng_state = self._rng.bit_generator.state
            self._order = self._rng.permutation(self._num_examples)

    def _copy_pass(self) -> None:
        """Gathers the pass's examples in their order once, so each batch is a slice.

        Done when a pass starts with `yield_batch` (one batch at a time);
        `yield_batches` gathers its n batches directly, which is cheaper than
        a copy of the pass shared by a few calls.
        """
        self._pass_arrays = [a[self._order] for a in self._arrays]

    def _split(self, batch: list[np.ndarray]) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
        k = self._num_inputs
        return self._spec, batch[:k], batch[k:]

    def yield_batch(self) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
        """Returns the next batch as `(spec, inputs, labels)` of numpy arrays.

        Returns:
            `(spec, inputs, labels)`; `labels` is `[]` when there are none.

        Raises:
            EOFError: the pass is over (never with `loop_forever=True`); call
                `reset()` to start another.
        """
        start = self._pos
        stop = start + self._batch_size
        if stop <= self._num_examples:  # The common case: a full batch inside the pass.
            return self._split(self._full_batch(start, stop))
        if self._loop_forever:
            return self._split(self._wrapped_batch(start))
        return self._split(self._last_batch(start))

    def _full_batch(self, start: int, stop: int) -> list[np.ndarray]:
        """Examples `start:stop` of the pass, a batch read on its own."""
        if self._untouched and self._copy_passes:
            self._copy_pass()
        self._advance(stop)
        return self._pass_slice(start, stop)

    def _wrapped_batch(self, start: int) -> list[np.ndarray]:
        """The batch from `start` completed from the next pass (`loop_forever=True`)."""
        indices = self._wrapped_indices(start)
        if self._copy_passes:  # The new pass goes on one batch at a time.
            self._copy_pass()
        return [a[indices] for a in self._arrays]

    def _last_batch(self, start: int) -> list[np.ndarray]:
        """The short last batch of the pass from `start`, or raises `EOFError` if none."""
        if start >= self._num_examples or self._drop_remainder:
            self._pos = self._num_examples
            raise EOFError(f"End of dataset {self.name!r}; call reset() to start a new pass.")
        self._advance(self._num_examples)
        return self._gather(start, None)

    def _advance(self, stop: int) -> None:
        self._pos = stop
        self._untouched = False

    def _pass_slice(self, start: int, stop: int) -> list[np.ndarray]:
        """Examples `start:stop` of the pass: slices of its copy when there is one."""
        if self._order is not None and self._pass_arrays is not None:
            return [a[start:stop] for a in self._pass_arrays]
        return self._gather(start, stop)

    def _gather(self, start: int, stop: int | None) -> list[np.ndarray]:
        """Examples `start:stop` of the pass from the arrays: slices, or gathered in its order."""
        if self._order is None:
            return [a[start:stop] for a in self._arrays]
        indices = self._order[start:stop]
        return [a[indices] for a in self._arrays]

    def yield_batches(self, n: int) -> tuple[Any, list[np.ndarray], list[np.ndarray]] | None:
        """Returns the next `n` batches stacked on a new leading axis, or None.

        The arrays have shape `(n, batch_size, ...)` and hold the batches that
        `n` calls of `yield_batch` would return, in order (unshuffled ones are
        views, no copy). When fewer than `n` full batches are left in the pass
        (never with `loop_forever=True`), it returns None and reads nothing:
        read the rest with `yield_batch`. The Loop uses it to run `n` steps in
        one compiled call.

        Raises:
            ValueError: `n` is not a positive integer.
        """
        check_batch_size(n, "n")
        size = self._batch_size
        start = self._pos
        stop = start + n * size
        if stop <= self._num_examples:
            self._advance(stop)
            batch = self._pass_slice(start, stop)
        elif self._loop_forever:
            indices = self._wrapped_indices(start, n * size)
            batch = [a[indices] for a in self._arrays]
        else:
            return None
        return self._split([a.reshape((n, size, *a.shape[1:])) for a in batch])

    def _wrapped_indices(self, start: int, count: int | None = None) -> np.ndarray:
        """Indices of `count` examples (a batch) from `start` into the following pass(es)."""
        pieces = [self._pass_indices(start, self._num_examples)]
        missing = (count or self._batch_size) - (self._num_examples - start)
        while missing > 0:
            self._begin_pass()
            take = min(missing, self._num_examples)
            pieces.append(self._pass_indices(0, take))
            self._pos = take
            missing -= take
        self._untouched = False
        return np.concatenate(pieces)

    def _pass_indices(self, start: int, stop: int) -> np.ndarray:
        if self._order is None:
            return np.arange(start, stop)
        return self._order[start:stop]

    def reset(self) -> None:
        """Starts a fresh pass (reshuffled when `shuffle=True`).

        Nothing changes when no batch was read since the current pass began.
        """
        if not self._untouched:
            self._begin_pass()

    def _arguments(self) -> dict[str, Any]:
        """The arguments that shape the batches, as `get_state` records them."""
        return {
            "num_examples": self._num_examples,
            "batch_size": self._batch_size,
            "shuffle": self._rng is not None,
            "loop_forever": self._loop_forever,
            "drop_remainder": self._drop_remainder,
        }

    def get_state(self) -> dict[str, Any]:
        """The dataset's position, from which `set_state` yields the same batches next.

        Cheap (a few µs, no copy of the data): call it at every checkpoint.

        Returns:
            A dict of plain values that `json.dumps` / `json.loads` keep
            exactly: `pass` (passes begun before the current one), `offset`
            (examples of the pass read so far), `rng` (numpy's bit generator
            state when the pass began, from which its order and all later
            ones are drawn; None without shuffling), and the arguments that
            shape the batches (`num_examples`, `batch_size`, `shuffle`,
            `loop_forever`, `drop_remainder`), which `set_state` checks.

        Example:
            state = train.get_state()           # e.g. json.dump(state, f)
            resumed = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True)
            resumed.set_state(state)            # the next batches are train's
        """
        return {
            "dataset": "ArrayDataset",
            "version": _STATE_VERSION,
            **self._arguments(),
            "pass": self._pass,
            "offset": self._pos,
            "rng": plain(self._pass_rng_state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Moves to the position `state` (from `get_state`) records.

        Afterwards the dataset yields exactly the batches that the dataset
        which returned `state` yielded next, and the same later passes
        (`seed` is overridden by the saved shuffling state). `state` is
        checked first: when it is refused, nothing changes.

        Args:
            state: a dict from `get_state` of an `ArrayDataset` built with
                the same arguments (also after a JSON round trip).

        Raises:
            ValueError: `state` is not such a dict, or it comes from a
                dataset with another number of examples, batch size,
                `shuffle`, `loop_forever` or `drop_remainder` (the message
                names what differs).
        """
        pass_index, offset, rng = self._checked_state(state)
        self._rng = rng
        self._pass = pass_index - 1
        self._begin_pass()  # Draws the saved pass's order again, so the RNG is where it was.
        self._pos = offset
        self._untouched = offset == 0
        if self._copy_passes and not self._untouched:
            self._copy_pass()

    def _checked_state(self, state: Any) -> tuple[int, int, np.random.Generator | None]:
        """`(pass, offset, generator)` from `state`, or raises saying what is wrong."""
        if not isinstance(state, dict) or state.get("dataset") != "ArrayDataset":
            raise ValueError(
                "ArrayDataset.set_state takes the dict that ArrayDataset.get_state() returns. "
                f"Received: state={short_repr(state)}. Fix: pass the state saved from an "
                "ArrayDataset (its 'dataset' entry is 'ArrayDataset')."
            )
        if state.get("version") != _STATE_VERSION:
            raise self._bad_state(
                state,
                f"version={state.get('version')!r}, expected {_STATE_VERSION}",
                "start without the saved state, or "
                "resume with the keras_trainloop version that saved it",
            )
        self._check_arguments(state)
        pass_index, offset = state.get("pass"), state.get("offset")
        if not is_int(pass_index) or pass_index < 0:
            raise self._bad_state(state, f"pass={pass_index!r}", "pass a non-negative integer")
        if not is_int(offset) or not 0 <= offset <= self._num_examples:
            raise self._bad_state(
                state, f"offset={offset!r}", f"pass an integer in [0, {self._num_examples}]"
            )
        return pass_index, offset, self._state_generator(state)

    def _check_arguments(self, state: dict[str, Any]) -> None:
        """Raises naming the arguments in which `state`'s dataset differs from this one."""
        differs = [
            f"{key}={state.get(key)!r} in the state but {value!r} here"
            for key, value in self._arguments().items()
            if state.get(key) != value
        ]
        if differs:
            raise ValueError(
                f"ArrayDataset {self.name!r} cannot take a state saved from a dataset with "
                f"other arguments: {'; '.join(differs)}. Fix: build the dataset with the "
                "same arrays and arguments as the one whose state was saved, or start it "
                "without the saved state."
            )

    def _state_generator(self, state: dict[str, Any]) -> np.random.Generator | None:
        """A generator in the state's `rng` state (None without shuffling), or raises."""
        rng_state = state.get("rng")
        if self._rng is None:
            if rng_state is not None:
                raise self._bad_state(
                    state, f"rng={short_repr(rng_state)}", "pass rng=None for an unshuffled dataset"
                )
            return None
        generator = np.random.Generator(np.random.PCG64())
        try:
            generator.bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as error:
            raise self._bad_state(
                state,
                f"rng={short_repr(rng_state)} ({error})",
                "pass the rng entry as get_state() saved it",
            ) from None
        return generator

    def _bad_state(self, state: dict[str, Any], what: str, fix: str) -> ValueError:
        return ValueError(
            f"ArrayDataset {self.name!r} cannot take this state: {what}. "
            f"Received: state={short_repr(state, 200)}. Fix: {fix}; use the dict that "
            "get_state() returned, unchanged."
        )
