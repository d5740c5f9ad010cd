import jax
import keras
import numpy as np

import keras_trainloop as ktl


def batches(x, y, batch_size, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch_size)
        yield x[idx], y[idx]


def test_learns_digits_above_90_percent(digits, make_trainer):
    x, y, xt, yt = digits
    trainer = make_trainer()
    for xb, yb in batches(x, y, 64, 300):
        trainer.train_step(None, [xb], [yb])
    values = trainer.eval(ktl.ArrayDataset(xt, yt, batch_size=100))
    names = [m.short_name for m in trainer.eval_metrics]
    assert len(values) == len(names) == 3
    assert float(values[2]) >= 0.9


def test_train_step_returns_gomlx_ordered_device_arrays(digits, make_trainer):
    x, y, _, _ = digits
    trainer = make_trainer(train_metrics=[ktl.metrics.MovingAverageSparseCategoricalAccuracy()])
    values = trainer.train_step(None, [x[:64]], [y[:64]])
    assert all(isinstance(v, jax.Array) for v in values)
    assert [m.metric_type for m in trainer.train_metrics] == ["loss", "loss", "loss", "accuracy"]
    assert len(values) == 4
    # First step: the moving averages equal the batch values.
    np.testing.assert_allclose(float(values[0]), float(values[1]), rtol=1e-6)


def test_global_step_is_optimizer_iterations(digits, make_trainer):
    x, y, _, _ = digits
    trainer = make_trainer()
    assert trainer.global_step == 0
    for xb, yb in batches(x, y, 32, 5):
        trainer.train_step(None, [xb], [yb])
    assert trainer.global_step == 5
    assert int(trainer.model.optimizer.iterations.value) == 5
    assert trainer.context.global_step == 5


def test_keras_layer_loss_name_and_optimizer_name_are_accepted(digits):
    x, y, _, _ = digits
    model = keras.Sequential([keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    trainer = ktl.Trainer(
        model,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "adam",
        eval_metrics=["sparse_categorical_accuracy"],
    )
    first = float(trainer.train_step(None, [x[:256]], [y[:256]])[0])
    for _ in range(30):
        last = float(trainer.train_step(None, [x[:256]], [y[:256]])[0])
    assert last < first
    assert len(trainer.model.trainable_variables) == 4
    # The user's own model object sees the trained weights once synced.
    np.testing.assert_array_equal(
        np.asarray(model.layers[0].kernel.value), trainer.model.get_weights()[0]
    )


def test_loss_name_string_is_accepted(digits):
    x, y, _, _ = digits

    def model_fn(ctx, spec, inputs):
        return ctx.layer("out", lambda: keras.layers.Dense(10, activation="softmax"))(inputs[0])

    trainer = ktl.Trainer(model_fn, "sparse_categorical_crossentropy", "sgd")
    values = trainer.train_step("s", [x[:32]], [y[:32]])
    assert np.isfinite(float(values[0]))


def test_context_training_flag_and_traced_global_step(digits):
    x, y, _, _ = digits
    seen = []

    def model_fn(ctx, spec, inputs):
        seen.append((ctx.training, isinstance(ctx.global_step, jax.core.Tracer)))
        return ctx.layer("out", lambda: keras.layers.Dense(10))(inputs[0])

    trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")
    trainer.train_step(None, [x[:8]], [y[:8]])
    trainer.eval_step(None, [x[:8]], [y[:8]])
    # Eager build (train), traced train step, eager build (eval), traced eval step.
    assert (True, True) in seen and (False, True) in seen
    assert isinstance(trainer.context.global_step, int)


def test_dropout_in_model_fn_is_active_only_in_training():
    def model_fn(ctx, spec, inputs):
        return [ctx.layer("drop", lambda: keras.layers.Dropout(0.5))(inputs[0])]

    def dropped_fraction(labels, predictions):
        return keras.ops.mean(keras.ops.cast(predictions[0] == 0, "float32"))

    ctx = ktl.Context()
    ctx.variable("unused", (1,))  # something for the optimizer to hold
    trainer = ktl.Trainer(model_fn, dropped_fraction, "sgd", context=ctx)
    x = np.ones((64, 16), np.float32)
    train_fraction = float(trainer.train_step(None, [x], [])[0])
    eval_fraction = float(trainer.eval_step(None, [x], [])[0])
    assert 0.3 < train_fraction < 0.7  # 1024 draws of p=0.5
    assert eval_fraction == 0.0


def test_optimizers_global_step_of_a_trainer_is_current_while_training(digits, make_trainer):
    x, y, _, _ = digits
    trainer = make_trainer()
    for xb, yb in batches(x, y, 32, 3):
        trainer.train_step(None, [xb], [yb])
    assert ktl.optimizers.global_step(trainer) == 3


def test_building_the_model_does_not_update_batchnorm_statistics():
    def model_fn(ctx, spec, inputs):
        return [ctx.layer("bn", lambda: keras.layers.BatchNormalization(momentum=0.5))(inputs[0])]

    def loss_fn(labels, predictions):
        return keras.ops.mean(predictions[0] ** 2)

    trainer = ktl.Trainer(model_fn, loss_fn, "sgd")
    x = np.full((8, 2), 4.0, np.float32)
    trainer.train_step(None, [x], [])
    moving_mean = next(v for v in trainer.model.non_trainable_variables if "mean" in v.path)
    # One update from the initial 0 with momentum 0.5 (the build call adds none).
    np.testing.assert_allclose(np.asarray(moving_mean.value), [2.0, 2.0])
