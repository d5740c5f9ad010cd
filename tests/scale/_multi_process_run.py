"""One process of a real multi-process job on this machine, run by test_multi_process.py.

Every process runs this script with its own `--process-id`; they meet on 127.0.0.1
(`keras.distribution.initialize`, gloo collectives on the CPU), each with 2 CPU
devices. Start-up takes most of the time, so every scenario runs inside the one job,
in order, each starting at a barrier; each records its observations, or the error it
raised, into this process's JSON (`--out`), so one failure does not hide the rest.

    python _multi_process_run.py --process-id I --num-processes 2 --port P --workdir D --out F

On two machines, pass `--coordinator HOST0:PORT` (process 0's machine) instead of
`--port`, and a `--workdir` both machines see (the checkpoints are written there).

The data: sklearn's digits, each process reading its shard (`shard=process_shard()`,
every 2nd example) in batches of 32, so a global batch of 64 is process 0's 32 rows
then process 1's. Each process also trains the reference: the same steps on one local
device over those global batches, from the same initial weights.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback


def _set_up_environment(devices: int) -> None:
    """Before JAX starts: CPU backend, `devices` local devices, quiet logs."""
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


if __name__ == "__main__":
    _ARGS = argparse.ArgumentParser()
    _ARGS.add_argument("--process-id", type=int, required=True)
    _ARGS.add_argument("--num-processes", type=int, required=True)
    _ARGS.add_argument("--port", type=int, help="on 127.0.0.1 (one machine)")
    _ARGS.add_argument("--coordinator", help="HOST:PORT of process 0 (several machines)")
    _ARGS.add_argument("--devices", type=int, default=2)
    _ARGS.add_argument("--workdir", required=True)
    _ARGS.add_argument("--out", required=True)
    _ARGS.add_argument("--only", default="", help="comma-separated scenario names")
    ARGS = _ARGS.parse_args()
    _set_up_environment(ARGS.devices)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    keras.distribution.initialize(
        job_addresses=ARGS.coordinator or f"127.0.0.1:{ARGS.port}",
        num_processes=ARGS.num_processes,
        process_id=ARGS.process_id,
    )

import jax
import keras
import numpy as np
from jax.experimental import multihost_utils
from sklearn.datasets import load_digits

import keras_trainloop as ktl

LOCAL_BATCH = 32
STEPS = 20
PERIODIC_STEPS = {False: 100, True: 250}  # Unfused steps sleep 10 ms each; fused ones do not.
CHECKPOINT_STEPS = 40


# Data, models, and reading arrays that span processes ---------------------------------------
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images / 16.0).astype(np.float32).reshape(-1, 64), d.target.astype(np.int32)


def local_dataset(**kwargs) -> ktl.ArrayDataset:
    """This process's shard, LOCAL_BATCH examples a batch (the global batch: 64)."""
    x, y = digits()
    return ktl.ArrayDataset(
        x, y, batch_size=LOCAL_BATCH, shard=ktl.data.process_shard(), loop_forever=True, **kwargs
    )


def global_dataset() -> ktl.ArrayDataset:
    """The global batches of `local_dataset`, for one device: each process's rows in turn."""
    x, y = digits()
    count = jax.process_count()
    parts = [ktl.ArrayDataset(x, y, batch_size=LOCAL_BATCH, shard=(i, count)) for i in range(count)]
    xs, ys = [], []
    for _ in range(len(parts[0])):
        for part in parts:
            _, (bx,), (by,) = part.yield_batch()
            xs.append(bx)
            ys.append(by)
    return ktl.ArrayDataset(np.concatenate(xs), np.concatenate(ys), batch_size=LOCAL_BATCH * count)


def model_fn(ctx, spec, inputs):
    h = ctx.layer("hidden", lambda: keras.layers.Dense(32, "relu", name="hidden_dense"))(inputs[0])
    return [ctx.layer("logits", lambda: keras.layers.Dense(10, name="logits_dense"))(h)]


def new_trainer(distribution=None) -> ktl.Trainer:
    keras.utils.set_random_seed(0)
    return ktl.Trainer(
        model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        keras.optimizers.SGD(0.1, momentum=0.9),
        distribution=distribution,
    )


def local_value(x) -> np.ndarray:
    """An array's value from this process's shards (they must cover it)."""
    x = getattr(x, "value", x)
    out = np.zeros(x.shape, x.dtype)
    covered = np.zeros(x.shape, bool)
    for shard in x.addressable_shards:
        out[shard.index] = np.asarray(shard.data)
        covered[shard.index] = True
    assert covered.all(), "this process's shards do not cover the array"
    return out


def weights(trainer: ktl.Trainer) -> list[np.ndarray]:
    return [local_value(v) for v in trainer.model.weights]


