"""kill -9 at several moments, then the same script again: the weights of an uninterrupted run.

Real processes, real SIGKILL (no handler runs), one of them while a checkpoint is being
written in the background; the resumed runs skip no data by hand.
"""

import os
import pathlib
import signal
import subprocess
import sys

import numpy as np

SCRIPT = pathlib.Path(__file__).with_name("_fault_run.py")
TOTAL = 30


def _run(directory, *kill_at):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    args = [sys.executable, str(SCRIPT), str(directory), str(TOTAL), *map(str, kill_at)]
    return subprocess.run(args, capture_output=True, text=True, timeout=240, env=env, check=False)


def _final(directory):
    with np.load(os.path.join(directory, "final.npz")) as weights:
        return [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]


def test_runs_killed_at_several_moments_resume_to_the_uninterrupted_weights(tmp_path):
    straight = tmp_path / "straight"
    done = _run(straight)
    assert done.returncode == 0, done.stderr[-3000:]

    resumed = tmp_path / "resumed"
    # Before any checkpoint; right after step 9's checkpoint write started; between two.
    for kill_at in (2, 9, 17):
        killed = _run(resumed, kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done = _run(resumed)
    assert done.returncode == 0, done.stderr[-3000:]

    for got, want in zip(_final(resumed), _final(straight), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
