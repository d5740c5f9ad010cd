"""Bad model_fn, loss_fn and batches: a clear error (what, the value, the fix), nothing trained."""

import keras
import numpy as np
import pytest

import keras_trainloop as ktl

X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
Y = np.arange(8, dtype=np.int32) % 3
LOSS = ktl.losses.sparse_categorical_cross_entropy_logits


def dense_fn(ctx, spec, inputs):
    return [ctx.layer("out", lambda: keras.layers.Dense(3))(inputs[0])]


def returning(value):
    def model_fn(ctx, spec, inputs):
        dense_fn(ctx, spec, inputs)
        return value

    return model_fn


@pytest.mark.parametrize(
    "value, match",
    [
        (None, r"Received: NoneType .*Fix: return the model's outputs"),
        ("logits", r"Received: str 'logits'.*Fix"),
        ({"logits": np.zeros((8, 3))}, r"Received: dict .*list\(d.values\(\)\)"),
    ],
    ids=["none", "string", "dict"],
)
def test_model_fn_returning_no_arrays_is_a_type_error(value, match):
    trainer = ktl.Trainer(returning(value), LOSS, "adam")
    with pytest.raises(TypeError, match=match):
        trainer.train_step(None, [X], [Y])
    assert trainer.global_step == 0


@pytest.mark.parametrize(
    "model_fn",
    [lambda inputs: inputs, lambda ctx, inputs: inputs, lambda ctx, spec, inputs, extra: inputs],
    ids=["one_arg", "two_args", "four_required"],
)
def test_model_fn_with_the_wrong_signature_is_refused_at_construction(model_fn):
    with pytest.raises(TypeError, match=r"model_fn\(ctx, spec, inputs\).*Received: .*Fix: def"):
        ktl.Trainer(model_fn, LOSS, "adam")


def test_model_fn_with_defaults_or_varargs_is_accepted():
    ktl.Trainer(lambda ctx, spec, inputs, scale=1.0: inputs, LOSS, "adam")
    ktl.Trainer(lambda *args: args[2], LOSS, "adam")


@pytest.mark.parametrize("value", [None, "loss"], ids=["none", "string"])
def test_loss_fn_returning_no_array_is_a_type_error_and_trains_nothing(value):
    trainer = ktl.Trainer(dense_fn, lambda labels, predictions: value, "adam")
    with pytest.raises(TypeError, match=r"loss_fn must return the loss.*Fix"):
        trainer.train_step(None, [X], [Y])
    assert trainer.global_step == 0
    trainer_ok = ktl.Trainer(dense_fn, LOSS, "adam")
    trainer_ok.train_step(None, [X], [Y])
    assert trainer_ok.global_step == 1


@pytest.mark.parametrize("where", ["inputs", "labels"])
def test_string_arrays_are_refused_with_the_fix(where):
    trainer = ktl.Trainer(dense_fn, LOSS, "adam")
    words = np.array(["a"] * 8)
    inputs, labels = ([words], [Y]) if where == "inputs" else ([X], [words])
    with pytest.raises(TypeError, match=rf"{where}\[0\] holds <U1 values.*Fix: .*StringLookup"):
        trainer.train_step(None, inputs, labels)
    assert trainer.global_step == 0


@pytest.mark.parametrize(
    "loss",
    [
        LOSS,
        "sparse_categorical_crossentropy",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ],
    ids=["ktl", "keras_name", "keras_loss"],
)
@pytest.mark.parametrize("labels", [Y + 1, Y - 1], ids=["one_based", "negative"])
def test_class_ids_out_of_range_are_refused_before_training(loss, labels):
    trainer = ktl.Trainer(dense_fn, loss, "adam")
    with pytest.raises(ValueError, match=r"range over .* 3 classes .*Fix: number the classes"):
        trainer.train_step(None, [X], [labels.astype(np.int32)])
    assert trainer.global_step == 0


def test_class_ids_are_checked_for_a_built_keras_model_too():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    trainer = ktl.Trainer(model, "sparse_categorical_crossentropy", "adam")
    with pytest.raises(ValueError, match=r"range over \[1, 3\]"):
        trainer.train_step(None, [X], [Y + 1])


def test_float_labels_and_other_losses_are_not_range_checked():
    trainer = ktl.Trainer(dense_fn, ktl.losses.mean_squared_error, "adam")
    trainer.train_step(None, [X], [np.full((8, 3), 7.0, np.float32)])
    assert trainer.global_step == 1


@pytest.mark.parametrize("method", ["train_step", "test_step", "compute_loss"])
def test_a_model_with_its_own_fit_step_or_loss_is_refused_with_the_fit_route(method):
    def overridden(self, *args, **kwargs):
        raise AssertionError("never called")

    custom = type("Custom", (keras.Model,), {method: overridden, "call": lambda self, x: x})
    with pytest.raises(ValueError, match=rf"Custom overrides {method}\(\).*as_keras_callback"):
        ktl.Trainer(custom(), "mse", "sgd")
