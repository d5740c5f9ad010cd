"""trainer.prepare_train_steps: fused calls compiled off the critical path (the Loop
trains the same steps one `train_step` each meanwhile: tests/loop/test_loop_background_compile.py)."""

import subprocess
import sys
import textwrap
from concurrent.futures import Future

import jax
import pytest
from trainer_helpers import stack_batches

from keras_trainloop.trainer import _background, _executors


def test_prepare_compiles_in_the_background_and_the_call_then_does_not_trace(
    make_trainer, digits, held_compiles
):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 4, 32)
    trainer = make_trainer()
    trainer.train_step(None, [x[:32]], [y[:32]])
    assert not trainer.prepare_train_steps(None, [xs], [ys], start=False)
    assert held_compiles.jobs == []  # Not asked to start: nothing traced or queued.
    assert not trainer.prepare_train_steps(None, [xs], [ys])
    assert not trainer.prepare_train_steps(None, [xs], [ys])  # Still compiling ...
    assert len(held_compiles.jobs) == 1  # ... and queued once.
    (executor,) = trainer._cache.executors()
    assert executor.fused_trace_counts == {4: 1}  # Traced here, in the caller's thread.
    assert trainer.compiling
    held_compiles.finish()
    assert not trainer.compiling
    assert trainer.prepare_train_steps(None, [xs], [ys])
    trainer.train_steps(None, [xs], [ys])
    assert executor.fused_trace_counts == {4: 1}  # The call found it compiled.
    assert trainer.global_step == 5
    # Another batch shape of the spec is another compile.
    assert not trainer.prepare_train_steps(None, *([a] for a in stack_batches(x, y, 4, 16)))
    assert len(held_compiles.jobs) == 2


def test_prepare_is_true_where_the_fused_call_compiles_in_the_foreground(
    make_trainer, digits, held_compiles
):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 4, 32)
    on_device = make_trainer()
    on_device.train_step(None, [x[:32]], [y[:32]])
    assert on_device.prepare_train_steps(None, [jax.numpy.asarray(xs)], [jax.numpy.asarray(ys)])
    placed = make_trainer().in_device(0)
    placed.train_step(None, [x[:32]], [y[:32]])
    assert placed.prepare_train_steps(None, [xs], [ys])
    assert held_compiles.jobs == []


def test_a_failed_background_compile_lets_the_call_compile_in_front(
    make_trainer, digits, monkeypatch
):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 2, 32)

    class FailingWorker:
        def submit(self, lowered):
            future = Future()
            future.set_exception(RuntimeError("XLA ran out of memory"))
            return future

    monkeypatch.setattr(_executors, "WORKER", FailingWorker())
    trainer = make_trainer()
    trainer.train_step(None, [x[:32]], [y[:32]])
    assert not trainer.prepare_train_steps(None, [xs], [ys])
    assert trainer.prepare_train_steps(None, [xs], [ys])  # Done (failed): call it.
    trainer.train_steps(None, [xs], [ys])
    assert trainer.global_step == 3


def test_compile_worker_runs_in_order_and_drops_the_queue_on_close():
    ran = []

    class Lowered:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def compile(self):
            ran.append(self.name)
            if self.fail:
                raise ValueError(self.name)

    worker = _background.CompileWorker()
    first = worker.submit(Lowered("a"))
    failing = worker.submit(Lowered("b", fail=True))
    first.result(timeout=10)
    with pytest.raises(ValueError, match="b"):
        failing.result(timeout=10)
    assert ran == ["a", "b"]
    worker.close()
    late = worker.submit(Lowered("c"))
    with pytest.raises(RuntimeError, match="exiting"):
        late.result(timeout=1)
    assert ran == ["a", "b"]


def test_the_process_exits_cleanly_while_a_fused_call_compiles(tmp_path):
    # Exiting while XLA compiles on another thread aborts the interpreter ("FATAL:
    # exception not rethrown") unless the exit waits for it.
    script = tmp_path / "exit_while_compiling.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            os.environ["KERAS_BACKEND"] = "jax"
            import keras, numpy as np
            import keras_trainloop as ktl
            from keras_trainloop.trainer import _background

            model = keras.Sequential([keras.Input((64,))] + [
                keras.layers.Dense(256, "relu") for _ in range(6)] + [keras.layers.Dense(10)])
            trainer = ktl.Trainer(
                model, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                keras.optimizers.Adam(1e-3))
            rng = np.random.default_rng(0)
            x = rng.standard_normal((8, 32, 64), dtype=np.float32)
            y = rng.integers(0, 10, (8, 32)).astype(np.int32)
            trainer.train_step(None, [x[0]], [y[0]])
            assert not trainer.prepare_train_steps(None, [x], [y])
            print("compiling at exit:", _background.WORKER._thread.is_alive(), flush=True)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiling at exit: True" in done.stdout
    assert "FATAL" not in done.stderr
