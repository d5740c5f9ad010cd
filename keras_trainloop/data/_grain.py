"""GrainDataset: batches from a grain `MapDataset`, `IterDataset` or `DataLoader`.

grain is imported only when a grain object reaches `GrainDataset` (it is
already imported then: the object is grain's), never by `import keras_trainloop`.
Each pass is a fresh `iter()` of the grain object, as `model.fit` iterates it
each epoch; grain's iterators save and restore their position
(`get_state` / `set_state`), and so does `GrainDataset`, with the batches it
has read ahead for `yield_batches`.
"""

from __future__ import annotations

import base64
import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from keras_trainloop.data._common import short_repr
from keras_trainloop.data._elements import ElementSource
from keras_trainloop.data._tf_state import Unsaveable, decode_stacks, encode_stacks

_STATE_VERSION = 1
"""Version of the `get_state` dict; `set_state` refuses others."""

_ENDLESS_LEN = sys.maxsize // 2**16
"""grain gives an endless `repeat()` the length `sys.maxsize` (divided by the batch size
after `.batch`): lengths from this one up mean endless."""


def _grain_types() -> tuple[type, ...]:
    """grain's dataset types, or () when grain is not imported (then nothing is grain's)."""
    if "grain" not in sys.modules:
        return ()
    import grain

    return (grain.MapDataset, grain.IterDataset, grain.DataLoader)


