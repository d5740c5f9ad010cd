"""How the Trainer honours a `keras.distribution`: state layouts and sharded batches.

Keras' distribution API decides where things live: `get_variable_layout` for
each variable, `get_data_layout(shape)` for each batch array. The Trainer
asks it once per variable list and once per distinct batch shape, and keeps
the answers, so a step only pays for one `jax.device_put` of the batch.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# The base class of keras.distribution.DataParallel and ModelParallel (not exported by Keras).
from keras.src.distribution.distribution_lib import Distribution

from keras_trainloop._describe import short_repr


def check_distribution(distribution: Any) -> Distribution | None:
    """Returns `distribution` if it is None or a Keras distribution (else raises TypeError)."""
    if distribution is not None and not isinstance(distribution, Distribution):
        raise TypeError(
            "distribution must be a Keras distribution (keras.distribution.DataParallel or "
            "ModelParallel) or None for the global one. "
            f"Received: distribution={short_repr(distribution)}. Fix: pass e.g. "
            "keras.distribution.DataParallel(), or None."
        )
    return distribution


@contextlib.contextmanager
def scope(distribution: Distribution | None) -> Iterator[None]:
    """Makes `distribution` the active one inside the block (nothing when None)."""
    if distribution is None:
        yield
        return
    with distribution.scope():
        yield


def describe(distribution: Distribution) -> str:
    """E.g. "DataParallel(mesh batch=8)"."""
    mesh = distribution.device_mesh
    axes = ", ".join(f"{name}={size}" for name, size in zip(mesh.axis_names, mesh.shape))
    return f"{type(distribution).__name__}(mesh {axes})"


def _backend_sharding(layout: Any) -> Any:
    """A JAX sharding from a Keras `TensorLayout` (or a JAX sharding, kept as is)."""
    return getattr(layout, "backend_layout", layout)


def replicated(distribution: Distribution) -> NamedSharding:
    """A copy of the value on every device of the distribution's mesh."""
    return NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec())


def unmatched_layout_patterns(distribution: Distribution, variables: Sequence[Any]) -> list[str]:
    """The `LayoutMap` keys of a `ModelParallel` that match no variable path (Keras' rule).

    Keras matches a variable's path against each key with `re.fullmatch`; a
    key that matches nothing leaves the variables it was meant for replicated,
    silently. (Keras has no public accessor for a distribution's layout map.)
    """
    layout_map = getattr(distribution, "_layout_map", None)
    if layout_map is None:
        return []
    paths = [str(v.path) for v in variables]
    unmatched = []
    for pattern in layout_map:
        try:
            matches = any(path == pattern or re.fullmatch(pattern, path) for path in paths)
        except re.error:
            matches = any(path == pattern for path in paths)
        if not matches:
            unmatched.append(pattern)
    return unmatched


def variable_shardings(distribution: Distribution, variables: Sequence[Any]) -> list:
    """The sharding of each variable under `distribution`.

    Variables created under the distribution already have these; others (e.g.
    an optimizer created before the distribution was set, or under another
    one) are moved to them when the Trainer takes the state from the Keras
    variables. A layout that a variable kept from another device mesh is
    replaced by what `distribution` says for its path (or replication).
    """
    mesh = distribution.device_mesh.backend_mesh
    shardings = []
    for variable in variables:
        sharding = _backend_sharding(distribution.get_variable_layout(variable))
        if not (isinstance(sharding, NamedSharding) and sharding.mesh == mesh):
            sharding = _backend_sharding(distribution.get_tensor_layout(variable.path))
        if not (isinstance(sharding, NamedSharding) and sharding.mesh == mesh):
            sharding = replicated(distribution)
        shardings.append(sharding)
    return shardings


def _shape(x: Any) -> tuple:
    try:
        return tuple(x.shape)
    except AttributeError:
        return np.shape(x)


