"""Side-by-side training-loop benchmark: a hand-written JAX loop, keras.fit, and ktl.Loop.

Every system trains the same relu MLP (logits, sparse softmax cross-entropy,
Adam lr 1e-3, same initial weights) on the same data, in one process. Each
repetition runs every system for the same number of steps, in a rotating
order, so load drift on the machine hits all of them alike; ratios are taken
per repetition (paired) and then summarized. Compilation is excluded from the
steady-state numbers: each system's first step is timed on its own, then one
full untimed warm-up repetition runs before the measured ones.

Systems:
    A       hand-written jax.jit step + optax.adam, batches already on device.
    A_scan  the same step inside lax.scan over a stacked chunk of batches
            (one dispatch per chunk of `nb` batches).
    A_scan8 the same with chunks of 8 batches: the default Loop's call count, so the
            limit of fusing 8 steps a call on this machine.
    B1      keras.fit(steps_per_execution=1), numpy arrays, verbose=0.
    B32     keras.fit(steps_per_execution=32).
    L0_np   ktl.Loop(trainer).run_steps(ArrayDataset(shuffle, loop_forever)), no hooks.
            The Loop fuses up to 8 steps per compiled call (ArrayDataset.yield_batches).
    L0_dev  the same Loop fed pre-made device batches (as A); that dataset has no
            yield_batches, so each step is its own call.
    L1_np   L0_np + attach_progress_bar(plain, to devnull) + every_n_steps(100)
            reading float(metrics[0]) + exponential_callback(100, 1.2); fused calls
            end exactly at the hooks' steps.
    L1_np1  L1_np with Loop(max_fused_steps=1): one call per step.
    L1_dev  L1 fed pre-made device batches (one call per step).
    L0_np32, L1_np32  L0_np and L1_np with Loop(max_fused_steps=32), the longest calls
            allowed (a NaN loss then surfaces up to 63 steps late; 15 with the default 8).

On W1 a profile follows (`--profile on|off|only`): a ladder of rungs from A to L1, host-only
micro-timings and a cProfile of L1_np, in this process and again in a child process pinned to
one core (`--pinned-profile off` skips that), where Python and XLA cannot overlap and the
rungs add up.

Run:
    python bench/run.py                       # W1-W5, W8 + W1 profiles -> bench/RESULTS.md
    python bench/run.py --workloads W4,W5,W8  # convnet, tf.data and peak-memory workloads
    python bench/run.py --quick               # smoke test, prints only
    python bench/run.py --workloads W1 --reps 15 --steps 1792
    python bench/run.py --profile only        # only the W1 profiles (e.g. while tuning the Loop)
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import functools
import gc
import hashlib
import json
import math
import os
import platform
import pstats
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

if __name__ == "__main__" and "--pin" in sys.argv:
    # Before JAX starts its threads, so that they all inherit the affinity.
    os.sched_setaffinity(0, {int(sys.argv[sys.argv.index("--pin") + 1])})

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax

import keras_trainloop as ktl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import more_workloads

perf_counter = time.perf_counter
process_time = time.process_time

# Workloads ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    dims: tuple[int, ...]  # input, hidden..., classes
    batch: int
    num_examples: int  # the data set; one pass = num_examples // batch batches
    steps: int  # default steps per system per repetition
    reps: int  # default measured repetitions
    quick_steps: int
    quick_reps: int


WORKLOADS = {
    "W1": Workload(
        "W1",
        "scikit-learn digits, MLP 64-128-10, batch 64",
        (64, 128, 10),
        64,
        1792,
        steps=1792,
        reps=15,
        quick_steps=224,
        quick_reps=3,
    ),
    "W2": Workload(
        "W2",
        "synthetic, MLP 512-1024-1024-10, batch 256",
        (512, 1024, 1024, 10),
        256,
        4096,
        steps=96,
        reps=6,
        quick_steps=32,
        quick_reps=3,
    ),
    "W3": Workload(
        "W3",
        "synthetic, MLP 1024-4096-4096-10, batch 1024",
        (1024, 4096, 4096, 10),
        1024,
        4096,
        steps=4,
        reps=4,
        quick_steps=2,
        quick_reps=2,
    ),
}


EXTRA_WORKLOADS = {
    "W4": more_workloads.W4_TITLE,
    "W5": more_workloads.W5_TITLE,
    "W6": "cold start: process start to 200 steps, MLP 784-1024x3-10, keras.fit vs ktl.Loop",
    "W7": "a short cold run: W1's MLP for 200 steps, keras.fit vs ktl.Loop vs max_fused_steps=1",
    "W8": "peak RSS of W3's MLP in fresh processes: hand-written, keras.fit, ktl.Loop",
}
"""Workloads with their own systems (bench/more_workloads.py)."""

MAX_SETTLE_REPS = 20
"""Warm-up repetitions a Loop system may add while its fused calls compile in the background."""

FLOORS = {"W1": 0.9, "W2": 0.97, "W3": 0.97}
"""Issue 6's floor for L1's speed relative to A, per workload."""

FUSED_GOALS = {"W1": 1.3, "W2": 1.05, "W3": 1.05}
"""Issue 8's goal for the fused L1 (L1_np) relative to A, per workload."""


def load_data(w: Workload) -> tuple[np.ndarray, np.ndarray]:
    """The workload's examples: float32 features, int32 class ids."""
    if w.name == "W1":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)[: w.num_examples]  # 1797 -> 28 full batches
        y = digits.target.astype(np.int32)[: w.num_examples]
        return x, y
    rng = np.random.default_rng(0)
    x = rng.standard_normal((w.num_examples, w.dims[0]), dtype=np.float32)
    y = rng.integers(0, w.dims[-1], w.num_examples).astype(np.int32)
    return x, y


def make_keras_model(dims: tuple[int, ...]) -> keras.Sequential:
    layers = [keras.Input((dims[0],))]
    for i, width in enumerate(dims[1:]):
        last = i == len(dims) - 2
        layers.append(
            keras.layers.Dense(
                width,
                activation=None if last else "relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=i),
            )
        )
    return keras.Sequential(layers)


def keras_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def keras_adam() -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(1e-3)  # epsilon 1e-7; A uses optax.adam(1e-3, eps=1e-7)