def max_diff(a: list, b: list) -> float:
    return float(max(np.max(np.abs(np.subtract(x, y))) for x, y in zip(a, b)))


def data_parallel() -> keras.distribution.Distribution:
    return keras.distribution.DataParallel()  # All 4 devices of both processes.


def model_parallel(transposed: bool = False) -> keras.distribution.Distribution:
    """A (batch=2, model=2) mesh: the model axis within a process, or (transposed) across."""
    devices = np.array(keras.distribution.list_devices()).reshape(2, 2)
    mesh = keras.distribution.DeviceMesh(
        (2, 2), ("batch", "model"), (devices.T if transposed else devices).tolist()
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*hidden_dense.*kernel"] = (None, "model")
    layout_map[".*hidden_dense.*bias"] = ("model",)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def train(
    trainer: ktl.Trainer,
    ds,
    *,
    fused: bool,
    steps: int = STEPS,
    initial=None,
    every: int = 1,
    prepare=None,
    **loop_kwargs,
) -> dict:
    """Trains `steps` steps; returns the losses seen every `every` steps and the call sizes.

    `prepare(loop)` is called on the new loop before the run.
    """
    if initial is not None:
        trainer.on_exec_creation(
            lambda e, g: g is ktl.GraphType.TRAIN and trainer.model.set_weights(initial)
        )
    loop = ktl.Loop(trainer, max_fused_steps=8 if fused else 1, **loop_kwargs)
    if prepare is not None:
        prepare(loop)
    seen, calls = [], []
    if every == 1 and not fused:
        loop.on_step("losses", 0, lambda lp, m: seen.append([lp.loop_step, float(m[0])]))
    else:
        ktl.every_n_steps(
            loop, every, "losses", 0, lambda lp, m: seen.append([lp.loop_step, float(m[0])])
        )
    original = trainer.train_steps

    def train_steps(spec, inputs, labels):
        calls.append(int(np.shape(inputs[0])[0]))
        return original(spec, inputs, labels)

    trainer.train_steps = train_steps
    loop.run_steps(ds, steps)
    return {"seen": seen, "calls": calls, "loop": loop}


def reference(initial: list, every: int = 1, steps: int = STEPS) -> dict:
    """The same steps on one local device, over the global batches."""
    return train(
        new_trainer(), global_dataset(), fused=False, initial=initial, every=every, steps=steps
    )


def initial_weights(trainer: ktl.Trainer, into: dict) -> None:
    """Keeps the distributed trainer's weights as created (the reference starts from them)."""
    trainer.on_exec_creation(lambda e, g: into.setdefault("weights", weights(trainer)))


# Scenarios --------------------------------------------------------------------------------------
def losses_match_one_process(distribution_fn) -> dict:
    """Unfused and fused (not measured), each against the reference and each other."""
    runs = {}
    for fused in (False, True):
        trainer = new_trainer(distribution_fn())
        initial: dict = {}
        initial_weights(trainer, initial)
        run = train(
            trainer, local_dataset(), fused=fused, every=1 if not fused else 5, measure_fusion=False
        )
        runs[fused] = {
            "seen": run["seen"],
            "calls": run["calls"],
            "weights": weights(trainer),
            "initial": initial["weights"],
        }
    ref = reference(runs[False]["initial"])
    ref_losses = [loss for _, loss in ref["seen"]]
    unfused = [loss for _, loss in runs[False]["seen"]]
    fused_seen = runs[True]["seen"]
    return {
        "losses": unfused,
        "reference_losses": ref_losses,
        "max_loss_diff": max_diff(unfused, ref_losses),
        "fused_seen": fused_seen,
        "fused_vs_unfused_loss_diff": max_diff(
            [loss for _, loss in fused_seen], [unfused[s] for s, _ in fused_seen]
        ),
        "fused_vs_unfused_weight_diff": max_diff(runs[True]["weights"], runs[False]["weights"]),
        "fused_calls": runs[True]["calls"],
        "unfused_calls": runs[False]["calls"],
    }


def model_parallel_layout() -> dict:
    """The kernel split over the model axis, within each process."""
    trainer = new_trainer(model_parallel())
    train(trainer, local_dataset(), fused=False, steps=2)
    kernel = next(
        v
        for v in trainer.model.trainable_variables
        if "hidden_dense" in v.path and "kernel" in v.path
    )
    return {
        "kernel_spec": str(kernel.value.sharding.spec),
        "kernel_shard_shapes": sorted(
            {tuple(s.data.shape) for s in kernel.value.addressable_shards}
        ),
    }


def model_axis_across_processes() -> dict:
    """A mesh whose model axis spans the processes: refused before any step runs."""
    trainer = new_trainer(model_parallel(transposed=True))
    x, y = digits()
    try:
        trainer.train_step(None, [x[:LOCAL_BATCH]], [y[:LOCAL_BATCH]])
    except ValueError as error:
        return {"error_message": str(error), "global_step": trainer.global_step}
    return {"error_message": None}


def gate_agrees() -> dict:
    """The fusion gate with timings skewed apart: process 0 sees fast fused calls, 1 slow."""
    trainer = new_trainer(data_parallel())
    skew = 0.1 if jax.process_index() == 0 else 10.0

    def skew_gate(loop):
        record = loop._gate.record

        def skewed(spec, num_steps, seconds, host_seconds=None):
            # Dispatch-bound, as on a quiet machine: under CI load the compute-bound check
            # could decide on process 0 before any fused call is timed.
            if host_seconds is not None:
                host_seconds = max(host_seconds, 0.5 * seconds)
            record(spec, num_steps, seconds * (skew if num_steps > 1 else 1.0), host_seconds)

        loop._gate.record = skewed

    run = train(trainer, local_dataset(), fused=True, steps=48, every=8, prepare=skew_gate)
    return {
        "decisions": {str(k): v for k, v in run["loop"].fusion_decisions().items()},
        "calls": run["calls"],
        "seen": run["seen"],
    }


class _TimedSchedule(ktl.loop.Schedule):
    """A time-based schedule of a plugin's kind (due when its own clock says so)."""

    def __init__(self, interval: float, clock):
        self.interval, self.clock, self.next = interval, clock, clock() + interval

    def due(self, loop):
        return self.clock() >= self.next

    def next_step(self, loop):
        return loop.loop_step if self.due(loop) else None

    def seconds_left(self, loop):
        return max(0.0, self.next - self.clock())

    def called(self, loop):
        self.next = self.clock() + self.interval


def periodic_hooks_agree(fused: bool) -> dict:
    """Time-based hooks that run collectives, with the processes' clocks apart and skewed.

    Process 1 starts the run 1.5 s after process 0 (its first collective waits), and its
    clock runs 3x fast: deciding by its own clock it would fire at other steps (and hang).
    Process 0 also has a progress bar, which process 1 has not.
    """
    trainer = new_trainer(data_parallel())
    process = jax.process_index()
    rate = 3.0 if process else 1.0
    clock = lambda: time.monotonic() * rate  # A skewed clock per process.
    loop = ktl.Loop(trainer, max_fused_steps=8 if fused else 1, measure_fusion=False)
    fired, timed, calls = [], [], []

    def collective(lp, m):  # Reads the metrics, then a barrier: hangs if one process skips it.
        fired.append([lp.loop_step, float(m[0])])
        multihost_utils.sync_global_devices(f"periodic {lp.loop_step}")

    ktl.periodic_callback(loop, 0.2, True, "collective", 0, collective, clock=clock)
    loop.on_step(
        "timed", 1, lambda lp, m: timed.append(lp.loop_step), schedule=_TimedSchedule(0.1, clock)
    )
    if not fused:
        loop.on_step("slow", 2, lambda lp, m: time.sleep(0.01))
    # The progress bar is attached on process 0 only (one bar per job): a time-based hook
    # that one process has and the other not.
    bar = ktl.commandline.attach_progress_bar(
        loop, output="plain", file=io.StringIO(), interval=0.05
    )
    original = trainer.train_steps
    trainer.train_steps = lambda *a: calls.append(int(np.shape(a[1][0])[0])) or original(*a)
    if process:
        time.sleep(1.5)
    start = time.monotonic()
    loop.run_steps(local_dataset(), PERIODIC_STEPS[fused])
    return {
        "fired": fired,
        "timed": timed,
        "calls": calls,
        "bar_draws": bar.draws,
        "seconds": time.monotonic() - start,
    }


def prefetched_batches() -> dict:
    """The unfused feed on an "accelerator": prefetched as the trainer lays batches out."""
    runs = {}
    for prefetch in (False, True):
        trainer = new_trainer(data_parallel())
        kinds = []
        step = trainer.train_step

        def train_step(spec, inputs, labels, step=step, kinds=kinds):
            kinds.append(
                [type(inputs[0]).__name__, getattr(inputs[0], "is_fully_addressable", None)]
            )
            return step(spec, inputs, labels)

        trainer.train_step = train_step
        backend = jax.default_backend
        if prefetch:
            jax.default_backend = lambda: "gpu"
        try:
            run = train(trainer, local_dataset(), fused=False, steps=8)
        finally:
            jax.default_backend = backend
        runs[prefetch] = {
            "seen": run["seen"],
            "kinds": kinds,
            "feed": type(run["loop"]._device_feed(local_dataset())).__name__,
        }
    return {
        "kinds": runs[True]["kinds"],
        "plain_kinds": runs[False]["kinds"],
        "loss_diff": max_diff(
            [v for _, v in runs[True]["seen"]], [v for _, v in runs[False]["seen"]]
        ),
    }


def checkpoints(workdir: str) -> dict:
    """attach_checkpoint on a period and at the end, DataParallel and ModelParallel."""
    out = {}
    for name, distribution_fn in [
        ("data_parallel", data_parallel),
        ("model_parallel", model_parallel),
    ]:
        trainer = new_trainer(distribution_fn())
        directory = os.path.join(workdir, f"ckpt_{name}")
        checkpoint = ktl.checkpoints.Checkpoint(
            trainer, directory, keep=None, async_save=False, restore=False
        )
        loop = ktl.Loop(trainer, measure_fusion=False)
        ktl.checkpoints.attach_checkpoint(loop, checkpoint, period=0.15)
        loop.on_step("slow", 0, lambda lp, m: time.sleep(0.01))
        loop.run_steps(local_dataset(), CHECKPOINT_STEPS)
        checkpoint.wait()
        final = weights(trainer)
        if jax.process_index() == 0:
            np.savez(os.path.join(workdir, f"{name}.npz"), *final)
        out[name] = {"steps": checkpoint.steps(), "global_step": trainer.global_step}
        checkpoint.close()
    return out


RESUME_STEPS = 10


def sharded_resume(workdir: str) -> dict:
    """A run over sharded tf.data, stopped at a checkpoint and resumed by new objects, trains
    as a run that did not stop: each process resumes its own shard's position."""
    import warnings

    import tensorflow as tf

    x, y = digits()

    def dataset() -> ktl.TFDataset:
        pipeline = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=1)
        pipeline = pipeline.batch(LOCAL_BATCH, drop_remainder=True).repeat()
        return ktl.TFDataset(pipeline, shard=ktl.data.process_shard())

    def run(trainer, steps, checkpoint=None) -> list:
        loop = ktl.Loop(trainer, measure_fusion=False)
        if checkpoint is not None:
            ktl.checkpoints.attach_checkpoint(loop, checkpoint)
        losses = []
        loop.on_step("losses", 0, lambda lp, m: losses.append(float(m[0])))
        loop.run_steps(dataset(), steps)
        return losses

    uninterrupted = run(new_trainer(data_parallel()), 2 * RESUME_STEPS)
    directory = os.path.join(workdir, "ckpt_sharded_resume")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ktl.checkpoints.Checkpoint(
            new_trainer(data_parallel()), directory, async_save=False, restore=False
        ) as checkpoint:
            first = run(checkpoint.trainer, RESUME_STEPS, checkpoint)
        trainer = new_trainer(data_parallel())
        with ktl.checkpoints.Checkpoint(trainer, directory, async_save=False) as checkpoint:
            restored_step = checkpoint.restored_step
            resumed = run(trainer, RESUME_STEPS, checkpoint)
    return {
        "restored_step": restored_step,
        "global_step": trainer.global_step,
        "warnings": [str(w.message) for w in caught if "data position" in str(w.message)],
        "first_diff": max_diff(first, uninterrupted[:RESUME_STEPS]),
        "resumed_diff": max_diff(resumed, uninterrupted[RESUME_STEPS:]),
        "resumed": resumed,
    }


