import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras_trainloop as ktl

PUBLIC = {
    "Dataset",
    "ArrayDataset",
    "IterableDataset",
    "TFDataset",
    "from_tfds",
    "as_dataset",
    "Context",
    "Trainer",
    "GraphType",
    "DEFAULT_MAX_EXECUTORS",
    "add_loss",
    "get_losses",
    "add_per_step_update_fn",
    "Loop",
    "HookError",
    "NonFiniteLossError",
    "every_n_steps",
    "n_times_during_loop",
    "periodic_callback",
    "exponential_callback",
    "data",
    "losses",
    "metrics",
    "optimizers",
    "commandline",
    "checkpoints",
    "plots",
}


def test_public_names_are_pinned_and_resolve():
    assert set(ktl.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(ktl, name) is not None, name
    assert set(dir(ktl)) >= PUBLIC


def _type_checking_names():
    """{name: module it is imported from (None: declared)} under the root's `if TYPE_CHECKING:`."""
    tree = ast.parse(Path(ktl.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )
    names = {}
    for node in block.body:
        if isinstance(node, ast.ImportFrom):
            names.update({alias.asname or alias.name: node.module for alias in node.names})
        elif isinstance(node, ast.AnnAssign):
            names[node.target.id] = None
    return names


def test_type_checkers_see_every_lazy_public_name_where_it_is_loaded_from():
    names = _type_checking_names()
    assert set(names) == PUBLIC | set(ktl._SUBMODULES)
    assert {name: names[name] for name in ktl._EXPORTS} == ktl._EXPORTS
    assert {name: names[name] for name in ktl._SUBMODULES} == dict.fromkeys(
        ktl._SUBMODULES, "keras_trainloop"
    )


def run_python(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
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


@pytest.mark.parametrize(
    "expression",
    [
        "ktl.loop.EveryNSteps(10)",
        "ktl.trainer.Trainer",
        "ktl.context.Context()",
        "ktl.commandline.attach_progress_bar",
        "ktl.checkpoints.Checkpoint",
        "ktl.plots.Plots",
    ],
)
def test_documented_submodules_resolve_in_a_fresh_process(expression):
    out = run_python(f"import keras_trainloop as ktl\nprint({expression})\n")
    assert out.returncode == 0, out.stderr


def test_import_loads_only_the_backend_selection():
    out = run_python(
        "import sys, keras_trainloop\n"
        "print(sorted(m for m in sys.modules if m.startswith('keras_trainloop')),"
        " 'keras' in sys.modules, 'jax' in sys.modules)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == (
        "['keras_trainloop', 'keras_trainloop._backend', 'keras_trainloop._forwarding'] False False"
    )


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
