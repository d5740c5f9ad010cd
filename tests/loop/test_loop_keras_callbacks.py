"""Keras callbacks both ways: driven by the Loop, and the Loop's hooks driven by model.fit."""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest
from loop_helpers import Batches

import keras_trainloop as ktl


class RecordingCallback(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.events.append(("train_end", dict(logs)))


def _kinds(events):
    return [(e[0], e[1]) if len(e) > 1 and isinstance(e[1], int) else (e[0],) for e in events]


# Driven by the loop ------------------------------------------------------------------
def test_keras_callback_gets_every_event_of_run_epochs_in_order(trainer):
    loop = ktl.Loop(trainer)
    callback = RecordingCallback()
    loop.add_keras_callback(callback)
    loop.run_epochs(Batches([2]), 2)
    assert _kinds(callback.events) == [
        ("train_begin",),
        ("epoch_begin", 0),
        ("batch_begin", 0),
        ("batch_end", 0),
        ("batch_begin", 1),
        ("batch_end", 1),
        ("epoch_end", 0),
        ("epoch_begin", 1),
        ("batch_begin", 0),
        ("batch_end", 0),
        ("batch_begin", 1),
        ("batch_end", 1),
        ("epoch_end", 1),
        ("train_end",),
    ]
    assert callback.model is trainer.model
    assert callback.params == {"verbose": 1, "epochs": 2, "steps": None}  # Batches: no len


def test_keras_callback_logs_are_python_floats_named_after_the_train_metrics(trainer):
    loop = ktl.Loop(trainer)
    callback = RecordingCallback()
    loop.add_keras_callback(callback)
    losses = []
    loop.on_step("loss", 0, lambda lp, m: losses.append(float(m[0])))
    loop.run_steps(Batches(loop_forever=True), 3)
    batch_logs = [e[2] for e in callback.events if e[0] == "batch_end"]
    names = [m.short_name for m in trainer.train_metrics]
    assert list(batch_logs[0]) == ["loss", *names]
    assert all(type(v) is float for logs in batch_logs for v in logs.values())
    assert [logs["batch_loss"] for logs in batch_logs] == pytest.approx(losses)
    running_mean = np.cumsum(losses) / np.arange(1, 4)  # "loss" as in fit: the epoch's mean
    assert [logs["loss"] for logs in batch_logs] == pytest.approx(running_mean)
    assert [e[1] for e in callback.events if e[0] == "batch_end"] == [0, 1, 2]
    assert not any(e[0].startswith("epoch") for e in callback.events)  # run_steps: no epochs
    assert callback.params == {"verbose": 1, "epochs": 1, "steps": 3}


def test_keras_callback_without_batch_hooks_costs_no_per_step_work(trainer, monkeypatch):
    built = []
    original = ktl.Loop._build_logs

    def counting_logs(self, metrics):
        built.append(self.loop_step)
        return original(self, metrics)

    monkeypatch.setattr(ktl.Loop, "_build_logs", counting_logs)
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(keras.callbacks.CSVLogger("/dev/null"))
    assert not loop._on_step.hooks and not loop._on_batch_begin.hooks
    loop.run_epochs(Batches([4]), 2)
    # Two epoch ends (shared by the callback and loop.history); train end reuses the last.
    assert built == [4, 8]


def test_keras_callbacks_run_in_priority_order_with_loop_hooks(trainer):
    loop = ktl.Loop(trainer)
    order = []

    class Named(keras.callbacks.Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_train_batch_end(self, batch, logs=None):
            order.append(self.name)

    loop.add_keras_callback(Named("keras-late"), priority=5)
    loop.on_step("hook-mid", 0, lambda lp, m: order.append("hook-mid"))
    loop.add_keras_callback(Named("keras-early"), priority=-5)
    loop.run_steps(Batches(loop_forever=True), 1)
    assert order == ["keras-early", "hook-mid", "keras-late"]


def test_model_stop_training_stops_the_loop_gracefully(trainer):
    class StopAtBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.stop_training = True

    loop = ktl.Loop(trainer)
    loop.add_keras_callback(StopAtBatch())
    ends = []
    loop.on_end("end", 0, lambda lp, m: ends.append(lp.loop_step))
    loop.run_steps(Batches(loop_forever=True), 10)
    assert ends == [3]


def test_csv_logger_writes_one_row_per_epoch(trainer, tmp_path):
    path = tmp_path / "log.csv"
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(keras.callbacks.CSVLogger(str(path)))
    loop.run_epochs(Batches([3]), 3)
    rows = list(csv.DictReader(path.open()))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert {"loss", "batch_loss"} <= set(rows[0])
    assert all(math.isfinite(float(row["loss"])) for row in rows)


def test_early_stopping_on_loss_stops_run_epochs(trainer):
    # No epoch can improve by min_delta, so it stops after patience + 1 epochs.
    early = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(early)
    ds = Batches([3])
    loop.run_epochs(ds, 10)
    assert early.stopped_epoch == 1
    assert (loop.epoch, loop.loop_step, loop.end_step) == (2, 6, 6)
    assert ds.resets == 2


def test_early_stopping_restores_the_best_weights_into_training(trainer):
    early = keras.callbacks.EarlyStopping(
        monitor="loss", patience=1, min_delta=1e9, restore_best_weights=True
    )
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(early)
    snapshots = []
    loop._on_epoch_end.add(
        "snapshot",
        -1,
        lambda lp, m: snapshots.append([np.array(w) for w in trainer.model.get_weights()]),
    )
    loop.run_epochs(Batches([3]), 10)
    restored = trainer.model.get_weights()
    for got, want in zip(restored, snapshots[0]):
        np.testing.assert_allclose(got, want)
    loop.run_steps(Batches(loop_forever=True), 1)  # trains on from the restored weights


def test_terminate_on_nan_stops_at_the_bad_step(trainer, capsys):
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(keras.callbacks.TerminateOnNaN())
    ended = []
    loop.on_end("ended", 0, lambda lp, metrics: ended.append(lp.loop_step))
    ds = Batches(loop_forever=True, nan_at=3)
    loop.run_steps(ds, 40)  # a graceful stop, as fit: no error, on_end hooks run
    assert ds.yields == 4  # stopped right away instead of at the next 16-step sync
    assert ended == [4] and loop.loop_step == 4
    assert "Batch 3: Invalid loss, terminating training" in capsys.readouterr().out


def test_tensorboard_writes_batch_and_epoch_scalars(trainer, tmp_path):
    # Keras' TensorBoard callback needs the `tensorboard` package besides TensorFlow.
    pytest.importorskip("tensorboard", reason="keras.callbacks.TensorBoard needs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop = ktl.Loop(trainer)
    loop.add_keras_callback(keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=2))
    # 4 batches per epoch: Keras records epoch scalars only when its batch count is a
    # multiple of update_freq (as in fit).
    loop.run_epochs(Batches([4]), 2)
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "train"), purge_orphaned_data=False)
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"batch_loss", "epoch_loss", "epoch_~loss", "epoch_learning_rate"} <= tags
    assert [e.step for e in events.Tensors("epoch_loss")] == [0, 1]
    assert [e.step for e in events.Tensors("batch_loss")] == [2, 4, 6, 8]


