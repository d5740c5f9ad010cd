"""A real multi-process job on this machine: 2 JAX processes x 2 CPU devices on 127.0.0.1.

The processes (`_multi_process_run.py`) meet through `keras.distribution.initialize` on a
free port and run collectives with gloo. Process 1 starts 1.5 s after process 0. Every
scenario runs inside this one job (start-up costs 12-19 s a process); each process writes
its observations as JSON, and the tests compare them with one process's results and with
each other. Each process runs under a timeout followed by SIGKILL: a collective that one
process never reaches would hang the other for good.

To run the same on a cluster, see docs/plugins/scaling-out.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HELPER = os.path.join(os.path.dirname(__file__), "_multi_process_run.py")
PROCESSES = 2
START_APART_SECONDS = 1.5
TIMEOUT_SECONDS = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(process_id: int, port: int, workdir: str) -> list[str]:
    command = [
        sys.executable,
        HELPER,
        "--process-id",
        str(process_id),
        "--num-processes",
        str(PROCESSES),
        "--port",
        str(port),
        "--workdir",
        workdir,
        "--out",
        os.path.join(workdir, f"process_{process_id}.json"),
    ]
    if shutil.which("timeout"):  # SIGKILL 10 s after SIGTERM: a process in a collective ignores it.
        command = ["timeout", "-k", "10", str(TIMEOUT_SECONDS), *command]
    return command


def _kill(processes: list[subprocess.Popen]) -> None:
    """Kills the job's processes still running (only those this test started)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run_job(workdir: str) -> tuple[list[dict], float]:
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    port = _free_port()
    processes: list[subprocess.Popen] = []
    codes: list[int | None] = []
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(_kill, processes)
        for i in range(PROCESSES):
            if i:
                time.sleep(START_APART_SECONDS)
            log = stack.enter_context(open(os.path.join(workdir, f"process_{i}.log"), "w"))
            processes.append(
                subprocess.Popen(
                    _command(i, port, workdir), env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        for process in processes:
            try:
                codes.append(process.wait(timeout=TIMEOUT_SECONDS + 30))
            except subprocess.TimeoutExpired:
                codes.append(None)
    seconds = time.monotonic() - start
    results = []
    for i, code in enumerate(codes):
        out = os.path.join(workdir, f"process_{i}.json")
        with open(os.path.join(workdir, f"process_{i}.log")) as f:
            log = f.read()[-4000:]
        assert code == 0 and os.path.exists(out), f"process {i} exited with {code}:\n{log}"
        with open(out) as f:
            results.append(json.load(f))
    return results, seconds


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("multi_process"))


@pytest.fixture(scope="module")
def job(workdir):
    results, seconds = _run_job(workdir)
    print(f"multi-process job: {seconds:.1f} s; scenarios: {results[0]['seconds']}")
    return results


def scenario(job: list[dict], name: str) -> list[dict]:
    """The scenario's results of every process (failing on an error in any)."""
    values = [result[name] for result in job]
    for i, value in enumerate(values):
        assert "error" not in value, f"process {i}: {value['error']}"
    return values


def test_the_job_runs_two_processes_of_two_devices_each_reading_its_shard(job):
    assert [r["process_index"] for r in job] == [0, 1]
    assert all(
        r["process_count"] == 2 and r["devices"] == 4 and r["local_devices"] == 2 for r in job
    )
    assert [r["process_shard"] for r in job] == [[0, 2], [1, 2]]


# Losses: one process, unfused, fused --------------------------------------------------------
@pytest.mark.parametrize("name", ["data_parallel", "model_parallel"])
def test_losses_match_one_process(job, name):
    for r in scenario(job, name):
        assert len(r["losses"]) == len(r["reference_losses"]) == 20
        assert all(math.isfinite(v) for v in r["losses"])
        assert r["losses"][-1] < r["losses"][0]
        assert r["max_loss_diff"] <= 1e-5
    first, second = scenario(job, name)
    assert first["losses"] == second["losses"]  # Every process reports the same global loss.


@pytest.mark.parametrize("name", ["data_parallel", "model_parallel"])
def test_fused_steps_run_with_several_processes_and_match_unfused(job, name):
    for r in scenario(job, name):
        assert r["fused_calls"] and set(r["fused_calls"]) <= {2, 4, 8}
        assert r["unfused_calls"] == []
        assert [s for s, _ in r["fused_seen"]] == [4, 9, 14, 19]
        # Bit-identical here (0.0); a margin for other CPUs' code generation.
        assert r["fused_vs_unfused_loss_diff"] <= 1e-6
        assert r["fused_vs_unfused_weight_diff"] <= 1e-6


def test_model_parallel_splits_the_kernel_over_the_model_axis_within_each_process(job):
    for r in scenario(job, "model_parallel_layout"):
        assert r["kernel_spec"] == "P(None, 'model')"
        assert r["kernel_shard_shapes"] == [[64, 16]]


def test_a_model_axis_across_processes_is_refused_with_the_layout_to_use(job):
    for r in scenario(job, "model_axis_across_processes"):
        message = r["error_message"]
        assert message is not None and r["global_step"] == 0
        assert "is on devices of processes [0, 1]" in message, message
        assert "ModelParallel(mesh batch=2, model=2)" in message
        assert "DeviceMesh((jax.process_count() * k, m), ('batch', 'model')" in message


# Decisions that agree ------------------------------------------------------------------------
def test_the_fusion_gate_takes_process_zeros_verdict(job):
    first, second = scenario(job, "gate_agrees")
    # Process 1 saw fused calls 10x slower than single steps: alone it would drop fusion.
    assert first["decisions"] == second["decisions"] == {"None": True}
    assert first["calls"] == second["calls"] and max(first["calls"]) > 2
    assert first["seen"] == second["seen"]


@pytest.mark.parametrize("name", ["periodic_unfused", "periodic_fused"])
def test_time_based_hooks_fire_at_the_same_steps_with_clocks_apart(job, name):
    first, second = scenario(job, name)
    assert len(first["fired"]) >= 2 and len(first["timed"]) >= 2
    assert first["fired"] == second["fired"]  # Steps and the losses read there.
    assert first["timed"] == second["timed"]
    assert first["calls"] == second["calls"]  # The same fused call sizes.
    if name == "periodic_fused":
        assert first["calls"] and max(first["calls"]) > 2
    assert first["bar_draws"] >= 2 and second["bar_draws"] == 0  # The bar: process 0 only.


def test_prefetched_batches_are_global_arrays_in_the_trainers_layout(job):
    for r in scenario(job, "prefetch"):
        assert r["kinds"] == [["ArrayImpl", False]] * 8  # Nothing to read back to the host.
        assert r["plain_kinds"] == [["ndarray", None]] * 8
        assert r["loss_diff"] == 0.0


# Checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data_parallel", "model_parallel"])
def test_checkpoints_saved_by_the_job_restore_in_one_process(job, workdir, name):
    first, second = (r[name] for r in scenario(job, "checkpoints"))
    assert first == second  # Saved at the same steps by every process.
    assert len(first["steps"]) >= 2 and first["steps"][-1] == first["global_step"] == 40

    import _multi_process_run as run

    import keras_trainloop as ktl

    trainer = run.new_trainer()
    with pytest.warns(UserWarning, match="holds the data positions of 2 processes"):
        checkpoint = ktl.checkpoints.Checkpoint(trainer, os.path.join(workdir, f"ckpt_{name}"))
    x, y = run.digits()
    trainer.eval_step(None, [x[:32]], [y[:32]])  # Creates the variables: restores them.
    assert checkpoint.restored_step == trainer.global_step == 40
    with np.load(os.path.join(workdir, f"{name}.npz")) as saved:
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    restored = trainer.model.get_weights()
    assert len(restored) == len(expected) == 4
    for a, b in zip(restored, expected):
        np.testing.assert_array_equal(a, b)
    checkpoint.close()


def test_a_sharded_tf_data_run_resumes_every_process_at_its_own_position(job):
    # Process 0 writes the checkpoint's metadata; process 1's shard position is kept too.
    for r in scenario(job, "sharded_resume"):
        assert r["restored_step"] == 10 and r["global_step"] == 20
        assert r["warnings"] == []
        assert r["first_diff"] == 0.0
        assert r["resumed_diff"] <= 1e-6  # Bit-identical here; a margin for other CPUs.
    first, second = scenario(job, "sharded_resume")
    assert first["resumed"] == second["resumed"]