SCENARIOS = {
    "data_parallel": lambda workdir: losses_match_one_process(data_parallel),
    "model_parallel": lambda workdir: losses_match_one_process(model_parallel),
    "model_parallel_layout": lambda workdir: model_parallel_layout(),
    "model_axis_across_processes": lambda workdir: model_axis_across_processes(),
    "gate_agrees": lambda workdir: gate_agrees(),
    "periodic_unfused": lambda workdir: periodic_hooks_agree(fused=False),
    "periodic_fused": lambda workdir: periodic_hooks_agree(fused=True),
    "prefetch": lambda workdir: prefetched_batches(),
    "checkpoints": checkpoints,
    "sharded_resume": sharded_resume,
}


def main(args: argparse.Namespace) -> int:
    results = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "list_devices": keras.distribution.list_devices(),
        "process_shard": list(ktl.data.process_shard()),
        "seconds": {},
    }
    only = [name for name in args.only.split(",") if name]
    for name, scenario in SCENARIOS.items():
        if only and name not in only:
            continue
        multihost_utils.sync_global_devices(f"start {name}")
        start = time.monotonic()
        try:
            results[name] = scenario(args.workdir)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it.
            results[name] = {"error": traceback.format_exc()}
        finally:
            keras.distribution.set_distribution(None)
        results["seconds"][name] = round(time.monotonic() - start, 2)
        print(
            f"process {jax.process_index()}: {name} done in {results['seconds'][name]} s",
            flush=True,
        )
        with open(args.out, "w") as f:  # After each scenario: a hang still leaves the rest.
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
