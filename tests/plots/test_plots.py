"""Plots: scheduled points, PNG and JSON-lines files, resume, notebook display."""

from __future__ import annotations

import json

import pytest

import keras_trainloop as ktl
from keras_trainloop.checkpoints import Checkpoint, attach_checkpoint
from keras_trainloop.plots import (
    PLOT_FILE_NAME,
    POINTS_FILE_NAME,
    Point,
    attach_plots,
    load_points,
    plot_points,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_points_of_train_and_eval_metrics_are_saved_as_json_lines_and_drawn(
    tmp_path, make_trainer, make_train_ds, test_ds
):
    trainer = make_trainer()
    loop = ktl.Loop(trainer)
    plots = attach_plots(loop, test_ds, directory=tmp_path, every_n_steps=10)
    loop.run_steps(make_train_ds(), 25)  # points at 10, 20, and the end: 25

    assert sorted({p.step for p in plots.points}) == [10, 20, 25]
    labels = {p.label for p in plots.points}
    assert labels == {
        "Train: Moving Average Loss+Regularization",
        "Train: Moving Average Loss",
        "Train: Moving Average Accuracy",
        "Eval on test: Mean Loss+Regularization",
        "Eval on test: Mean Loss",
        "Eval on test: Mean Accuracy",
    }  # the batch loss is left out
    at_25 = {p.label: p for p in plots.points if p.step == 25}
    assert at_25["Eval on test: Mean Accuracy"].value == pytest.approx(
        float(trainer.eval(test_ds)[2]), rel=1e-6
    )
    assert at_25["Train: Moving Average Accuracy"].dataset == "train"
    assert at_25["Train: Moving Average Accuracy"].metric_type == "accuracy"
    assert at_25["Eval on test: Mean Accuracy"].short_name == "#acc"

    assert load_points(tmp_path) == plots.points
    lines = (tmp_path / POINTS_FILE_NAME).read_text().splitlines()
    assert len(lines) == len(plots.points) == 3 * 6
    assert set(json.loads(lines[0])) == {
        "step",
        "metric_name",
        "short_name",
        "metric_type",
        "dataset",
        "kind",
        "value",
    }
    assert plots.png_path == str(tmp_path / PLOT_FILE_NAME)
    assert (tmp_path / PLOT_FILE_NAME).read_bytes()[:8] == PNG_MAGIC
    assert loop.shared_data[ktl.plots.PLOTS_KEY] is plots


def test_default_schedule_is_exponential_plus_the_last_step(make_trainer, make_train_ds):
    loop = ktl.Loop(make_trainer())
    plots = attach_plots(loop, start_step=4, factor=2.0)
    loop.run_steps(make_train_ds(), 30)
    # After loop steps 4, 12 and 28 (skips 8, 16), i.e. global steps 5, 13, 29; then the end.
    assert sorted({p.step for p in plots.points}) == [5, 13, 29, 30]
    assert plots.png_path is None  # no directory: points in memory only


def test_resumed_run_drops_later_points_and_appends_new_ones(
    tmp_path, make_trainer, make_train_ds, test_ds
):
    trainer = make_trainer()
    checkpoint = Checkpoint(trainer, tmp_path)
    loop = ktl.Loop(trainer)
    attach_checkpoint(loop, checkpoint, every_n_steps=20, on_end=False)
    attach_plots(loop, test_ds, checkpoint=checkpoint, every_n_steps=10)
    loop.run_steps(make_train_ds(), 30)  # checkpoint at 20, points at 10, 20, 30
    checkpoint.wait()

    resumed_trainer = make_trainer()
    resumed_checkpoint = Checkpoint(resumed_trainer, tmp_path)  # back to step 20
    resumed = ktl.Loop(resumed_trainer)
    plots = attach_plots(resumed, test_ds, checkpoint=resumed_checkpoint, every_n_steps=10)
    assert sorted({p.step for p in plots.points}) == [10, 20]  # step 30 was dropped
    assert {p.step for p in load_points(tmp_path)} == {10, 20}
    resumed.run_steps(make_train_ds(), 15)

    steps = [p.step for p in load_points(tmp_path)]
    assert sorted(set(steps)) == [10, 20, 30, 35]
    assert steps.count(30) == 6  # measured once, by the resumed run
    assert (tmp_path / PLOT_FILE_NAME).read_bytes()[:8] == PNG_MAGIC


def _points(steps, metric_type, label_kind="train", value=1.0):
    return [
        Point(s, f"Metric {metric_type}", "m", metric_type, "ds", label_kind, value / s)
        for s in steps
    ]


def test_plot_points_draws_one_subplot_per_metric_type(tmp_path):
    points = _points([100, 220, 364, 537, 2000], "loss")
    points += _points([100, 2000], "accuracy", "eval")
    points += _points([100, 2000], "recall", "eval")
    fig = plot_points(points, tmp_path / "plot.png", title="digits")

    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "recall"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)  # steps span a factor 20
    assert (tmp_path / "plot.png").read_bytes()[:8] == PNG_MAGIC
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["Eval on ds: Metric accuracy"]
    linear = plot_points(_points([1, 2, 3], "loss"))
    assert linear.axes[0].get_xscale() == "linear"


