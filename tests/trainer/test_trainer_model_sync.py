import keras
import numpy as np
import pytest

import keras_trainloop as ktl

X = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, 32).astype(np.int32)


def model_fn(ctx, spec, inputs):
    return [ctx.layer("out", lambda: keras.layers.Dense(3))(inputs[0])]


def new_trainer():
    return ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")


def test_model_shows_current_weights_on_every_read():
    trainer = new_trainer()
    model = trainer.model  # a reference held across training
    trainer.train_step(None, [X], [Y])
    w1 = model.get_weights()[0].copy()
    trainer.train_step(None, [X], [Y])
    w2 = model.get_weights()[0]
    assert not np.allclose(w1, w2)
    np.testing.assert_array_equal(w2, np.asarray(trainer.model.trainable_variables[0].value))


def test_context_layers_are_tracked_by_the_model():
    trainer = new_trainer()
    trainer.train_step(None, [X], [Y])
    assert [tuple(v.shape) for v in trainer.model.trainable_variables] == [(8, 3), (3,)]
    trainer.model.summary(print_fn=lambda *a, **k: None)


def test_weights_round_trip_and_loaded_weights_are_used(tmp_path):
    trainer = new_trainer()
    for _ in range(5):
        trainer.train_step(None, [X], [Y])
    path = str(tmp_path / "w.weights.h5")
    trainer.model.save_weights(path)
    saved_eval = [float(v) for v in trainer.eval_step(None, [X], [Y])]

    other = new_trainer()
    other.train_step(None, [X], [Y])  # builds variables with other values
    other.model.load_weights(path)
    other._reset_eval_metrics()
    loaded_eval = [float(v) for v in other.eval_step(None, [X], [Y])]
    assert loaded_eval == pytest.approx(saved_eval, rel=1e-6)


def test_assigned_weights_are_used_by_the_next_step():
    trainer = new_trainer()
    trainer.train_step(None, [X], [Y])
    for v in trainer.model.trainable_variables:
        v.assign(np.zeros(v.shape, np.float32))
    values = trainer.eval_step(None, [X], [Y])
    assert float(values[0]) == pytest.approx(np.log(3.0), rel=1e-5)
