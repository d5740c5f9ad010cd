"""Bad inputs of the loop: refused up front, with the value (short) and a Fix.

Issue 15 points 9 (run_epochs on a dataset that never ends), 10 (NaN/inf schedule
arguments), 12 (short reprs of user values) and 14 (a "Fix:" in every argument check).
"""

from __future__ import annotations

import ast
import datetime
import math
import pathlib

import numpy as np
import pytest
from loop_helpers import Batches

import keras_trainloop as ktl
import keras_trainloop.loop as loop_package
from keras_trainloop._describe import short_repr
from keras_trainloop.loop import EveryNSteps, Exponential, NTimesDuringLoop, Periodic


def _fn(loop, metrics):
    pass


def _forever_arrays():
    x = np.zeros((16, 3), np.float32)
    return ktl.ArrayDataset(x, x[:, :1], batch_size=4, loop_forever=True, name="endless")


class _Wrapper:
    """A dataset wrapping another one, exposing it as `dataset` (as the device prefetcher)."""

    name = "wrapper"

    def __init__(self, dataset):
        self.dataset = dataset

    def yield_batch(self):
        return self.dataset.yield_batch()

    def reset(self):
        self.dataset.reset()


# Point 9: run_epochs on a dataset that never ends ----------------------------------------------
def _guard(loop):
    """Hooks that end a run that should have been refused, so a regression fails, not hangs."""

    def too_many_steps(loop, metrics):
        if loop.loop_step >= 50:
            raise AssertionError("run_epochs ran 50 steps of a dataset that never ends")

    def endless_validation(loop, ds):
        raise AssertionError("a validation of a dataset that never ends started")

    loop.on_step("guard", 0, too_many_steps)
    loop.on_validation_begin("guard", 0, endless_validation)


@pytest.mark.parametrize(
    "make_ds",
    [
        _forever_arrays,
        lambda: Batches(loop_forever=True),
        lambda: _Wrapper(_forever_arrays()),
    ],
    ids=["array-dataset", "declared-loop-forever", "wrapped"],
)
def test_run_epochs_refuses_a_dataset_that_never_ends_before_any_hook(trainer, recorder, make_ds):
    loop = ktl.Loop(trainer)
    loop.on_start("start", 0, recorder.hook("start"))
    loop.on_end("end", 0, recorder.hook("end"))
    _guard(loop)
    ds = make_ds()
    with pytest.raises(
        ValueError,
        match=(
            r"loop.run_epochs\(\) needs a finite ds .* never ends \(loop_forever=True\).*"
            r"Fix: use loop.run_steps\(ds, steps\).*loop_forever=False"
        ),
    ):
        loop.run_epochs(ds, 2)
    assert recorder.events == []
    assert loop.loop_step == trainer.global_step == 0


def test_run_epochs_refusal_names_the_dataset(trainer):
    loop = ktl.Loop(trainer)
    _guard(loop)
    with pytest.raises(ValueError, match=r"dataset 'endless' never ends"):
        loop.run_epochs(_forever_arrays(), 1)


def test_run_epochs_refuses_a_repeated_tf_dataset(trainer):
    tf = pytest.importorskip("tensorflow")
    x = np.zeros((16, 3), np.float32)
    ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4).repeat())
    loop = ktl.Loop(trainer)
    _guard(loop)
    with pytest.raises(ValueError, match=r"never ends \(tf.data cardinality infinite.*Fix: "):
        loop.run_epochs(ds, 1)
    assert trainer.global_step == 0


def test_an_endless_validation_dataset_is_refused(trainer):
    loop = ktl.Loop(trainer)
    _guard(loop)
    with pytest.raises(ValueError, match=r"needs a finite validation_data.*Fix: pass a finite"):
        loop.run_steps(Batches(loop_forever=True), 3, validation_data=_forever_arrays())
    assert trainer.global_step == 0


def test_run_steps_still_takes_a_dataset_that_never_ends(trainer):
    loop = ktl.Loop(trainer)
    loop.run_steps(_forever_arrays(), 3)
    assert loop.loop_step == 3


# Point 10: NaN and inf schedule arguments ------------------------------------------------------
_INF, _NAN = math.inf, math.nan


