"""Multi-device checks, run in a subprocess by test_multi_device.py.

JAX reads `--xla_force_host_platform_device_count` once, when its CPU backend
starts, so these checks cannot share the pytest process. Usage:

    python _multi_device_run.py checks  --devices 8 --workdir DIR --out result.json
    python _multi_device_run.py restore --devices 1 --workdir DIR --out result.json

`checks` runs every multi-device check and writes checkpoints of a
DataParallel and a ModelParallel run (plus their weights, NAME.npz) under
DIR; `restore` restores them on this process's devices. Each check records either
its observations or the error it raised, so one failure does not hide the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback


def _set_up_environment(devices: int) -> None:
    """Before JAX starts: CPU backend, `devices` simulated devices, quiet logs."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


if __name__ == "__main__":
    _ARGS = argparse.ArgumentParser()
    _ARGS.add_argument("mode", choices=["checks", "restore"])
    _ARGS.add_argument("--devices", type=int, required=True)
    _ARGS.add_argument("--workdir", required=True)
    _ARGS.add_argument("--out", required=True)
    ARGS = _ARGS.parse_args()
    _set_up_environment(ARGS.devices)

import jax
import keras
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sklearn.datasets import load_digits

import keras_trainloop as ktl

BATCH = 64
STEPS = 20


def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images / 16.0).astype(np.float32).reshape(-1, 64), d.target.astype(np.int32)


class ShardingLog:
    """Records the shardings of a step's inputs and labels, as seen inside the step."""

    def __init__(self):
        self.inputs: list = []
        self.labels: list = []

    def model_fn(self, ctx, spec, inputs):
        shape = tuple(inputs[0].shape)
        jax.debug.inspect_array_sharding(
            inputs[0], callback=lambda s: self.inputs.append(describe_sharding(s, shape))
        )
        h = ctx.layer(
            "hidden", lambda: keras.layers.Dense(32, activation="relu", name="hidden_dense")
        )(inputs[0])
        h = ctx.layer("norm", lambda: keras.layers.BatchNormalization())(h, training=ctx.training)
        return [ctx.layer("logits", lambda: keras.layers.Dense(10, name="logits_dense"))(h)]

    def loss_fn(self, labels, predictions):
        shape = tuple(labels[0].shape)
        jax.debug.inspect_array_sharding(
            labels[0], callback=lambda s: self.labels.append(describe_sharding(s, shape))
        )
        return ktl.losses.sparse_categorical_cross_entropy_logits(labels, predictions)


def new_trainer(log: ShardingLog, optimizer: str = "adam", **kwargs) -> ktl.Trainer:
    if optimizer == "sgd":
        # Adam divides each gradient by its own scale: where BatchNormalization makes a
        # gradient ~0 (the bias before it), the all-reduce's float rounding becomes
        # updates of ~1e-4. SGD keeps the comparison with one device well conditioned.
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    else:
        optimizer = keras.optimizers.Adam(1e-2)
    return ktl.Trainer(log.model_fn, log.loss_fn, optimizer, **kwargs)


def describe_sharding(sharding, shape: tuple | None = None) -> dict:
    """Its spec and devices; with the array's shape, the shape of one shard too."""
    described = {
        "spec": str(getattr(sharding, "spec", None)),
        "devices": len(sharding.device_set),
        "replicated": bool(sharding.is_fully_replicated),
    }
    if shape is not None:
        described["shape"] = list(shape)
        described["shard_shape"] = list(sharding.shard_shape(shape))
    return described


def train_with_loop(
    trainer: ktl.Trainer, steps: int = STEPS, captured: dict | None = None
) -> list[float]:
    """Trains with a Loop over the first batches of digits; returns the batch losses.

    With `captured`, its "state" entry gets `state_vs_layouts` at the last step, while the
    state is still the Trainer's own (the Loop writes it into the variables at the end).
    """
    x, y = digits()
    ds = ktl.ArrayDataset(x, y, batch_size=BATCH, loop_forever=True, drop_remainder=True)
    losses = []
    loop = ktl.Loop(trainer)
    loop.on_step("losses", 0, lambda loop, metrics: losses.append(metrics[0]))
    if captured is not None:
        loop.on_step(
            "layouts",
            1,
            lambda loop, metrics: (
                loop.loop_step == loop.end_step - 1
                and captured.update(state=state_vs_layouts(trainer))
            ),
        )
    loop.run_steps(ds, steps)
    return [float(v) for v in losses]


