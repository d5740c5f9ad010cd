import keras
import numpy as np
import pytest

import keras_trainloop as ktl


def spec_model_fn(ctx, spec, inputs):
    # One shared layer; the spec only changes the graph (a scale).
    scale = 2.0 if spec == "double" else 1.0
    return [ctx.layer("out", lambda: keras.layers.Dense(10))(inputs[0] * scale)]


def new_trainer():
    return ktl.Trainer(spec_model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")


def test_one_executor_per_spec_and_graph_type():
    trainer = new_trainer()
    created = []
    trainer.on_exec_creation(
        lambda executor, graph_type: created.append((executor.spec, graph_type))
    )
    x, y = np.ones((8, 4), np.float32), np.zeros((8,), np.int32)
    for spec in ["single", "double", "single", "double", {"a": 1}, {"a": 1}]:
        trainer.train_step(spec, [x], [y])
    trainer.eval_step("single", [x], [y])
    trainer.eval_step("single", [x], [y])
    assert created == [
        ("single", ktl.GraphType.TRAIN),
        ("double", ktl.GraphType.TRAIN),
        ({"a": 1}, ktl.GraphType.TRAIN),
        ("single", ktl.GraphType.EVAL),
    ]


def test_no_recompilation_in_steady_state():
    trainer = new_trainer()
    executors = []
    trainer.on_exec_creation(lambda executor, graph_type: executors.append(executor))
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=(16, 4)).astype(np.float32)
        trainer.train_step(None, [x], [rng.integers(0, 10, 16).astype(np.int32)])
    for _ in range(5):
        trainer.eval_step(None, [x], [np.zeros(16, np.int32)])
    # Reading the model in between (state sync) does not retrace either.
    trainer.model.get_weights()
    trainer.train_step(None, [x], [np.zeros(16, np.int32)])
    assert [e.trace_count for e in executors] == [1, 1]


def test_new_input_shape_in_same_spec_retraces_but_keeps_executor():
    trainer = new_trainer()
    executors = []
    trainer.on_exec_creation(lambda executor, graph_type: executors.append(executor))
    trainer.train_step(None, [np.ones((8, 4), np.float32)], [np.zeros(8, np.int32)])
    trainer.train_step(None, [np.ones((4, 4), np.float32)], [np.zeros(4, np.int32)])
    assert len(executors) == 1 and executors[0].trace_count == 2


def test_executor_limit_counts_train_and_eval_and_names_the_spec():
    trainer = new_trainer()
    trainer.max_executors = 3
    x, y = np.ones((2, 4), np.float32), np.zeros((2,), np.int32)
    trainer.train_step("a", [x], [y])
    trainer.eval_step("a", [x], [y])
    trainer.train_step("b", [x], [y])
    with pytest.raises(ValueError, match=r"spec='c'.*max_executors=3"):
        trainer.eval_step("c", [x], [y])


def test_default_max_executors_is_read_at_construction(monkeypatch):
    assert ktl.DEFAULT_MAX_EXECUTORS == 20
    monkeypatch.setattr(ktl, "DEFAULT_MAX_EXECUTORS", 7)
    assert new_trainer().max_executors == 7


def test_input_and_label_counts_are_fixed_per_spec():
    trainer = new_trainer()
    x, y = np.ones((2, 4), np.float32), np.zeros((2,), np.int32)
    trainer.train_step("s", [x], [y])
    with pytest.raises(ValueError, match=r"spec='s'.*1 input\(s\) and 1 label\(s\).*2 input"):
        trainer.train_step("s", [x, x], [y])


def test_at_least_one_input_is_required():
    with pytest.raises(ValueError, match=r"At least one input.*0 inputs and 1 label.*spec='s'"):
        new_trainer().train_step("s", [], [np.zeros(2)])


def test_none_input_is_rejected_before_anything_runs():
    trainer = new_trainer()
    with pytest.raises(ValueError, match=r"None.*spec=None.*2 input"):
        trainer.train_step(None, [np.ones((2, 4)), None], [np.zeros(2)])
    assert trainer.global_step == 0
    trainer.train_step(None, [np.ones((2, 4), np.float32), np.ones(2)], [np.zeros(2, np.int32)])
    with pytest.raises(ValueError, match="None"):
        trainer.train_step(None, [np.ones((2, 4), np.float32), None], [np.zeros(2, np.int32)])
    assert trainer.global_step == 1


def test_in_device_places_the_step_and_rejects_bad_numbers():
    trainer = new_trainer().in_device(0)
    values = trainer.train_step(None, [np.ones((2, 4), np.float32)], [np.zeros(2, np.int32)])
    assert np.isfinite(float(values[0]))
    with pytest.raises(ValueError, match="device_num=99"):
        trainer.in_device(99)


def test_set_context_before_first_step_only():
    trainer = new_trainer()
    ctx = ktl.Context()
    assert trainer.set_context(ctx) is trainer and trainer.context is ctx
    trainer.train_step(None, [np.ones((2, 4), np.float32)], [np.zeros(2, np.int32)])
    with pytest.raises(ValueError, match="before the first train or eval step"):
        trainer.set_context(ktl.Context())


@pytest.mark.parametrize("written", ["ktl", "ktl.trainer"])
def test_default_max_executors_is_one_value_under_both_names(monkeypatch, written):
    import keras_trainloop.trainer as trainer_pkg

    assert ktl.DEFAULT_MAX_EXECUTORS == trainer_pkg.DEFAULT_MAX_EXECUTORS == 20  # Both read.
    monkeypatch.setattr(ktl if written == "ktl" else trainer_pkg, "DEFAULT_MAX_EXECUTORS", 5)
    assert ktl.DEFAULT_MAX_EXECUTORS == trainer_pkg.DEFAULT_MAX_EXECUTORS == 5
    assert new_trainer().max_executors == 5


def test_max_executors_argument_wins_over_the_default_and_is_checked(monkeypatch):
    monkeypatch.setattr(ktl, "DEFAULT_MAX_EXECUTORS", 5)
    loss = ktl.losses.sparse_categorical_cross_entropy_logits
    assert ktl.Trainer(spec_model_fn, loss, "adam", max_executors=2).max_executors == 2
    with pytest.raises(ValueError, match=r"max_executors=0.*Fix"):
        ktl.Trainer(spec_model_fn, loss, "adam", max_executors=0)
