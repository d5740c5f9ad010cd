"""With several processes, one job prints and writes once: process 0 (others stay quiet)."""

import io

import jax
import keras
import numpy as np
import pytest

import keras_trainloop as ktl


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


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
    return ktl.ArrayDataset(x, y, batch_size=8, loop_forever=True), ktl.ArrayDataset(
        x, y, batch_size=16
    )


@pytest.fixture
def process_1(monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)


def test_only_process_0_attaches_the_progress_bar(trainer, process_1):
    loop = ktl.Loop(trainer)
    bar = ktl.commandline.attach_progress_bar(loop, output="plain", file=io.StringIO())
    assert isinstance(bar, ktl.commandline.ProgressBar)
    assert "on_start=[], on_step=[], on_end=[]" in repr(loop)


def test_report_eval_evaluates_everywhere_and_prints_on_process_0_only(
    trainer, data, process_1, capsys
):
    _, test = data
    trainer.train_step(None, [np.zeros((8, 4), np.float32)], [np.zeros(8, np.int32)])
    results = ktl.commandline.report_eval(trainer, test)
    assert len(results) == 1 and len(results[0]) == len(trainer.eval_metrics)
    assert capsys.readouterr().out == ""


def test_plots_collect_everywhere_and_write_on_process_0_only(trainer, data, process_1, tmp_path):
    train, test = data
    loop = ktl.Loop(trainer)
    plots = ktl.plots.attach_plots(loop, test, directory=tmp_path, output="file")
    loop.run_steps(train, 5)
    assert plots.points and not plots.writes
    assert list(tmp_path.iterdir()) == []


def test_process_0_writes_as_before(trainer, data, tmp_path):
    train, test = data
    loop = ktl.Loop(trainer)
    ktl.plots.attach_plots(loop, test, directory=tmp_path, output="file")
    loop.run_steps(train, 5)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {ktl.plots.PLOT_FILE_NAME, ktl.plots.POINTS_FILE_NAME}
