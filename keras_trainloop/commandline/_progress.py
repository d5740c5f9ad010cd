"""A progress bar for a Loop: terminal, notebook, or plain lines in logs.

When it draws and what it shows live here; how each output lays it out is
in `_progress_render.py`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from keras_trainloop.commandline import _progress_render as render
from keras_trainloop.commandline._detect import is_output_process, resolve_output
from keras_trainloop.data import Dataset
from keras_trainloop.loop import LOG_NAMES_KEY, VAL_LOGS_KEY, Loop, Schedule

PROGRESS_BAR_KEY = "keras_trainloop.commandline.progress_bar"
"""Key of the attached `ProgressBar` in `loop.shared_data`."""

DEFAULT_INTERVALS = {"terminal": 0.25, "notebook": 0.5, "plain": 5.0}
"""Seconds between redraws per output kind (a plain line every 5 s in logs)."""

_HOOK_NAME = "progress_bar"
_RENDERERS = {
    "terminal": render.TerminalRenderer,
    "notebook": render.HTMLRenderer,
    "plain": render.PlainRenderer,
}


def _general(value: Any) -> str:
    return f"{value:.4g}"


class _MetricText:
    """Formats a step's values as Keras names them: `loss=0.123 accuracy=95.20% val_loss=...`.

    The names are those of `loop.logs(metrics)` (what `fit`'s progress bar
    and callbacks see): `"loss"` (the run's mean batch loss), each train
    metric under its Keras name, then `val_<name>` of the run's last
    validation (`loop.shared_data[VAL_LOGS_KEY]`). Each value is formatted
    by its metric (`pretty_print`: losses with 3 decimals, accuracies in
    percent); non-scalar values are left out. Under `model.fit` (no
    trainer) the names are Keras' own logs'.
    """

    def __init__(self, trainer: Any):
        train = list(getattr(trainer, "train_metrics", None) or [])
        evals = list(getattr(trainer, "eval_metrics", None) or [])
        self._has_trainer = trainer is not None
        names = [_keras_name(m) for m in train]
        self._train_names = ["loss"] + [name for name in names if name and name != "loss"]
        self._formats = _formats(train, evals)

    def items(self, loop: Any, metrics: list) -> tuple[str, ...]:
        """The `name=value` items of `metrics` (reads them from the device)."""
        if self._has_trainer:
            logs = loop.logs(metrics) if metrics else {}
            named = [(name, logs[name]) for name in self._train_names if name in logs]
        else:  # A loop driven by model.fit: [loss, *other logs], named by the bridge.
            import jax

            names = loop.shared_data.get(LOG_NAMES_KEY, ())
            values = jax.device_get(list(metrics))  # One transfer for all the values.
            named = [
                (names[i] if i < len(names) else f"metric_{i}", value)
                for i, value in enumerate(values)
            ]
        named += list(loop.shared_data.get(VAL_LOGS_KEY, {}).items())
        return tuple(self._item(name, value) for name, value in named if _is_scalar(value))

    def _item(self, name: str, value: Any) -> str:
        value = float(np.asarray(value, dtype=np.float64).reshape(()))
        return f"{name}={self._formats.get(name, _general)(value)}"


def _keras_name(metric: Any) -> str:
    return getattr(metric, "keras_name", None) or ""


def _formats(train: list, evals: list) -> dict[str, Callable[[Any], str]]:
    """`{log name: the pretty_print of its metric}`; "loss" and "val_loss" get the first
    loss entries' (3 decimals)."""
    named = [(_keras_name(m), m) for m in train]
    named += [(f"val_{_keras_name(m)}", m) for m in evals]
    named += [("loss", m) for m in train[:1]] + [("val_loss", m) for m in evals[:1]]
    return {
        name: metric.pretty_print
        for name, metric in named
        if name and callable(getattr(metric, "pretty_print", None))
    }


def _is_scalar(value: Any) -> bool:
    try:
        return np.size(value) == 1
    except (TypeError, ValueError):
        return False


class _RedrawSchedule(Schedule):
    """Due when the bar's next redraw time has come: it lets the loop fuse the steps between."""

    def __init__(self, bar: ProgressBar):
        self._bar = bar

    def due(self, loop: Any) -> bool:
        return self._bar._clock() >= self._bar._next

    def next_step(self, loop: Any) -> int | None:
        return loop.loop_step if self.due(loop) else None

    def seconds_left(self, loop: Any) -> float:
        return max(0.0, self._bar._next - self._bar._clock())

    def __repr__(self) -> str:
        return "Redraw"


class ProgressBar:
    """Shows a Loop's progress: steps, steps per second, ETA and the metrics.

    Created and attached by `attach_progress_bar`; see there. Its hooks are
    `on_start`, `on_step` and `on_end`; `on_step` is registered with the
    bar's `schedule` (due when the next redraw time has come), so the loop
    calls it only then and fuses the steps in between. Metric values are
    copied from the device when the bar redraws, at most once per `interval`
    seconds.

    Attributes:
        output: "terminal", "notebook" or "plain" once a run started (the
            requested value, maybe "auto", before).
        interval: seconds between redraws (None: the default of the output kind).
        draws: how many steps of the current (or last) run redrew the bar
            (each read the metrics once); the compiling note drawn by
            `on_start` and the final state drawn by `on_end` are not counted.
        last_line: the final line printed at the end of the last run.
    """

    def __init__(
        self,
        *,
        output: str = "auto",
        file: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        resolve_output(output, file)  # Validates `output`; the choice is made at each start.
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0
        ):
            raise ValueError(
                "interval must be a non-negative number of seconds, or None for the default "
                f"of the output kind. Received: interval={interval!r}. Fix: pass seconds, "
                "e.g. interval=0.5."
            )
        if not callable(clock):
            raise TypeError(
                f"clock must be a function returning seconds. Received: clock={clock!r}. "
                "Fix: pass time.monotonic, or a fake clock in tests."
            )
        self.output = output
        self.interval = interval
        self.draws = 0
        self.last_line = ""
        self._requested_output = output
        self._file = file
        self._clock = clock
        self._renderer: Any = None
        self._next = math.inf
        self._period = 0.0
        self._metric_text = _MetricText(None)
        self._metrics: tuple[str, ...] = ()
        self._start_step = 0
        self._t_start = 0.0
        self._t_first: float | None = None
        self._n_first = 0
        self.schedule = _RedrawSchedule(self)

    # Hooks -------------------------------------------------------------------
    def on_start(self, loop: Loop, ds: Dataset | None) -> None:
        """Creates the display for a new run; it says the first step is compiling."""
        self.output = resolve_output(self._requested_output, self._file)
        self._period = float(
            self.interval if self.interval is not None else DEFAULT_INTERVALS[self.output]
        )
        self._metric_text = _MetricText(loop.trainer)
        self._metrics = ()
        self.draws = 0
        self._renderer = _RENDERERS[self.output](self._out())
        self._start_step = loop.start_step
        self._t_start = self._clock()
        self._t_first = None
        self._next = -math.inf  # The first step is drawn: it ends the compiling note.
        self._renderer.update(render.Status(loop.start_step, _total(loop), compiling=True))

    def on_step(self, loop: Loop, metrics: list) -> None:
        """Redraws when `interval` seconds passed since the last redraw; else only reads the clock."""
        now = self._clock()
        if now < self._next:
            return
        self._redraw(loop, metrics, now, loop.loop_step + 1)

    def on_end(self, loop: Loop, metrics: list) -> None:
        """Draws the final state, closes the display and prints the final line.

        The final line's rate is the bar's: steps per second since the first
        step ended (from the start of the run when only one step ran).
        """
        if self._renderer is None:  # Our on_start did not run for this run.
            self.on_start(loop, None)
        if metrics:
            self._metrics = self._metric_text.items(loop, metrics)
        now = self._clock()
        step = loop.loop_step
        rate, _ = self._rate_eta(now, step, None, final=True)
        status = render.Status(step, step, now - self._t_start, rate, 0.0, self._metrics)
        self._renderer.final(status)
        self._renderer = None
        done = step - loop.start_step
        line = (
            f"Training done at step {step}: {done} step{'s' if done != 1 else ''} in "
            f"{render.format_duration(now - self._t_start)} ({render.format_rate(rate)})"
        )
        self.last_line = " | ".join([line, " ".join(self._metrics)]) if self._metrics else line
        if self.output == "terminal":  # Wrapped as the bar's lines: the metrics below.
            width = max(render.terminal_columns(self._out()) - 1, 20)
            text = "\n".join(render.wrap_items([line + " |", *self._metrics], width))
        else:
            text = self.last_line
        print(text, file=self._out(), flush=True)

    def write(self, text: str) -> None:
        """Prints a line without breaking the bar (above it in a terminal)."""
        if self._renderer is None:
            print(text, file=self._out(), flush=True)
        else:
            self._renderer.write(text)

    # Drawing -----------------------------------------------------------------
    def _out(self) -> TextIO:
        return self._file if self._file is not None else sys.stdout

    def _redraw(self, loop: Any, metrics: list, now: float, step: int) -> None:
        self._metrics = self._metric_text.items(loop, metrics)
        if self._t_first is None:
            # Rates count from the end of the first step (its values read: it ran), so the
            # compilation is left out of the rate and the ETA.
            now = self._clock()
            self._t_first, self._n_first = now, step
        self._next = now + self._period
        total = _total(loop)
        rate, eta = self._rate_eta(now, step, total)
        self._renderer.update(
            render.Status(step, total, now - self._t_start, rate, eta, self._metrics)
        )
        self.draws += 1

    def _rate_eta(
        self, now: float, step: int, total: int | None, final: bool = False
    ) -> tuple[float | None, float | None]:
        """Steps/s since the first step ended (compilation excluded) and the ETA in seconds.

        With a single step there is no such rate; the final line then counts
        from the start of the run.
        """
        if self._t_first is not None and step > self._n_first and now > self._t_first:
            rate = (step - self._n_first) / (now - self._t_first)
        elif final and step > self._start_step and now > self._t_start:
            rate = (step - self._start_step) / (now - self._t_start)
        else:
            rate = None
        eta = (total - step) / rate if rate and total is not None else None
        return rate, eta


def _total(loop: Any) -> int | None:
    return loop.end_step if loop.end_step >= 0 else None


def attach_progress_bar(
    loop: Loop,
    *,
    output: str = "auto",
    file: TextIO | None = None,
    interval: float | None = None,
    priority: float = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> ProgressBar:
    """Attaches a progress bar with steps, steps/s, ETA and the metrics to `loop`.

    The output kind is detected at the start of each run (`output="auto"`):

    - in a Jupyter/Colab kernel, an HTML block updated in place (one output,
      not a line per update);
    - in a terminal (`file` is a TTY), the bar on one line sized to the
      terminal (80 columns fit) and the metrics on the lines below it,
      redrawn in place;
    - otherwise (CI logs, pipes, captured output), a plain line now and then.

    From the start of a run until its first step ends the bar says that the
    first step is compiling. The rate is counted from the end of the first
    step, so the compilation stays out of it and out of the ETA; the bar and
    the final line show the same rate.

    The metrics are named as Keras names them (what `loop.logs(metrics)`
    holds, and `fit`'s progress bar shows): `loss` (the run's mean batch
    loss), each train metric under its Keras name, and after a validation
    the `val_*` values of the last one (`loop.shared_data["val_logs"]`).
    Each value is formatted by its metric: losses with 3 decimals,
    accuracies in percent.

    The bar redraws at most once per `interval` seconds (0.25 in a terminal,
    0.5 in a notebook, 5 for plain lines). Only then are the metric values
    copied from the device and formatted, so other steps cost one clock
    read. At the end of every run it prints a final line with the last step,
    the rate and the metrics, whatever the output kind.

    Attaching twice to the same loop returns the bar already attached (it is
    kept in `loop.shared_data[PROGRESS_BAR_KEY]`). With several JAX processes
    only process 0 attaches it (the others get a bar that is not attached).

    Args:
        loop: the `ktl.Loop`.
        output: "auto", "terminal", "notebook" or "plain" (tests and logs can
            force one).
        file: the stream for the terminal bar, plain lines and the final line;
            `sys.stdout` at the start of each run when None.
        interval: seconds between redraws; None for the output kind's default.
        priority: priority of the bar's hooks (lower runs first).
        clock: the time source in seconds (tests pass a fake one).

    Returns:
        The `ProgressBar`.

    Raises:
        ValueError: an unknown `output` or a negative `interval`.

    Example:
        loop = ktl.Loop(trainer)
        ktl.commandline.attach_progress_bar(loop)
        loop.run_steps(train_ds, 1000)
        # Training done at step 1000: 1000 steps in 00:04 (251 steps/s) | loss=0.101 ...
    """
    existing = loop.shared_data.get(PROGRESS_BAR_KEY)
    if existing is not None:
        return existing
    bar = ProgressBar(output=output, file=file, interval=interval, clock=clock)
    if not is_output_process():  # One bar per job: process 0's (the others' is not attached).
        return bar
    loop.on_start(_HOOK_NAME, priority, bar.on_start)
    loop.on_step(_HOOK_NAME, priority, bar.on_step, schedule=bar.schedule)
    loop.on_end(_HOOK_NAME, priority, bar.on_end)
    loop.shared_data[PROGRESS_BAR_KEY] = bar
    return bar
