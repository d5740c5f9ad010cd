"""The loop package's public names and its place in the dependency order."""

from __future__ import annotations

import ast
import pathlib

import keras_trainloop as ktl
import keras_trainloop.loop as loop_package

PUBLIC = [
    "LOG_NAMES_KEY",
    "SYNC_EVERY",
    "EveryNSteps",
    "Exponential",
    "HookError",
    "Loop",
    "LoopCallback",
    "NTimesDuringLoop",
    "NonFiniteLossError",
    "Periodic",
    "Schedule",
    "every_n_steps",
    "exponential_callback",
    "n_times_during_loop",
    "periodic_callback",
    "MAX_FUSED_STEPS",
    "FUSED_STEPS_LIMIT",
    "HookCost",
    "Plan",
    "PlannedHook",
    "VAL_LOGS_KEY",
    "ExternalRun",
]
TOP_LEVEL = [
    "Loop",
    "HookError",
    "NonFiniteLossError",
    "every_n_steps",
    "n_times_during_loop",
    "periodic_callback",
    "exponential_callback",
]


def test_loop_package_exports_exactly_its_public_names():
    assert sorted(loop_package.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(loop_package, name), name


def test_top_level_names_are_the_loop_packages_objects():
    for name in TOP_LEVEL:
        assert getattr(ktl, name) is getattr(loop_package, name)


def test_loop_has_the_designed_methods():
    for method in [
        "on_start",
        "on_step",
        "on_end",
        "run_steps",
        "run_epochs",
        "median_train_step_duration",
        "stop",
        "add_keras_callback",
        "as_keras_callback",
    ]:
        assert callable(getattr(ktl.Loop, method)), method


def test_loop_imports_no_plugin():
    plugins = (
        "keras_trainloop.commandline",
        "keras_trainloop.checkpoints",
        "keras_trainloop.plots",
    )
    for path in pathlib.Path(loop_package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(plugins), f"{path.name} imports {name}"
