"""Tests for keras_trainloop.optimizers: names, context hyperparameters, global step, cosine."""

# keras_trainloop is imported first: it selects Keras' JAX backend before keras loads.
# ruff: noqa: I001

from __future__ import annotations

import math

import keras_trainloop as ktl

import keras
import numpy as np
import pytest

O = ktl.optimizers


# get ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adam", keras.optimizers.Adam),
        ("sgd", keras.optimizers.SGD),
        ("adamw", keras.optimizers.AdamW),
        ("AdamW", keras.optimizers.AdamW),
        ("RMSprop", keras.optimizers.RMSprop),
        ("adamax", keras.optimizers.Adamax),
        ("lamb", keras.optimizers.Lamb),  # Not in keras.optimizers.get's own table.
    ],
)
def test_get_builds_keras_optimizers_by_name(name, cls):
    assert type(O.get(name)) is cls


def test_get_applies_constructor_arguments():
    optimizer = O.get("adamw", learning_rate=0.5, weight_decay=0.1)
    assert float(optimizer.learning_rate) == 0.5
    assert optimizer.weight_decay == 0.1


def test_get_returns_optimizer_instances_as_is():
    optimizer = keras.optimizers.SGD()
    assert O.get(optimizer) is optimizer


def test_get_builds_from_config_dict():
    config = {"class_name": "Adam", "config": {"learning_rate": 0.25}}
    optimizer = O.get(config, beta_1=0.5)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert (float(optimizer.learning_rate), optimizer.beta_1) == (0.25, 0.5)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        pytest.param(
            ("nope",),
            {},
            ValueError,
            r"Received: optimizer='nope'.*'adam'.*'adamw'.*'sgd'",
            id="unknown_name",
        ),
        pytest.param(
            ("adam",),
            {"no_such_option": 1},
            ValueError,
            r"Received: kwargs=\{'no_such_option': 1\}",
            id="unknown_option",
        ),
        pytest.param(
            (keras.optimizers.SGD(),),
            {"learning_rate": 0.1},
            ValueError,
            "Options apply only when the optimizer is built from a name",
            id="options_with_instance",
        ),
        pytest.param((3,), {}, TypeError, r"Received: optimizer=3 of type int", id="number"),
    ],
)
def test_get_rejects_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        O.get(*args, **kwargs)


def test_known_optimizers_leaves_out_wrappers():
    known = O.known_optimizers()
    assert {"adam", "adamw", "sgd", "rmsprop"} <= set(known)
    assert "lossscaleoptimizer" not in known
    assert "optimizer" not in known


# from_context ------------------------------------------------------------------------------
def test_from_context_defaults_to_adamw_with_keras_defaults():
    optimizer = O.from_context(ktl.Context())
    assert isinstance(optimizer, keras.optimizers.AdamW)
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.001)


def test_from_context_reads_optimizer_and_learning_rate_from_parent_scopes():
    ctx = ktl.Context().set_param("optimizer", "sgd").set_param("learning_rate", 0.25)
    optimizer = O.from_context(ctx.in_scope("model").in_scope("head"))
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate) == 0.25


def test_from_context_sets_cosine_schedule():
    ctx = ktl.Context().set_param("optimizer", "adam").set_param("learning_rate", 0.1)
    ctx.set_param("cosine_schedule_steps", 100)
    ctx.set_param("cosine_annealing_min_learning_rate", 0.01)
    optimizer = O.from_context(ctx)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, O.CosineAnnealing)
    assert schedule.get_config() == {
        "learning_rate": 0.1,
        "steps": 100,
        "min_learning_rate": 0.01,
        "warmup_steps": 0,
    }


def test_from_context_cosine_without_learning_rate_uses_optimizer_default():
    ctx = ktl.Context().set_param("optimizer", "sgd").set_param("cosine_schedule_steps", 10)
    schedule = O.from_context(ctx)._learning_rate
    assert isinstance(schedule, O.CosineAnnealing)
    assert schedule.learning_rate == 0.01  # keras.optimizers.SGD's default.