def state_vs_layouts(trainer: ktl.Trainer) -> dict:
    """Compares the trainer's state arrays (before any sync) with the variables' layouts."""
    distribution = trainer.distribution
    refs = trainer._state.refs
    values = trainer._state.values
    mismatches = []
    for group_refs, group_values in zip(refs, values):
        for ref, value in zip(group_refs, group_values):
            layout = distribution.get_variable_layout(ref)
            expected = getattr(layout, "backend_layout", layout)
            if not value.sharding.is_equivalent_to(expected, value.ndim):
                mismatches.append(f"{ref.path}: {value.sharding} != {expected}")
    return {"checked": sum(len(g) for g in values), "mismatches": mismatches}


def count_traces(trainer: ktl.Trainer) -> list:
    executors = []
    trainer.on_exec_creation(lambda executor, graph_type: executors.append(executor))
    return executors


# Checks ---------------------------------------------------------------------
def run_checks(workdir: str) -> dict:
    results = {}
    for name, check in [
        ("data_parallel", lambda: data_parallel_equivalence(workdir)),
        ("fused_data_parallel", fused_data_parallel),
        ("model_parallel", lambda: model_parallel(workdir)),
        ("indivisible_batch", indivisible_batch),
        ("in_device_refused", in_device_refused),
        ("scope_closed_before_first_step", scope_closed_before_first_step),
        ("process_local_batches", process_local_batches),
    ]:
        try:
            results[name] = check()
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it.
            results[name] = {"error": traceback.format_exc()}
        finally:
            keras.distribution.set_distribution(None)
    return results


def data_parallel_equivalence(workdir: str) -> dict:
    """20 Loop steps on one device and under DataParallel from the same initial weights."""
    keras.distribution.set_distribution(None)
    single = new_trainer(ShardingLog(), "sgd")
    initial = {}
    single.on_exec_creation(lambda e, g: initial.setdefault("weights", single.model.get_weights()))
    single_losses = train_with_loop(single)
    single_weights = single.model.get_weights()
    x, y = digits()
    eval_ds = ktl.ArrayDataset(x[-256:], y[-256:], batch_size=BATCH)
    single_eval = [float(v) for v in single.eval(eval_ds)]
    single_devices = sorted({d.id for v in single.model.weights for d in v.value.devices()})

    distribution = keras.distribution.DataParallel()
    keras.distribution.set_distribution(distribution)
    log = ShardingLog()
    trainer = new_trainer(log, "sgd")
    executors = count_traces(trainer)
    trainer.on_exec_creation(  # The first executor (train) starts from the same weights.
        lambda e, g: g is ktl.GraphType.TRAIN and trainer.model.set_weights(initial["weights"])
    )
    captured = {}
    losses = train_with_loop(trainer, captured=captured)
    input_shardings, label_shardings = list(log.inputs), list(log.labels)
    state = captured["state"]  # Taken before anything synced the state back.
    weights = trainer.model.get_weights()
    weight_variables = trainer.model.weights
    variables = {
        v.path: describe_sharding(v.value.sharding)
        for v in trainer.model.variables + trainer.optimizer.variables
    }
    evaluated = [float(v) for v in trainer.eval(eval_ds)]

    saved_step = save_checkpoint(trainer, workdir, "data_parallel")

    # Steady state on batches already laid out: no transfer and no retrace.
    batch = jax.device_put(
        ([x[:BATCH]], [y[:BATCH]]),
        NamedSharding(distribution.device_mesh.backend_mesh, P(distribution.batch_dim_name)),
    )
    guard_error = None
    try:
        with jax.transfer_guard("disallow"):
            for _ in range(3):
                metrics = trainer.train_step(None, *batch)
            jax.block_until_ready(metrics)
    except Exception as error:  # noqa: BLE001 - reported.
        guard_error = repr(error)
    return {
        "devices": jax.device_count(),
        "single_devices": single_devices,
        "single_losses": single_losses,
        "losses": losses,
        "max_loss_diff": float(np.max(np.abs(np.subtract(losses, single_losses)))),
        "max_weight_diff": float(
            max(np.max(np.abs(a - b)) for a, b in zip(weights, single_weights))
        ),
        "max_weight_diff_per_variable": {
            v.path.split("/", 1)[-1]: [float(np.max(np.abs(a - b))), float(np.max(np.abs(b)))]
            for v, a, b in zip(weight_variables, weights, single_weights)
        },
        "single_eval": single_eval,
        "eval": evaluated,
        "input_shardings": input_shardings,  # In the build call and the compiled steps.
        "label_shardings": label_shardings,
        "state_vs_layouts": state,
        "state_after_guarded_steps": state_vs_layouts(trainer),
        "guard_error": guard_error,
        "variables": variables,
        "trace_counts": [e.trace_count for e in executors],
        "saved_step": saved_step,
    }


