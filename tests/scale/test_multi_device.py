"""The Trainer under keras.distribution on 8 simulated CPU devices.

XLA reads `--xla_force_host_platform_device_count` when JAX starts, so the
checks run in subprocesses (`_multi_device_run.py`): one with 8 devices for
every multi-device check, one with 1 device restoring the checkpoints written
on 8. Each subprocess runs once per module; the tests assert on its JSON.
"""

import json
import math
import os
import subprocess
import sys

import pytest

HELPER = os.path.join(os.path.dirname(__file__), "_multi_device_run.py")
DEVICES = 8


def run_helper(mode: str, devices: int, workdir: str) -> dict:
    out = os.path.join(workdir, f"{mode}.json")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.run(
        [
            sys.executable,
            HELPER,
            mode,
            "--devices",
            str(devices),
            "--workdir",
            workdir,
            "--out",
            out,
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0 and os.path.exists(out), (
        f"{mode} exited with {process.returncode}:\n{process.stdout[-3000:]}\n"
        f"{process.stderr[-6000:]}"
    )
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("multi_device"))


@pytest.fixture(scope="module")
def checks(workdir):
    return run_helper("checks", DEVICES, workdir)


@pytest.fixture(scope="module")
def restores(checks, workdir):
    return run_helper("restore", 1, workdir)


def result(results: dict, name: str) -> dict:
    value = results[name]
    assert "error" not in value, value["error"]
    return value


def seen_in_steps(shardings: list, shard_shape: list, count: int = 2) -> None:
    """Every sharding seen (in the build call, then in the compiled step) splits the batch."""
    assert len(shardings) == count, shardings  # Compiled once.
    for sharding in shardings:
        assert sharding["spec"].startswith("P('batch'"), shardings
        assert sharding["devices"] == DEVICES and sharding["shard_shape"] == shard_shape


# DataParallel ------------------------------------------------------------------------
def test_data_parallel_shards_the_batch_inside_the_step(checks):
    dp = result(checks, "data_parallel")
    assert dp["devices"] == DEVICES
    seen_in_steps(dp["input_shardings"], [8, 64])
    seen_in_steps(dp["label_shardings"], [8], count=1)  # loss_fn: not in the build call.


def test_data_parallel_replicates_variables_and_optimizer_state(checks):
    variables = result(checks, "data_parallel")["variables"]
    assert len(variables) == 8 + 2 + 6  # Model; SGD: iteration, learning rate, 6 momentums.
    for path, sharding in variables.items():
        assert sharding["replicated"] and sharding["devices"] == DEVICES, path


def test_data_parallel_state_keeps_the_variable_layouts_across_steps(checks):
    dp = result(checks, "data_parallel")
    assert dp["state_vs_layouts"] == {"checked": 8 + 2 + 6, "mismatches": []}
    assert dp["state_after_guarded_steps"]["mismatches"] == []
    # Batches already laid out: steps ran under jax.transfer_guard("disallow").
    assert dp["guard_error"] is None
    assert dp["trace_counts"] == [1, 1]  # train (23 steps) and eval: compiled once each.


def test_data_parallel_loop_matches_single_device_run(checks):
    dp = result(checks, "data_parallel")
    assert dp["single_devices"] == [0]
    assert len(dp["losses"]) == len(dp["single_losses"]) == 20
    assert all(math.isfinite(v) for v in dp["losses"])
    assert dp["losses"][-1] < dp["losses"][0]
    assert dp["max_loss_diff"] <= 1e-5
    assert dp["max_weight_diff"] <= 1e-5, dp["max_weight_diff_per_variable"]
    assert dp["eval"] == pytest.approx(dp["single_eval"], abs=1e-5)


# ModelParallel ---------------------------------------------------------------------
def test_fused_steps_under_data_parallel_match_one_call_per_step(checks):
    fused = result(checks, "fused_data_parallel")
    assert fused["fused_sizes"] and set(fused["fused_sizes"]) <= {2, 4, 8}
    assert fused["single_fused_sizes"] == []
    assert (
        [s for s, _ in fused["seen_fused"]] == [s for s, _ in fused["seen_single"]] == [9, 19, 29]
    )
    for (_, a), (_, b) in zip(fused["seen_fused"], fused["seen_single"]):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    assert fused["max_weight_diff"] < 1e-5
    assert fused["state_vs_layouts"]["mismatches"] == []
    # Inside the scan each step sees its batch split over the 8 devices.
    for sharding in fused["input_shardings"]:
        assert sharding["spec"].startswith("P('batch'") and sharding["shard_shape"] == [8, 64]


def test_model_parallel_argument_wins_over_the_global_distribution(checks):
    assert result(checks, "model_parallel")["trainer_distribution"] == "ModelParallel"


def test_model_parallel_splits_variables_per_layout_map(checks):
    mp = result(checks, "model_parallel")
    assert mp["kernel_sharding"]["spec"] == "P(None, 'model')"
    assert mp["kernel_shard_shapes"] == [[64, 8]]  # (64, 32) split over the 4 'model' devices.
    for path, sharding in mp["variables"].items():
        split = "hidden_dense" in path  # Its kernel, bias, and their Adam moments.
        assert sharding["replicated"] is not split, (path, sharding)
        assert sharding["devices"] == DEVICES, path
    assert mp["state_vs_layouts"]["mismatches"] == []
    assert mp["trace_counts"] == [1]
    assert all(math.isfinite(v) for v in mp["losses"])


def test_model_parallel_shards_the_batch_over_the_batch_axis_only(checks):
    seen_in_steps(result(checks, "model_parallel")["input_shardings"], [32, 64])


# Errors ----------------------------------------------------------------------------
def test_indivisible_batch_is_refused_before_anything_runs(checks):
    r = result(checks, "indivisible_batch")
    for key in ("first_error", "later_error"):
        message = r[key]
        assert "spec='digits'" in message and "batch size 12" in message, message
        assert "8 data-parallel devices" in message and "multiple of 8" in message, message
        assert "drop_remainder=True" in message, message
    assert r["executors_after_first"] == 0 and r["variables_after_first"] == 0
    assert r["steps_before"] == r["steps_after"] == 1


def test_in_device_is_refused_under_a_distribution(checks):
    r = result(checks, "in_device_refused")
    for key in ("global", "explicit", "at_first_step"):
        assert r[key] is not None and r[key].startswith("in_device() runs the steps on one "), r
        assert "DataParallel(mesh batch=8)" in r[key] and "Fix:" in r[key]
    assert r["single_device_ids"] == [3]  # Without a distribution it still places the state.


def test_variables_from_a_closed_distribution_scope_get_a_clear_error(checks):
    message = result(checks, "scope_closed_before_first_step")["error_message"]
    assert message is not None and "No keras.distribution is active" in message
    assert "distribution=" in message


def test_process_local_batches_make_the_same_global_arrays(checks):
    r = result(checks, "process_local_batches")
    assert r == {"same_values": True, "same_shardings": True, "shard_shapes": [[8, 64], [8]]}


# Checkpoints -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, step",
    [("data_parallel", 20), ("model_parallel", 5)],
    ids=["data_parallel", "model_parallel"],
)
def test_checkpoint_written_on_8_devices_restores_on_1(checks, restores, name, step):
    assert result(checks, name)["saved_step"] == step
    r = result(restores, name)
    assert r["devices"] == 1 and r["weight_devices"] == [0]
    assert r["restored_step"] == r["global_step"] == step
    assert r["num_weights"] == [8, 8] and r["max_weight_diff"] == 0.0
    assert math.isfinite(r["loss_after_one_step"])
    assert r["global_step_after_one_step"] == step + 1