@dataclasses.dataclass
class Data:
    """Everything the systems share for one workload."""

    w: Workload
    x: np.ndarray
    y: np.ndarray
    weights: list[np.ndarray]  # initial weights, Keras order (kernel, bias, ...)
    device_batches: list[tuple[jax.Array, jax.Array]]  # one pass, already on device

    @property
    def nb(self) -> int:
        return len(self.device_batches)


def make_data(w: Workload) -> Data:
    x, y = load_data(w)
    weights = make_keras_model(w.dims).get_weights()
    b = w.batch
    batches = [jax.device_put((x[i : i + b], y[i : i + b])) for i in range(0, len(x) - b + 1, b)]
    jax.block_until_ready(batches)
    return Data(w, x, y, weights, batches)


class DeviceBatches:
    """A ktl.Dataset cycling pre-made device batches (no host work, like A's list)."""

    name = "device"

    def __init__(self, batches: list[tuple[jax.Array, jax.Array]]):
        self._items = [(None, [bx], [by]) for bx, by in batches]
        self._i = 0

    def yield_batch(self):
        item = self._items[self._i]
        self._i = (self._i + 1) % len(self._items)
        return item

    def reset(self) -> None:
        pass


# The hand-written JAX step (A, A_scan) ---------------------------------------------------------


def _mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def make_jax_step(lr: float = 1e-3):
    opt = optax.adam(lr, eps=1e-7)

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(_mlp(params, x), y).mean()

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return opt, step


def jax_params(weights: list[np.ndarray]) -> list[tuple[jax.Array, jax.Array]]:
    return [(jnp.array(weights[i]), jnp.array(weights[i + 1])) for i in range(0, len(weights), 2)]


# Systems ----------------------------------------------------------------------------------------


class System:
    """One way of training. `first()` runs the first step (compile); `run(n)` n steps."""

    name = ""
    what = ""

    def __init__(self, data: Data):
        self.data = data

    def build(self) -> None:
        raise NotImplementedError

    def first(self) -> None:
        raise NotImplementedError

    def run(self, n: int) -> tuple[float, float, int]:
        """Runs about n steps; returns (wall seconds, process CPU seconds, steps done)."""
        raise NotImplementedError

    def extra(self) -> dict[str, float]:
        return {}

    def settling(self) -> bool:
        """Whether it still compiles (or measures) in the background: warm up more."""
        return False


class JaxLoop(System):
    name = "A"
    what = "jax.jit step + optax.adam, device batches cycled"

    def build(self):
        self.opt, step = make_jax_step()
        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.params = jax_params(self.data.weights)
        self.opt_state = self.opt.init(self.params)
        self.batches = self.data.device_batches

    def first(self):
        x, y = self.batches[0]
        self.params, self.opt_state, loss = self.step(self.params, self.opt_state, x, y)
        jax.block_until_ready(loss)

    def run(self, n):
        step, batches, nb = self.step, self.batches, len(self.batches)
        params, opt_state = self.params, self.opt_state
        t0, c0 = perf_counter(), process_time()
        for i in range(n):
            x, y = batches[i % nb]
            params, opt_state, loss = step(params, opt_state, x, y)
        jax.block_until_ready((params, loss))
        dt, dc = perf_counter() - t0, process_time() - c0
        self.params, self.opt_state = params, opt_state
        return dt, dc, n


