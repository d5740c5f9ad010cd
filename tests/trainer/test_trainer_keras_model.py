"""A user's own Keras model as model_fn, and the Keras-facing parts of the Trainer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_trainloop as ktl


def _functional():
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, "relu")(inputs)))


def _sequential():
    return keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.hidden(x))


BATCH = (
    np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32),
    np.random.default_rng(1).integers(0, 3, 16).astype(np.int32),
)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize(
    "make", [_functional, _sequential, _Subclassed], ids=["functional", "sequential", "subclassed"]
)
def test_trainer_model_is_the_users_model_and_holds_the_trained_weights(make):
    model = make()
    trainer = ktl.Trainer(model, LOSS, keras.optimizers.SGD(0.1))
    assert trainer.model is model
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    before = [w.copy() for w in model.get_weights()]
    ktl.Loop(trainer).run_steps(ktl.ArrayDataset(x, y, batch_size=8, loop_forever=True), 4)
    after = model.get_weights()  # no trainer.model read: the run synced it
    assert not np.allclose(before[0], after[0])
    assert model.optimizer is trainer.optimizer
    assert int(model.optimizer.iterations) == trainer.global_step == 5


def test_a_callbacks_model_read_syncs_the_state_through_keras_protocol():
    model = _functional()
    trainer = ktl.Trainer(model, LOSS, keras.optimizers.SGD(0.1))
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    stale = np.asarray(model.layers[1].kernel.value).copy()
    trainer.train_step(None, [x], [y])
    callback = keras.callbacks.Callback()
    callback.set_model(model)
    current = np.asarray(callback.model.layers[1].kernel.value)  # Keras' jax_state_sync()
    assert not np.allclose(stale, current)
    # The variables own the state now: a write there is used by the next step.
    model.layers[1].kernel.assign(np.zeros_like(current))
    model.layers[1].bias.assign(np.zeros(8, np.float32))
    trainer.train_step(None, [x], [y])
    assert np.abs(np.asarray(trainer.model.layers[1].kernel.value)).max() < 0.5


def test_model_fn_model_can_be_called_and_predict_on_one_array():
    def model_fn(ctx, spec, inputs):
        return ctx.layer("dense", lambda: keras.layers.Dense(3))(inputs[0])

    trainer = ktl.Trainer(model_fn, LOSS, "sgd")
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    assert tuple(trainer.model(x).shape) == (16, 3)
    np.testing.assert_allclose(
        trainer.model.predict(x, verbose=0), np.asarray(trainer.model(x)), rtol=1e-6
    )


def test_model_fn_with_layers_created_outside_ctx_is_an_error_at_the_first_step():
    outside = keras.layers.Dense(3)

    def model_fn(ctx, spec, inputs):
        return [outside(inputs[0])]

    trainer = ktl.Trainer(model_fn, LOSS, "sgd")
    x, y = BATCH
    with pytest.raises(ValueError, match=r"model_fn=.*model_fn.*0 trainable variables.*ctx\.layer"):
        trainer.train_step(None, [x], [y])
    assert trainer.global_step == 0
    assert not trainer.optimizer.built


def test_eval_return_dict_matches_model_evaluate():
    model = _sequential()
    trainer = ktl.Trainer(model, LOSS, "adam", eval_metrics=["accuracy"])
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    ds = ktl.ArrayDataset(x, y, batch_size=5)
    got = trainer.eval(ds, return_dict=True)
    twin = _sequential()
    twin.build((None, 6))
    twin.set_weights(trainer.model.get_weights())
    twin.compile(loss=LOSS, metrics=["accuracy"])
    expected = twin.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    assert set(got) == set(expected) == {"loss", "accuracy"}
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5)
    assert all(type(v) is float for v in got.values())
    assert len(trainer.eval(ds)) == 3  # the list, as before


def test_eval_batch_functions_see_each_batch_with_evaluates_running_logs():
    model = _sequential()
    trainer = ktl.Trainer(model, LOSS, "adam", eval_metrics=["accuracy"])
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    ds = ktl.ArrayDataset(x, y, batch_size=6)  # 3 batches, the last one short.
    events = []
    final = trainer.eval(
        ds,
        return_dict=True,
        on_batch_begin=lambda batch: events.append(("begin", batch)),
        on_batch_end=lambda batch, logs: events.append(("end", batch, logs)),
    )
    assert [e[:2] for e in events] == [
        ("begin", 0), ("end", 0), ("begin", 1), ("end", 1), ("begin", 2), ("end", 2)
    ]  # fmt: skip
    twin = _sequential()
    twin.build((None, 6))
    twin.set_weights(trainer.model.get_weights())
    twin.compile(loss=LOSS, metrics=["accuracy"])
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_test_batch_end=lambda batch, logs: seen.append(dict(logs))
    )
    twin.evaluate(x, y, batch_size=6, verbose=0, callbacks=[recorder])
    assert len(seen) == 3
    for (_, _, logs), expected in zip(events[1::2], seen):
        assert set(logs) == set(expected)
        for key in expected:
            assert logs[key] == pytest.approx(expected[key], rel=1e-5)
    assert events[-1][2] == final


def test_max_executors_argument_sets_the_limit():
    trainer = ktl.Trainer(_sequential(), LOSS, "sgd", max_executors=1)
    assert trainer.max_executors == 1
    x, y = BATCH
    trainer.train_step("a", [x], [y])
    with pytest.raises(ValueError, match="'b'"):
        trainer.train_step("b", [x], [y])
    with pytest.raises(ValueError, match=r"Received: max_executors=0"):
        ktl.Trainer(_sequential(), LOSS, "sgd", max_executors=0)


def _live_bytes():
    import jax

    return sum(x.nbytes for x in jax.live_arrays() if not x.is_deleted())


def test_the_training_state_is_held_once_while_training():
    import gc

    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024), keras.layers.Dense(3)])
    trainer = ktl.Trainer(model, LOSS, keras.optimizers.Adam())
    x = np.ones((4, 512), np.float32)
    y = np.zeros(4, np.int32)
    trainer.train_step(None, [x], [y])
    state_bytes = sum(np.asarray(v).nbytes for v in model.variables + model.optimizer.variables)
    gc.collect()
    before = _live_bytes()  # the state, in the variables
    for _ in range(3):
        trainer.train_step(None, [x], [y])
    gc.collect()
    during = _live_bytes()  # the state, in the trainer: not a second copy
    assert during < before + 0.2 * state_bytes
    assert before > state_bytes * 0.9


def test_a_variable_held_by_reference_reads_and_writes_the_current_state():
    model = _functional()
    kernel = model.layers[1].kernel  # held by reference across steps
    trainer = ktl.Trainer(model, LOSS, keras.optimizers.SGD(0.1))
    x, y = BATCH
    trainer.train_step(None, [x], [y])
    first = np.asarray(kernel.value).copy()
    trainer.train_step(None, [x], [y])
    second = np.asarray(kernel)  # syncs: the value after step 2
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(second, trainer.model.layers[1].kernel.numpy())
    trainer.train_step(None, [x], [y])
    kernel.assign(np.zeros_like(second))  # a write while the trainer holds the state
    trainer.train_step(None, [x], [y])
    assert np.abs(kernel.numpy()).max() < 0.5  # one SGD step from zeros
    assert trainer.global_step == 4 and int(model.optimizer.iterations) == 4


def _named_inputs_model():
    keras.utils.set_random_seed(3)
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    scaled_b = keras.layers.Dense(5, use_bias=False)(b)
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()([a, scaled_b]))
    return keras.Model({"a": a, "b": b}, outputs)


@pytest.mark.parametrize("source", ["arrays", "tf.data"])
def test_dict_inputs_reach_a_functional_model_by_name_in_any_key_order(source):
    rng = np.random.default_rng(0)
    x = {  # Not in the model's (sorted) order: matched by name, as fit does.
        "b": rng.normal(size=(48, 5)).astype(np.float32) * 3,
        "a": rng.normal(size=(48, 5)).astype(np.float32),
    }
    y = rng.normal(size=(48, 1)).astype(np.float32)
    fit_model = _named_inputs_model()
    fit_model.compile(keras.optimizers.SGD(0.01), loss="mse")
    history = fit_model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model = _named_inputs_model()
    trainer = ktl.Trainer(model, "mse", keras.optimizers.SGD(0.01))
    if source == "arrays":
        ds = ktl.as_dataset(x, y, batch_size=16)
    else:
        import tensorflow as tf

        ds = ktl.TFDataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    loop = ktl.Loop(trainer)
    loop.run_epochs(ds, 1)
    assert loop.history.history["loss"][0] == pytest.approx(history.history["loss"][0], rel=1e-5)
    for fit_w, w in zip(fit_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(w, fit_w, rtol=1e-5, atol=1e-6)


def _two_outputs_model(as_dict=False):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = [keras.layers.Dense(1)(hidden), keras.layers.Dense(2)(hidden)]
    return keras.Model(inputs, dict(zip(("r1", "r2"), outputs)) if as_dict else outputs)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample-weight"])
def test_one_keras_loss_applies_to_each_output_of_a_keras_model_as_in_fit(weighted):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(48, 5)).astype(np.float32)
    y = [rng.normal(size=(48, 1)).astype(np.float32), rng.normal(size=(48, 2)).astype(np.float32)]
    sample_weight = rng.uniform(size=48).astype(np.float32) if weighted else None
    fit_model = _two_outputs_model()
    fit_model.compile(keras.optimizers.SGD(0.01), loss="mse")
    history = fit_model.fit(
        x, y, sample_weight=sample_weight, batch_size=16, epochs=2, shuffle=False, verbose=0
    )
    model = _two_outputs_model()
    loop = ktl.Loop(ktl.Trainer(model, "mse", keras.optimizers.SGD(0.01)))
    loop.run_epochs(ktl.as_dataset(x, y, sample_weight=sample_weight, batch_size=16), 2)
    np.testing.assert_allclose(loop.history.history["loss"], history.history["loss"], rtol=1e-5)
    for fit_w, w in zip(fit_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(w, fit_w, rtol=1e-5, atol=1e-6)


def test_wrong_label_count_for_a_keras_models_outputs_names_both_counts():
    x = np.zeros((8, 5), np.float32)
    trainer = ktl.Trainer(_two_outputs_model(), "mse", "sgd")
    with pytest.raises(ValueError, match="Received: 1 labels for 2 output"):
        trainer.train_step(None, [x], [np.zeros((8, 1), np.float32)])
    assert trainer.global_step == 0


def test_dict_outputs_are_a_clear_error_before_anything_runs():
    x = np.zeros((8, 5), np.float32)
    trainer = ktl.Trainer(_two_outputs_model(as_dict=True), "mse", "sgd")
    with pytest.raises(TypeError, match=r"dict of outputs \('r1', 'r2'\).*list of outputs"):
        trainer.train_step(None, [x], [np.zeros((8, 1), np.float32), np.zeros((8, 2))])
    assert trainer.global_step == 0


def test_keras_metrics_that_make_their_variables_at_first_update_match_fit():
    rng = np.random.default_rng(6)
    x = rng.random((60, 4)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 60), 3)

    def model():
        keras.utils.set_random_seed(2)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])

    def f1():
        return [keras.metrics.F1Score(average="macro")]  # No variables until it sees shapes.

    fit_model = model()
    fit_model.compile(keras.optimizers.SGD(0.5), "categorical_crossentropy", metrics=f1())
    history = fit_model.fit(
        x, y, batch_size=20, epochs=2, shuffle=False, verbose=0, validation_data=(x, y)
    )
    trainer = ktl.Trainer(
        model(),
        "categorical_crossentropy",
        keras.optimizers.SGD(0.5),
        train_metrics=f1(),
        eval_metrics=f1(),
    )
    loop = ktl.Loop(trainer)
    loop.run_epochs(ktl.as_dataset(x, y, batch_size=20), 2, validation_data=(x, y))
    for key in ("f1_score", "val_f1_score", "loss"):
        np.testing.assert_allclose(loop.history.history[key], history.history[key], rtol=1e-5)


def test_keras_metrics_on_a_model_of_several_outputs_are_refused_before_anything_runs():
    x = np.zeros((8, 5), np.float32)
    labels = [np.zeros((8, 1), np.float32), np.zeros((8, 2), np.float32)]
    trainer = ktl.Trainer(_two_outputs_model(), "mse", "sgd", train_metrics=["mae"])
    with pytest.raises(ValueError, match=r"'mae' is a Keras metric.*2 outputs.*ktl.metrics.mean"):
        trainer.train_step(None, [x], labels)
    assert trainer.global_step == 0

    def second_output_mae(labels, predictions):
        return keras.metrics.mean_absolute_error(labels[1], predictions[1])

    trainer = ktl.Trainer(
        _two_outputs_model(), "mse", "sgd", train_metrics=[ktl.metrics.mean(second_output_mae)]
    )
    trainer.train_step(None, [x], labels)
    assert trainer.global_step == 1


@pytest.mark.parametrize("first", ["mse", None], ids=["two-losses", "none-for-one-output"])
def test_a_list_of_losses_one_per_output_trains_as_compile_with_that_list(first):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(48, 5)).astype(np.float32)
    y = [rng.normal(size=(48, 1)).astype(np.float32), rng.normal(size=(48, 2)).astype(np.float32)]
    sample_weight = rng.uniform(size=48).astype(np.float32)
    losses = [first, keras.losses.MeanAbsoluteError()]
    fit_model = _two_outputs_model()
    fit_model.compile(keras.optimizers.SGD(0.05), loss=losses)
    history = fit_model.fit(
        x, y, sample_weight=sample_weight, batch_size=16, epochs=2, shuffle=False, verbose=0
    )
    model = _two_outputs_model()
    loop = ktl.Loop(ktl.Trainer(model, losses, keras.optimizers.SGD(0.05)))
    loop.run_epochs(ktl.as_dataset(x, y, sample_weight=sample_weight, batch_size=16), 2)
    np.testing.assert_allclose(loop.history.history["loss"], history.history["loss"], rtol=1e-5)
    for fit_w, w in zip(fit_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(w, fit_w, rtol=1e-5, atol=1e-6)
    assert model.compiled  # Keras can save and load that list back.


def test_a_list_of_losses_of_another_length_than_the_outputs_is_a_clear_error():
    x = np.zeros((8, 5), np.float32)
    labels = [np.zeros((8, 1), np.float32), np.zeros((8, 2), np.float32)]
    trainer = ktl.Trainer(_two_outputs_model(), ["mse", "mse", "mae"], "sgd")
    with pytest.raises(ValueError, match="list of 3 losses takes one per output.*2 predictions"):
        trainer.train_step(None, [x], labels)
    with pytest.raises(ValueError, match="at least one loss"):
        ktl.Trainer(_two_outputs_model(), [None, None], "sgd")
