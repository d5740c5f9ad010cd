"""Keras callbacks under `model.fit` and under the Loop, side by side: what each observes."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from keras_parity import BATCH, digits_data, fit_run, loop_run, sequential, twin_models

import keras_trainloop as ktl


@pytest.fixture(scope="module")
def data():
    return digits_data()


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_history_has_fits_values_epoch_by_epoch(data):
    fit_model, loop_model = twin_models()
    history = fit_run(fit_model, data, [], 3)
    loop = loop_run(loop_model, data, [], 3)
    assert isinstance(loop.history, keras.callbacks.History)
    assert loop.history.epoch == history.epoch == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        _close(loop.history.history[key], history.history[key])
    for fit_w, loop_w in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(loop_w, fit_w)
    assert loop_model.history is loop.history  # as fit sets model.history


def test_early_stopping_on_val_loss_stops_at_fits_epoch(data):
    def early_stopping():
        return keras.callbacks.EarlyStopping(patience=0, min_delta=0.2)  # monitor="val_loss"

    fit_model, loop_model = twin_models()
    history = fit_run(fit_model, data, [early_stopping()], 8, optimizer=keras.optimizers.SGD(0.5))
    loop = loop_run(loop_model, data, [early_stopping()], 8, optimizer=keras.optimizers.SGD(0.5))
    assert len(history.epoch) < 8  # it did stop early
    assert loop.history.epoch == history.epoch
    assert loop.epoch == len(history.epoch)


@pytest.mark.parametrize(
    "make_callback",
    [
        lambda: keras.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=0.5, patience=0, min_delta=10.0
        ),
        lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
    ],
    ids=["ReduceLROnPlateau", "LearningRateScheduler"],
)
def test_learning_rate_written_into_logs_reaches_history_and_csv_logger(
    data, tmp_path, make_callback
):
    fit_model, loop_model = twin_models()
    fit_csv, loop_csv = tmp_path / "fit.csv", tmp_path / "loop.csv"
    history = fit_run(fit_model, data, [make_callback(), keras.callbacks.CSVLogger(fit_csv)], 3)
    loop = loop_run(loop_model, data, [make_callback(), keras.callbacks.CSVLogger(loop_csv)], 3)
    assert "learning_rate" in history.history
    _close(loop.history.history["learning_rate"], history.history["learning_rate"])
    with open(fit_csv) as f_fit, open(loop_csv) as f_loop:
        fit_rows, loop_rows = list(csv.DictReader(f_fit)), list(csv.DictReader(f_loop))
    _close(
        [float(r["learning_rate"]) for r in loop_rows],
        [float(r["learning_rate"]) for r in fit_rows],
    )
    _close([float(r["val_loss"]) for r in loop_rows], [float(r["val_loss"]) for r in fit_rows])
    _close(float(loop_model.optimizer.learning_rate), float(fit_model.optimizer.learning_rate))


def test_one_logs_dict_per_event_is_shared_by_all_callbacks(data):
    seen = []

    class Writes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["written"] = float(epoch)

    class Reads(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((id(logs), logs.get("written")))

    loop = loop_run(sequential(), data, [Writes(), Reads()], 2)
    assert [value for _, value in seen] == [0.0, 1.0]
    assert loop.history.history["written"] == [0.0, 1.0]


def test_model_checkpoint_saves_the_users_model_as_keras_file(data, tmp_path):
    path = tmp_path / "model_{epoch}.keras"
    model = sequential()
    loop = loop_run(model, data, [keras.callbacks.ModelCheckpoint(str(path))], 2)
    assert loop.trainer.model is model
    reloaded = keras.models.load_model(tmp_path / "model_2.keras")
    for saved, trained in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(saved, trained)
    x = data[2][:8]
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


def test_a_keras_file_saved_during_a_run_loads_compiled_as_one_saved_during_fit(data, tmp_path):
    # The user's model was not compiled: the Trainer compiles it with its own pieces.
    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [keras.callbacks.ModelCheckpoint(str(tmp_path / "fit.keras"))], 2)
    loop_run(loop_model, data, [keras.callbacks.ModelCheckpoint(str(tmp_path / "loop.keras"))], 2)
    fit_saved = keras.models.load_model(tmp_path / "fit.keras")
    loop_saved = keras.models.load_model(tmp_path / "loop.keras")
    assert fit_saved.compiled and loop_saved.compiled
    configs = [m.get_compile_config() for m in (loop_saved, fit_saved)]
    for config in configs:
        del config["optimizer"]["config"]["name"]  # "adam_1", "adam_2": Keras numbers them.
    assert configs[0] == configs[1]
    assert int(loop_saved.optimizer.iterations) == int(fit_saved.optimizer.iterations) == 12
    for a, b in zip(loop_saved.optimizer.variables, fit_saved.optimizer.variables):
        _close(a, b)  # The optimizer's state, current when the callback saved.
    x, y = data[2], data[3]
    fit_logs = fit_saved.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    loop_logs = loop_saved.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    assert sorted(loop_logs) == sorted(fit_logs) == ["accuracy", "loss"]
    for key in fit_logs:
        _close(loop_logs[key], fit_logs[key])


def test_only_what_keras_can_load_back_is_compiled_into_the_users_model():
    compiled = sequential()
    compiled.compile(keras.optimizers.SGD(0.1), "mse")
    ktl.Trainer(compiled, "sparse_categorical_crossentropy", "adam")
    assert compiled.get_compile_config()["loss"] == "mse"  # The user's own compile is kept.
    python_loss = sequential()
    ktl.Trainer(python_loss, ktl.losses.sparse_categorical_cross_entropy_logits, "adam")
    assert not python_loss.compiled  # load_model could not rebuild a Python loss_fn.
    own_metrics = sequential()
    ktl.Trainer(
        own_metrics,
        keras.losses.SparseCategoricalCrossentropy(),
        "adam",
        eval_metrics=[ktl.metrics.SparseCategoricalAccuracy(), keras.metrics.MeanSquaredError()],
    )
    metrics = own_metrics.get_compile_config()["metrics"]
    assert [m["class_name"] for m in metrics] == ["MeanSquaredError"]  # Keras' copy only.


def test_saved_weights_load_into_a_fresh_copy_of_the_architecture(data, tmp_path):
    model = sequential()
    loop_run(model, data, [], 1)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    fresh = sequential(seed=7)
    fresh.load_weights(path)
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_full_model_checkpoint_of_a_model_fn_is_a_clear_error(tmp_path):
    def model_fn(ctx, spec, inputs):
        return [ctx.layer("dense", lambda: keras.layers.Dense(2))(inputs[0])]

    trainer = ktl.Trainer(model_fn, "mse", "sgd")
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras")))
    x = np.ones((8, 3), np.float32)
    with pytest.raises(ktl.HookError, match="save_weights_only=True") as info:
        loop.run_epochs(ktl.ArrayDataset(x, np.zeros((8, 2), np.float32), batch_size=4), 1)
    assert isinstance(info.value.__cause__, ValueError)
    assert "model_fn" in str(info.value.__cause__)
    # Saving the weights works.
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(
        keras.callbacks.ModelCheckpoint(str(tmp_path / "m.weights.h5"), save_weights_only=True)
    )
    loop.run_epochs(ktl.ArrayDataset(x, np.zeros((8, 2), np.float32), batch_size=4), 1)
    assert (tmp_path / "m.weights.h5").exists()


def test_orbax_checkpoint_saves_the_full_users_model_as_fit(data, tmp_path):
    pytest.importorskip("orbax.checkpoint")
    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [keras.callbacks.OrbaxCheckpoint(str(tmp_path / "fit"))], 2)
    loop_run(loop_model, data, [keras.callbacks.OrbaxCheckpoint(str(tmp_path / "loop"))], 2)
    fit_saved = sorted(p.name for p in (tmp_path / "fit").iterdir())
    assert fit_saved  # fit saved something
    assert sorted(p.name for p in (tmp_path / "loop").iterdir()) == fit_saved


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_backup_and_restore_resumes_at_the_recorded_epoch_as_fit_does(data, tmp_path):
    fit_model, loop_model = twin_models()
    fit_epochs, loop_epochs = _Epochs(), _Epochs()
    fit_backup = keras.callbacks.BackupAndRestore(str(tmp_path / "fit"))
    with pytest.raises(RuntimeError):
        fit_run(fit_model, data, [fit_backup, _Interrupt()], 4)
    fit_run(fit_model, data, [fit_backup, fit_epochs], 4)

    loop_backup = keras.callbacks.BackupAndRestore(str(tmp_path / "loop"))
    with pytest.raises(ktl.HookError, match="interrupted"):
        loop_run(loop_model, data, [loop_backup, _Interrupt()], 4)
    resumed = sequential(seed=3)  # a new process: fresh weights, restored from the backup
    loop = loop_run(resumed, data, [loop_backup, loop_epochs], 4)
    assert fit_epochs.epochs == [2, 3]
    assert loop_epochs.epochs == fit_epochs.epochs
    assert loop.history.epoch == [2, 3]


def test_backup_and_restore_builds_a_model_fn_model_before_train_begin(tmp_path):
    def model_fn(ctx, spec, inputs):
        return [ctx.layer("dense", lambda: keras.layers.Dense(1))(inputs[0])]

    x = np.ones((8, 3), np.float32)
    ds = ktl.ArrayDataset(x, np.zeros((8, 1), np.float32), batch_size=4)
    trainer = ktl.Trainer(model_fn, "mse", "sgd")
    loop = ktl.Loop(trainer)
    loop.add_keras_callback(
        keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)
    )
    loop.run_epochs(ds, 2)
    assert loop.loop_step == 4  # the batch read to build the model was trained on
    metadata = json.loads((tmp_path / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2


def test_epoch_end_callbacks_see_and_write_the_current_weights(data):
    def callbacks(model, seen):
        def on_epoch_end(epoch, logs):
            seen.append([w.copy() for w in model.get_weights()])  # held by reference
            if epoch == 0:
                model.layers[0].kernel.assign(np.zeros((64, 32), np.float32))

        return [keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)]

    fit_model, loop_model = twin_models()
    fit_seen, loop_seen = [], []
    fit_run(fit_model, data, callbacks(fit_model, fit_seen), 2, validation=False)
    loop_run(loop_model, data, callbacks(loop_model, loop_seen), 2, validation=False)
    for fit_weights, loop_weights in zip(fit_seen, loop_seen):
        for a, b in zip(fit_weights, loop_weights):
            _close(b, a)
    assert not np.allclose(loop_seen[0][0], loop_seen[1][0])


def test_progbar_logger_prints_as_under_fit(data, capsys):
    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [], 2, validation=False, verbose=1)  # fit's own ProgbarLogger
    fit_out = capsys.readouterr().out
    loop_run(loop_model, data, [keras.callbacks.ProgbarLogger()], 2, validation=False)
    loop_out = capsys.readouterr().out
    steps = len(data[0]) // BATCH
    for out in (fit_out, loop_out):
        assert "Epoch 1/2" in out and "Epoch 2/2" in out
        assert f"{steps}/{steps}" in out
        assert "loss:" in out and "accuracy:" in out


@pytest.mark.parametrize("loss_scaled", [False, True], ids=["adam", "loss-scaled-adam"])
def test_ema_optimizer_ends_the_run_with_the_ema_weights_as_fit(data, loss_scaled):
    def ema():
        adam = keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9)
        return keras.optimizers.LossScaleOptimizer(adam) if loss_scaled else adam

    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [], 2, optimizer=ema(), validation=False)
    loop_run(loop_model, data, [], 2, optimizer=ema(), validation=False)
    for a, b in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(b, a)


def test_swap_ema_weights_validates_with_the_ema_weights_as_fit(data):
    def ema():
        return keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9)

    fit_model, loop_model = twin_models()
    history = fit_run(fit_model, data, [keras.callbacks.SwapEMAWeights()], 3, optimizer=ema())
    loop = loop_run(loop_model, data, [keras.callbacks.SwapEMAWeights()], 3, optimizer=ema())
    _close(loop.history.history["val_loss"], history.history["val_loss"])
    for a, b in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(b, a)


def test_model_checkpoint_every_n_batches_writes_fits_files(data, tmp_path):
    def checkpoint(folder):
        return keras.callbacks.ModelCheckpoint(
            str(tmp_path / folder / "w_{epoch}_{batch}.weights.h5"),
            save_weights_only=True,
            save_freq=4,
        )

    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [checkpoint("fit")], 2)
    loop_run(loop_model, data, [checkpoint("loop")], 2)
    fit_files = sorted(p.name for p in (tmp_path / "fit").iterdir())
    assert len(fit_files) >= 2
    assert sorted(p.name for p in (tmp_path / "loop").iterdir()) == fit_files
    last = fit_files[-1]
    fit_model.load_weights(tmp_path / "fit" / last)
    loop_model.load_weights(tmp_path / "loop" / last)
    for a, b in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(b, a)


def test_tensorboard_writes_the_users_model_summary_and_scalars(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop_run(sequential(), data, [keras.callbacks.TensorBoard(str(tmp_path))], 2)
    events = EventAccumulator(str(tmp_path / "train"), purge_orphaned_data=False)
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert "keras" in tags  # the model summary, written for Sequential/Functional models
    assert {"epoch_loss", "epoch_accuracy"} <= tags
    val = EventAccumulator(str(tmp_path / "validation"), purge_orphaned_data=False)
    val.Reload()
    assert "epoch_loss" in set(val.Tags()["tensors"])  # from val_loss, as under fit


class _TrainEndRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.events.append(("train_end",))


def _nan_at_batch_1():
    """8 examples, a NaN in the 2nd batch of 4; validation data beside."""
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    x[5] = np.nan
    return x, np.ones((8, 1), np.float32), x[:4], np.zeros((4, 1), np.float32)


def _dense_twins():
    first = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    second = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    second.set_weights(first.get_weights())
    return first, second


def _nan_runs(terminate, **fit_kwargs):
    """The same run under fit and the Loop; each returns its History or its error."""
    x, y, xv, yv = _nan_at_batch_1()
    fit_model, loop_model = _dense_twins()
    out = {}
    fit_model.compile("sgd", "mse")
    fit_rec, loop_rec = _TrainEndRecorder(), _TrainEndRecorder()
    try:
        out["fit"] = fit_model.fit(
            x,
            y,
            batch_size=4,
            epochs=3,
            shuffle=False,
            verbose=0,
            validation_data=(xv, yv),
            callbacks=[fit_rec, terminate()],
        )
    except RuntimeError as error:
        out["fit"] = error
    loop = ktl.Loop(ktl.Trainer(loop_model, "mse", "sgd"))
    loop.add_keras_callback(loop_rec)
    loop.add_keras_callback(terminate())
    try:
        loop.run_epochs(
            ktl.ArrayDataset(x, y, batch_size=4),
            3,
            validation_data=ktl.ArrayDataset(xv, yv, batch_size=4),
        )
        out["loop"] = loop.history
    except RuntimeError as error:
        out["loop"] = error
    return out, (fit_rec, loop_rec), (fit_model, loop_model), loop


def test_terminate_on_nan_stops_the_run_gracefully_at_the_bad_batch_as_fit(capsys):
    out, (fit_rec, loop_rec), (fit_model, loop_model), loop = _nan_runs(
        keras.callbacks.TerminateOnNaN
    )
    fit_h, loop_h = out["fit"].history, out["loop"].history
    assert len(fit_h["loss"]) == len(loop_h["loss"]) == 1  # no error, one epoch in history
    for key in ("loss", "val_loss"):
        np.testing.assert_equal(np.asarray(loop_h[key]), np.asarray(fit_h[key]))  # NaN/Inf
    assert loop_rec.events == fit_rec.events == [("epoch_end", 0), ("train_end",)]
    assert loop.loop_step == 2 and int(loop_model.optimizer.iterations) == 2
    for got, want in zip(loop_model.get_weights(), fit_model.get_weights()):
        np.testing.assert_equal(got, want)
    assert capsys.readouterr().out.count("Batch 1: Invalid loss, terminating training") == 2


def test_an_inf_batch_loss_keeps_the_epoch_loss_inf_as_fit():
    x = np.ones((4, 1), np.float32)
    y = np.array([[1.0], [1.0], [np.inf], [np.inf]], np.float32)
    models = [keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    models[0].compile("sgd", "mse")
    fit_h = (
        models[0]
        .fit(
            x,
            y,
            batch_size=2,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
        .history
    )
    loop = ktl.Loop(ktl.Trainer(models[1], "mse", "sgd"))
    loop.add_keras_callback(keras.callbacks.TerminateOnNaN())
    loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=2), 2)
    assert np.isinf(fit_h["loss"][0])
    assert loop.history.history["loss"] == fit_h["loss"]


def test_terminate_on_nan_with_raise_error_raises_without_on_train_end_as_fit():
    out, (fit_rec, loop_rec), _, loop = _nan_runs(
        lambda: keras.callbacks.TerminateOnNaN(raise_error=True)
    )
    assert isinstance(out["loop"], ktl.HookError) and isinstance(out["loop"], RuntimeError)
    assert "NaN or Inf loss encountered at batch 1" in str(out["fit"])
    assert "NaN or Inf loss encountered at batch 1" in str(out["loop"])
    assert loop_rec.events == fit_rec.events == []  # on_train_end did not run
    assert loop.loop_step == 2


def test_a_nan_loss_without_a_stopping_callback_still_raises_non_finite_loss_error():
    x, y, _, _ = _nan_at_batch_1()
    loop = ktl.Loop(ktl.Trainer(_dense_twins()[0], "mse", "sgd"))
    with pytest.raises(ktl.NonFiniteLossError, match="at step 1"):
        loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=4), 3)


class _TestBatchRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_test_begin(self, logs=None):
        self.events.append(("test_begin",))

    def on_test_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch))

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch, dict(logs)))

    def on_test_end(self, logs=None):
        self.events.append(("test_end", dict(logs)))


def test_validation_batches_reach_on_test_batch_hooks_with_fits_logs(data):
    x, y, xv, yv = data
    data = (x, y, xv[:75], yv[:75])  # Two validation batches, the last one short.
    fit_model, loop_model = twin_models()
    fit_rec, loop_rec = _TestBatchRecorder(), _TestBatchRecorder()
    fit_run(fit_model, data, [fit_rec], 2)
    loop_run(loop_model, data, [loop_rec], 2)
    assert [e[:2] for e in loop_rec.events] == [e[:2] for e in fit_rec.events]
    assert [e[1] for e in loop_rec.events if e[0] == "batch_end"] == [0, 1, 0, 1]
    for fit_event, loop_event in zip(fit_rec.events, loop_rec.events):
        if fit_event[0] == "batch_end":
            assert set(loop_event[2]) == set(fit_event[2]) == {"loss", "accuracy"}
            for key in fit_event[2]:
                _close(loop_event[2][key], fit_event[2][key])


@pytest.mark.parametrize("monitor", ["val_accuracy", "accuracy"])
def test_monitor_callbacks_in_auto_mode_find_the_metrics_direction_as_under_fit(
    data, tmp_path, monitor
):
    def callbacks(directory):
        return [
            keras.callbacks.EarlyStopping(monitor=monitor, patience=1, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=0),
            keras.callbacks.ModelCheckpoint(
                str(directory / "best-{epoch:02d}.weights.h5"),
                monitor=monitor,
                save_best_only=True,
                save_weights_only=True,
            ),
        ]

    (tmp_path / "fit").mkdir()
    (tmp_path / "loop").mkdir()
    fit_model, loop_model = twin_models()
    fit_callbacks, loop_callbacks = callbacks(tmp_path / "fit"), callbacks(tmp_path / "loop")
    sgd = lambda: keras.optimizers.SGD(0.3)
    history = fit_run(fit_model, data, fit_callbacks, 8, optimizer=sgd())
    loop = loop_run(loop_model, data, loop_callbacks, 8, optimizer=sgd())
    assert loop.history.epoch == history.epoch
    _close(loop.history.history["learning_rate"], history.history["learning_rate"])
    assert sorted(p.name for p in (tmp_path / "loop").iterdir()) == sorted(
        p.name for p in (tmp_path / "fit").iterdir()
    )
    assert loop_callbacks[0].best_epoch == fit_callbacks[0].best_epoch
    for fit_w, loop_w in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(loop_w, fit_w)  # The best epoch's weights, restored.


def test_a_model_fns_metric_gives_auto_mode_its_direction():
    x, y, xv, yv = digits_data(200, 50)

    def model_fn(ctx, spec, inputs):
        hidden = ctx.layer("hidden", lambda: keras.layers.Dense(16, activation="relu"))
        return [ctx.layer("logits", lambda: keras.layers.Dense(10))(hidden(inputs[0]))]

    trainer = ktl.Trainer(
        model_fn,
        ktl.losses.sparse_categorical_cross_entropy_logits,
        "sgd",
        eval_metrics=["accuracy"],
    )
    loop = ktl.Loop(trainer)
    stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=10)
    unknown = keras.callbacks.EarlyStopping(monitor="val_nonexistent", patience=10)
    loop.add_keras_callback(stopping)
    loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=BATCH), 2, validation_data=(xv, yv))
    assert stopping.mode == "max"
    assert stopping.best == max(loop.history.history["val_accuracy"])
    loop.add_keras_callback(unknown)  # A name no metric has: Keras' own error, as under fit.
    with pytest.raises(ktl.HookError, match="mode='max'"):
        loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=BATCH), 1, validation_data=(xv, yv))


@pytest.mark.parametrize(
    ("mode", "monitor", "expected"),
    [
        ("max", "val_mse", "max"),
        ("min", "val_loss", "min"),
        ("auto", "val_mse", "min"),
        ("auto", "loss", "min"),
        ("auto", "acc", "max"),
        ("auto", "val_accuracy", "max"),
        ("auto", "hinge", "min"),
        ("auto", "f1_score", "max"),
    ],
)
def test_early_stopping_picks_fits_direction_for_each_kind_of_metric(mode, monitor, expected):
    rng = np.random.default_rng(0)
    x = rng.random((40, 2)).astype(np.float32)
    y = (x[:, :1] > 0.5).astype(np.float32)

    def metrics():
        return ["mse", "acc", "accuracy", "hinge", keras.metrics.F1Score(name="f1_score")]

    model = keras.Sequential([keras.layers.Dense(1, activation="relu"), keras.layers.Dense(1)])
    trainer = ktl.Trainer(model, "mae", "adam", train_metrics=metrics(), eval_metrics=metrics())
    loop = ktl.Loop(trainer)
    stopping = keras.callbacks.EarlyStopping(patience=0, monitor=monitor, mode=mode)
    loop.add_keras_callback(stopping)
    loop.run_epochs(ktl.as_dataset(x, y, batch_size=5), 2, validation_data=(x[:10], y[:10]))
    assert stopping.monitor_op is (keras.ops.greater if expected == "max" else keras.ops.less)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)),
        lambda: keras.optimizers.Adam(1e-2, loss_scale_factor=64.0),
    ],
    ids=["LossScaleOptimizer", "loss_scale_factor"],
)
def test_loss_scaling_optimizers_train_as_under_fit(data, make_optimizer):
    fit_model, loop_model = twin_models()
    history = fit_run(fit_model, data, [], 2, optimizer=make_optimizer())
    loop = loop_run(loop_model, data, [], 2, optimizer=make_optimizer())
    _close(loop.history.history["loss"], history.history["loss"])
    for fit_w, loop_w in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(loop_w, fit_w)


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling_as_fit(data, mixed_float16):
    fit_model, loop_model = twin_models()
    history = fit_run(fit_model, data, [], 2)
    loop = loop_run(loop_model, data, [], 2)
    assert isinstance(loop.trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(fit_model.optimizer, keras.optimizers.LossScaleOptimizer)
    _close(loop.history.history["loss"], history.history["loss"])
    for fit_w, loop_w in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(np.asarray(loop_w, np.float32), np.asarray(fit_w, np.float32))
    assert loop.trainer.global_step == int(fit_model.optimizer.iterations)


def test_class_weight_trains_as_fit_with_class_weight(data):
    x, y, _, _ = data
    class_weight = {0: 3.0, 1: 0.5, 7: 2.0}
    fit_model, loop_model = twin_models()
    fit_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = fit_model.fit(
        x, y, class_weight=class_weight, batch_size=BATCH, epochs=2, shuffle=False, verbose=0
    )
    trainer = ktl.Trainer(
        loop_model, "sparse_categorical_crossentropy", keras.optimizers.Adam(1e-2)
    )
    loop = ktl.Loop(trainer)
    loop.run_epochs(ktl.as_dataset(x, y, class_weight=class_weight, batch_size=BATCH), 2)
    _close(loop.history.history["loss"], history.history["loss"])
    for fit_w, loop_w in zip(fit_model.get_weights(), loop_model.get_weights()):
        _close(loop_w, fit_w)


def test_lambda_callbacks_of_two_arguments_get_fits_events_and_logs_keyword(data):
    """fit passes `logs` to every event (`logs=` to the batch ones), so lambdas of
    `(batch, logs)` and callbacks that take `logs` by keyword work."""
    events = {"fit": [], "loop": []}

    def lambdas(seen):
        def note(kind):
            return lambda index, logs: seen.append((kind, index, isinstance(logs, dict)))

        return keras.callbacks.LambdaCallback(
            on_train_batch_begin=note("batch_begin"),
            on_train_batch_end=note("batch_end"),
            on_test_batch_begin=note("test_batch_begin"),
            on_test_batch_end=note("test_batch_end"),
            on_epoch_begin=note("epoch_begin"),
            on_epoch_end=note("epoch_end"),
        )

    class KeywordLogs(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, *, logs):
            events["loop" if self.model is loop_model else "fit"].append(("kw", batch))

    fit_model, loop_model = twin_models()
    fit_run(fit_model, data, [lambdas(events["fit"]), KeywordLogs()], 2)
    loop_run(loop_model, data, [lambdas(events["loop"]), KeywordLogs()], 2)
    assert events["loop"] == events["fit"]
    assert ("test_batch_end", 0, True) in events["loop"] and ("kw", 0) in events["loop"]


def test_a_callbacks_type_error_reaches_the_user_as_a_type_error_as_under_fit(data):
    x, y, _, _ = data

    def adam_on_a_schedule():
        model = sequential()
        schedule = keras.optimizers.schedules.PolynomialDecay(0.1, decay_steps=10)
        return model, keras.optimizers.Adam(schedule)

    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
    model, optimizer = adam_on_a_schedule()
    model.compile(optimizer, "sparse_categorical_crossentropy")
    with pytest.raises(TypeError, match="created with a `LearningRateSchedule`") as under_fit:
        model.fit(x, y, epochs=2, verbose=0, callbacks=[scheduler])
    model, optimizer = adam_on_a_schedule()
    loop = ktl.Loop(ktl.Trainer(model, "sparse_categorical_crossentropy", optimizer))
    loop.add_keras_callback(keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2))
    with pytest.raises(TypeError, match="created with a `LearningRateSchedule`") as under_loop:
        loop.run_epochs(ktl.ArrayDataset(x, y, batch_size=BATCH), 2)
    assert isinstance(under_loop.value, ktl.HookError)
    assert str(under_fit.value) in str(under_loop.value)


class _CountingModel(keras.Model):
    """No trainable variable: its call counts itself in a non-trainable one."""

    def __init__(self):
        super().__init__()
        self.calls = self.add_variable(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        self.calls.assign(self.calls + 1)
        return inputs


def test_a_keras_model_without_trainable_variables_trains_its_state_as_under_fit():
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(8, 1)
    seen = {"fit": [], "loop": []}

    class CallsAtBatchEnd(keras.callbacks.Callback):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def on_batch_end(self, batch, logs=None):
            seen[self.key].append((batch, int(self.model.calls)))

    fit_model = _CountingModel()
    fit_model.compile("sgd", "mse")
    fit_model.fit(x, x * 2, batch_size=2, verbose=0, callbacks=[CallsAtBatchEnd("fit")])
    loop = ktl.Loop(ktl.Trainer(_CountingModel(), "mse", "sgd"))
    loop.add_keras_callback(CallsAtBatchEnd("loop"))
    loop.run_epochs(ktl.ArrayDataset(x, x * 2, batch_size=2), 1)
    assert seen["loop"] == seen["fit"] == [(0, 1), (1, 2), (2, 3), (3, 4)]
