import jax.numpy as jnp
import keras
import numpy as np
import pytest

import keras_trainloop as ktl


def linear_fn(ctx, spec, inputs):
    w = ctx.variable("w", (4, 1), initializer="ones")
    return [inputs[0] @ w.value]


X = np.ones((8, 4), np.float32)


def test_add_loss_alone_is_optimized_with_loss_fn_none():
    def model_fn(ctx, spec, inputs):
        (pred,) = linear_fn(ctx, spec, inputs)
        ktl.add_loss(ctx, jnp.mean(pred**2))
        return [pred]

    trainer = ktl.Trainer(model_fn, None, keras.optimizers.SGD(0.01))
    assert [m.short_name for m in trainer.train_metrics] == ["batch_loss", "~loss+"]
    first = float(trainer.train_step(None, [X], [])[0])
    assert first == pytest.approx(16.0)
    for _ in range(20):
        last = float(trainer.train_step(None, [X], [])[0])
    assert last < first / 2


def test_add_loss_terms_accumulate_and_non_scalar_terms_are_mean_reduced():
    def model_fn(ctx, spec, inputs):
        (pred,) = linear_fn(ctx, spec, inputs)
        ktl.add_loss(ctx, 1.0)
        ktl.add_loss(ctx, jnp.array([2.0, 4.0]))  # mean 3.0
        return [pred]

    def loss_fn(labels, predictions):
        return jnp.zeros((8,)) + 0.5  # non-scalar: mean-reduced to 0.5

    trainer = ktl.Trainer(model_fn, loss_fn, "sgd")
    values = trainer.train_step(None, [X], [np.zeros((8, 1))])
    assert float(values[0]) == pytest.approx(4.5)  # loss + regularization
    assert float(values[2]) == pytest.approx(0.5)  # loss_fn alone
    eval_values = trainer.eval_step(None, [X], [np.zeros((8, 1))])
    assert float(eval_values[0]) == pytest.approx(4.5)
    assert float(eval_values[1]) == pytest.approx(0.5)


def test_get_losses_sums_terms_or_returns_none():
    ctx = ktl.Context()
    assert ktl.get_losses(ctx) is None
    ktl.add_loss(ctx, 1.0)
    ktl.add_loss(ctx.in_scope("a"), jnp.ones((3,)) * 2)
    assert float(ktl.get_losses(ctx)) == pytest.approx(3.0)


def test_keras_regularizers_count_in_loss_plus_regularization():
    def model_fn(ctx, spec, inputs):
        dense = ctx.layer(
            "d",
            lambda: keras.layers.Dense(
                1,
                kernel_initializer="ones",
                use_bias=False,
                kernel_regularizer=keras.regularizers.L2(0.5),
            ),
        )
        return [dense(inputs[0])]

    def loss_fn(labels, predictions):
        return jnp.zeros(())

    trainer = ktl.Trainer(model_fn, loss_fn, "sgd")
    values = trainer.eval_step(None, [X], [np.zeros((8, 1))])
    assert float(values[0]) == pytest.approx(0.5 * 4)  # 0.5 * sum(w**2)
    assert float(values[1]) == pytest.approx(0.0)


def test_nothing_to_optimize_is_a_clear_error():
    trainer = ktl.Trainer(linear_fn, None, "sgd")
    with pytest.raises(ValueError, match="Nothing to optimize.*ktl.add_loss"):
        trainer.train_step(None, [X], [])


def test_per_step_update_fn_keeps_weights_clipped():
    def model_fn(ctx, spec, inputs):
        w = ctx.variable("w", (4, 1), initializer="zeros")
        ktl.add_per_step_update_fn(ctx, lambda c: w.assign(jnp.clip(w.value, -0.05, 0.05)))
        return [inputs[0] @ w.value]

    def loss_fn(labels, predictions):
        return jnp.mean((predictions[0] - labels[0]) ** 2)

    trainer = ktl.Trainer(model_fn, loss_fn, keras.optimizers.SGD(0.1))
    for _ in range(10):
        trainer.train_step(None, [X], [np.full((8, 1), 10.0, np.float32)])
    w = trainer.model.get_weights()[0]
    np.testing.assert_allclose(w, np.full((4, 1), 0.05), rtol=1e-6)
    # Eval does not run the update function.
    values = trainer.eval_step(None, [X], [np.zeros((8, 1), np.float32)])
    assert float(values[0]) == pytest.approx(0.2**2)
