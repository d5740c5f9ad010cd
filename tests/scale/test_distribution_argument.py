"""The Trainer's `distribution` argument, in the test process (one CPU device)."""

import jax
import keras
import numpy as np
import pytest

import keras_trainloop as ktl


def model_fn(ctx, spec, inputs):
    return [ctx.layer("out", lambda: keras.layers.Dense(3))(inputs[0])]


def new_trainer(**kwargs):
    return ktl.Trainer(
        model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "sgd", **kwargs
    )


@pytest.fixture
def one_device_data_parallel():
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    yield distribution
    keras.distribution.set_distribution(None)


def test_distribution_must_be_a_keras_distribution():
    with pytest.raises(TypeError, match=r"keras.distribution.DataParallel.*distribution='dp'"):
        new_trainer(distribution="dp")


def test_no_distribution_by_default():
    trainer = new_trainer()
    assert trainer.distribution is None
    trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])
    assert trainer.distribution is None


def test_argument_wins_over_the_global_distribution(one_device_data_parallel):
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    trainer = new_trainer(distribution=one_device_data_parallel)
    assert trainer.distribution is one_device_data_parallel


def test_global_distribution_is_fixed_at_the_first_step(one_device_data_parallel):
    trainer = new_trainer()
    keras.distribution.set_distribution(one_device_data_parallel)
    assert trainer.distribution is one_device_data_parallel  # Not fixed yet: the global one.
    trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])
    keras.distribution.set_distribution(None)
    assert trainer.distribution is one_device_data_parallel
    metrics = trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])
    assert trainer.global_step == 2 and np.isfinite(float(metrics[0]))
    mesh = one_device_data_parallel.device_mesh.backend_mesh
    for variable in trainer.model.weights + trainer.optimizer.variables:
        assert variable.value.sharding.mesh == mesh, variable.path


def test_in_device_is_refused_under_any_distribution(one_device_data_parallel):
    trainer = new_trainer(distribution=one_device_data_parallel)
    with pytest.raises(
        ValueError,
        match=r"in_device\(\).*Received: device_num=0 under "
        r"DataParallel\(mesh batch=1\)\. Fix:",
    ):
        trainer.in_device(0)


def test_in_device_still_works_without_a_distribution():
    trainer = new_trainer().in_device(0)
    trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])
    assert trainer.model.weights[0].value.devices() == {jax.devices()[0]}


def test_scalar_batch_arrays_are_refused_under_a_distribution(one_device_data_parallel):
    trainer = new_trainer(distribution=one_device_data_parallel)
    with pytest.raises(ValueError, match=r"leading batch axis.*spec='s' with label #0 a scalar"):
        trainer.train_step("s", [np.ones((4, 2), np.float32)], [np.int32(1)])


def _model_parallel(*patterns):
    devices = keras.distribution.list_devices()[:1]
    mesh = keras.distribution.DeviceMesh((1, 1), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern in patterns:
        layout_map[pattern] = (None, "model")
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def test_a_layout_map_key_matching_no_variable_is_warned_with_the_paths():
    trainer = new_trainer(distribution=_model_parallel(".*dense.*kernel", ".*hidden.*kernel"))
    with pytest.warns(
        UserWarning,
        match=r"\['\.\*hidden\.\*kernel'\] match no variable.*"
        r"fn_model/dense.*/kernel.*Fix",
    ):
        trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])


def test_layout_map_keys_that_match_are_not_warned(recwarn):
    trainer = new_trainer(distribution=_model_parallel(".*dense.*/kernel"))
    trainer.train_step(None, [np.ones((4, 2), np.float32)], [np.zeros(4, np.int32)])
    assert not [w for w in recwarn if "LayoutMap" in str(w.message)]