class JaxScan(System):
    """A's step in `lax.scan` over stacked chunks of `chunk` batches (default: one pass)."""

    def __init__(self, data: Data, chunk: int | None = None):
        super().__init__(data)
        self.size = chunk or data.nb
        self.name = "A_scan" if chunk is None else f"A_scan{chunk}"
        self.what = f"A's step in lax.scan, one dispatch per {self.size} steps"

    def build(self):
        self.opt, step = make_jax_step()

        def chunk(params, opt_state, xs, ys):
            def body(carry, batch):
                params, opt_state, loss = step(*carry, *batch)
                return (params, opt_state), loss

            (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
            return params, opt_state, losses[-1]

        self.chunk = jax.jit(chunk, donate_argnums=(0, 1))
        self.params = jax_params(self.data.weights)
        self.opt_state = self.opt.init(self.params)
        # The batches in order, cycled, cut into chunks until they start a pass again.
        nb, size = self.data.nb, self.size
        batches = self.data.device_batches
        self.chunks = [
            (
                jnp.stack([batches[(c * size + j) % nb][0] for j in range(size)]),
                jnp.stack([batches[(c * size + j) % nb][1] for j in range(size)]),
            )
            for c in range(nb // math.gcd(nb, size))
        ]

    def first(self):
        xs, ys = self.chunks[0]
        self.params, self.opt_state, loss = self.chunk(self.params, self.opt_state, xs, ys)
        jax.block_until_ready(loss)

    def run(self, n):
        calls = max(1, math.ceil(n / self.size))
        params, opt_state, chunks = self.params, self.opt_state, self.chunks
        t0, c0 = perf_counter(), process_time()
        for i in range(calls):
            xs, ys = chunks[i % len(chunks)]
            params, opt_state, loss = self.chunk(params, opt_state, xs, ys)
        jax.block_until_ready((params, loss))
        dt, dc = perf_counter() - t0, process_time() - c0
        self.params, self.opt_state = params, opt_state
        return dt, dc, calls * self.size


class _EpochTimer(keras.callbacks.Callback):
    """Times the single epoch of a fit: epoch begin to epoch end (Keras syncs there).

    It overrides no batch hook, so keras.fit keeps its asynchronous batch path.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.c0 = perf_counter(), process_time()

    def on_epoch_end(self, epoch, logs=None):  # logs were pythonified: the device is done.
        self.t1, self.c1 = perf_counter(), process_time()


class KerasFit(System):
    def __init__(self, data: Data, steps_per_execution: int):
        super().__init__(data)
        self.spe = steps_per_execution
        self.name = f"B{steps_per_execution}"
        self.what = (
            f"keras.fit(steps_per_execution={steps_per_execution}), numpy arrays, "
            "one epoch of n batches"
        )
        self._fit_data: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.fit_overheads: list[float] = []

    def build(self):
        self.model = make_keras_model(self.data.w.dims)
        self.model.set_weights(self.data.weights)
        self.model.compile(optimizer=keras_adam(), loss=keras_loss(), steps_per_execution=self.spe)

    def _xy(self, n):
        """n batches of the data set, repeated as needed (one fit epoch = n steps)."""
        if n not in self._fit_data:
            b, x, y = self.data.w.batch, self.data.x, self.data.y
            copies = math.ceil(n * b / len(x))
            self._fit_data[n] = (
                np.concatenate([x] * copies)[: n * b],
                np.concatenate([y] * copies)[: n * b],
            )
        return self._fit_data[n]

    def first(self):
        b = self.data.w.batch
        self.model.fit(
            self.data.x[:b], self.data.y[:b], batch_size=b, epochs=1, verbose=0, shuffle=False
        )

    def run(self, n):
        x, y = self._xy(n)
        timer = _EpochTimer()
        t0 = perf_counter()
        self.model.fit(
            x, y, batch_size=self.data.w.batch, epochs=1, verbose=0, shuffle=True, callbacks=[timer]
        )
        wall = perf_counter() - t0
        epoch = timer.t1 - timer.t0
        self.fit_overheads.append(wall - epoch)
        return epoch, timer.c1 - timer.c0, n

    def extra(self):
        return {"fit_call_overhead_ms": 1e3 * statistics.median(self.fit_overheads)}


class KtlLoop(System):
    def __init__(self, data: Data, hooks: bool, on_device: bool, max_fused_steps: int = 8):
        super().__init__(data)
        self.hooks, self.on_device = hooks, on_device
        self.max_fused_steps = max_fused_steps
        self.name = f"L{int(hooks)}_{'dev' if on_device else 'np'}"
        feed = (
            "pre-made device batches, one call per step"
            if on_device
            else "ArrayDataset(shuffle, loop_forever), numpy"
        )
        if not on_device:
            if max_fused_steps == 1:
                self.name += "1"
                feed += ", one call per step (max_fused_steps=1)"
            elif max_fused_steps != 8:
                self.name += str(max_fused_steps)
                feed += f", up to {max_fused_steps} steps fused per call"
            else:
                feed += f", up to {max_fused_steps} steps fused per call"
        self.what = (
            "Loop + progress bar + every_n_steps(100) float(loss) + exponential_callback"
            if hooks
            else "Loop.run_steps, no hooks"
        ) + f"; {feed}"

    def build(self):
        model = make_keras_model(self.data.w.dims)
        model.set_weights(self.data.weights)
        self.trainer = ktl.Trainer(model, keras_loss(), keras_adam())
        self.loop = ktl.Loop(self.trainer, max_fused_steps=self.max_fused_steps)
        if self.on_device:
            self.ds = DeviceBatches(self.data.device_batches)
        else:
            self.ds = ktl.ArrayDataset(
                self.data.x,
                self.data.y,
                batch_size=self.data.w.batch,
                shuffle=True,
                seed=0,
                loop_forever=True,
            )
        self.read_losses: list[float] = []
        self.exp_steps: list[int] = []
        if self.hooks:
            self._devnull = open(os.devnull, "w")  # noqa: SIM115 (open for all runs)
            ktl.commandline.attach_progress_bar(self.loop, output="plain", file=self._devnull)
            ktl.every_n_steps(
                self.loop,
                100,
                "read_loss",
                0,
                lambda loop, metrics: self.read_losses.append(float(metrics[0])),
            )
            ktl.exponential_callback(
                self.loop,
                100,
                1.2,
                False,
                "exp",
                0,
                lambda loop, metrics: self.exp_steps.append(loop.loop_step),
            )

    def first(self):
        self.loop.run_steps(self.ds, 1)

    def settling(self):
        # Fused calls compile in a background thread: steady state starts once done.
        return self.trainer.compiling or None in self.loop.fusion_decisions().values()

    def run(self, n):
        t0, c0 = perf_counter(), process_time()
        self.loop.run_steps(self.ds, n)
        return perf_counter() - t0, process_time() - c0, n


def make_systems(data: Data) -> list[System]:
    return [
        JaxLoop(data),
        JaxScan(data),
        JaxScan(data, 8),
        KerasFit(data, 1),
        KerasFit(data, 32),
        KtlLoop(data, hooks=False, on_device=False),
        KtlLoop(data, hooks=False, on_device=True),
        KtlLoop(data, hooks=True, on_device=False),
        KtlLoop(data, hooks=True, on_device=False, max_fused_steps=1),
        KtlLoop(data, hooks=True, on_device=True),
        KtlLoop(data, hooks=False, on_device=False, max_fused_steps=32),
        KtlLoop(data, hooks=True, on_device=False, max_fused_steps=32),
    ]


# Host memory --------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def rss_mb() -> float:
    try:
        return _status_kb("VmRSS") / 1024
    except OSError:
        return float("nan")


def reset_peak() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    try:
        return _status_kb("VmHWM") / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Harness -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    name: str
    what: str
    secs_per_step: list[float]  # wall seconds per step, one per measured repetition
    cpu_per_step: list[float]  # process CPU seconds per step (all threads)
    first_s: float
    build_s: float
    setup_mb: float
    peak_run_mb: float
    extra: dict[str, float]

    @property
    def rates(self) -> list[float]:
        return [1 / t for t in self.secs_per_step]


def measure(
    systems: list[System], steps: int, reps: int, log: Callable[[str], None]
) -> list[Result]:
    info: dict[str, dict[str, float]] = {}
    for s in systems:
        gc.collect()
        before = rss_mb()
        t0 = perf_counter()
        s.build()
        t1 = perf_counter()
        s.first()
        t2 = perf_counter()
        s.run(steps)  # warm-up repetition, not measured
        for _ in range(MAX_SETTLE_REPS):  # ... and more while it still compiles or measures.
            if not s.settling():
                break
            s.run(steps)
        info[s.name] = {"build": t1 - t0, "first": t2 - t1, "setup_mb": rss_mb() - before}
        log(
            f"  {s.name:7s} build {t1 - t0:6.2f}s  first step {t2 - t1:6.2f}s  "
            f"warm-up {perf_counter() - t2:6.2f}s"
        )
    wall: dict[str, list[float]] = {s.name: [] for s in systems}
    cpu: dict[str, list[float]] = {s.name: [] for s in systems}
    peaks: dict[str, float] = {s.name: 0.0 for s in systems}
    for r in range(reps):
        k = r % len(systems)
        for s in systems[k:] + systems[:k]:
            gc.collect()
            reset_peak()
            before = rss_mb()
            dt, dc, done = s.run(steps)
            peaks[s.name] = max(peaks[s.name], peak_mb() - before)
            wall[s.name].append(dt / done)
            cpu[s.name].append(dc / done)
        a = statistics.median(wall["A"]) * 1e6
        log(
            f"  rep {r + 1}/{reps} (A median so far {a:.1f} µs/step, load {os.getloadavg()[0]:.2f})"
        )
    return [
        Result(
            s.name,
            s.what,
            wall[s.name],
            cpu[s.name],
            info[s.name]["first"],
            info[s.name]["build"],
            info[s.name]["setup_mb"],
            peaks[s.name],
            s.extra(),
        )
        for s in systems
    ]


def quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def paired_added(values: list[float], ref: list[float]) -> float:
    """Median over repetitions of (value - ref) in µs: both ran in the same repetition."""
    return statistics.median((v - r) * 1e6 for v, r in zip(values, ref))


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _us(x: float, sign: bool = False) -> str:
    text = f"{x:+,.1f}" if sign else f"{x:,.1f}"
    if abs(x) >= 1000:
        text = f"{x:+,.0f}" if sign else f"{x:,.0f}"
    return text


def table(results: list[Result]) -> str:
    a = next(r for r in results if r.name == "A")
    rows = [
        (
            "| system | steps/s median | min-max | IQR | ratio to A | µs/step | µs added vs A "
            "| CPU µs/step | CPU µs added vs A | CPU ratio to A | first step (s) | setup RSS MB "
            "| run peak MB |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rates = r.rates
        q1, q3 = quantiles(rates)
        ratio = statistics.median(ra / rb for ra, rb in zip(rates, a.rates))
        cpu_ratio = statistics.median(ca / c for c, ca in zip(r.cpu_per_step, a.cpu_per_step))
        rows.append(
            f"| {r.name} | {_rate(statistics.median(rates))} "
            f"| {_rate(min(rates))}-{_rate(max(rates))} | {_rate(q1)}-{_rate(q3)} | {ratio:.2f} "
            f"| {_us(statistics.median(r.secs_per_step) * 1e6)} "
            f"| {_us(paired_added(r.secs_per_step, a.secs_per_step), sign=True)} "
            f"| {_us(statistics.median(r.cpu_per_step) * 1e6)} "
            f"| {_us(paired_added(r.cpu_per_step, a.cpu_per_step), sign=True)} "
            f"| {cpu_ratio:.2f} "
            f"| {r.first_s:.2f} | {r.setup_mb:+.0f} | {r.peak_run_mb:+.1f} |"
        )
    return "\n".join(rows)


# Profile of the loop path (W1) ---------------------------------------------------------------


def _timed_loop(body: Callable[[int], Any], n: int) -> tuple[float, float]:
    """Runs body(i) n times, then waits for the device; returns (wall, CPU) µs per step."""
    t0, c0 = perf_counter(), process_time()
    out = None
    for i in range(n):
        out = body(i)
    jax.block_until_ready(out)
    return (perf_counter() - t0) / n * 1e6, (process_time() - c0) / n * 1e6


def _micro(fn: Callable[[], Any], n: int) -> float:
    """µs per call of fn (host only)."""
    t0 = perf_counter()
    for _ in range(n):
        fn()
    return (perf_counter() - t0) / n * 1e6


class _CapturedStep:
    """A Trainer's jitted train executor, called directly with the state it last returned.

    Uses only `trainer.on_exec_creation` and the documented `executor.fn`; it assumes the
    call shape `fn(*state, inputs, labels) -> (state, values)` and checks it. The trainer
    itself must not be used afterwards (its state was donated to these calls).
    """

    def __init__(self, trainer: Any, x: jax.Array, y: jax.Array):
        executors = []
        trainer.on_exec_creation(lambda ex, kind: executors.append(ex))
        trainer.train_step(None, [x], [y])  # compiles
        (ex,) = [e for e in executors if e.graph_type is ktl.GraphType.TRAIN]
        fn, seen = ex.fn, {}

        def spy(*args):
            out = fn(*args)
            seen["args"], seen["out"] = args, out
            return out

        ex.fn = spy
        try:
            trainer.train_step(None, [x], [y])
        finally:
            ex.fn = fn
        args, out = seen["args"], seen["out"]
        state, values = out
        if not (
            isinstance(state, (tuple, list))
            and len(state) == len(args) - 2
            and isinstance(values, list)
        ):
            raise TypeError("unexpected executor call shape")
        self.fn, self.state = fn, tuple(state)
        self.num_args = len(jax.tree.leaves(args))
        self.num_results = len(jax.tree.leaves(out))

    def __call__(self, x: jax.Array, y: jax.Array) -> list:
        state, values = self.fn(*self.state, [x], [y])
        self.state = tuple(state)
        return values


def profile_w1(
    data: Data, steps: int, reps: int, log: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    """Where a Loop step's time goes on W1: a ladder of rungs from A to L1, micro-timings
    of the host-only parts, and a cProfile of L1_np. Rungs that need library internals
    which changed are skipped (and said so)."""
    import keras_trainloop.loop._loop as loop_module

    b = data.w.batch
    batches = data.device_batches
    np_batches = [(np.asarray(x), np.asarray(y)) for x, y in batches]
    nb = len(batches)
    x0, y0 = batches[0]
    skipped: list[str] = []

    opt, step = make_jax_step()
    jstep = jax.jit(step, donate_argnums=(0, 1))
    st = {"p": jax_params(data.weights)}
    st["o"] = opt.init(st["p"])

    def a_body(i, src, wait_every=0):
        x, y = src[i % nb]
        st["p"], st["o"], loss = jstep(st["p"], st["o"], x, y)
        if wait_every and (i + 1) % wait_every == 0:
            jax.block_until_ready(loss)
        return loss

    def new_trainer():
        model = make_keras_model(data.w.dims)
        model.set_weights(data.weights)
        return ktl.Trainer(model, keras_loss(), keras_adam())

    rungs: list[tuple[str, str, Callable[[int], tuple[float, float]]]] = [
        (
            "A",
            "jit step + optax, device batches",
            lambda n: _timed_loop(functools.partial(a_body, src=batches), n),
        ),
        (
            "A_np",
            "A fed numpy batches (host->device inside the jit call)",
            lambda n: _timed_loop(functools.partial(a_body, src=np_batches), n),
        ),
        (
            "A_wait16",
            "A waiting for the device every 16 steps (as the Loop does)",
            lambda n: _timed_loop(functools.partial(a_body, src=batches, wait_every=16), n),
        ),
    ]
    captured = None
    try:
        captured = _CapturedStep(new_trainer(), x0, y0)
        rungs.append(
            (
                "T_exec",
                "the Trainer's jitted executor called directly, device batches",
                lambda n: _timed_loop(lambda i: captured(*batches[i % nb]), n),
            )
        )
    except Exception as e:  # noqa: BLE001 (internals changed: report, go on)
        skipped.append(f"T_exec, T_scan ({type(e).__name__}: {e})")

    tr = new_trainer()
    tr.train_step(None, [x0], [y0])
    ads = ktl.ArrayDataset(data.x, data.y, batch_size=b, shuffle=True, seed=0, loop_forever=True)

    def train_step_np(i):
        spec, inputs, labels = ads.yield_batch()
        return tr.train_step(spec, inputs, labels)

    rungs += [
        (
            "T_step",
            "trainer.train_step(None, [x], [y]), device batches",
            lambda n: _timed_loop(
                lambda i: tr.train_step(None, [batches[i % nb][0]], [batches[i % nb][1]]), n
            ),
        ),
        (
            "T_step_np",
            "ArrayDataset.yield_batch() + trainer.train_step",
            lambda n: _timed_loop(train_step_np, n),
        ),
    ]

    loops = {}
    for key, hooks, dev in [
        ("L0_dev", False, True),
        ("L0_np", False, False),
        ("L1_dev", True, True),
        ("L1_np", True, False),
    ]:
        lp = ktl.Loop(new_trainer())
        ds = (
            DeviceBatches(batches)
            if dev
            else ktl.ArrayDataset(
                data.x, data.y, batch_size=b, shuffle=True, seed=0, loop_forever=True
            )
        )
        if hooks:
            devnull = open(os.devnull, "w")  # noqa: SIM115
            ktl.commandline.attach_progress_bar(lp, output="plain", file=devnull)
            ktl.every_n_steps(lp, 100, "read_loss", 0, lambda loop, m: float(m[0]))
            ktl.exponential_callback(lp, 100, 1.2, False, "exp", 0, lambda loop, m: None)
        lp.run_steps(ds, 1)
        loops[key] = (lp, ds)

    def loop_rung(key, nosync=False):
        lp, ds = loops[key]

        def run(n):
            saved = loop_module.SYNC_EVERY
            if nosync:
                loop_module.SYNC_EVERY = 1 << 40
            try:
                t0, c0 = perf_counter(), process_time()
                lp.run_steps(ds, n)
                dt, dc = perf_counter() - t0, process_time() - c0
            finally:
                loop_module.SYNC_EVERY = saved
            return dt / n * 1e6, dc / n * 1e6

        return run

    rungs.append(("L0_dev", "Loop.run_steps, device batches", loop_rung("L0_dev")))
    if isinstance(getattr(loop_module, "SYNC_EVERY", None), int):
        rungs.append(
            (
                "L0_dev_nosync",
                (
                    "L0_dev with the every-16-steps wait disabled "
                    "(module constant SYNC_EVERY patched)"
                ),
                loop_rung("L0_dev", nosync=True),
            )
        )
    else:
        skipped.append("L0_dev_nosync (no SYNC_EVERY in keras_trainloop.loop._loop)")
    rungs += [
        ("L1_dev", "L0_dev + progress bar + 2 scheduled hooks", loop_rung("L1_dev")),
        ("L0_np", "Loop.run_steps, ArrayDataset", loop_rung("L0_np")),
        ("L1_np", "L0_np + progress bar + 2 scheduled hooks", loop_rung("L1_np")),
    ]

    # Compute only: A's step and the Trainer's step, each fused in lax.scan over one pass.
    a_scan = JaxScan(data)
    a_scan.build()
    a_scan.first()

    def a_scan_rung(n):
        dt, dc, done = a_scan.run(n)
        return dt / done * 1e6, dc / done * 1e6

    rungs.append(
        ("A_scan", f"A's step in lax.scan, {nb} steps per dispatch (compute only)", a_scan_rung)
    )
    if captured is not None:
        scan_step = _CapturedStep(new_trainer(), x0, y0)
        xs = jnp.stack([x for x, _ in batches])
        ys = jnp.stack([y for _, y in batches])

        @jax.jit
        def trainer_scan(state, xs, ys):
            def body(state, batch):
                state, values = scan_step.fn(*state, [batch[0]], [batch[1]])
                return tuple(state), values[0]

            return jax.lax.scan(body, state, (xs, ys))

        def t_scan_rung(n):
            chunks = max(1, n // nb)
            t0, c0 = perf_counter(), process_time()
            for _ in range(chunks):
                scan_step.state, losses = trainer_scan(scan_step.state, xs, ys)
            jax.block_until_ready(losses)
            done = chunks * nb
            return (perf_counter() - t0) / done * 1e6, (process_time() - c0) / done * 1e6

        rungs.append(
            (
                "T_scan",
                (f"the Trainer's step in lax.scan, {nb} steps per dispatch (compute only)"),
                t_scan_rung,
            )
        )

    for _, _, fn in rungs:  # warm-up: compiles A_np's numpy path and the scans
        fn(steps)
    wall: dict[str, list[float]] = {k: [] for k, _, _ in rungs}
    cpu: dict[str, list[float]] = {k: [] for k, _, _ in rungs}
    for r in range(reps):
        k = r % len(rungs)
        for key, _, fn in rungs[k:] + rungs[:k]:
            gc.collect()
            t, c = fn(steps)
            wall[key].append(t)
            cpu[key].append(c)
        log(f"  profile rep {r + 1}/{reps} (load {os.getloadavg()[0]:.2f})")

    def med(v):
        return statistics.median(v)

    def added(values, ref):  # paired by repetition, µs
        return med([v - r for v, r in zip(values, ref)])

    lines = [
        "| rung | what | µs/step | µs vs A | min µs/step | CPU µs/step | CPU µs vs A |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, what, _ in rungs:
        lines.append(
            f"| {key} | {what} | {med(wall[key]):.1f} | {added(wall[key], wall['A']):+.1f} "
            f"| {min(wall[key]):.1f} | {med(cpu[key]):.1f} "
            f"| {added(cpu[key], cpu['A']):+.1f} |"
        )

    # Host-only parts, µs per call.
    n_micro = 20000
    metrics = tr.train_step(None, [x0], [y0])
    jax.block_until_ready(metrics)
    dev_ds = DeviceBatches(batches)
    micro: list[tuple[str, Callable[[], Any], int]] = [
        ("ArrayDataset.yield_batch() (shuffled gather of a batch of 64)", ads.yield_batch, n_micro),
        ("DeviceBatches.yield_batch()", dev_ds.yield_batch, n_micro),
        (
            "time.perf_counter() + list.append (the per-step duration record)",
            lambda: [].append(perf_counter()),
            n_micro,
        ),
        (
            "float(metrics[0]) on a ready value (one device->host read)",
            lambda: float(metrics[0]),
            2000,
        ),
        (
            "jax.device_get(metrics) (the progress bar's read at a redraw)",
            lambda: jax.device_get(list(metrics)),
            2000,
        ),
        (
            "jax.block_until_ready(metrics) on ready values",
            lambda: jax.block_until_ready(metrics),
            n_micro,
        ),
    ]
    if callable(getattr(tr, "nonfinite_step", None)):
        micro.append(("trainer.nonfinite_step() (read at every sync)", tr.nonfinite_step, 2000))
    lp1, _ = loops["L1_dev"]
    on_step = getattr(lp1, "_on_step", None)
    if callable(getattr(on_step, "fire", None)):

        def fire_none_due():
            saved = lp1.loop_step
            lp1.loop_step = 10**9 + 1  # a step where neither scheduled hook is due
            try:
                return _micro(lambda: on_step.fire(lp1, metrics), n_micro)
            finally:
                lp1.loop_step = saved

        micro.append(
            (
                ("L1's on_step hooks fired, none due (bar's clock read + 2 schedule checks)"),
                fire_none_due,
                0,
            )
        )
    else:
        skipped.append("on_step fire micro-timing (no loop._on_step.fire)")
    executor_lookup = getattr(tr, "_executor", None)
    if callable(executor_lookup):
        micro.append(
            (
                "Trainer's per-call Python: executor lookup and checks (_executor)",
                lambda: executor_lookup(ktl.GraphType.TRAIN, None, [x0], [y0]),
                n_micro,
            )
        )
    for key in ("L0_dev", "L1_dev", "L1_np"):
        lp, ds = loops[key]
        micro.append(
            (
                (
                    f"{key}: `run_steps(ds, 1)`: one step plus the per-run setup and end "
                    "(metric reset, on_start/on_end hooks, final wait)"
                ),
                functools.partial(lp.run_steps, ds, 1),
                200,
            )
        )
    lines += ["", "| part (host side) | µs per call |", "|---|---:|"]
    for name, fn, n in micro:
        try:
            us = fn() if n == 0 else _micro(fn, n)
            lines.append(f"| {name} | {us:.2f} |")
        except Exception as e:  # noqa: BLE001
            skipped.append(f"micro-timing {name!r} ({type(e).__name__}: {e})")

    a_args = (st["p"], st["o"], x0, y0)
    n_a_args = len(jax.tree.leaves(a_args))
    a_out = jstep(*a_args)
    st["p"], st["o"], _ = a_out
    lines += [
        "",
        "| jit call | leaves in | leaves out |",
        "|---|---:|---:|",
        f"| A's step | {n_a_args} | {len(jax.tree.leaves(a_out))} |",
    ]
    if captured is not None:
        lines.append(f"| the Trainer's executor | {captured.num_args} | {captured.num_results} |")

    # cProfile of L1_np: which Python functions run per step (the profiler inflates
    # Python-level calls, so read the shares, not the absolute numbers).
    lp, ds = loops["L1_np"]
    prof = cProfile.Profile()
    prof.enable()
    lp.run_steps(ds, steps)
    prof.disable()
    rows = sorted(
        ((tt, nc, func) for func, (_, nc, tt, _, _) in pstats.Stats(prof).stats.items()),
        reverse=True,
    )
    total_tt = sum(r[0] for r in rows)
    lines += [
        "",
        (
            f"cProfile of L1_np `run_steps({steps})`, own time per step (the profiler inflates "
            f"Python calls: read the shares; {total_tt / steps * 1e6:.1f} µs/step in all under "
            "the profiler):"
        ),
        "",
        "| function | calls/step | own µs/step | share |",
        "|---|---:|---:|---:|",
    ]
    for tt, nc, (file, lineno, fname) in rows[:14]:
        where = f"{os.path.basename(file)}:{lineno}({fname})" if file != "~" else fname
        lines.append(
            f"| `{where}` | {nc / steps:.2f} | {tt / steps * 1e6:.2f} "
            f"| {100 * tt / total_tt:.0f}% |"
        )
    if skipped:
        lines += ["", "Skipped (library internals changed): " + "; ".join(skipped) + "."]
    return "\n".join(lines), {"wall_us": wall, "cpu_us": cpu, "skipped": skipped}


# Report --------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores ({usable} usable)",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": (
            f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, keras "
            f"{keras.__version__}, optax {optax.__version__}, numpy {np.__version__}, "
            f"keras-trainloop {ktl.__version__}"
        ),
        "devices": ", ".join(str(d) for d in jax.devices()),
    }


def _source_digest() -> str:
    """sha256 of keras_trainloop's .py files (names and contents): which code was measured."""
    root = os.path.dirname(os.path.abspath(ktl.__file__))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


NOTES = """\
How to read it:
- steps/s: one measured repetition runs the system for the given steps; median and spread
  over repetitions. Systems run in a rotating order within each repetition.
- ratio to A and µs added vs A are paired: computed per repetition against A's run in the
  same repetition, then the median is taken (robust to load drifting between repetitions).
- warm-up: one repetition, and more (up to 20) while a Loop's fused calls still compile in
  the background or its fusion gate still measures: compilation stays out of steady state.
- first step: wall time of the system's first step, compilation included (A_scan: the first
  chunk of one pass; B*: a whole first `fit` call on one batch, fit setup included; L*: a
  `run_steps(ds, 1)` call). Excluded from steady state, as is one untimed warm-up repetition.
- B1/B32 time the epoch from `on_epoch_begin` to `on_epoch_end` (Keras has synced there); the
  per-call cost of `fit` outside the epoch (data adapter, callbacks, state sync) is listed
  separately below. L* time the whole `run_steps` call (metric reset, hooks' on_start/on_end,
  final sync included).
- A_scan does whole chunks of one pass, A_scan8 chunks of 8 batches; their steps per
  repetition are rounded up to a multiple of the chunk.
- CPU µs/step: the process's CPU time (all threads) per step, and `CPU ratio to A` (A's CPU
  per step over the system's, paired). It exceeds the wall time when XLA runs on another
  thread while Python dispatches the next step, or on both cores (W2, W3). It is much less
  sensitive than wall time to other jobs taking a core (on W3 the wall time doubles when one
  does; the CPU time does not move), so on this shared machine read W2/W3 by the CPU columns.
- Host memory: `setup RSS MB` is the growth of the process RSS (VmRSS) across the system's
  construction, first step and warm-up (model, optimizer state, compiled code, data copies;
  allocator reuse makes small values approximate). `run peak MB` is the peak RSS (VmHWM,
  reset through /proc/self/clear_refs before each run) minus the RSS before the run, maximum
  over repetitions: the transient host memory a run needs on top of what it holds.
- Load: the machine is shared (other jobs running); the load average is logged per workload.
"""


def report(sections: list[str], started: str, command: str, source: str) -> str:
    m = machine_info()
    head = [
        "# keras-trainloop benchmark results",
        "",
        f"- Date: {started}",
        f"- Command: `{command}`",
        f"- Machine: {m['cpu']}, {m['memory']} RAM; {m['os']}; Python {m['python']}",
        f"- Versions: {m['versions']}",
        (
            f"- keras_trainloop source measured: sha256 of its .py files {source} (the "
            "working tree when the run started)"
        ),
        (
            f"- JAX devices: {m['devices']} (CPU backend). No GPU machine was lent to this task, "
            "so there is no GPU column."
        ),
        "",
        NOTES,
    ]
    return "\n".join(head + sections) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--workloads",
        default="W1,W2,W3,W4,W5,W6,W7,W8",
        help="comma-separated: W1,W2,W3 (MLPs), W4 (convnet), W5 (tf.data), "
        "W6 (cold start), W7 (short cold run), W8 (peak memory)",
    )
    p.add_argument("--reps", type=int, default=None, help="measured repetitions (per workload)")
    p.add_argument("--steps", type=int, default=None, help="steps per system per repetition")
    p.add_argument("--quick", action="store_true", help="few steps and reps (smoke test)")
    p.add_argument(
        "--profile",
        choices=["on", "off", "only"],
        default="on",
        help="profile the Loop's step on W1 (when W1 runs); 'only': just that",
    )
    p.add_argument("--raw", default=None, help="also write every repetition's numbers (JSON)")
    p.add_argument(
        "--pinned-profile",
        choices=["on", "off"],
        default="on",
        help="repeat the W1 profile in a child process pinned to one core",
    )
    p.add_argument(
        "--pin",
        type=int,
        default=None,
        metavar="CORE",
        help="run this process on one CPU core (all its threads)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="markdown file to write ('-': print only). Default bench/RESULTS.md, "
        "or '-' with --quick",
    )
    args = p.parse_args(argv)
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS and n not in EXTRA_WORKLOADS]
    if unknown:
        p.error(
            f"unknown workload(s) {unknown}; choose from "
            f"{sorted(WORKLOADS) + sorted(EXTRA_WORKLOADS)}"
        )
    if args.profile == "only":
        names = ["W1"]
    output = args.output or (
        "-"
        if args.quick
        else os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    )
    command = " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    source = _source_digest()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sections: list[str] = []
    raw: dict[str, Any] = {"command": command, "started": started, "source": source}
    t_all = perf_counter()
    peak_reset_ok = reset_peak()
    for name in names:
        if name in EXTRA_WORKLOADS:
            log(f"{name}: {EXTRA_WORKLOADS[name]}; load {os.getloadavg()[0]:.2f}")
            if name == "W4":
                steps = args.steps or (16 if args.quick else 96)
                reps = args.reps or (2 if args.quick else 5)
                sections.append(more_workloads.w4_section(steps, reps, log))
            elif name == "W5":
                steps = args.steps or (224 if args.quick else 1792)
                reps = args.reps or (2 if args.quick else 7)
                sections.append(more_workloads.w5_section(steps, reps, log))
            elif name == "W6":
                sections.append(more_workloads.w6_section(log))
            elif name == "W7":
                sections.append(more_workloads.w7_section(log))
            else:
                sections.append(more_workloads.w8_section(log))
            print(sections[-1], flush=True)
            continue
        w = WORKLOADS[name]
        steps = args.steps or (w.quick_steps if args.quick else w.steps)
        reps = args.reps or (w.quick_reps if args.quick else w.reps)
        load0 = os.getloadavg()
        log(f"{name}: {w.title}; {steps} steps x {reps} reps; load {load0[0]:.2f}")
        t0 = perf_counter()
        data = make_data(w)
        if args.profile == "only":
            results = []
        else:
            results = measure(make_systems(data), steps, reps, log)
            raw[name] = {
                "steps": steps,
                "reps": reps,
                "systems": {r.name: dataclasses.asdict(r) for r in results},
            }
            sections.append(
                workload_section(
                    name, w, data, steps, reps, results, load0, os.getloadavg(), perf_counter() - t0
                )
            )
            print(sections[-1], flush=True)
        if name == "W1" and args.profile != "off":
            log("W1 profile of the loop path")
            load0 = os.getloadavg()
            prof_reps = max(3, min(reps, 11))
            prof, prof_raw = profile_w1(data, steps, prof_reps, log)
            raw["W1_profile"] = prof_raw
            load1 = os.getloadavg()
            pinned = "" if args.pin is None else f", process pinned to core {args.pin}"
            psec = "\n".join(
                [
                    f"## Where a Loop step's time goes (W1{pinned})",
                    "",
                    (
                        f"A ladder from A to L1, {steps} steps per rung per repetition, "
                        f"{prof_reps} interleaved repetitions (load {load0[0]:.2f} -> "
                        f"{load1[0]:.2f}). Wall and process-CPU µs per step, medians; `vs A` are "
                        "paired by repetition; `min` is the least disturbed repetition."
                    ),
                    "",
                    prof,
                    "",
                ]
            )
            sections.append(psec)
            print(psec, flush=True)
            if args.pin is None and args.pinned_profile == "on":
                sections.append(pinned_profile(steps, reps, log))
                print(sections[-1], flush=True)
        del results, data
        gc.collect()
    if not peak_reset_ok:
        sections.append(
            "Note: /proc/self/clear_refs was not writable; run peaks are "
            "ru_maxrss-based (process-wide high-water marks).\n"
        )
    sections.append(f"Total benchmark time: {perf_counter() - t_all:.0f} s.")
    text = report(sections, started, command, source)
    if output != "-":
        with open(output, "w") as f:
            f.write(text)
        log(f"wrote {output}")
    if args.raw:
        with open(args.raw, "w") as f:
            json.dump(raw, f, indent=1)
        log(f"wrote {args.raw}")


