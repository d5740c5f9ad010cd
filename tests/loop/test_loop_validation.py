"""Validation during runs, loop.history and the Keras-shaped logs."""

from __future__ import annotations

import ast
import pathlib
import re

import keras
import numpy as np
import pytest
from keras_parity import BATCH, digits_data, sequential

import keras_trainloop as ktl


@pytest.fixture(scope="module")
def data():
    return digits_data(200, 60)


def _trainer(**kwargs):
    kwargs.setdefault("train_metrics", ["accuracy"])
    kwargs.setdefault("eval_metrics", ["accuracy"])
    return ktl.Trainer(
        sequential(), "sparse_categorical_crossentropy", keras.optimizers.Adam(1e-2), **kwargs
    )


def _datasets(data, loop_forever=False):
    x, y, xv, yv = data
    return (
        ktl.ArrayDataset(x, y, batch_size=BATCH, loop_forever=loop_forever),
        ktl.ArrayDataset(xv, yv, batch_size=BATCH),
    )


def test_run_steps_validates_every_validation_freq_steps_and_at_the_end(data):
    train, val = _datasets(data, loop_forever=True)
    trainer = _trainer()
    loop = ktl.Loop(trainer)
    at = []
    original = trainer.eval
    trainer.eval = lambda ds, **kw: (at.append(loop.loop_step), original(ds, **kw))[1]
    loop.run_steps(train, 12, validation_data=val, validation_freq=5)
    assert at == [5, 10, 12]
    assert loop.history.epoch == [5, 10, 12]
    assert len(loop.history.history["val_loss"]) == 3
    assert loop.shared_data["val_logs"] == {
        "val_loss": loop.history.history["val_loss"][-1],
        "val_accuracy": loop.history.history["val_accuracy"][-1],
    }
    expected = trainer.eval(val, return_dict=True)
    assert loop.history.history["val_loss"][-1] == pytest.approx(expected["loss"])


def test_validation_batch_hooks_run_in_priority_order_around_each_batch(data):
    # 60 validation examples: 2 batches of 50 and 10.
    train, val = _datasets(data)
    loop = ktl.Loop(_trainer())
    calls = []
    loop.on_validation_batch_end("b", 2, lambda loop, logs: calls.append(("end b", logs)))
    loop.on_validation_batch_end("a", 1, lambda loop, logs: calls.append(("end a", logs)))
    loop.on_validation_batch_begin("a", 1, lambda loop, batch: calls.append(("begin", batch)))
    loop.run_epochs(train, 1, validation_data=val)
    assert [c[0] if c[0] != "begin" else c for c in calls] == [
        ("begin", 0), "end a", "end b", ("begin", 1), "end a", "end b"
    ]  # fmt: skip
    assert calls[1][1] is calls[2][1]  # One logs dict per batch, shared.
    assert calls[-1][1] == {
        "loss": loop.history.history["val_loss"][-1],
        "accuracy": loop.history.history["val_accuracy"][-1],
    }

    def bad(loop, logs):
        raise RuntimeError("boom")

    loop.on_validation_batch_end("bad", 0, bad)
    with pytest.raises(ktl.HookError, match="OnValidationBatchEnd hook 'bad'") as info:
        loop.run_epochs(train, 1, validation_data=val)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(TypeError, match="fn\\(loop, batch\\)"):
        loop.on_validation_batch_begin("x", 0, lambda: None)


def test_run_steps_validation_is_aligned_with_the_global_step_across_runs(data):
    train, val = _datasets(data, loop_forever=True)
    loop = ktl.Loop(_trainer())
    loop.run_steps(train, 3)
    loop.run_steps(train, 9, validation_data=val, validation_freq=4)
    assert loop.history.epoch == [4, 8, 12]


def test_run_steps_without_validation_has_one_history_entry_per_run(data):
    train, _ = _datasets(data, loop_forever=True)
    loop = ktl.Loop(_trainer())
    loop.run_steps(train, 6)
    assert loop.history.epoch == [6]
    assert "val_loss" not in loop.history.history
    assert set(loop.history.history) >= {"loss", "accuracy", "batch_loss", "~loss"}


def test_run_epochs_validation_freq_as_int_and_as_list_of_epochs(data):
    train, val = _datasets(data)
    loop = ktl.Loop(_trainer())
    validated = []
    loop.on_epoch_end("seen", 0, lambda lp, m: validated.append("val_loss" in lp.logs(m)))
    loop.run_epochs(train, 4, validation_data=val, validation_freq=2)
    assert validated == [False, True, False, True]
    assert len(loop.history.history["val_loss"]) == 2
    validated.clear()
    loop.run_epochs(train, 3, validation_data=val, validation_freq=[1, 3])
    assert validated == [True, False, True]


