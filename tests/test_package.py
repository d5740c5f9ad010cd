import os
import subprocess
import sys

import pytest

import keras_trainloop as ktl

PUBLIC = {
    "Dataset", "ArrayDataset", "IterableDataset", "TFDataset", "from_tfds", "Context", "Trainer",
    "GraphType", "DEFAULT_MAX_EXECUTORS", "add_loss", "get_losses", "add_per_step_update_fn",
    "Loop", "HookError", "NonFiniteLossError", "every_n_steps", "n_times_during_loop",
    "periodic_callback", "exponential_callback",
    "data", "losses", "metrics", "optimizers", "commandline", "checkpoints", "plots",
}


def test_public_names_are_pinned_and_resolve():
    assert set(ktl.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(ktl, name) is not None, name
    assert set(dir(ktl)) >= PUBLIC


def run_python(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120,
        check=False,
    )


def test_import_selects_jax_backend_and_loads_no_tensorflow():
    out = run_python(
        "import os, sys, keras_trainloop as ktl\n"
        "assert os.environ['KERAS_BACKEND'] == 'jax'\n"
        "ktl.Trainer, ktl.Loop, ktl.ArrayDataset, ktl.commandline\n"
        "import keras\n"
        "print(keras.backend.backend(), 'tensorflow' in sys.modules)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["jax", "False"]


def test_import_after_keras_on_another_backend_says_how_to_fix():
    out = run_python("import keras\nimport keras_trainloop\n", KERAS_BACKEND="numpy")
    assert out.returncode != 0
    assert "ImportError" in out.stderr
    assert "keras.backend.backend()='numpy'" in out.stderr
    assert "KERAS_BACKEND" in out.stderr


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_keras_backend_variable_for_another_backend_is_refused(backend):
    out = run_python("import keras_trainloop\n", KERAS_BACKEND=backend)
    assert out.returncode != 0
    assert f"KERAS_BACKEND={backend!r}" in out.stderr
