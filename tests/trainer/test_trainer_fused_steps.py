"""trainer.train_steps: several steps in one compiled call, the same results as one by one."""

import keras
import numpy as np
import pytest
from trainer_helpers import stack_batches

import keras_trainloop as ktl


def test_train_steps_matches_train_step_one_batch_at_a_time(make_trainer, digits):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 8, 32)
    keras.utils.set_random_seed(0)  # The weights are drawn at the first step.
    one_by_one = make_trainer(train_metrics=[ktl.metrics.SparseCategoricalAccuracy()])
    losses = []
    for i in range(8):
        metrics = one_by_one.train_step(None, [xs[i]], [ys[i]])
        losses.append(float(metrics[0]))
    keras.utils.set_random_seed(0)
    fused = make_trainer(train_metrics=[ktl.metrics.SparseCategoricalAccuracy()])
    fused_metrics, batch_losses = fused.train_steps(None, [xs], [ys])
    assert batch_losses.shape == (8,)
    np.testing.assert_array_equal(np.asarray(batch_losses), np.asarray(losses, np.float32))
    for a, b in zip(fused_metrics, metrics):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fused.global_step == one_by_one.global_step == 8
    for a, b in zip(fused.model.get_weights(), one_by_one.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_train_steps_compiles_once_per_count_and_shares_the_spec_executor(make_trainer, digits):
    x, y, _, _ = digits
    trainer = make_trainer()
    trainer.train_step(None, [x[:32]], [y[:32]])
    for steps in (4, 4, 2, 4):
        trainer.train_steps(None, *([a] for a in stack_batches(x, y, steps, 32)))
    (executor,) = trainer._cache.executors()
    assert executor.fused_trace_counts == {4: 1, 2: 1}
    assert executor.trace_count == 1
    assert trainer.global_step == 15


def test_train_steps_first_call_builds_the_model(make_trainer, digits):
    x, y, _, _ = digits
    created = []
    trainer = make_trainer()
    trainer.on_exec_creation(lambda executor, graph_type: created.append(graph_type))
    trainer.train_steps(None, *([a] for a in stack_batches(x, y, 2, 16)))
    assert created == [ktl.GraphType.TRAIN]
    assert trainer.global_step == 2


def test_train_steps_on_device_arrays_slices_none_once_the_executor_exists(
    make_trainer, digits, monkeypatch
):
    import jax.numpy as jnp

    x, y, _, _ = digits
    xs, ys = (jnp.asarray(a) for a in stack_batches(x, y, 4, 16))
    keras.utils.set_random_seed(0)
    on_device = make_trainer()
    on_device.train_steps(None, [xs], [ys])  # Creates the executor from the first batch.
    sliced = []
    array_type = type(xs)  # jax's concrete array class
    getitem = array_type.__getitem__
    monkeypatch.setattr(array_type, "__getitem__", lambda a, i: sliced.append(i) or getitem(a, i))
    _, device_losses = on_device.train_steps(None, [xs], [ys])
    assert sliced == []  # Slicing a device array is a dispatch of its own, each call.
    monkeypatch.undo()
    keras.utils.set_random_seed(0)
    on_host = make_trainer()
    on_host.train_steps(None, [np.asarray(xs)], [np.asarray(ys)])
    _, host_losses = on_host.train_steps(None, [np.asarray(xs)], [np.asarray(ys)])
    np.testing.assert_array_equal(np.asarray(device_losses), np.asarray(host_losses))


@pytest.mark.parametrize(
    "inputs, labels",
    [
        ([np.zeros((4, 8, 64), np.float32)], [np.zeros((3, 8), np.int32)]),  # counts differ
        ([np.zeros((0, 8, 64), np.float32)], [np.zeros((0, 8), np.int32)]),  # no batch
        ([np.float32(1.0)], []),  # no leading axis
    ],
)
def test_train_steps_rejects_unstacked_arrays_before_anything_runs(make_trainer, inputs, labels):
    trainer = make_trainer()
    with pytest.raises(ValueError, match="stacked on a leading axis"):
        trainer.train_steps(None, inputs, labels)
    assert not trainer._cache.executors()


def test_train_steps_under_a_distribution_matches_train_step(make_trainer, digits):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 4, 16)
    results = []
    for fused in (False, True):
        keras.utils.set_random_seed(0)
        trainer = make_trainer(distribution=keras.distribution.DataParallel())
        assert trainer.can_fuse_steps
        if fused:
            metrics, _ = trainer.train_steps(None, [xs], [ys])
        else:
            for i in range(4):
                metrics = trainer.train_step(None, [xs[i]], [ys[i]])
        results.append(([np.asarray(m) for m in metrics], trainer.model.get_weights()))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _convnet():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def test_fused_steps_with_convolutions_are_unrolled_and_match_single_steps(digits):
    x, y, _, _ = digits
    xs, ys = x[: 4 * 16].reshape(4, 16, 8, 8, 1), y[: 4 * 16].reshape(4, 16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    single = ktl.Trainer(_convnet(), loss, keras.optimizers.Adam(1e-2))
    for i in range(4):
        single.train_step(None, [xs[i]], [ys[i]])
    keras.utils.set_random_seed(0)
    fused = ktl.Trainer(_convnet(), loss, keras.optimizers.Adam(1e-2))
    fused.train_steps(None, [xs], [ys])
    executor = fused._cache.get(ktl.GraphType.TRAIN, None)
    assert executor.fused_unrolled == {4: True}
    for a, b in zip(fused.model.get_weights(), single.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_steps_without_convolutions_stay_a_rolled_loop(make_trainer, digits):
    x, y, _, _ = digits
    xs, ys = stack_batches(x, y, 4, 16)
    trainer = make_trainer()
    trainer.train_steps(None, [xs], [ys])
    assert trainer._cache.get(ktl.GraphType.TRAIN, None).fused_unrolled == {4: False}
