"""The code is `ruff format`ted and `ruff check` clean (the project's adopted style)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PATHS = ["keras_trainloop", "tests", "bench"]

pytest.importorskip("ruff", reason="ruff is in the [test] extra: pip install -e '.[test]'")


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff(command):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