def fused_data_parallel() -> dict:
    """30 Loop steps under DataParallel, fused (up to 8 per call) and one call per step."""
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    x, y = digits()
    runs = {}
    for cap in (1, 8):
        keras.utils.set_random_seed(0)
        log = ShardingLog()
        trainer = new_trainer(log, "sgd")
        executors = count_traces(trainer)
        loop = ktl.Loop(trainer, max_fused_steps=cap)
        seen, captured = [], {}
        ktl.every_n_steps(
            loop,
            10,
            "losses",
            0,
            lambda loop, m, seen=seen: seen.append([loop.loop_step, float(m[0])]),
        )
        ktl.every_n_steps(
            loop,
            30,
            "layouts",
            1,
            lambda loop, m, t=trainer, c=captured: c.update(state=state_vs_layouts(t)),
        )
        ds = ktl.ArrayDataset(x, y, batch_size=BATCH, loop_forever=True, drop_remainder=True)
        loop.run_steps(ds, 30)
        runs[cap] = {
            "seen": seen,
            "weights": trainer.model.get_weights(),
            "fused_sizes": sorted(executors[0].fused_fns),
            "state": captured["state"],
            "input_shardings": log.inputs,
        }
    fused, single = runs[8], runs[1]
    return {
        "seen_fused": fused["seen"],
        "seen_single": single["seen"],
        "max_weight_diff": float(
            max(np.max(np.abs(a - b)) for a, b in zip(fused["weights"], single["weights"]))
        ),
        "fused_sizes": fused["fused_sizes"],
        "single_fused_sizes": single["fused_sizes"],
        "state_vs_layouts": fused["state"],
        "input_shardings": fused["input_shardings"],
    }


def save_checkpoint(trainer: ktl.Trainer, workdir: str, name: str) -> int:
    """Saves a checkpoint of `trainer` and its weights, for the `restore` mode."""
    checkpoint = ktl.checkpoints.Checkpoint(
        trainer, os.path.join(workdir, name), async_save=False, restore=False
    )
    step = checkpoint.save()
    checkpoint.close()
    np.savez(os.path.join(workdir, f"{name}.npz"), *trainer.model.get_weights())
    return step