@pytest.mark.parametrize(
    "register, args, match",
    [
        (
            ktl.every_n_steps,
            (_INF, "x", 0, _fn),
            r"EveryNSteps expects a finite n. Received: n=inf",
        ),
        (ktl.every_n_steps, (_NAN, "x", 0, _fn), r"Received: n=nan"),
        (ktl.n_times_during_loop, (_INF, "x", 0, _fn), r"NTimesDuringLoop .* Received: n=inf"),
        (ktl.n_times_during_loop, (_NAN, "x", 0, _fn), r"Received: n=nan"),
        (ktl.periodic_callback, (_INF, True, "x", 0, _fn), r"finite period. Received: period=inf"),
        (ktl.periodic_callback, (-_INF, True, "x", 0, _fn), r"Received: period=-inf"),
        (ktl.periodic_callback, (_NAN, True, "x", 0, _fn), r"Received: period=nan"),
        (
            ktl.exponential_callback,
            (10, _INF, True, "x", 0, _fn),
            r"finite factor. Received: factor=inf",
        ),
        (ktl.exponential_callback, (10, _NAN, True, "x", 0, _fn), r"Received: factor=nan"),
        (ktl.exponential_callback, (_INF, 1.2, True, "x", 0, _fn), r"Received: start_step=inf"),
        (ktl.exponential_callback, (_NAN, 1.2, True, "x", 0, _fn), r"Received: start_step=nan"),
        (ktl.every_n_steps, (10, "x", _NAN, _fn), r"priority must not be NaN.*priority=nan"),
    ],
    ids=[
        "every-inf",
        "every-nan",
        "ntimes-inf",
        "ntimes-nan",
        "periodic-inf",
        "periodic-minus-inf",
        "periodic-nan",
        "exp-factor-inf",
        "exp-factor-nan",
        "exp-start-inf",
        "exp-start-nan",
        "priority-nan",
    ],
)
def test_nan_or_inf_schedule_arguments_are_value_errors_before_registering(register, args, match):
    loop = ktl.Loop(None)
    with pytest.raises(ValueError, match=match) as info:
        register(loop, *args)
    assert "Fix: " in str(info.value)
    assert not loop._on_step.hooks and not loop._on_end.hooks


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EveryNSteps(_INF), r"Received: n=inf"),
        (lambda: NTimesDuringLoop(_NAN), r"Received: n=nan"),
        (lambda: Periodic(_INF), r"Received: period=inf"),
        (lambda: Exponential(10, _INF), r"Received: factor=inf"),
        (lambda: Exponential(_INF, 2.0), r"Received: start_step=inf"),
    ],
    ids=["every", "ntimes", "periodic", "exp-factor", "exp-start"],
)
def test_schedule_classes_refuse_nan_and_inf(make, match):
    with pytest.raises(ValueError, match=match + r".*Fix: "):
        make()


def test_a_huge_exponential_factor_does_not_overflow():
    steps = Exponential(3, 1e300).steps(3)
    assert steps[0] == 3 and steps[1] > 10**18 and steps[2] > steps[1]


def test_infinite_priorities_still_order_hooks():
    loop = ktl.Loop(None)
    loop.on_step("last", _INF, _fn)
    loop.on_step("first", -_INF, _fn)
    loop.on_step("middle", 0, _fn)
    assert loop._on_step.names() == ["first", "middle", "last"]


# Point 12: short descriptions of user values ---------------------------------------------------
def test_run_steps_on_an_array_shows_its_type_and_shape_not_its_values(trainer):
    array = np.zeros((1000, 64))
    with pytest.raises(TypeError) as info:
        ktl.Loop(trainer).run_steps(array, 10)
    message = str(info.value)
    assert f"Received: ds={short_repr(array)}" in message and "(1000, 64)" in message
    assert len(message) < 400 and "0., 0." not in message