def test_from_context_zero_cosine_steps_disables_schedule():
    ctx = ktl.Context().set_param("cosine_schedule_steps", 0).set_param("learning_rate", 0.5)
    assert float(O.from_context(ctx).learning_rate) == 0.5


def test_from_context_rejects_negative_cosine_steps():
    ctx = ktl.Context().set_param("cosine_schedule_steps", -5)
    with pytest.raises(ValueError, match=r"Received: steps=-5"):
        O.from_context(ctx)


# global_step -------------------------------------------------------------------------------
def _step(optimizer, n):
    variable = keras.Variable(np.ones(2, np.float32))
    for _ in range(n):
        optimizer.apply_gradients([(keras.ops.ones((2,)), variable)])


class _HasOptimizer:
    def __init__(self, optimizer):
        self.optimizer = optimizer


def test_global_step_counts_optimizer_updates():
    optimizer = O.get("sgd")
    assert O.global_step(optimizer) == 0
    _step(optimizer, 3)
    assert O.global_step(optimizer) == 3
    assert O.global_step(_HasOptimizer(optimizer)) == 3


@pytest.mark.parametrize("obj", [object(), _HasOptimizer(None)], ids=["no_attribute", "none"])
def test_global_step_rejects_objects_without_optimizer(obj):
    with pytest.raises(TypeError, match=r"needs a keras\.optimizers\.Optimizer"):
        O.global_step(obj)


# cosine_annealing --------------------------------------------------------------------------
def _cosine_reference(step, lr, steps, min_lr=0.0, warmup=0):
    if step < warmup:
        return lr * (step + 1) / warmup
    fraction = ((step - warmup) / steps) % 1.0
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * fraction))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),
        (25, 0.5 + 0.5 * math.cos(math.pi / 4)),
        (50, 0.5),
        (99, None),
        (100, 1.0),
        (150, 0.5),
    ],
    ids=["start", "quarter", "half", "last", "restart", "second_half"],
)
def test_cosine_annealing_values_follow_gomlx_formula(step, expected):
    schedule = O.cosine_annealing(1.0, 100)
    if expected is None:
        expected = _cosine_reference(step, 1.0, 100)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("step", [0, 1, 3, 4, 5, 9, 14, 24])
def test_cosine_annealing_with_min_and_warmup_matches_reference(step):
    schedule = O.cosine_annealing(0.1, 10, min_learning_rate=0.02, warmup_steps=4)
    expected = _cosine_reference(step, 0.1, 10, 0.02, 4)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


def test_cosine_annealing_warmup_rises_to_learning_rate():
    schedule = O.cosine_annealing(0.4, 10, warmup_steps=4)
    values = [float(schedule(s)) for s in range(6)]
    np.testing.assert_allclose(
        values, [0.1, 0.2, 0.3, 0.4, 0.4, _cosine_reference(5, 0.4, 10, warmup=4)], rtol=1e-6
    )


def test_cosine_annealing_drives_the_optimizer_learning_rate():
    optimizer = O.get("sgd", learning_rate=O.cosine_annealing(1.0, 8))
    _step(optimizer, 4)
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.5, rtol=1e-6)


def test_cosine_annealing_survives_optimizer_serialization():
    optimizer = O.get("adam", learning_rate=O.cosine_annealing(0.1, 50, 0.001, 5))
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    schedule = restored._learning_rate
    assert isinstance(schedule, O.CosineAnnealing)
    assert schedule.get_config() == {
        "learning_rate": 0.1,
        "steps": 50,
        "min_learning_rate": 0.001,
        "warmup_steps": 5,
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"steps": 0}, r"Received: steps=0", id="zero_steps"),
        pytest.param({"steps": 2.5}, r"steps must be an integer", id="float_steps"),
        pytest.param({"learning_rate": 0.0}, r"learning_rate > 0", id="zero_learning_rate"),
        pytest.param({"min_learning_rate": 2.0}, r"min_learning_rate=2\.0", id="min_above_max"),
        pytest.param({"warmup_steps": -1}, r"Received: warmup_steps=-1", id="negative_warmup"),
    ],
)
def test_cosine_annealing_rejects_bad_arguments(kwargs, match):
    args = {"learning_rate": 1.0, "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        O.cosine_annealing(**args)