def test_add_keras_callback_rejects_other_objects_and_trainerless_loops(trainer):
    with pytest.raises(
        TypeError,
        match=r"expects a keras.callbacks.Callback. Received: "
        r"callback='csv'",
    ):
        ktl.Loop(trainer).add_keras_callback("csv")
    with pytest.raises(TypeError, match=r"needs a loop with a trainer"):
        ktl.Loop(None).add_keras_callback(keras.callbacks.Callback())


# The loop driven by model.fit ---------------------------------------------------------------
def _keras_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return model


def _xy(n=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, x.sum(axis=1, keepdims=True)


def test_as_keras_callback_fires_hooks_on_schedule_from_fit():
    loop = ktl.Loop(None)
    events = []
    loop.on_start("start", 0, lambda lp, ds: events.append(("start", lp.loop_step, ds)))
    ktl.every_n_steps(loop, 3, "every3", 0, lambda lp, m: events.append(("every3", lp.loop_step)))
    loop.on_step("epoch", 1, lambda lp, m: events.append(("step", lp.loop_step, lp.epoch)))
    loop.on_end("end", 0, lambda lp, m: events.append(("end", lp.loop_step, lp.end_step)))
    model = _keras_model()
    x, y = _xy()
    model.fit(x, y, batch_size=5, epochs=2, verbose=0, callbacks=[loop.as_keras_callback()])
    assert events[0] == ("start", 0, None)
    assert [e[1] for e in events if e[0] == "every3"] == [2, 5]
    assert [e[1:] for e in events if e[0] == "step"] == [(s, s // 4) for s in range(8)]
    assert events[-1] == ("end", 8, 8)
    assert loop.start_step == 0 and len(loop.train_step_durations) == 8


def test_as_keras_callback_metrics_are_loss_first_then_other_logs():
    loop = ktl.Loop(None)
    seen = []
    loop.on_step("m", 0, lambda lp, m: seen.append(m))

    class Logs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_train_batch_end(self, batch, logs=None):
            self.logs.append(dict(logs))

    logs = Logs()
    model = _keras_model()
    x, y = _xy()
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[loop.as_keras_callback(), logs])
    assert [m[0] for m in seen] == [entry["loss"] for entry in logs.logs]
    assert [m[1:] for m in seen] == [[v for k, v in e.items() if k != "loss"] for e in logs.logs]


def test_as_keras_callback_continues_from_the_optimizer_iterations():
    loop = ktl.Loop(None)
    steps = []
    loop.on_step("steps", 0, lambda lp, m: steps.append(lp.loop_step))
    model = _keras_model()
    x, y = _xy()
    callback = loop.as_keras_callback()
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[callback])
    assert steps == [0, 1, 2, 3, 4, 5]
    assert loop.start_step == 4


def test_as_keras_callback_fires_epoch_and_validation_hooks_with_fits_logs():
    loop = ktl.Loop(None)
    events = []
    loop.on_epoch_begin("eb", 0, lambda lp, epoch: events.append(("epoch_begin", epoch)))
    loop.on_step("step", 0, lambda lp, m: events.append(("step", lp.logs(m))))
    loop.on_validation_begin("vb", 0, lambda lp, ds: events.append(("val_begin", ds)))
    loop.on_validation_end("ve", 0, lambda lp, logs: events.append(("val_end", logs)))
    loop.on_epoch_end("ee", 0, lambda lp, m: events.append(("epoch_end", lp.epoch, lp.logs(m))))
    loop.on_end("end", 0, lambda lp, m: events.append(("end", lp.logs(m))))

    class Logs(keras.callbacks.Callback):  # Runs after the loop's callback: sees its writes.
        def __init__(self):
            super().__init__()
            self.epoch_logs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append(logs)

    fit_logs = Logs()
    model = _keras_model()
    x, y = _xy()
    loop.on_epoch_end("write", 1, lambda lp, m: lp.logs(m).update(written=lp.epoch))
    model.fit(
        x,
        y,
        batch_size=10,
        epochs=2,
        verbose=0,
        validation_data=(x[:10], y[:10]),
        callbacks=[loop.as_keras_callback(), fit_logs],
    )
    kinds = [e[0] for e in events]
    assert kinds == (["epoch_begin", "step", "step", "val_begin", "val_end", "epoch_end"] * 2) + [
        "end"
    ]
    assert events[3] == ("val_begin", None)
    epoch_ends = [e for e in events if e[0] == "epoch_end"]
    assert [e[1] for e in epoch_ends] == [0, 1]
    for (_, _, logs), fit_epoch_logs in zip(epoch_ends, fit_logs.epoch_logs):
        assert logs is fit_epoch_logs  # fit's own dict: one logs dict per event.
        assert {"loss", "val_loss"} <= set(logs)
    assert [e[1]["loss"] for e in events if e[0] == "val_end"] == [
        e[2]["val_loss"] for e in epoch_ends
    ]
    assert fit_logs.epoch_logs[1]["written"] == 1
    assert loop.shared_data["val_logs"]["val_loss"] == epoch_ends[-1][2]["val_loss"]
    assert events[-1][1]["loss"] == epoch_ends[-1][2]["loss"]


def test_loop_stop_from_a_hook_stops_fit():
    loop = ktl.Loop(None)
    loop.on_step("stop", 0, lambda lp, m: lp.stop() if lp.loop_step == 2 else None)
    model = _keras_model()
    x, y = _xy()
    history = model.fit(
        x, y, batch_size=5, epochs=5, verbose=0, callbacks=[loop.as_keras_callback()]
    )
    assert loop.loop_step == loop.end_step == 3
    assert len(history.history["loss"]) == 1
    assert int(model.optimizer.iterations) == 3


def test_hook_error_inside_fit_is_a_hook_error():
    loop = ktl.Loop(None)
    loop.on_step("bad", 0, lambda lp, m: 1 / 0)
    model = _keras_model()
    x, y = _xy()
    with pytest.raises(
        ktl.HookError,
        match=r"OnStep hook 'bad' raised ZeroDivisionError at "
        r"loop step 0",
    ):
        model.fit(x, y, batch_size=5, epochs=1, verbose=0, callbacks=[loop.as_keras_callback()])