def pinned_profile(steps: int, reps: int, log: Callable[[str], None]) -> str:
    """The W1 profile again, in a child process whose threads all share one core.

    There the Python thread and XLA's cannot overlap, so each rung's time is the total
    work of a step: the view that attributes costs additively.
    """
    import subprocess
    import tempfile

    core = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pinned.md")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--profile",
            "only",
            "--pin",
            str(core),
            "--steps",
            str(steps),
            "--reps",
            str(reps),
            "--output",
            out,
        ]
        log("W1 profile, pinned to one core: " + " ".join(cmd[1:]))
        done = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0 or not os.path.exists(out):
            return (
                "## W1 profile pinned to one core\n\nFailed (exit code "
                f"{done.returncode}): {done.stderr[-2000:]}\n"
            )
        with open(out) as f:
            text = f.read()
    start = text.index("## Where a Loop step's time goes")
    end = text.find("Total benchmark time:", start)
    return text[start : end if end >= 0 else None].rstrip() + "\n"


def workload_section(
    name: str,
    w: Workload,
    data: Data,
    steps: int,
    reps: int,
    results: list[Result],
    load0: tuple,
    load1: tuple,
    secs: float,
) -> str:
    a = next(r for r in results if r.name == "A")
    a_us = statistics.median(a.secs_per_step) * 1e6
    a_par = statistics.median(c / t for c, t in zip(a.cpu_per_step, a.secs_per_step))
    sec = [
        f"## {name}: {w.title}",
        "",
        (
            f"{steps} steps per system per repetition ({data.nb} batches per pass), {reps} "
            f"measured repetitions; A at {a_us:,.1f} µs/step, using {a_par:.2f} CPU-seconds per "
            "second (1: one core busy at a time; 2: both cores busy). Load average (1/5/15 "
            f"min) {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at the start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} at the "
            f"end; {secs:.0f} s."
        ),
        "",
        table(results),
        "",
    ]
    sec += [f"- {r.name}: {r.what}" for r in results]
    overheads = [
        f"{r.name} {r.extra['fit_call_overhead_ms']:.1f} ms"
        for r in results
        if "fit_call_overhead_ms" in r.extra
    ]
    sec += [
        "",
        "keras.fit call overhead outside the timed epoch (median per call): "
        + ", ".join(overheads)
        + ".",
        "",
    ]
    floor = FLOORS.get(name)
    if floor is not None:
        checks = []
        for r in results:
            if r.name.startswith("L1"):
                wall = statistics.median(ra / rb for ra, rb in zip(r.rates, a.rates))
                cpu = statistics.median(ca / c for c, ca in zip(r.cpu_per_step, a.cpu_per_step))
                verdict = (
                    "meets it"
                    if min(wall, cpu) >= floor
                    else ("meets it by CPU time only" if cpu >= floor else "below")
                )
                checks.append(
                    f"{r.name} {wall:.2f}x by wall time, {cpu:.2f}x by CPU time: {verdict}"
                )
        sec += [f"Issue 6 floor (L1 >= {floor}x A on {name}): " + "; ".join(checks) + ".", ""]
    goal = FUSED_GOALS.get(name)
    fused = next((r for r in results if r.name == "L1_np"), None)
    if goal is not None and fused is not None:
        wall = statistics.median(ra / rb for ra, rb in zip(fused.rates, a.rates))
        cpu = statistics.median(ca / c for c, ca in zip(fused.cpu_per_step, a.cpu_per_step))
        limit = "".join(
            f"; {r.name} ({r.what}) is at "
            f"{statistics.median(ra / rb for ra, rb in zip(r.rates, a.rates)):.2f}x"
            for r in results
            if r.name.startswith("A_scan")
        )
        verdict = "meets it" if wall >= goal else "below it"
        sec += [
            (
                f"Issue 8 goal (fused L1 >= {goal}x A on {name}): L1_np {wall:.2f}x by wall "
                f"time, {cpu:.2f}x by CPU time: {verdict}{limit}."
            ),
            "",
        ]
    if name == "W1":
        sec += [_w1_goal(results, a), ""]
    return "\n".join(sec)


def _w1_goal(results: list[Result], a: Result) -> str:
    """Issue 13's W1 goal: the default Loop (L0_np) >= 1.45x A and >= 0.93 of A_scan."""
    by_name = {r.name: r for r in results}

    def paired(r: Result, ref: Result) -> float:
        return statistics.median(x / y for x, y in zip(r.rates, ref.rates))

    parts = []
    for loop in ("L0_np", "L0_np32"):
        if loop not in by_name:
            continue
        r = by_name[loop]
        scans = ", ".join(
            f"{paired(r, by_name[s]):.2f} of {s}" for s in ("A_scan", "A_scan8") if s in by_name
        )
        parts.append(f"{loop} {paired(r, a):.2f}x A ({scans})")
    return (
        "Issue 13 goal (W1: default Loop >= 1.45x A, >= 0.93 of the hand-fused scan): "
        + "; ".join(parts)
        + ". A_scan8 fuses 8 steps a call as the default Loop does: the most 8-step calls give."
    )


if __name__ == "__main__":
    main()