def test_plot_points_keeps_the_last_value_of_a_repeated_step():
    points = _points([1, 2], "loss") + [Point(2, "Metric loss", "m", "loss", "ds", "train", 9.0)]
    line = plot_points(points).axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2]
    assert list(line.get_ydata()) == [1.0, 9.0]


def test_plot_points_without_points_raises():
    with pytest.raises(ValueError, match="no points to plot"):
        plot_points([])


def test_a_corrupt_points_file_names_the_line(tmp_path):
    path = tmp_path / POINTS_FILE_NAME
    good = _points([1], "loss")[0].to_json()
    path.write_text(good + "\n{not json\n" + good + "\n")  # Not the last line: corrupt.
    with pytest.raises(ValueError, match=r"Line 2 of the plot points file .* is not a point"):
        load_points(tmp_path)


class _FakeHandle:
    def __init__(self, content):
        self.contents = [content]

    def update(self, content):
        self.contents.append(content)


def test_notebook_output_redraws_one_image_in_place(
    make_trainer, make_train_ds, test_ds, monkeypatch
):
    from IPython import display as ipd

    handles = []

    def fake_display(obj, display_id=False):
        assert display_id is True
        handles.append(_FakeHandle(obj))
        return handles[-1]

    monkeypatch.setattr(ipd, "display", fake_display)
    loop = ktl.Loop(make_trainer())
    plots = attach_plots(loop, test_ds, every_n_steps=5, output="notebook")
    loop.run_steps(make_train_ds(), 10)

    assert plots.output == "notebook"
    assert len(handles) == 1
    images = handles[0].contents
    assert len(images) == 3  # after steps 5 and 10, and the final redraw
    assert all(image.data[:8] == PNG_MAGIC for image in images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output": "svg"}, "output must be one of"),
        ({"n_points": 3, "every_n_steps": 5}, "at most one of n_points and every_n_steps"),
    ],
    ids=["output", "two-schedules"],
)
def test_bad_arguments_are_rejected(make_trainer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attach_plots(ktl.Loop(make_trainer()), **kwargs)


def _trained_points(make_trainer, make_train_ds, test_ds):
    loop = ktl.Loop(make_trainer())
    plots = attach_plots(loop, test_ds, every_n_steps=5)
    loop.run_steps(make_train_ds(), 10)
    return plots.points


def _lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_each_subplot_labels_its_y_axis():
    points = _points([1, 2], "loss") + _points([1, 2], "accuracy") + _points([1, 2], "recall")
    fig = plot_points(points)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy (%)", "recall"]
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)


def test_accuracy_is_drawn_in_percent_as_the_eval_report_prints_it():
    points = [
        Point(s, "Mean Accuracy", "#acc", "accuracy", "test", "eval", v)
        for s, v in [(10, 0.5), (20, 0.9625)]
    ]
    line = plot_points(points).axes[0].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([50.0, 96.25])


def test_each_dataset_keeps_one_colour_in_every_subplot(make_trainer, make_train_ds, test_ds):
    fig = plot_points(_trained_points(make_trainer, make_train_ds, test_ds))
    loss, accuracy = (_lines_by_label(ax) for ax in fig.axes)

    def colour(lines, series):
        colours = {
            line.get_color() for label, line in lines.items() if label.startswith(series + ":")
        }
        assert len(colours) == 1, (series, colours)
        return colours.pop()

    for series in ("Train", "Eval on test"):
        assert colour(loss, series) == colour(accuracy, series)
    assert colour(loss, "Train") != colour(loss, "Eval on test")


def test_loss_plus_regularization_equal_to_loss_is_drawn_once(make_trainer, make_train_ds, test_ds):
    points = _trained_points(make_trainer, make_train_ds, test_ds)  # no regularization
    names = {p.metric_name for p in points}
    assert {"Moving Average Loss+Regularization", "Mean Loss+Regularization"} <= names  # kept
    labels = set(_lines_by_label(plot_points(points).axes[0]))
    assert labels == {"Train: Moving Average Loss", "Eval on test: Mean Loss"}


def test_loss_plus_regularization_that_differs_from_loss_is_drawn():
    def point(name, step, value):
        return Point(step, name, "#", "loss", "test", "eval", value)

    points = [
        point("Mean Loss", 1, 1.0),
        point("Mean Loss+Regularization", 1, 1.25),
        point("Mean Loss", 2, 0.5),
        point("Mean Loss+Regularization", 2, 0.5),
    ]
    lines = _lines_by_label(plot_points(points).axes[0])
    assert set(lines) == {"Eval on test: Mean Loss", "Eval on test: Mean Loss+Regularization"}
    assert (
        lines["Eval on test: Mean Loss"].get_linestyle()
        != lines["Eval on test: Mean Loss+Regularization"].get_linestyle()
    )
