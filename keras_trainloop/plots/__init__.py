"""Metric plots (GoMLX's plots): collect train/eval metrics on a schedule and draw them.

- `attach_plots(loop, *eval_datasets, checkpoint=...)`: collects points at
  exponentially spaced steps (or N times per run), saves them as JSON lines
  beside the checkpoint, and draws loss and accuracy curves at the end of
  each run: a PNG file, and in a notebook a plot updated in place.
- `load_points(path)` and `plot_points(points, png_path)`: re-plot saved points.

matplotlib is imported only when something is drawn.

Example:
    plots = ktl.plots.attach_plots(loop, test_ds, checkpoint=ckpt)
    loop.run_steps(train_ds, 2000)
    fig = ktl.plots.plot_points(ktl.plots.load_points(ckpt.directory))
"""

from keras_trainloop.plots._plots import (
    PLOT_FILE_NAME,
    PLOTS_KEY,
    Plots,
    attach_plots,
    plot_points,
)
from keras_trainloop.plots._points import (
    POINTS_FILE_NAME,
    Point,
    load_points,
    points_path,
    save_points,
)

__all__ = [
    "PLOTS_KEY",
    "PLOT_FILE_NAME",
    "POINTS_FILE_NAME",
    "Plots",
    "Point",
    "attach_plots",
    "load_points",
    "plot_points",
    "points_path",
    "save_points",
]
