"""Ctrl-C and SIGTERM during a run with a checkpoint attached lose nothing (real signals)."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from keras_trainloop.checkpoints import Checkpoint

SCRIPT = pathlib.Path(__file__).with_name("_interrupted_run.py")


@pytest.mark.parametrize(
    "signal_name, returncode",
    [("SIGINT", -signal.SIGINT), ("SIGTERM", 128 + signal.SIGTERM)],
    ids=["ctrl_c", "sigterm"],
)
def test_an_interrupt_saves_the_last_completed_step_first(
    tmp_path, make_trainer, signal_name, returncode
):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), signal_name, "6"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == returncode, done.stderr[-3000:]
    # Ctrl-C ends with Python's KeyboardInterrupt; SIGTERM quietly, with status 143.
    assert ("KeyboardInterrupt" in done.stderr) == (signal_name == "SIGINT")
    # Step 6 was the 7th step: it completed before the hook sent the signal.
    assert Checkpoint(make_trainer(), tmp_path, restore=False).steps() == [7]