@pytest.mark.parametrize(
    "call",
    [
        lambda: ktl.Loop(np.zeros((500, 500))),
        lambda: ktl.Loop(None).on_step("x" * 500, 0, _fn, schedule=np.zeros((500, 500))),
        lambda: ktl.every_n_steps(ktl.Loop(None), np.zeros((500, 500)), "x", 0, _fn),
        lambda: ktl.every_n_steps(ktl.Loop(None), 2, "x", np.zeros((500, 500)), _fn),
        lambda: ktl.periodic_callback(ktl.Loop(None), "s" * 5000, True, "x", 0, _fn),
        lambda: ktl.exponential_callback(ktl.Loop(None), 2, ["x"] * 5000, True, "x", 0, _fn),
        lambda: ktl.Loop(None).add_keras_callback(np.zeros((500, 500))),
        lambda: ktl.Loop(None).on_end(list(range(5000)), 0, _fn),
        lambda: ktl.Loop(None).plan(np.zeros((500, 500))),
    ],
    ids=[
        "trainer",
        "schedule",
        "every-n",
        "priority",
        "period",
        "factor",
        "keras-callback",
        "hook-name",
        "plan-steps",
    ],
)
def test_messages_show_short_reprs_of_large_values(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert len(str(info.value)) < 600, str(info.value)


def test_bad_run_arguments_show_short_reprs(trainer):
    loop = ktl.Loop(trainer)
    big = np.zeros((500, 500))
    for call in (
        lambda: loop.run_steps(Batches(loop_forever=True), big),
        lambda: loop.run_epochs(Batches(), 1, validation_data=big),
        lambda: loop.run_epochs(Batches(), 1, validation_data=Batches(), validation_freq=big),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert short_repr(big) in str(info.value) and "0., 0." not in str(info.value)


# Point 14: every argument check says how to fix it ---------------------------------------------
@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: ktl.Loop("x"), TypeError),
        (lambda: ktl.Loop(None).on_step(1, 0, _fn), TypeError),
        (lambda: ktl.Loop(None).on_step("x", "high", _fn), TypeError),
        (lambda: ktl.Loop(None).on_step("x", 0, 42), TypeError),
        (lambda: ktl.Loop(None).on_step("x", 0, _fn, schedule="often"), TypeError),
        (lambda: ktl.Loop(None).add_keras_callback("csv"), TypeError),
        (lambda: ktl.Loop(None).plan(-1), ValueError),
        (lambda: ktl.Loop(None).plan(5).steps_of("no_such_hook"), KeyError),
        (lambda: ktl.every_n_steps(ktl.Loop(None), 0, "x", 0, _fn), ValueError),
        (lambda: ktl.every_n_steps(ktl.Loop(None), 2.0, "x", 0, _fn), TypeError),
        (lambda: ktl.every_n_steps(ktl.Loop(None), 2, None, 0, _fn), TypeError),
        (lambda: ktl.n_times_during_loop(ktl.Loop(None), 0, "x", 0, _fn), ValueError),
        (lambda: ktl.periodic_callback(ktl.Loop(None), 0, True, "x", 0, _fn), ValueError),
        (
            lambda: ktl.periodic_callback(ktl.Loop(None), datetime.timedelta(0), True, "x", 0, _fn),
            ValueError,
        ),
        (lambda: ktl.periodic_callback(ktl.Loop(None), "1s", True, "x", 0, _fn), TypeError),
        (lambda: Periodic(1, clock=3), TypeError),
        (lambda: ktl.exponential_callback(ktl.Loop(None), 0, 1.2, True, "x", 0, _fn), ValueError),
        (lambda: ktl.exponential_callback(ktl.Loop(None), 10, 1.0, True, "x", 0, _fn), ValueError),
        (lambda: ktl.exponential_callback(ktl.Loop(None), 10, "2", True, "x", 0, _fn), TypeError),
    ],
    ids=[
        "trainer",
        "hook-name",
        "priority",
        "fn",
        "schedule",
        "keras-callback",
        "plan-steps",
        "plan-name",
        "every-zero",
        "every-float",
        "every-name",
        "ntimes-zero",
        "periodic-zero",
        "periodic-zero-timedelta",
        "periodic-string",
        "periodic-clock",
        "exp-start",
        "exp-factor-one",
        "exp-factor-string",
    ],
)
def test_argument_checks_say_how_to_fix(call, error):
    with pytest.raises(error, match="Fix: "):
        call()


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("run_steps", {"steps": -1}),
        ("run_steps", {"steps": 3, "validation_data": Batches(), "validation_freq": 0}),
        ("run_epochs", {"epochs": 2.5}),
        ("run_epochs", {"epochs": 1, "validation_data": Batches(), "validation_freq": [0]}),
    ],
    ids=["steps", "steps-freq", "epochs", "epochs-freq"],
)
def test_run_argument_checks_say_how_to_fix(trainer, method, kwargs):
    ds = Batches(loop_forever=method == "run_steps")
    with pytest.raises(ValueError, match="Fix: "):
        getattr(ktl.Loop(trainer), method)(ds, **kwargs)


# The loop's messages, read from the source -----------------------------------------------------
LOOP_DIR = pathlib.Path(loop_package.__file__).parent
INTERNAL = {"HookError", "NonFiniteLossError", "EOFError", "StopIteration"}
"""Raised by the loop about a run, not about an argument (they carry their own advice)."""
PENDING: set[tuple[str, str]] = set()
"""Messages not yet held to the rules (none)."""


def _raises():
    """(file, function, exception name, message node) of every `raise X(f"...")` in the loop."""
    for path in sorted(LOOP_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
                    call = node.value  # `return ValueError(...)`, raised by the caller.
                elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                    call = node.exc
                else:
                    continue
                name = getattr(call.func, "id", getattr(call.func, "attr", ""))
                if not name.endswith("Error") or not call.args:
                    continue
                yield path.name, function.name, name, call.args[0]


def _text(node: ast.AST) -> str:
    """The constant parts of a message (an f-string's literal text, names of `{x}` parts)."""
    parts = []
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            parts.append(child.value)
        elif isinstance(child, ast.Name):
            parts.append(f"{{{child.id}}}")
    return "".join(parts)


def test_every_argument_check_of_the_loop_has_a_fix():
    missing = [
        f"{file}:{function}: {name}({_text(message)[:60]!r})"
        for file, function, name, message in _raises()
        if name not in INTERNAL
        and (file, function) not in PENDING
        and "Fix" not in _text(message)
        and "fix" not in _text(message)  # A message built from a `fix` variable.
    ]
    assert missing == []


def test_no_loop_message_puts_a_full_repr_of_a_value():
    full_reprs = [
        f"{file}:{function}: {name}"
        for file, function, name, message in _raises()
        if (file, function) not in PENDING
        and any(
            isinstance(n, ast.FormattedValue) and n.conversion == ord("r")
            for n in ast.walk(message)
        )
    ]
    assert full_reprs == []