def model_parallel(workdir: str) -> dict:
    """ModelParallel given to the Trainer wins over a global DataParallel."""
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    mesh = keras.distribution.DeviceMesh(
        (2, 4), ("batch", "model"), keras.distribution.list_devices()
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*hidden_dense.*kernel"] = (None, "model")
    layout_map[".*hidden_dense.*bias"] = ("model",)
    distribution = keras.distribution.ModelParallel(layout_map=layout_map)
    log = ShardingLog()
    trainer = new_trainer(log, distribution=distribution)
    executors = count_traces(trainer)
    captured = {}
    losses = train_with_loop(trainer, steps=5, captured=captured)
    state = captured["state"]
    kernel = next(
        v
        for v in trainer.model.trainable_variables
        if "hidden_dense" in v.path and "kernel" in v.path
    )
    return {
        "trainer_distribution": type(trainer.distribution).__name__,
        "losses": losses,
        "kernel_sharding": describe_sharding(kernel.value.sharding),
        "kernel_shard_shapes": sorted(
            {tuple(s.data.shape) for s in kernel.value.addressable_shards}
        ),
        "variables": {
            v.path: describe_sharding(v.value.sharding)
            for v in trainer.model.variables + trainer.optimizer.variables
        },
        "input_shardings": log.inputs,
        "state_vs_layouts": state,
        "trace_counts": [e.trace_count for e in executors],
        "saved_step": save_checkpoint(trainer, workdir, "model_parallel"),
    }


def indivisible_batch() -> dict:
    """A batch of 12 on 8 devices: refused before anything runs, also for a known spec."""
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    x, y = digits()
    trainer = new_trainer(ShardingLog())
    executors = count_traces(trainer)
    result = {}
    try:
        trainer.train_step("digits", [x[:12]], [y[:12]])
    except ValueError as error:
        result["first_error"] = str(error)
    result["executors_after_first"] = len(executors)
    result["variables_after_first"] = len(trainer.model.variables)
    trainer.train_step("digits", [x[:16]], [y[:16]])
    step = trainer.global_step
    try:
        trainer.train_step("digits", [x[16:28]], [y[16:28]])
    except ValueError as error:
        result["later_error"] = str(error)
    result["steps_before"], result["steps_after"] = step, trainer.global_step
    return result


def in_device_refused() -> dict:
    result = {}
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    trainer = new_trainer(ShardingLog())
    try:
        trainer.in_device(0)
    except ValueError as error:
        result["global"] = str(error)
    keras.distribution.set_distribution(None)
    trainer = new_trainer(ShardingLog(), distribution=keras.distribution.DataParallel())
    try:
        trainer.in_device(1)
    except ValueError as error:
        result["explicit"] = str(error)
    # Set on one device first, then a distribution is active at the first step.
    trainer = new_trainer(ShardingLog()).in_device(1)
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    x, y = digits()
    try:
        trainer.train_step(None, [x[:BATCH]], [y[:BATCH]])
    except ValueError as error:
        result["at_first_step"] = str(error)
    keras.distribution.set_distribution(None)
    # Without a distribution in_device still works on a device of the 8.
    trainer = new_trainer(ShardingLog()).in_device(3)
    trainer.train_step(None, [x[:BATCH]], [y[:BATCH]])
    result["single_device_ids"] = sorted(
        {d.id for g in trainer._state.values for v in g for d in v.devices()}
    )
    return result


def scope_closed_before_first_step() -> dict:
    """Variables made under a distribution's scope, first step outside it: a clear error."""
    with keras.distribution.DataParallel().scope():
        trainer = new_trainer(ShardingLog())  # Its Adam's variables are spread over 8 devices.
    x, y = digits()
    try:
        trainer.train_step(None, [x[:BATCH]], [y[:BATCH]])
    except ValueError as error:
        return {"error_message": str(error)}
    return {"error_message": None}


def process_local_batches() -> dict:
    """The multi-process path (jax.make_array_from_process_local_data), in one process."""
    from keras_trainloop.trainer._distribution import BatchSharder

    distribution = keras.distribution.DataParallel()
    x, y = digits()
    batch = ([x[:BATCH]], [y[:BATCH]])
    local = BatchSharder(distribution, multi_process=True)(None, *batch)
    put = BatchSharder(distribution, multi_process=False)(None, *batch)
    pairs = list(zip(jax.tree.leaves(local), jax.tree.leaves(put)))
    return {
        "same_values": all(np.array_equal(a, b) for a, b in pairs),
        "same_shardings": all(a.sharding == b.sharding for a, b in pairs),
        "shard_shapes": [list(a.addressable_shards[0].data.shape) for a, _ in pairs],
    }


def restore_on_this_process(workdir: str, name: str, optimizer: str) -> dict:
    """Restores a checkpoint of `checks` with no distribution, on this process's devices."""
    trainer = new_trainer(ShardingLog(), optimizer)
    checkpoint = ktl.checkpoints.Checkpoint(trainer, os.path.join(workdir, name))
    x, y = digits()
    trainer.eval_step(None, [x[:BATCH]], [y[:BATCH]])  # Creates the variables: restores them.
    weights = trainer.model.get_weights()
    with np.load(os.path.join(workdir, f"{name}.npz")) as saved:
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    restored_step = trainer.global_step
    metrics = trainer.train_step(None, [x[:BATCH]], [y[:BATCH]])
    return {
        "devices": jax.device_count(),
        "restored_step": checkpoint.restored_step,
        "global_step": restored_step,
        "num_weights": [len(weights), len(expected)],
        "max_weight_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(weights, expected))),
        "weight_devices": sorted({d.id for v in trainer.model.weights for d in v.value.devices()}),
        "loss_after_one_step": float(metrics[0]),
        "global_step_after_one_step": trainer.global_step,
    }


def run_restores(workdir: str) -> dict:
    results = {}
    for name, optimizer in [("data_parallel", "sgd"), ("model_parallel", "adam")]:
        try:
            results[name] = restore_on_this_process(workdir, name, optimizer)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it.
            results[name] = {"error": traceback.format_exc()}
    return results


def main(args: argparse.Namespace) -> int:
    result = run_checks(args.workdir) if args.mode == "checks" else run_restores(args.workdir)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