def _local_data_shards(sharding: NamedSharding) -> int:
    """How many slices the leading axis of a batch is cut into on this process's devices."""
    spec = sharding.spec
    axes = spec[0] if len(spec) else None
    if axes is None:
        return 1
    if not isinstance(axes, tuple):
        axes = (axes,)
    mesh = sharding.mesh
    dims = [mesh.axis_names.index(name) for name in axes]
    process = jax.process_index()
    return len(
        {
            tuple(position[d] for d in dims)
            for position, device in np.ndenumerate(mesh.devices)
            if device.process_index == process
        }
    )


def _rows_by_process(sharding: NamedSharding) -> dict[int, tuple[int, ...]]:
    """The row blocks of a batch's leading axis (0..blocks-1) that each process's devices hold."""
    spec = sharding.spec
    axes = spec[0] if len(spec) else None
    names = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
    mesh = sharding.mesh
    blocks = int(np.prod([mesh.shape[name] for name in names], dtype=np.int64))
    rows = NamedSharding(mesh, PartitionSpec(axes))
    held: dict[int, set[int]] = {}
    for device, index in rows.devices_indices_map((blocks,)).items():
        held.setdefault(device.process_index, set()).add(index[0].start or 0)
    return {process: tuple(sorted(r)) for process, r in sorted(held.items())}


def check_process_rows(distribution: Distribution, sharding: Any) -> None:
    """Refuses a batch layout that processes feeding their own part would fill inconsistently.

    Each process passes its own rows, which `jax.make_array_from_process_local_data`
    puts on its devices; that is consistent only when no row block of the batch is held
    by the devices of two processes (else each would fill it with its own, different
    data) and every process holds as many blocks.
    """
    if not isinstance(sharding, NamedSharding):
        return
    what = _layout_problem(_rows_by_process(sharding))
    if what is None:
        return
    raise ValueError(
        "With several processes each one feeds its own part of the global batch, so the "
        "batch's row blocks must be split over the processes, each block on one process's "
        f"devices only. Received: {describe(distribution)} with batch layout "
        f"{sharding.spec}, where {what} (a mesh axis other than the batch axis spans "
        "processes): the processes would fill the same rows with different data. Fix: "
        "lay the mesh out with the batch axis across the processes and the other axes "
        "within one process, e.g. keras.distribution.DeviceMesh((jax.process_count() * k, "
        "m), ('batch', 'model'), keras.distribution.list_devices()) with m dividing "
        "jax.local_device_count() (list_devices() lists each process's devices together)."
    )


def _layout_problem(held: dict[int, tuple[int, ...]]) -> str | None:
    """What is wrong with these row blocks per process for per-process feeding, or None."""
    owners: dict[int, list[int]] = {}
    for process, rows in held.items():
        for row in rows:
            owners.setdefault(row, []).append(process)
    for row, processes in owners.items():
        if len(processes) > 1:
            return (
                f"row block {row} of the batch (of {len(owners)}) is on devices of "
                f"processes {processes}"
            )
    if len({len(rows) for rows in held.values()}) > 1:
        counts = {process: len(rows) for process, rows in held.items()}
        return f"the processes hold unequal numbers of row blocks {counts}"
    return None