def _plain(value: Any, where: str = "state") -> Any:
    """`value` (a grain iterator state) as JSON values, or raises Unsaveable."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise Unsaveable(f"grain's iterator state holds {short_repr(value)} at {where}")


def _encode(state: Any) -> dict[str, Any]:
    if isinstance(state, bytes):  # DataLoader: its state is JSON text as bytes.
        return {"bytes": base64.b64encode(state).decode("ascii")}
    plain = _plain(state)
    json.dumps(plain)  # Raises TypeError for what _plain let through (none known).
    return {"value": plain}


def _decode(encoded: Any) -> Any:
    if not isinstance(encoded, dict) or not ("bytes" in encoded or "value" in encoded):
        raise ValueError(f"its iterator state is not readable: {short_repr(encoded)}")
    if "bytes" in encoded:
        return base64.b64decode(encoded["bytes"].encode("ascii"), validate=True)
    return encoded["value"]


class GrainDataset(ElementSource):
    """Batches from a grain `MapDataset`, `IterDataset` or `DataLoader`, as `model.fit` reads it.

    Each element must be a batch (`ds.batch(64)`, or a `DataLoader` with a
    `grain.transforms.Batch` operation): `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)`, where a dict is `x` (map grain's usual
    `{"image": ..., "label": ...}` dicts to `(x, y)` tuples, e.g.
    `ds.map(lambda ex: (ex["image"], ex["label"]))`). `inputs` is `[x]` (or
    the arrays of a tuple or dict `x`), `labels` is `[y, sample_weight]`
    (those given); see `keras_trainloop/data/_elements.py`.

    Each pass iterates the grain object afresh (`iter(source)`), as `fit`
    does each epoch: a `MapDataset.shuffle(seed=...)` gives the same order
    every pass (grain draws a new order per epoch of `.repeat(n)`, which
    makes one pass of `n` epochs). An endless `repeat()` never raises
    `EOFError` (`loop_forever` is True for a `MapDataset`, whose length
    says so). `yield_batches(n)` stacks `n` batches, so the Loop can fuse steps.

    `get_state()` saves the position with grain's iterator checkpoint
    (`DatasetIterator.get_state()`, `DataLoaderIterator.get_state()`) plus
    the batches read ahead and not yet returned; `set_state(state)` on the
    same pipeline yields the batches that followed. An iterator that grain
    cannot save gives a state with `"saved": False`; `set_state` then warns
    and starts a fresh pass.

    Several processes: each reads its own shard, with grain's sharding
    (`DataLoader(..., shard_options=grain.sharding.ShardByJaxProcess())`, or
    `ds.slice(slice(jax.process_index(), None, jax.process_count()))` before
    `.batch`); the batch size is then per process.

    Args:
        source: a `grain.MapDataset`, `grain.IterDataset` or `grain.DataLoader`.
        name: the dataset's name.
        spec: the `spec` returned with every batch; defaults to `None`, or
            to the tuple of keys when `x` is a dict.

    Raises:
        TypeError: `source` is none of grain's three types.

    Example:
        source = grain.MapDataset.source(range(len(x))).shuffle(seed=0)
        source = source.map(lambda i: (x[i], y[i])).batch(64, drop_remainder=True)
        train = ktl.data.GrainDataset(source.repeat(), name="train")
    """

    def __init__(self, source: Any, *, name: str = "grain", spec: Any = None):
        types = _grain_types()
        if not types or not isinstance(source, types):
            raise TypeError(
                "GrainDataset takes a grain.MapDataset, grain.IterDataset or grain.DataLoader. "
                f"Received: source={short_repr(source)} of type {type(source).__name__}. Fix: "
                "build it with grain (e.g. grain.MapDataset.source(...).batch(64)), or use "
                "ktl.as_dataset(...) for other inputs."
            )
        super().__init__(
            name=name,
            spec=spec,
            what="grain dataset",
            batch_fix="batch them in grain, e.g. ds.batch(64), or add "
            "grain.transforms.Batch(64) to a DataLoader's operations.",
        )
        self._source = source
        self._warned_restart = False

    @property
    def source(self) -> Any:
        """The wrapped grain object."""
        return self._source

    def _length(self) -> int | None:
        import grain

        return len(self._source) if isinstance(self._source, grain.MapDataset) else None

    @property
    def loop_forever(self) -> bool:
        """Whether the dataset is known to be endless (a `MapDataset` after `repeat()`)."""
        length = self._length()
        return length is not None and length >= _ENDLESS_LEN

    def __len__(self) -> int:
        """Batches in one pass, for a finite `MapDataset` (`len(source)`).

        Raises:
            TypeError: the length is unknown (`IterDataset`, `DataLoader`) or endless.
        """
        length = self._length()
        if length is None or length >= _ENDLESS_LEN:
            raise TypeError(f"GrainDataset {self.name!r} has no known length.")
        return length

    def __repr__(self) -> str:
        return f"GrainDataset(name={self.name!r}, source={type(self._source).__name__})"

    def _open(self) -> Iterator[Any]:
        return iter(self._source)

    def _closed(self, ended: bool) -> None:
        close = getattr(self._iterator, "close", None)
        if callable(close):
            close()

    def get_state(self) -> dict[str, Any]:
        """The dataset's position, from which `set_state` yields the same batches next.

        Returns:
            A dict of plain JSON values: `saved`, grain's iterator state
            (`None` at the start of a pass), the batches read ahead as base64
            text, whether the pass had ended, and the keys of a dict `x`.
        """
        state = {
            "dataset": "GrainDataset",
            "version": _STATE_VERSION,
            "name": self.name,
            "source": type(self._source).__name__,
        }
        try:
            iterator = None
            if self._iterator is not None and not self._ended:
                iterator = _encode(self._iterator.get_state())
            pending = encode_stacks(self._stacker.pending())
        except (Unsaveable, NotImplementedError, TypeError, AttributeError) as why:
            return state | {"saved": False, "reason": str(why) or type(why).__name__}
        keys = None if self._keys is None else list(self._keys)
        return state | {
            "saved": True,
            "iterator": iterator,
            "pending": pending,
            "ended": self._ended,
            "keys": keys,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Moves to the position `state` (from `get_state`) records.

        Args:
            state: a dict from `get_state` of a `GrainDataset` over the same
                pipeline (built by the same code), also after a JSON round trip.

        Raises:
            ValueError: `state` is not such a dict, or grain cannot restore its
                iterator state into this pipeline. The position is unchanged then.
        """
        self._check_state(state)
        if not state.get("saved"):
            if not self._warned_restart:
                self._warned_restart = True
                warnings.warn(
                    f"GrainDataset {self.name!r}: its position was not saved "
                    f"({state.get('reason')}), so its data order restarts from a fresh "
                    "pass. Fix, for an exact resume: use grain's own datasets and "
                    "iterators, whose get_state() grain can save.",
                    stacklevel=2,
                )
            self.reset()
            return
        try:
            pending = decode_stacks(state.get("pending"))
            iterator = None
            if state.get("iterator") is not None:
                iterator = self._open()
                iterator.set_state(_decode(state["iterator"]))
        except Exception as error:  # noqa: BLE001 - grain's own errors vary by iterator.
            raise self._bad_state(state, f"{type(error).__name__}: {error}") from None
        self.reset()
        self._iterator, self._ended = iterator, bool(state.get("ended"))
        self._count = 1 if iterator is not None else 0
        keys = state.get("keys")
        spec = tuple(keys) if self._spec is None and keys is not None else self._spec
        self._stacker.restore(
            [(spec, [a[0] for a in ins], [a[0] for a in labs]) for ins, labs in pending],
            None,
        )

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("dataset") != "GrainDataset":
            raise ValueError(
                "GrainDataset.set_state takes the dict that GrainDataset.get_state() returns. "
                f"Received: state={short_repr(state)}. Fix: pass the state saved from a "
                "GrainDataset (its 'dataset' entry is 'GrainDataset')."
            )
        if state.get("version") != _STATE_VERSION:
            raise self._bad_state(
                state, f"version={state.get('version')!r}, expected {_STATE_VERSION}"
            )
        if state.get("source") != type(self._source).__name__:
            raise self._bad_state(
                state,
                f"it comes from a {state.get('source')}, this "
                f"dataset reads a {type(self._source).__name__}",
            )

    def _bad_state(self, state: dict[str, Any], what: str) -> ValueError:
        return ValueError(
            f"GrainDataset {self.name!r} cannot take this state: {what}. Received: a state "
            f"from dataset {state.get('name')!r}. Fix: build the grain pipeline with the "
            "same code and arguments as the one whose state was saved and pass "
            "get_state()'s dict unchanged, or start without the saved state."
        )
