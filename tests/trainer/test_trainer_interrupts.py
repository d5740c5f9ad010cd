"""Ctrl-C never leaves the Trainer broken (run in subprocesses: the signal is real)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("_interrupt_run.py")


def _run(case):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), case],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_ctrl_c_after_a_step_returned_keeps_its_results():
    result, stderr = _run("after_step")
    assert result == {
        "interrupted": True,
        "step_after_interrupt": 4,
        "weights_finite": True,
        "step_after_next": 5,
    }
    assert "interrupt received" in stderr


@pytest.mark.parametrize("case", ["optimizer_build"])
def test_ctrl_c_while_the_optimizer_builds_leaves_it_buildable(case):
    result, _ = _run(case)
    assert result == {"interrupted": True, "step_after_next": 1}
