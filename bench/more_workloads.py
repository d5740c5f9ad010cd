"""W4 (a small convnet), W5 (tf.data input) and W8 (peak memory of W3's MLP): the workloads
where fusion, the host feed and holding the state twice used to hurt. Run through
`bench/run.py --workloads W4,W5,W8`.

W4: Conv32-Conv64-Flatten-Dense128-Dense10 on scikit-learn digits 8x8x1, batch 128, Adam
1e-3, same initial weights for every system; systems side by side, rotating order, ratios
paired per repetition:
    A          a hand-written jax.jit step (model.stateless_call + the Keras optimizer's
               stateless_apply), batches already on device.
    A_scan1    the same step in lax.scan over 8 stacked batches, default unroll=1.
    A_scanU    the same scan with unroll=True.
    B1         keras.fit(steps_per_execution=1).
    L_default  ktl.Loop(trainer).run_steps(ArrayDataset(shuffle, loop_forever)): fused calls
               where the fusion gate measured them no slower (with convolutions the fused
               body is unrolled).
    L_fused1   the same with max_fused_steps=1 (one call per step).

W5: W1's digits MLP (64-128-10, batch 64, Adam) fed by tf.data
(`from_tensor_slices.shuffle.batch(64).repeat.prefetch`):
    A_iter     a hand-written jax.jit step over `as_numpy_iterator()` (the plain path).
    L_default  ktl.Loop over ktl.TFDataset(the same pipeline): 8 batches per iterator call,
               stacked inside tf.data (two such chunks prefetched), fused calls where the
               fusion gate measured them cheaper.
    L_fused1   the same with max_fused_steps=1.
And the host feed alone: `yield_batches(8)` per call; and the pipeline's own speed limit,
read inside tf.data (`take(n).reduce`, no Python per batch).

W6: cold start: process start to 200 steps done, MLP 784-1024x3-10, batch 256, Adam, synthetic
data, each system in a fresh process: from process start (imports included) to the steps
done, by the child's own clock; the whole process's wall time (to exit) beside it.

W8: peak RSS of a fresh process that trains W3's MLP (1024-4096-4096-10, batch 1024, Adam)
for a few steps: the hand-written loop, keras.fit and the Loop, each in its own process
(W8_REPS processes each, interleaved).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import keras
import numpy as np

import keras_trainloop as ktl

perf_counter = time.perf_counter
process_time = time.process_time

W4_BATCH = 128
W4_TITLE = "scikit-learn digits 8x8x1, convnet Conv32-Conv64-Flatten-Dense128-Dense10, batch 128"


def _convnet(seed: int = 0) -> keras.Model:
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(
                32, 3, padding="same", activation="relu", kernel_initializer=init(seed)
            ),
            keras.layers.Conv2D(
                64, 3, padding="same", activation="relu", kernel_initializer=init(seed + 1)
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", kernel_initializer=init(seed + 2)),
            keras.layers.Dense(10, kernel_initializer=init(seed + 3)),
        ]
    )


def _loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    n = len(d.target) // W4_BATCH * W4_BATCH
    return (d.images[:n] / 16.0).astype(np.float32)[..., None], d.target[:n].astype(np.int32)


class _Stateless:
    """The hand-written step shared by A and the A_scan systems."""

    def __init__(self, weights: list[np.ndarray]):
        self.model = _convnet()
        self.model.set_weights(weights)
        self.opt = keras.optimizers.Adam(1e-3)
        self.opt.build(self.model.trainable_variables)
        loss_fn = _loss()
        model, opt = self.model, self.opt

        def step(state, x, y):
            tv, ntv, ov = state

            def f(tv):
                logits, new_ntv = model.stateless_call(tv, ntv, x, training=True)
                return loss_fn(y, logits), new_ntv

            (loss, new_ntv), grads = jax.value_and_grad(f, has_aux=True)(tv)
            new_tv, new_ov = opt.stateless_apply(ov, grads, tv)
            return (new_tv, new_ntv, new_ov), loss

        self.step = step
        self.state = jax.tree.map(
            jnp.copy,
            (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in opt.variables],
            ),
        )


class _System:
    name = "?"
    what = ""

    def __init__(self, weights, x, y, batches):
        self.weights, self.x, self.y, self.batches = weights, x, y, batches

    def build(self) -> None: ...

    def run(self, n: int) -> tuple[float, float]:
        raise NotImplementedError


class _A(_System):
    name, what = "A", "hand-written jax.jit step, device batches"

    def build(self):
        self.s = _Stateless(self.weights)
        self.fn = jax.jit(self.s.step, donate_argnums=0)

    def run(self, n):
        t0, c0 = perf_counter(), process_time()
        state, loss = self.s.state, None
        for i in range(n):
            x, y = self.batches[i % len(self.batches)]
            state, loss = self.fn(state, x, y)
        jax.block_until_ready(loss)
        self.s.state = state
        return perf_counter() - t0, process_time() - c0


class _AScan(_System):
    def __init__(self, *args, unroll):
        super().__init__(*args)
        self.unroll = unroll
        self.name = "A_scanU" if unroll is True else "A_scan1"
        self.what = f"the same step in lax.scan over 8 stacked batches, unroll={unroll}"

    def build(self):
        self.s = _Stateless(self.weights)
        step, unroll = self.s.step, self.unroll

        def chunk(state, xs, ys):
            return jax.lax.scan(lambda st, b: step(st, *b), state, (xs, ys), unroll=unroll)

        self.fn = jax.jit(chunk, donate_argnums=0)
        xs = jnp.stack([b[0] for b in self.batches[:8]])
        ys = jnp.stack([b[1] for b in self.batches[:8]])
        self.chunk = (xs, ys)

    def run(self, n):
        t0, c0 = perf_counter(), process_time()
        state, losses = self.s.state, None
        for _ in range(max(1, n // 8)):
            state, losses = self.fn(state, *self.chunk)
        jax.block_until_ready(losses)
        self.s.state = state
        return perf_counter() - t0, process_time() - c0


class _Fit(_System):
    name, what = "B1", "keras.fit(steps_per_execution=1), numpy arrays"

    def build(self):
        self.model = _convnet()
        self.model.set_weights(self.weights)
        self.model.compile(keras.optimizers.Adam(1e-3), _loss())

    def run(self, n):
        copies = -(-n * W4_BATCH // len(self.x))
        x = np.concatenate([self.x] * copies)[: n * W4_BATCH]
        y = np.concatenate([self.y] * copies)[: n * W4_BATCH]
        t0, c0 = perf_counter(), process_time()
        self.model.fit(x, y, batch_size=W4_BATCH, epochs=1, verbose=0, shuffle=True)
        return perf_counter() - t0, process_time() - c0


class _Loop(_System):
    def __init__(self, *args, cap):
        super().__init__(*args)
        self.cap = cap
        self.name = "L_default" if cap == 8 else "L_fused1"
        self.what = (
            "ktl.Loop, default (fusion gate)" if cap == 8 else "ktl.Loop(max_fused_steps=1)"
        ) + ", ArrayDataset(shuffle, numpy)"

    def build(self):
        model = _convnet()
        model.set_weights(self.weights)
        self.trainer = ktl.Trainer(model, _loss(), keras.optimizers.Adam(1e-3))
        self.loop = ktl.Loop(self.trainer, max_fused_steps=self.cap)
        self.ds = ktl.ArrayDataset(
            self.x, self.y, batch_size=W4_BATCH, shuffle=True, seed=0, loop_forever=True
        )

    def run(self, n):
        t0, c0 = perf_counter(), process_time()
        self.loop.run_steps(self.ds, n)
        return perf_counter() - t0, process_time() - c0


def w4_section(steps: int, reps: int, log: Callable[[str], None]) -> str:
    """W4 side by side: build, one untimed warm-up run each, then `reps` rotating repetitions."""
    x, y = _digits()
    weights = _convnet().get_weights()
    batches = [
        jax.device_put((x[i : i + W4_BATCH], y[i : i + W4_BATCH]))
        for i in range(0, len(x), W4_BATCH)
    ]
    systems = [
        _A(weights, x, y, batches),
        _AScan(weights, x, y, batches, unroll=1),
        _AScan(weights, x, y, batches, unroll=True),
        _Fit(weights, x, y, batches),
        _Loop(weights, x, y, batches, cap=8),
        _Loop(weights, x, y, batches, cap=1),
    ]
    load0 = os.getloadavg()
    first: dict[str, float] = {}
    for s in systems:
        t0 = perf_counter()
        s.build()
        s.run(steps)  # warm-up: compiles (and the Loop's fusion probe) ...
        for _ in range(20):  # ... also in the background, until done.
            if not _settling(getattr(s, "loop", None)):
                break
            s.run(steps)
        first[s.name] = perf_counter() - t0
        log(f"  W4 {s.name:9s} build + warm-up {first[s.name]:6.2f}s")
    wall: dict[str, list[float]] = {s.name: [] for s in systems}
    for r in range(reps):
        k = r % len(systems)
        for s in systems[k:] + systems[:k]:
            dt, _ = s.run(steps)
            done = max(1, steps // 8) * 8 if s.name.startswith("A_scan") else steps
            wall[s.name].append(dt / done)
        log(f"  W4 rep {r + 1}/{reps}, load {os.getloadavg()[0]:.2f}")
    a = wall["A"]
    rows = [
        "| system | ms/step median | ratio to A (paired) | build + warm-up (s) |",
        "|---|---:|---:|---:|",
    ]
    ratios = {}
    for s in systems:
        ratio = statistics.median(ra / rs for ra, rs in zip(a, wall[s.name]))
        ratios[s.name] = ratio
        rows.append(
            f"| {s.name} | {statistics.median(wall[s.name]) * 1e3:.2f} | {ratio:.2f} "
            f"| {first[s.name]:.1f} |"
        )
    loop = next(s for s in systems if s.name == "L_default")
    decisions = loop.loop.fusion_decisions()
    goal = ratios["L_default"] >= 1.0
    no_trap = ratios["L_default"] >= 0.97 * ratios["L_fused1"]
    lines = [
        f"## W4: {W4_TITLE}",
        "",
        (
            f"{steps} steps per system per repetition, {reps} rotating repetitions; load "
            f"{load0[0]:.2f} -> {os.getloadavg()[0]:.2f}."
        ),
        "",
        *rows,
        "",
        *[f"- {s.name}: {s.what}" for s in systems],
        "",
        (
            f"The Loop's fusion decision per spec: {decisions} (True: fused calls kept). "
            f"Issue 13 goals: default Loop >= 1.0x A: {'met' if goal else 'not met'} "
            f"({ratios['L_default']:.2f}x); never meaningfully slower than max_fused_steps=1 "
            f"(>= 0.97 of it): {'met' if no_trap else 'not met'} "
            f"({ratios['L_default'] / ratios['L_fused1']:.2f})."
        ),
        "",
    ]
    return "\n".join(lines)


def _settling(loop: Any) -> bool:
    """Whether a Loop's fused calls still compile in the background or its gate measures."""
    if loop is None:
        return False
    return loop.trainer.compiling or None in loop.fusion_decisions().values()