def test_each_run_gets_a_fresh_history_as_each_fit_call(data):
    train, val = _datasets(data)
    loop = ktl.Loop(_trainer())
    loop.run_epochs(train, 2, validation_data=val)
    first = loop.history
    loop.run_epochs(train, 1, validation_data=val)
    assert loop.history is not first
    assert first.epoch == [0, 1] and loop.history.epoch == [0]


def test_progress_bar_shows_the_validation_values(data):
    import io

    train, val = _datasets(data, loop_forever=True)
    loop = ktl.Loop(_trainer())
    bar = ktl.commandline.attach_progress_bar(loop, output="plain", file=io.StringIO())
    loop.run_steps(train, 4, validation_data=val)
    assert "val_loss=" in bar.last_line and "val_accuracy=" in bar.last_line


# (x_val, y_val) is accepted as fit takes it (issue 17): see test_loop_fit_inputs.py.
@pytest.mark.parametrize(
    "bad, match",
    [
        ("val", "validation_data to be a finite ktl.Dataset"),
        (np.zeros((4, 64)), "validation_data to be a finite ktl.Dataset"),
    ],
    ids=["string", "bare_array"],
)
def test_bad_validation_data_is_refused_before_anything_runs(data, bad, match):
    train, _ = _datasets(data, loop_forever=True)
    trainer = _trainer()
    loop = ktl.Loop(trainer)
    with pytest.raises(TypeError, match=match):
        loop.run_steps(train, 3, validation_data=bad)
    assert loop.loop_step == 0 and trainer.global_step == 0


@pytest.mark.parametrize(
    "method, freq",
    [
        ("run_steps", 0),
        ("run_steps", 2.5),
        ("run_epochs", 0),
        ("run_epochs", None),
        ("run_epochs", [0, 2]),
        ("run_steps", [1, 2]),
        ("run_epochs", True),
    ],
    ids=[
        "steps-0",
        "steps-float",
        "epochs-0",
        "epochs-None",
        "epochs-list-0",
        "steps-list",
        "epochs-bool",
    ],
)
def test_bad_validation_freq_names_the_value(data, method, freq):
    train, val = _datasets(data, loop_forever=method == "run_steps")
    loop = ktl.Loop(_trainer())
    with pytest.raises(ValueError, match=re.escape(f"Received: validation_freq={freq!r}")):
        getattr(loop, method)(train, 2, validation_data=val, validation_freq=freq)
    assert loop.loop_step == 0


def test_logs_use_fits_names_and_keep_the_gomlx_short_names(data):
    train, _ = _datasets(data)
    trainer = _trainer(
        train_metrics=[
            "accuracy",
            "sparse_categorical_accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3"),
        ]
    )
    loop = ktl.Loop(trainer)
    seen = []
    loop.on_epoch_end("logs", 0, lambda lp, m: seen.append(lp.logs(m)))
    loop.run_epochs(train, 1)
    logs = seen[0]
    assert {
        "loss",
        "accuracy",
        "sparse_categorical_accuracy",
        "top3",
        "batch_loss",
        "~loss+",
        "~loss",
    } <= set(logs)
    assert all(type(v) is float for v in logs.values())
    assert loop.logs([]) is logs  # one dict for the event, to every hook


def test_train_metrics_restart_each_epoch_as_in_fit(data):
    train, _ = _datasets(data)
    loop = ktl.Loop(_trainer())
    firsts = []
    loop.on_batch_begin("noop", 0, lambda lp, step: None)

    def first_batch(lp, metrics):
        if lp.loop_step % 4 == 0:  # 4 batches an epoch
            firsts.append((lp.logs(metrics)["loss"], lp.logs(metrics)["batch_loss"]))

    loop.on_step("first", 0, first_batch)
    loop.run_epochs(train, 2)
    for mean_loss, batch_loss in firsts:  # the epoch's mean after its first batch
        assert mean_loss == pytest.approx(batch_loss)


def test_keras_bridge_uses_only_the_loops_public_api():
    import keras_trainloop.loop._keras_bridge as bridge

    tree = ast.parse(pathlib.Path(bridge.__file__).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("loop", "trainer"):
                private.append(f"{name}.{node.attr}")
    assert private == []


def test_a_third_party_driver_runs_the_hooks_through_an_external_run():
    loop = ktl.Loop(None)
    calls = []
    ktl.every_n_steps(loop, 2, "every2", 0, lambda lp, m: calls.append((lp.loop_step, m)))
    loop.on_end("end", 0, lambda lp, m: calls.append(("end", lp.loop_step, m)))
    run = loop.begin_external_run(10, 14)
    for step in range(10, 14):
        run.step(step, [float(step)])
    run.end()
    assert calls == [(11, [11.0]), (13, [13.0]), ("end", 14, [13.0])]
    assert loop.start_step == 10 and loop.end_step == 14 and len(loop.train_step_durations) == 4