def _from_process_part(sharding: Any, x: Any) -> Any:
    """A global array with `sharding` from this process's part `x`; a global array as is."""
    if isinstance(x, jax.Array) and (not x.is_fully_addressable or x.sharding == sharding):
        return jax.device_put(x, sharding)  # Placed ahead (prefetched): nothing read back.
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def _stacked_sharding(sharding: Any) -> Any:
    """The sharding of a batch's layout with a new, unsplit leading axis."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return sharding  # Replicated or single-device: the same for any rank.


class BatchSharder:
    """Puts each batch on a distribution's devices, split over its data axis.

    The shardings are computed (and the batch size checked) once per distinct
    set of input and label shapes, then reused. In a single process each batch
    is one `jax.device_put` of the whole `(inputs, labels)` tree; with several
    processes (`jax.distributed.initialize`), each process passes its own part
    of the global batch, as in Keras (`jax.make_array_from_process_local_data`),
    and the layout must give each process's devices their own rows of the batch
    (`check_process_rows`, refused otherwise); global arrays placed ahead (a
    prefetcher calling `Trainer.put_batch`) are taken as they are.

    Args:
        distribution: the Keras distribution (`DataParallel`, `ModelParallel`, ...).
        multi_process: whether batches are per-process parts of the global
            batch; None: when JAX runs several processes.
    """

    def __init__(self, distribution: Distribution, multi_process: bool | None = None):
        self.distribution = self._distribution = distribution
        self._shardings: dict[tuple, tuple[list, list]] = {}
        if multi_process is None:
            multi_process = jax.process_count() > 1
        self._multi_process = bool(multi_process)

    def __call__(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        """Returns `(inputs, labels)` as global arrays laid out for the distribution.

        Raises:
            ValueError: an array without a leading batch axis, or a batch size
                that the data-parallel devices do not divide.
        """
        key = (tuple(map(_shape, inputs)), tuple(map(_shape, labels)))
        shardings = self._shardings.get(key)
        if shardings is None:
            shardings = self._new_shardings(spec, key)
        if self._multi_process:
            return jax.tree.map(_from_process_part, shardings, (inputs, labels))
        return jax.device_put((inputs, labels), shardings)

    def stacked(self, spec: Any, inputs: list, labels: list) -> tuple[list, list]:
        """Like calling it, for batches stacked on a new leading axis (`train_steps`).

        Each batch is laid out as alone (and its size checked); the stacking
        axis is not split. With several processes each passes its own part of
        every stacked batch (`(n, local_batch, ...)`), as for one batch.
        """
        key = (tuple(_shape(x)[1:] for x in inputs), tuple(_shape(x)[1:] for x in labels))
        shardings = self._shardings.get(key)
        if shardings is None:
            shardings = self._new_shardings(spec, key)
        stacked = jax.tree.map(_stacked_sharding, shardings)
        if self._multi_process:
            return jax.tree.map(_from_process_part, stacked, (inputs, labels))
        return jax.device_put((inputs, labels), stacked)

    def _new_shardings(self, spec: Any, key: tuple) -> tuple[list, list]:
        distribution = self._distribution
        shardings: tuple[list, list] = ([], [])
        for kind, shapes, out in zip(("input", "label"), key, shardings):
            for i, shape in enumerate(shapes):
                where = f"{kind} #{i}"
                if not shape:
                    raise ValueError(
                        "Under a keras.distribution every input and label needs a leading "
                        f"batch axis to split over the devices. Received: spec={spec!r} with "
                        f"{where} a scalar. "
                        "Fix: give it a batch axis (shape (batch_size, ...))."
                    )
                sharding = _backend_sharding(distribution.get_data_layout(shape))
                if self._multi_process:
                    check_process_rows(distribution, sharding)
                if isinstance(sharding, NamedSharding):
                    self._check_divisible(spec, where, shape, sharding)
                out.append(sharding)
        self._shardings[key] = shardings
        return shardings

    def _check_divisible(
        self, spec: Any, where: str, shape: tuple, sharding: NamedSharding
    ) -> None:
        devices = _local_data_shards(sharding)
        if shape[0] % devices == 0:
            return
        on_process = " on this process" if self._multi_process else ""
        raise ValueError(
            f"Each batch must split evenly over the data-parallel devices{on_process} of "
            f"{describe(self._distribution)}. Received: spec={spec!r}, batch size {shape[0]} "
            f"({where} has shape {shape}), {devices} data-parallel devices. Fix: use a batch "
            f"size that is a multiple of {devices}, and drop the last partial batch (e.g. "
            "ktl.ArrayDataset(..., drop_remainder=True) or tf.data's "
            "batch(..., drop_remainder=True))."
        )
