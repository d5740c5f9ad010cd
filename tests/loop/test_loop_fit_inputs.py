"""What model.fit takes goes straight into run_steps, run_epochs, validation_data and eval."""

import keras
import numpy as np
import pytest

import keras_trainloop as ktl

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype(np.float32)
Y = RNG.integers(0, 3, 64).astype(np.int32)


def model_fn(ctx, spec, inputs):
    return [ctx.layer("out", lambda: keras.layers.Dense(3))(inputs[0])]


@pytest.fixture
def trainer():
    return ktl.Trainer(
        model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        "adam",
        eval_metrics=["accuracy"],
    )


class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return X[i * 16 : (i + 1) * 16], Y[i * 16 : (i + 1) * 16]


def test_a_py_dataset_and_array_validation_data_go_in_as_fit_takes_them(trainer):
    loop = ktl.Loop(trainer)
    loop.run_epochs(Batches(), 2, validation_data=(X, Y))
    assert trainer.global_step == 8
    assert set(loop.history.history) >= {"loss", "val_loss", "val_accuracy"}


def test_a_generator_source_continues_across_runs(trainer):
    def batches():
        for i in range(100):
            yield X[(i % 4) * 16 : (i % 4 + 1) * 16], Y[(i % 4) * 16 : (i % 4 + 1) * 16]

    source = batches()
    loop = ktl.Loop(trainer)
    loop.run_steps(source, 3)
    loop.run_steps(source, 3)
    assert trainer.global_step == 6


def test_eval_takes_arrays_as_evaluate_does(trainer):
    trainer.train_step(None, [X[:16]], [Y[:16]])
    logs = trainer.eval((X, Y), return_dict=True)
    assert set(logs) == {"loss", "accuracy"}


def test_arrays_alone_still_get_the_fix(trainer):
    with pytest.raises(TypeError, match="Fix"):
        ktl.Loop(trainer).run_steps(X, 3)