# W5: tf.data input ---------------------------------------------------------------------------

W5_TITLE = "W1's digits MLP 64-128-10, batch 64, fed by tf.data (shuffle.batch.repeat.prefetch)"


def _w5_pipeline(tf, x, y):
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0)
        .batch(64)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


def _feed_8_us(feed: Any, calls: int = 200) -> float:
    """µs per stacked call of 8 batches, as the Loop reads them (stacked, or one by one)."""

    def feed_8() -> None:
        if feed.yield_batches(8) is None:
            for _ in range(8):
                feed.yield_batch()

    for _ in range(20):
        feed_8()
    t0 = perf_counter()
    for _ in range(calls):
        feed_8()
    return (perf_counter() - t0) / calls * 1e6


def _host_feed_8_us(tf, batches) -> tuple[float, float]:
    """The host's cost of 8 batches from `batches` cached: `TFDataset`'s stacked read, and
    8 `as_numpy_iterator()` calls stacked by `np.stack` (the feed before tf.data stacked)."""
    cached = batches.cache().repeat()
    cached.take(100).reduce(0, lambda count, _: count + 1)  # Fills the cache.
    new = _feed_8_us(ktl.TFDataset(cached))
    it = cached.as_numpy_iterator()
    t0, calls = perf_counter(), 200
    for _ in range(calls):
        parts = [next(it) for _ in range(8)]
        if len({p[0].shape for p in parts}) == 1:
            np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    return new, (perf_counter() - t0) / calls * 1e6


