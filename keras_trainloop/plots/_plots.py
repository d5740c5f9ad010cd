"""Collecting train and eval metrics on a schedule, and drawing them with matplotlib."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from keras_trainloop.plots._points import (
    EVAL,
    POINTS_FILE_NAME,
    TRAIN,
    Point,
    read_points,
    save_points,
    warn_torn,
    write_atomically,
)

if TYPE_CHECKING:
    from keras_trainloop.checkpoints import Checkpoint
    from keras_trainloop.data import Dataset
    from keras_trainloop.loop import Loop
    from keras_trainloop.trainer import Trainer

PLOT_FILE_NAME = "training_plot.png"
"""The PNG written into the plots' directory (a checkpoint directory) at the end of a run."""

PLOTS_KEY = "keras_trainloop.plots"
"""Key of the attached `Plots` in `loop.shared_data`."""

PLOT_OUTPUTS = ("auto", "notebook", "file")

_HOOK_NAME = "plots"
_TYPE_ORDER = {"loss": 0, "accuracy": 1}
_Y_LABELS = {"loss": "loss", "accuracy": "accuracy (%)"}
_SCALES = {"accuracy": 100.0}  # Accuracies in percent, as the eval report prints them.
_LINE_STYLES = ("-", "--", ":", "-.")
_REGULARIZATION = "+Regularization"

# {(series, metric name): {step: value}}: one curve each.
_Curves = dict[tuple[str, str], dict[int, float]]


def _sorted_types(points: Iterable[Point]) -> list[str]:
    types = {p.metric_type for p in points}
    return sorted(types, key=lambda t: (_TYPE_ORDER.get(t, 2), t))


def plot_points(
    points: Sequence[Point],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    log_x: bool | None = None,
) -> Any:
    """Draws points: one subplot per metric type, one curve per metric and dataset.

    Each subplot's y axis is labelled with its metric type; accuracies are
    drawn in percent (as `report_eval` prints them). Each dataset (the
    train metrics, and each eval dataset) keeps one colour in every
    subplot; its metrics in one subplot differ by line style. A
    "Loss+Regularization" curve equal to its "Loss" curve (no regularization
    in the model) is left out, as a duplicate.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global
    state, no window), so it works the same in scripts, CI and notebooks.

    Args:
        points: the points (e.g. from `load_points` or `Plots.points`). A
            curve's repeated steps keep the last value (a resumed run
            re-measures them).
        path: where to save a PNG; None to only return the figure.
        title: the figure's title.
        log_x: log-scale steps; None chooses it when all steps are positive
            and span at least a factor 20 (exponentially spaced points).

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: no points to draw.

    Example:
        fig = ktl.plots.plot_points(ktl.plots.load_points("/tmp/run"), "/tmp/run/plot.png")
    """
    from matplotlib.figure import Figure

    points = list(points)
    if not points:
        raise ValueError(
            "There are no points to plot. Received: points=[]. Fix: collect points first "
            "(attach_plots runs on a schedule and at the end of each run)."
        )
    types = _sorted_types(points)
    colors = {
        series: f"C{i % 10}" for i, series in enumerate(dict.fromkeys(p.series for p in points))
    }
    fig = Figure(figsize=(9, 3.2 * len(types)), layout="constrained")
    axes = fig.subplots(len(types), 1, squeeze=False)[:, 0]
    if log_x is None:
        log_x = _log_scale_fits([p.step for p in points])
    for ax, metric_type in zip(axes, types):
        curves = _without_duplicates(_curves(points, metric_type))
        _draw_type(ax, metric_type, curves, colors, log_x=log_x)
    if title:
        fig.suptitle(title)
    if path is not None:
        _save_png(fig, os.fspath(path))
    return fig


def _log_scale_fits(steps: list[int]) -> bool:
    """Whether all steps are positive and span at least a factor 20 (for a log scale)."""
    return min(steps) > 0 and max(steps) >= 20 * min(steps)


def _curves(points: list[Point], metric_type: str) -> _Curves:
    """The points of `metric_type` by curve, a repeated step's last value."""
    curves: _Curves = {}
    for p in points:
        if p.metric_type == metric_type:
            curves.setdefault((p.series, p.metric_name), {})[p.step] = p.value
    return curves


