"""The pure step maths (`trainer/_steps.py`) on their own, without a Trainer."""

import jax
import keras
import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.trainer._metric_set import metric_sets
from keras_trainloop.trainer._state import TrainState
from keras_trainloop.trainer._steps import StepMaths, fuse


def _maths(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    loss = ktl.losses.sparse_categorical_cross_entropy_logits
    train, evals = metric_sets([], ["accuracy"], loss)
    state = TrainState(model, optimizer)
    state.pull(None)
    maths = StepMaths(
        model, ktl.Context(), loss, optimizer, train, evals, state.refs_and_step_index
    )
    return maths, state, train, evals


def _batch(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(8, 4)).astype(np.float32)], [rng.integers(0, 3, 8).astype(np.int32)]


def test_train_fn_is_one_sgd_step_of_the_loss():
    maths, state, train, _ = _maths()
    inputs, labels = _batch(1)
    kernel, bias = (np.asarray(v) for v in state.values[0])
    (variables, _), values = jax.jit(maths.train_fn(None))(
        state.values, train.new_states(None), inputs, labels
    )

    def loss(params):
        logits = inputs[0] @ params[0] + params[1]
        return ktl.losses.sparse_categorical_cross_entropy_logits(labels, [logits])

    grads = jax.grad(loss)([kernel, bias])
    np.testing.assert_allclose(variables[0][0], kernel - 0.1 * grads[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values[0], loss([kernel, bias]), rtol=1e-6)
    assert int(variables[2][state.iterations_index]) == 1


def test_fuse_equals_single_steps_bit_for_bit():
    maths, state, train, _ = _maths()
    batches = [_batch(seed) for seed in range(4)]
    step = jax.jit(maths.train_fn(None))
    single = jax.tree.map(np.copy, state.values)
    mstates = train.new_states(None)
    for inputs, labels in batches:
        (single, mstates), single_values = step(single, mstates, inputs, labels)
    traces = []
    fused = jax.jit(fuse(maths.train_fn(None), traces.append))
    stacked = [np.stack([b[0][0] for b in batches])], [np.stack([b[1][0] for b in batches])]
    (variables, _), values, batch_losses = fused(
        jax.tree.map(np.copy, state.values), train.new_states(None), *stacked
    )
    assert traces == [False]  # Traced once; a dense step is not unrolled.
    assert batch_losses.shape == (4,)
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(single_values[0], values[0])


def test_eval_fn_accumulates_means_and_accuracy():
    maths, state, _, evals = _maths()
    inputs, labels = _batch(2)
    _, values = jax.jit(maths.eval_fn(None))(state.values, evals.new_states(None), inputs, labels)
    logits = maths.model(inputs[0])
    expected = np.mean(np.argmax(np.asarray(logits), -1) == labels[0])
    assert evals.logs(values)["accuracy"] == pytest.approx(expected)
    assert set(evals.logs(values)) == {"loss", "accuracy"}


def test_nothing_to_optimize_names_the_spec():
    maths, state, train, _ = _maths()
    maths.loss_fn = None
    inputs, labels = _batch(3)
    with pytest.raises(ValueError, match=r"Nothing to optimize for spec='s'"):
        jax.jit(maths.train_fn("s"))(state.values, train.new_states(None), inputs, labels)