def _pipeline_limit_us(tf, dataset, batches: int = 4000) -> float:
    """µs per batch of `dataset` read inside tf.data (no Python per batch): its speed limit."""
    dataset.take(100).reduce(0, lambda count, _: count + 1)  # Warm-up (shuffle buffer fill).
    t0 = perf_counter()
    dataset.take(batches).reduce(0, lambda count, _: count + 1)
    return (perf_counter() - t0) / batches * 1e6


def _mlp() -> keras.Model:
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, "relu", kernel_initializer=init(0)),
            keras.layers.Dense(10, kernel_initializer=init(1)),
        ]
    )


def w5_section(steps: int, reps: int, log: Callable[[str], None]) -> str:
    """W5 side by side, and the cost of the host feed of one stacked call."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
    weights = _mlp().get_weights()
    runs: dict[str, Callable[[int], float]] = {}

    model = _mlp()
    model.set_weights(weights)
    opt = keras.optimizers.Adam(1e-3)
    opt.build(model.trainable_variables)
    loss_fn = _loss()

    def step(state, xb, yb):
        tv, ov = state
        grads = jax.grad(lambda tv: loss_fn(yb, model.stateless_call(tv, [], xb)[0]))(tv)
        return opt.stateless_apply(ov, grads, tv)

    jstep = jax.jit(step, donate_argnums=0)
    holder = {
        "state": jax.tree.map(
            jnp.copy,
            ([v.value for v in model.trainable_variables], [v.value for v in opt.variables]),
        ),
        "it": _w5_pipeline(tf, x, y).as_numpy_iterator(),
    }

    def a_iter(n):
        t0 = perf_counter()
        state, it = holder["state"], holder["it"]
        for _ in range(n):
            xb, yb = next(it)
            state = jstep(state, xb, yb)
        jax.block_until_ready(state)
        holder["state"] = state
        return perf_counter() - t0

    runs["A_iter"] = a_iter
    for cap in (8, 1):
        m = _mlp()
        m.set_weights(weights)
        loop = ktl.Loop(ktl.Trainer(m, _loss(), keras.optimizers.Adam(1e-3)), max_fused_steps=cap)
        ds = ktl.TFDataset(_w5_pipeline(tf, x, y))

        def run(n, loop=loop, ds=ds):
            t0 = perf_counter()
            loop.run_steps(ds, n)
            return perf_counter() - t0

        runs["L_default" if cap == 8 else "L_fused1"] = run
        if cap == 8:
            default_loop = loop
    load0 = os.getloadavg()
    for name, run in runs.items():
        run(steps)  # warm-up ...
        for _ in range(20):  # ... until the Loop's fused calls compiled and the gate decided.
            if not (_settling(default_loop) and name == "L_default"):
                break
            run(steps)
        log(f"  W5 {name} warmed up")
    wall: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            wall[name].append(runs[name](steps) / steps)
        log(f"  W5 rep {r + 1}/{reps}, load {os.getloadavg()[0]:.2f}")
    feed_us = _feed_8_us(ktl.TFDataset(_w5_pipeline(tf, x, y)))
    # The host's own cost: the same batches cached, so tf.data has nothing left to make.
    host_us, old_us = _host_feed_8_us(tf, _w5_pipeline(tf, x, y).take(len(x) // 64 + 1))
    limit_us = _pipeline_limit_us(tf, _w5_pipeline(tf, x, y))
    a = wall["A_iter"]
    rows = ["| system | µs/step median | ratio to A_iter (paired) |", "|---|---:|---:|"]
    ratios = {}
    for name in names:
        ratios[name] = statistics.median(ra / rs for ra, rs in zip(a, wall[name]))
        rows.append(f"| {name} | {statistics.median(wall[name]) * 1e6:.1f} | {ratios[name]:.2f} |")
    return "\n".join(
        [
            f"## W5: {W5_TITLE}",
            "",
            (
                f"{steps} steps per system per repetition, {reps} rotating repetitions; load "
                f"{load0[0]:.2f} -> {os.getloadavg()[0]:.2f}."
            ),
            "",
            *rows,
            "",
            (
                f"Host feed of one stacked call of 8 batches (`TFDataset.yield_batches(8)`) on "
                f"this pipeline: {feed_us:.0f} µs, waits for tf.data included. The host's own "
                f"cost, on the same batches cached (`take(29).cache().repeat()`, nothing left "
                f"for tf.data to make): {host_us:.0f} µs, against {old_us:.0f} µs for 8 "
                f"`as_numpy_iterator()` calls stacked with `np.stack` (the previous feed; "
                f"~1.9 ms in issue 13): {old_us / host_us:.1f}x cheaper. Issue 13 goals: Loop "
                f">= 2.5x A_iter: {'met' if ratios['L_default'] >= 2.5 else 'not met'} "
                f"({ratios['L_default']:.2f}x); feed >= 4x cheaper: "
                f"{'met' if old_us >= 4 * host_us else 'not met'} ({old_us / host_us:.1f}x). "
                f"The default Loop's fusion decision: {default_loop.fusion_decisions()} (True: "
                "fused calls kept)."
            ),
            "",
            (
                f"The pipeline's own speed limit: {limit_us:.0f} µs a batch, read inside "
                "tf.data (`take(n).reduce`: no Python, no training), so no consumer of it "
                f"can exceed {statistics.median(a) * 1e6 / limit_us:.2f}x A_iter here, and "
                "that only with training free (its threads share the 2 cores with the "
                "steps)."
            ),
            "",
        ]
    )


def _synthetic_mlp(dims: tuple[int, ...], examples: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Random examples for a relu MLP of `dims` (input, hidden..., classes), and the model."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((examples, dims[0]), dtype=np.float32)
    y = rng.integers(0, dims[-1], examples).astype(np.int32)
    layers = [keras.Input((dims[0],))] + [keras.layers.Dense(w, "relu") for w in dims[1:-1]]
    return x, y, keras.Sequential([*layers, keras.layers.Dense(dims[-1])])


# W6: cold start --------------------------------------------------------------------------------

W6_DIMS = (784, 1024, 1024, 1024, 10)
W6_BATCH = 256
W6_STEPS = 200
W6_REPS = 5  # fresh processes per system, interleaved (a run moves by ±10% here)


def _since_process_start() -> float:
    """Seconds since this process started (Linux: /proc/self/stat against CLOCK_BOOTTIME)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def _w6_child(system: str) -> None:
    """Trains W6's MLP for W6_STEPS steps from a cold process; prints its phases as JSON.

    Phases, each from process start: `imports` (Python, jax, keras, keras_trainloop; this
    module imports them before this function runs), `model` (the Keras model built), `done`
    (the steps trained, compilation included).
    """
    phases = {"imports": _since_process_start()}
    x, y, model = _synthetic_mlp(W6_DIMS, W6_BATCH * 8)
    phases["model"] = _since_process_start()
    if system == "keras.fit":
        model.compile(keras.optimizers.Adam(1e-3), _loss())
        xs, ys = np.concatenate([x] * (W6_STEPS // 8)), np.concatenate([y] * (W6_STEPS // 8))
        model.fit(xs, ys, batch_size=W6_BATCH, epochs=1, verbose=0)
    else:
        trainer = ktl.Trainer(model, _loss(), keras.optimizers.Adam(1e-3))
        ds = ktl.ArrayDataset(x, y, batch_size=W6_BATCH, shuffle=True, seed=0, loop_forever=True)
        ktl.Loop(trainer).run_steps(ds, W6_STEPS)
        assert trainer.global_step == W6_STEPS
    phases["done"] = _since_process_start()
    print(json.dumps(phases))


def w6_section(log: Callable[[str], None]) -> str:
    """Wall time of fresh processes training W6_STEPS steps (W6_REPS each, interleaved)."""
    results: dict[str, list[float]] = {}
    phases: dict[str, list[dict[str, float]]] = {}
    for _ in range(W6_REPS):
        for system in ("keras.fit", "ktl.Loop"):
            cmd = [sys.executable, os.path.abspath(__file__), "--w6-child", system]
            t0 = perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            wall = perf_counter() - t0
            if done.returncode != 0:
                return f"## W6\n\n{system} failed: {done.stderr[-2000:]}\n"
            results.setdefault(system, []).append(wall)
            phases.setdefault(system, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            log(f"  W6 {system:10s} {wall:.1f} s")
    # The goal's measure: process start to the steps done (the child's own clock); the exit
    # (interpreter and backends shutting down, the same for both) is shown beside it.
    done = {system: [q["done"] for q in p] for system, p in phases.items()}
    loop, fit = statistics.median(done["ktl.Loop"]), statistics.median(done["keras.fit"])
    ratios = [f / lo for f, lo in zip(done["keras.fit"], done["ktl.Loop"])]
    paired = statistics.median(ratios)
    rows = [
        (
            f"| system | process start to {W6_STEPS} steps done, s (median of {W6_REPS}) | imports "
            "| model built | training (compile included) | to process exit, s |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, walls in results.items():
        p = phases[system]
        imports = statistics.median(q["imports"] for q in p)
        model = statistics.median(q["model"] - q["imports"] for q in p)
        train = statistics.median(q["done"] - q["model"] for q in p)
        rows.append(
            f"| {system} | {statistics.median(done[system]):.1f} | {imports:.1f} | {model:.1f} "
            f"| {train:.1f} | {statistics.median(walls):.1f} |"
        )
    fit_train = statistics.median(q["done"] - q["model"] for q in phases["keras.fit"])
    loop_train = statistics.median(q["done"] - q["model"] for q in phases["ktl.Loop"])
    return "\n".join(
        [
            f"## W6: cold start, MLP {'-'.join(map(str, W6_DIMS))}, batch {W6_BATCH}, Adam",
            "",
            *rows,
            "",
            (
                f"Phases from process start, each the median of {W6_REPS}: `imports` (Python, jax, "
                "keras, keras_trainloop, the same for both), `model built` (the user's Keras "
                "model, the same), `training` (what differs: compile, setup and the 200 steps)."
            ),
            "",
            (
                f"Loop speed relative to keras.fit (fit's time / the Loop's): {fit / loop:.2f}x "
                f"from process start to the steps done (paired per repetition: {paired:.2f}x, range "
                f"{min(ratios):.2f}-{max(ratios):.2f}x); {fit_train / loop_train:.2f}x for the "
                "training phase. "
                f"Issue 13 goal >= 1.1x: {'met' if fit / loop >= 1.1 else 'not met'}."
            ),
            "",
        ]
    )


# W7: a short run of a small model -------------------------------------------------------------

W7_STEPS = 200
W7_SYSTEMS = ("keras.fit", "ktl.Loop", "ktl.Loop(max_fused_steps=1)")


def _w7_child(system: str) -> None:
    """Trains W1's digits MLP (batch 64) for W7_STEPS steps from a cold process; prints
    the seconds from process start to the steps done (JSON)."""
    x, y = _digits()
    x = x.reshape(len(x), -1)
    model = _mlp()
    if system == "keras.fit":
        model.compile(keras.optimizers.Adam(1e-3), _loss())
        n = W7_STEPS * 64
        reps = -(-n // len(x))
        xs, ys = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
        model.fit(xs, ys, batch_size=64, epochs=1, verbose=0, shuffle=True)
    else:
        trainer = ktl.Trainer(model, _loss(), keras.optimizers.Adam(1e-3))
        ds = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0, loop_forever=True)
        cap = 1 if system.endswith("(max_fused_steps=1)") else ktl.loop.MAX_FUSED_STEPS
        ktl.Loop(trainer, max_fused_steps=cap).run_steps(ds, W7_STEPS)
        assert trainer.global_step == W7_STEPS
    print(json.dumps({"done": _since_process_start()}))


def w7_section(log: Callable[[str], None]) -> str:
    """A short run: fresh processes, W6_REPS each, interleaved; to the steps done and to exit."""
    done: dict[str, list[float]] = {s: [] for s in W7_SYSTEMS}
    exited: dict[str, list[float]] = {s: [] for s in W7_SYSTEMS}
    for _ in range(W6_REPS):
        for system in W7_SYSTEMS:
            cmd = [sys.executable, os.path.abspath(__file__), "--w7-child", system]
            t0 = perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if run.returncode != 0:
                return f"## W7\n\n{system} failed: {run.stderr[-2000:]}\n"
            exited[system].append(perf_counter() - t0)
            done[system].append(json.loads(run.stdout.strip().splitlines()[-1])["done"])
            log(f"  W7 {system:28s} {exited[system][-1]:.1f} s")
    rows = [
        (
            f"| system | process start to {W7_STEPS} steps done, s (median of {W6_REPS}) "
            "| to process exit, s |"
        ),
        "|---|---:|---:|",
    ]
    rows += [
        f"| {s} | {statistics.median(done[s]):.2f} | {statistics.median(exited[s]):.2f} |"
        for s in W7_SYSTEMS
    ]
    default, plain = W7_SYSTEMS[1], W7_SYSTEMS[2]
    paired = statistics.median(p / d for p, d in zip(exited[plain], exited[default]))
    return "\n".join(
        [
            f"## W7: a short run, W1's digits MLP 64-128-10, batch 64, {W7_STEPS} steps, cold",
            "",
            *rows,
            "",
            (
                "Fused calls compile in a background thread only when the training ahead "
                "outlasts a compile, so a short run compiles none: the default Loop against "
                f"`max_fused_steps=1`, to process exit, paired per repetition: {paired:.2f}x "
                "(1.00: the same; the exit waits for a compile still running)."
            ),
            "",
        ]
    )


# W8: peak memory ------------------------------------------------------------------------------

W8_DIMS = (1024, 4096, 4096, 10)
W8_BATCH = 1024
W8_STEPS = 4


def _w8_child(system: str) -> None:
    """Trains W3's MLP for a few steps in this process; prints its peak RSS (MB) as JSON."""
    x, y, model = _synthetic_mlp(W8_DIMS, W8_BATCH * 2)
    loss = _loss()
    if system == "keras.fit":
        model.compile(keras.optimizers.Adam(1e-3), loss)
        model.fit(x, y, batch_size=W8_BATCH, epochs=W8_STEPS // 2, verbose=0)
    elif system == "ktl.Loop":
        trainer = ktl.Trainer(model, loss, keras.optimizers.Adam(1e-3))
        ds = ktl.ArrayDataset(x, y, batch_size=W8_BATCH, loop_forever=True)
        ktl.Loop(trainer).run_steps(ds, W8_STEPS)
    else:  # hand-written
        opt = keras.optimizers.Adam(1e-3)
        opt.build(model.trainable_variables)

        def step(state, xb, yb):
            tv, ov = state

            def f(tv):
                return loss(yb, model.stateless_call(tv, [], xb)[0])

            grads = jax.grad(f)(tv)
            new_tv, new_ov = opt.stateless_apply(ov, grads, tv)
            return new_tv, new_ov

        state = ([v.value for v in model.trainable_variables], [v.value for v in opt.variables])
        for v in model.trainable_variables + opt.variables:
            v._value = None  # The state lives in `state` only, as a hand-written loop keeps it.
        fn = jax.jit(step, donate_argnums=0)
        for i in range(W8_STEPS):
            s = (i % 2) * W8_BATCH
            state = fn(state, x[s : s + W8_BATCH], y[s : s + W8_BATCH])
        jax.block_until_ready(state)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"system": system, "peak_mb": peak / 1024}))


W8_REPS = 5
"""Fresh processes per system: one process's peak moves by +-15 MB here (allocator, threads)."""


def w8_section(log: Callable[[str], None]) -> str:
    """Peak RSS of each system in a fresh process (the median of W8_REPS processes each)."""
    results: dict[str, list[float]] = {}
    for _ in range(W8_REPS):
        for system in ("hand-written", "keras.fit", "ktl.Loop"):
            cmd = [sys.executable, os.path.abspath(__file__), "--w8-child", system]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                return f"## W8\n\n{system} failed: {done.stderr[-2000:]}\n"
            peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
            results.setdefault(system, []).append(peak)
            log(f"  W8 {system:12s} peak {peak:.0f} MB")
    rows = [
        f"| system | peak RSS MB (median of {W8_REPS} processes) | min-max |",
        "|---|---:|---:|",
    ]
    rows += [
        f"| {s} | {statistics.median(v):.0f} | {min(v):.0f}-{max(v):.0f} |"
        for s, v in results.items()
    ]
    loop, fit = statistics.median(results["ktl.Loop"]), statistics.median(results["keras.fit"])
    paired = statistics.median(lo - f for lo, f in zip(results["ktl.Loop"], results["keras.fit"]))
    return "\n".join(
        [
            f"## W8: peak memory, MLP {'-'.join(map(str, W8_DIMS))}, batch {W8_BATCH}, Adam",
            "",
            (
                f"Each system trains {W8_STEPS} steps in a fresh process; peak RSS (VmHWM) of the "
                "whole process, imports included."
            ),
            "",
            *rows,
            "",
            (
                f"Issue 13 goal (Loop peak <= keras.fit's): {'met' if loop <= fit else 'not met'} "
                f"({loop:.0f} vs {fit:.0f} MB; the Loop's minus fit's, paired per repetition: "
                f"{paired:+.0f} MB)."
            ),
            "",
        ]
    )


if __name__ == "__main__" and "--w8-child" in sys.argv:
    _w8_child(sys.argv[sys.argv.index("--w8-child") + 1])
if __name__ == "__main__" and "--w7-child" in sys.argv:
    _w7_child(sys.argv[sys.argv.index("--w7-child") + 1])
if __name__ == "__main__" and "--w6-child" in sys.argv:
    _w6_child(sys.argv[sys.argv.index("--w6-child") + 1])