def _same_values(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(a[step], b[step], rel_tol=1e-6, abs_tol=1e-12) for step in a
    )


def _without_duplicates(curves: _Curves) -> _Curves:
    """`curves` less each "...Loss+Regularization" curve equal to its "...Loss" twin."""
    kept = {}
    for (series, name), values in curves.items():
        twin = curves.get((series, name.replace(_REGULARIZATION, "")))
        if _REGULARIZATION in name and twin is not None and _same_values(values, twin):
            continue
        kept[(series, name)] = values
    return kept


def _draw_type(
    ax: Any, metric_type: str, curves: _Curves, colors: dict[str, str], *, log_x: bool
) -> None:
    """Draws one subplot: a curve per metric and series, the series' colour, steps in order."""
    scale = _SCALES.get(metric_type, 1.0)
    styles: dict[str, int] = {}  # Curves drawn per series: the next one's line style.
    for (series, name), values in curves.items():
        xs = sorted(values)
        style = _LINE_STYLES[styles.get(series, 0) % len(_LINE_STYLES)]
        styles[series] = styles.get(series, 0) + 1
        ax.plot(
            xs,
            [values[x] * scale for x in xs],
            marker="o",
            markersize=3,
            color=colors[series],
            linestyle=style,
            label=f"{series}: {name}",
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_title(metric_type)
    ax.set_xlabel("step")
    ax.set_ylabel(_Y_LABELS.get(metric_type, metric_type))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _save_png(fig: Any, path: str) -> None:
    """Writes `fig` as a PNG to `path` atomically (temporary file, rename), creating its directory."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())


def _png_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


class Plots:
    """Collects train and eval metric points and draws them.

    `collect(loop, metrics)` is a hook `fn(loop, metrics)`: it records the
    train metrics of the step (except the noisy batch loss, as GoMLX) and the
    eval metrics of `trainer.eval(ds)` for each eval dataset, at the
    trainer's global step. Non-finite and non-scalar values are skipped.
    `attach_plots` runs it on a schedule; see there.

    With a `directory` (e.g. a checkpoint directory), points already saved
    there are loaded, new points are appended to its `POINTS_FILE_NAME` as
    they are collected, and `finish()` writes `PLOT_FILE_NAME` beside it.
    Both files are replaced atomically (a temporary file, then a rename), so
    an interrupted run leaves whole files; a torn last line left by an older
    writer is dropped with a warning (see `load_points`).

    Args:
        trainer: the `ktl.Trainer`.
        *eval_datasets: finite datasets evaluated at each collection.
        directory: where to keep the points file and the PNG; None keeps the
            points in memory only.
        png_path: the PNG written by `finish()`; defaults to
            `directory/PLOT_FILE_NAME` (None without a directory: no file).
        output: "notebook" shows the plot in the notebook, redrawn in place
            at each collection; "file" writes only the PNG; "auto" picks
            "notebook" in a Jupyter/Colab kernel.

    Attributes:
        points: all points, loaded and collected, in order.
        points_file: the JSON-lines file, or None.
        png_path: the PNG path, or None.
        output: "notebook" or "file".
        writes: whether this process writes and shows the plot (process 0 of a job).

    Raises:
        ValueError: an unknown `output`, or a corrupt points file (a line
            other than the last is not a point).

    Example:
        plots = ktl.plots.Plots(trainer, test_ds, directory="/tmp/run")
        ktl.every_n_steps(loop, 100, "plots", 50, plots.collect)
        loop.run_steps(train_ds, 1000)
        plots.finish()
    """

    def __init__(
        self,
        trainer: Trainer,
        *eval_datasets: Dataset,
        directory: str | os.PathLike | None = None,
        png_path: str | os.PathLike | None = None,
        output: str = "auto",
    ):
        from keras_trainloop.commandline import in_notebook, is_output_process

        if output not in PLOT_OUTPUTS:
            raise ValueError(
                f"output must be one of {', '.join(map(repr, PLOT_OUTPUTS))}. Received: "
                f"output={output!r}. Fix: pass output='auto' (a notebook shows it inline, "
                "else a PNG file)."
            )
        self.trainer = trainer
        self.eval_datasets = list(eval_datasets)
        self.output = ("notebook" if in_notebook() else "file") if output == "auto" else output
        self.points: list[Point] = []
        self.points_file: str | None = None
        self.png_path: str | None = os.fspath(png_path) if png_path is not None else None
        self.train_dataset_name = TRAIN
        self._display_handle: Any = None
        self._last_step: int | None = None
        # One plot per job: with several JAX processes only process 0 writes and shows it.
        self.writes = is_output_process()
        if directory is not None:
            directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
            os.makedirs(directory, exist_ok=True)
            self.points_file = os.path.join(directory, POINTS_FILE_NAME)
            if self.png_path is None:
                self.png_path = os.path.join(directory, PLOT_FILE_NAME)
            if os.path.exists(self.points_file):
                self.points, torn = read_points(self.points_file)
                if torn is not None:  # A write cut short: rewritten without the torn line.
                    warn_torn(torn)
                    if self.writes:
                        save_points(self.points, self.points_file, append=False)

    def truncate_after(self, step: int) -> int:
        """Drops points measured after `step` (a run resumed from an older checkpoint).

        The points file is rewritten (atomically) when points are dropped.

        Returns:
            How many points were dropped.
        """
        kept = [p for p in self.points if p.step <= step]
        dropped = len(self.points) - len(kept)
        if dropped:
            self.points = kept
            if self.points_file is not None and self.writes:
                save_points(kept, self.points_file, append=False)
        return dropped

    def add_points(self, points: Iterable[Point]) -> None:
        """Adds points (appended to the points file, if any)."""
        points = list(points)
        self.points.extend(points)
        if self.points_file is not None and points and self.writes:
            save_points(points, self.points_file, append=True)

    def on_start(self, loop: Loop, ds: Dataset | None) -> None:
        """Remembers the training dataset's name for the train points."""
        if ds is not None:
            self.train_dataset_name = str(getattr(ds, "name", TRAIN))

    def collect(self, loop: Loop | None, metrics: list) -> list[Point]:
        """Records the step's train metrics and evaluates the eval datasets.

        A hook `fn(loop, metrics)`; also callable by hand.

        Returns:
            The new points.
        """
        import jax
        import numpy as np

        trainer = self.trainer
        step = int(trainer.global_step)
        new: list[Point] = []

        def add(metric: Any, value: Any, dataset: str, kind: str) -> None:
            array = np.asarray(value, dtype=np.float64)
            if array.size != 1:
                return
            value = float(array.reshape(()))
            if not math.isfinite(value):
                return
            new.append(
                Point(
                    step, metric.name, metric.short_name, metric.metric_type, dataset, kind, value
                )
            )

        if metrics:
            values = jax.device_get(list(metrics))
            # Entry 0 is the batch loss: too noisy to plot (GoMLX skips it too).
            for metric, value in list(zip(trainer.train_metrics, values))[1:]:
                add(metric, value, self.train_dataset_name, TRAIN)
        for ds in self.eval_datasets:
            values = trainer.eval(ds)
            name = str(getattr(ds, "name", type(ds).__name__))
            for metric, value in zip(trainer.eval_metrics, values):
                add(metric, value, name, EVAL)
        self.add_points(new)
        self._last_step = step
        if self.output == "notebook" and self.points and self.writes:
            self._show()
        return new

    def on_end(self, loop: Loop, metrics: list) -> None:
        """Collects the final step (unless just collected) and calls `finish()`."""
        if loop.loop_step > loop.start_step and self._last_step != int(self.trainer.global_step):
            self.collect(loop, metrics)
        self.finish()

    def draw(self, path: str | os.PathLike | None = None) -> Any:
        """Draws the points (see `plot_points`); returns the figure."""
        return plot_points(self.points, path)

    def finish(self) -> str | None:
        """Redraws the notebook plot and writes the PNG; returns the PNG path (None: no file)."""
        if not self.points or not self.writes:
            return None
        if self.output == "notebook":
            self._show()
        if self.png_path is not None:
            plot_points(self.points, self.png_path)
        return self.png_path

    def _show(self) -> None:
        from IPython import display as ipd

        image = ipd.Image(data=_png_bytes(plot_points(self.points)), format="png")
        if self._display_handle is None:
            self._display_handle = ipd.display(image, display_id=True)
        else:
            self._display_handle.update(image)


def attach_plots(
    loop: Loop,
    *eval_datasets: Dataset,
    checkpoint: Checkpoint | None = None,
    directory: str | os.PathLike | None = None,
    png_path: str | os.PathLike | None = None,
    start_step: int = 100,
    factor: float = 1.2,
    n_points: int | None = None,
    every_n_steps: int | None = None,
    output: str = "auto",
    priority: float = 50,
) -> Plots:
    """Collects metric points during training and draws them at the end of each run.

    By default points are taken at exponentially spaced steps, as GoMLX's
    plots (`ktl.exponential_callback(loop, 100, 1.2, ...)`: steps 100, 220,
    364, 537, ...), plus the last step of each run. `n_points=N` spreads N
    points evenly over each run instead (`ktl.n_times_during_loop`), and
    `every_n_steps=N` takes one every N steps.

    With a checkpoint (or a directory), the points are saved beside it as
    JSON lines and the PNG is written there at the end of each run; a
    resumed run loads the saved points, drops those after the resumed step,
    and appends new ones. In a notebook the plot is shown and redrawn in
    place at each collection.

    Args:
        loop: the `ktl.Loop`.
        *eval_datasets: finite datasets evaluated at each collection.
        checkpoint: a `ktl.checkpoints.Checkpoint`: its directory is used.
        directory: the directory when there is no checkpoint.
        png_path: the PNG's path; defaults to `PLOT_FILE_NAME` in the directory.
        start_step: the first collection step of the exponential schedule.
        factor: the growth of the gaps of the exponential schedule.
        n_points: collect this many times per run, evenly spread, instead.
        every_n_steps: collect every this many steps instead.
        output: "auto", "notebook" or "file" (see `Plots`).
        priority: of the plot hooks (before checkpoints, at 100 by default).

    Returns:
        The `Plots` (also in `loop.shared_data[PLOTS_KEY]`).

    Raises:
        ValueError: both `n_points` and `every_n_steps`, a bad schedule
            argument, or an unknown `output`.
        TypeError: the loop has no trainer.

    Example:
        plots = ktl.plots.attach_plots(loop, test_ds, checkpoint=ckpt)
        loop.run_steps(train_ds, 5000)
        print(plots.png_path)
    """
    import keras_trainloop.loop as loop_lib

    if n_points is not None and every_n_steps is not None:
        raise ValueError(
            "Pass at most one of n_points and every_n_steps. Received: "
            f"n_points={n_points!r}, every_n_steps={every_n_steps!r}. Fix: keep one, e.g. "
            "n_points=100."
        )
    if loop.trainer is None:
        raise TypeError(
            "attach_plots() needs a loop with a trainer (to evaluate the datasets). Received: "
            "a Loop created with trainer=None. Fix: create it as ktl.Loop(trainer)."
        )
    if checkpoint is not None:
        directory = checkpoint.directory
    plots = Plots(
        loop.trainer, *eval_datasets, directory=directory, png_path=png_path, output=output
    )
    plots.truncate_after(int(loop.trainer.global_step))
    if every_n_steps is not None:
        loop_lib.every_n_steps(loop, every_n_steps, _HOOK_NAME, priority, plots.collect)
    elif n_points is not None:
        loop_lib.n_times_during_loop(loop, n_points, _HOOK_NAME, priority, plots.collect)
    else:
        loop_lib.exponential_callback(
            loop, start_step, factor, False, _HOOK_NAME, priority, plots.collect
        )
    loop.on_start(_HOOK_NAME, priority, plots.on_start)
    loop.on_end(_HOOK_NAME, priority, plots.on_end)
    loop.shared_data[PLOTS_KEY] = plots
    return plots
