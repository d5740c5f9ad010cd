"""Type hints of the loop's public signatures: the real types, not `Any` (issue 14 point 8).

The hints name types imported under `if TYPE_CHECKING:` (no import cycle at run time), so
they are resolved here with those names supplied, as a type checker sees them.
"""

from __future__ import annotations

import ast
import collections.abc
import pathlib
import typing

import keras

import keras_trainloop as ktl
import keras_trainloop.loop as loop_package
from keras_trainloop.data import Dataset
from keras_trainloop.loop import _events, _interop, _keras_bridge, _loop, _scheduled, _schedules
from keras_trainloop.trainer import Trainer

_NAMES = {
    "Dataset": Dataset,
    "Trainer": Trainer,
    "Loop": ktl.Loop,
    "keras": keras,
    "Schedule": _schedules.Schedule,
    "LoopCallback": _keras_bridge.LoopCallback,
}


def _hints(function, module):
    return typing.get_type_hints(function, {**vars(module), **_NAMES})


def test_loop_constructor_and_runs_name_trainer_and_dataset():
    assert _hints(ktl.Loop.__init__, _loop)["trainer"] == Trainer | None
    run_steps = _hints(ktl.Loop.run_steps, _loop)
    assert run_steps["ds"] is Dataset and run_steps["steps"] is int
    assert run_steps["validation_data"] == Dataset | None
    assert run_steps["validation_freq"] == int | None
    run_epochs = _hints(ktl.Loop.run_epochs, _loop)
    assert run_epochs["ds"] is Dataset and run_epochs["epochs"] is int
    assert run_epochs["validation_data"] == Dataset | None
    assert run_epochs["validation_freq"] == int | collections.abc.Sequence[int]


def test_hook_types_take_the_loop_and_return_object():
    on_start = _hints(ktl.Loop.on_start, _events)["fn"]
    on_step = _hints(ktl.Loop.on_step, _events)
    assert typing.get_args(on_start) == ([ktl.Loop, Dataset | None], object)
    assert typing.get_args(on_step["fn"]) == ([ktl.Loop, list], object)
    assert on_step["schedule"] == _schedules.Schedule | None


def test_each_hook_type_is_defined_once():
    defined = collections.Counter()
    for path in pathlib.Path(loop_package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                [node.target]
                if isinstance(node, ast.AnnAssign)
                else node.targets
                if isinstance(node, ast.Assign)
                else []
            )
            for target in targets:
                if isinstance(target, ast.Name) and target.id.endswith("Fn"):
                    defined[target.id] += 1
    assert defined and max(defined.values()) == 1, defined
    assert _scheduled.OnStepFn is _events.OnStepFn


def test_schedule_helpers_and_schedules_take_a_loop():
    for helper in (
        ktl.every_n_steps,
        ktl.n_times_during_loop,
        ktl.periodic_callback,
        ktl.exponential_callback,
    ):
        hints = _hints(helper, _scheduled)
        assert hints["loop"] is ktl.Loop, helper.__name__
        assert typing.get_args(hints["fn"]) == ([ktl.Loop, list], object), helper.__name__
    for schedule in (_schedules.Schedule, _schedules.EveryNSteps, _schedules.Periodic):
        for method in ("due", "next_step"):
            assert _hints(getattr(schedule, method), _schedules)["loop"] is ktl.Loop


def test_keras_interop_names_keras_types():
    hints = _hints(ktl.Loop.add_keras_callback, _interop)
    assert hints["callback"] is keras.callbacks.Callback
    assert _hints(ktl.Loop.as_keras_callback, _interop)["return"] is _keras_bridge.LoopCallback
