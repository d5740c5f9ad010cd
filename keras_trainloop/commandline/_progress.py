"""A progress bar for a Loop: terminal, notebook, or plain lines in logs."""

from __future__ import annotations

import html
import io
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from keras_trainloop.commandline._detect import has_ipywidgets, resolve_output
from keras_trainloop.data import Dataset
from keras_trainloop.loop import LOG_NAMES_KEY, VAL_LOGS_KEY, Loop, Schedule

PROGRESS_BAR_KEY = "keras_trainloop.commandline.progress_bar"
"""Key of the attached `ProgressBar` in `loop.shared_data`."""

DEFAULT_INTERVALS = {"terminal": 0.25, "notebook": 0.5, "plain": 5.0}
"""Seconds between redraws per output kind (a plain line every 5 s in logs)."""

_HOOK_NAME = "progress_bar"


def _format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _format_rate(rate: float | None) -> str:
    if rate is None or not math.isfinite(rate):
        return "? steps/s"
    if rate >= 100:
        return f"{rate:,.0f} steps/s"
    return f"{rate:.3g} steps/s"


class _NullFile:
    """A text stream that drops everything (tqdm's bookkeeping without its drawing)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _terminal_columns(file: TextIO) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return 0


class _TqdmRenderer:
    """tqdm's bar: redrawn in place in a terminal, or its ipywidgets widget in a notebook."""

    def __init__(self, widget: bool, file: TextIO, start: int, total: int | None):
        if widget:
            from tqdm.notebook import tqdm as tqdm_cls
        else:
            from tqdm.std import tqdm as tqdm_cls
        size: dict[str, Any] = {"dynamic_ncols": True}
        if not widget and _terminal_columns(file) <= 0:
            # A terminal that reports no size (e.g. a bare pty): tqdm would draw nothing.
            size = {"ncols": 100, "nrows": 24}
        # Drawing is throttled by ProgressBar; tqdm draws on every update() it gets.
        self.bar = tqdm_cls(
            total=total, initial=start, file=file, mininterval=0, miniters=1, unit="step",
            desc="Training", leave=True, smoothing=0.3, **size,
        )

    def update(self, step: int, total: int | None, rate, eta, postfix: str) -> None:
        bar = self.bar
        if total != bar.total:
            bar.total = total
        bar.set_postfix_str(postfix, refresh=False)
        if step > bar.n:
            bar.update(step - bar.n)
        else:
            bar.refresh()

    def write(self, text: str, file: TextIO) -> None:
        self.bar.write(text, file=file)

    def final(self, step: int, total: int | None, rate, postfix: str) -> None:
        self.update(step, total, rate, 0.0, postfix)
        self.bar.close()


class _HTMLRenderer:
    """An HTML block in a notebook, updated in place through an IPython display id."""

    def __init__(self, file: TextIO):
        from IPython import display as ipd

        self._ipd = ipd
        self._file = file
        self._handle = ipd.display(ipd.HTML(self._html(0, None, None, None, "")), display_id=True)

    @staticmethod
    def _html(step: int, total: int | None, rate, eta, postfix: str) -> str:
        if total:
            bar = f'<progress value="{step}" max="{total}" style="width: 30em"></progress>'
            where = f"step {step}/{total} ({100.0 * step / total:.0f}%)"
        else:
            bar = '<progress style="width: 30em"></progress>'
            where = f"step {step}"
        stats = f"{where} · {_format_rate(rate)} · ETA {_format_duration(eta)}"
        return (
            f'<div style="font-family: monospace">{bar} {html.escape(stats)}'
            f"<br>{html.escape(postfix)}</div>"
        )

    def update(self, step: int, total: int | None, rate, eta, postfix: str) -> None:
        content = self._ipd.HTML(self._html(step, total, rate, eta, postfix))
        if self._handle is not None:
            self._handle.update(content)
        else:  # No kernel to display in (IPython.display printed a text repr instead).
            print(_plain_line(step, total, rate, eta, postfix), file=self._file, flush=True)

    def write(self, text: str, file: TextIO) -> None:
        print(text, file=file, flush=True)

    def final(self, step: int, total: int | None, rate, postfix: str) -> None:
        if self._handle is not None:
            self.update(step, total, rate, 0.0, postfix)


def _plain_line(step: int, total: int | None, rate, eta, postfix: str) -> str:
    where = f"Step {step}/{total} ({100.0 * step / total:.0f}%)" if total else f"Step {step}"
    line = f"{where} | {_format_rate(rate)} | ETA {_format_duration(eta)}"
    return f"{line} | {postfix}" if postfix else line


class _PlainRenderer:
    """One plain line per redraw, for logs and pipes (no escape codes, no carriage returns)."""

    def __init__(self, file: TextIO):
        self._file = file

    def update(self, step: int, total: int | None, rate, eta, postfix: str) -> None:
        print(_plain_line(step, total, rate, eta, postfix), file=self._file, flush=True)

    def write(self, text: str, file: TextIO) -> None:
        print(text, file=file, flush=True)

    def final(self, step: int, total: int | None, rate, postfix: str) -> None:
        pass  # The final line says it all.


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
    """Shows a Loop's progress: steps, steps per second, ETA and the train metrics.

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
            (each read the metrics once); the final state drawn by `on_end`
            is not counted.
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
        self._metric_objects: list | None = None
        self._postfix = ""
        self._start_step = 0
        self._t_start = 0.0
        self._t_first: float | None = None
        self._n_first = 0
        self.schedule = _RedrawSchedule(self)

    # Hooks -------------------------------------------------------------------
    def on_start(self, loop: Loop, ds: Dataset | None) -> None:
        """Creates the display for a new run."""
        file = self._file if self._file is not None else sys.stdout
        self.output = resolve_output(self._requested_output, self._file)
        self._period = float(
            self.interval if self.interval is not None else DEFAULT_INTERVALS[self.output]
        )
        trainer = loop.trainer
        self._metric_objects = list(trainer.train_metrics) if trainer is not None else None
        self._postfix = ""
        self.draws = 0
        total = loop.end_step if loop.end_step >= 0 else None
        if self.output == "terminal":
            self._renderer = _TqdmRenderer(False, file, loop.start_step, total)
        elif self.output == "notebook":
            if has_ipywidgets():
                self._renderer = _TqdmRenderer(True, file, loop.start_step, total)
            else:
                self._renderer = _HTMLRenderer(file)
        else:
            self._renderer = _PlainRenderer(file)
        self._start_step = loop.start_step
        self._t_start = self._clock()
        self._t_first = None
        self._next = -math.inf  # The first step is drawn: it shows the metrics early.

    def on_step(self, loop: Loop, metrics: list) -> None:
        """Redraws when `interval` seconds passed since the last redraw; else only reads the clock."""
        now = self._clock()
        if now < self._next:
            return
        self._redraw(loop, metrics, now, loop.loop_step + 1)

    def on_end(self, loop: Loop, metrics: list) -> None:
        """Draws the final state, closes the display and prints the final line."""
        now = self._clock()
        step = loop.loop_step
        if self._renderer is None:  # Our on_start did not run for this run.
            self.on_start(loop, None)
        if metrics:
            self._postfix = self._format_metrics(loop, metrics)
        rate, _ = self._rate_eta(now, step, None, final=True)
        self._renderer.final(step, step, rate, self._postfix)
        self._renderer = None
        done = step - loop.start_step
        line = (
            f"Training done at step {step}: {done} step{'s' if done != 1 else ''} in "
            f"{_format_duration(now - self._t_start)} ({_format_rate(rate)})"
        )
        self.last_line = f"{line} | {self._postfix}" if self._postfix else line
        print(self.last_line, file=self._file if self._file is not None else sys.stdout,
              flush=True)

    def write(self, text: str) -> None:
        """Prints a line without breaking the bar (tqdm.write in a terminal)."""
        file = self._file if self._file is not None else sys.stdout
        if self._renderer is None:
            print(text, file=file, flush=True)
        else:
            self._renderer.write(text, file)

    # Drawing -----------------------------------------------------------------
    def _redraw(self, loop: Any, metrics: list, now: float, step: int) -> None:
        if self._t_first is None:
            # Rates count from the end of the first step, so compilation is excluded.
            self._t_first, self._n_first = now, step
        self._next = now + self._period
        self._postfix = self._format_metrics(loop, metrics)
        total = loop.end_step if loop.end_step >= 0 else None
        rate, eta = self._rate_eta(now, step, total)
        self._renderer.update(step, total, rate, eta, self._postfix)
        self.draws += 1

    def _rate_eta(
        self, now: float, step: int, total: int | None, final: bool = False
    ) -> tuple[float | None, float | None]:
        """Steps/s since the first step (compilation excluded) and the ETA in seconds.

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

    def _format_metrics(self, loop: Any, metrics: list) -> str:
        import jax

        values = jax.device_get(list(metrics))  # One transfer for all the values.
        objects = self._metric_objects
        parts = []
        for i, value in enumerate(values):
            if objects is not None and i < len(objects):
                metric = objects[i]
                parts.append(f"{metric.short_name}={metric.pretty_print(value)}")
            else:  # A loop driven by model.fit: [loss, *other logs], named by the bridge.
                names = loop.shared_data.get(LOG_NAMES_KEY, ())
                name = names[i] if i < len(names) else f"metric_{i}"
                parts.append(f"{name}={float(value):.4g}")
        # The last validation of the run (run_steps/run_epochs with validation_data).
        for name, value in loop.shared_data.get(VAL_LOGS_KEY, {}).items():
            if isinstance(value, float):
                parts.append(f"{name}={value:.4g}")
        return " ".join(parts)


def attach_progress_bar(
    loop: Loop,
    *,
    output: str = "auto",
    file: TextIO | None = None,
    interval: float | None = None,
    priority: float = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> ProgressBar:
    """Attaches a progress bar with steps, steps/s, ETA and the train metrics to `loop`.

    The output kind is detected at the start of each run (`output="auto"`):

    - in a Jupyter/Colab kernel, tqdm's widget when ipywidgets is installed,
      else an HTML block updated in place (one output, not a line per update);
    - in a terminal (`file` is a TTY), tqdm's bar redrawn in place;
    - otherwise (CI logs, pipes, captured output), a plain line now and then.

    The bar redraws at most once per `interval` seconds (0.25 in a terminal,
    0.5 in a notebook, 5 for plain lines). Only then are the metric values
    copied from the device and formatted (`short_name=pretty_print(value)`),
    so other steps cost one clock read. At the end of every run it prints a
    final line with the last step and the metrics, whatever the output kind.

    Attaching twice to the same loop returns the bar already attached (it is
    kept in `loop.shared_data[PROGRESS_BAR_KEY]`).

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
        # Training done at step 1000: 1000 steps in 00:04 (251 steps/s) | batch_loss=0.101 ...
    """
    existing = loop.shared_data.get(PROGRESS_BAR_KEY)
    if existing is not None:
        return existing
    bar = ProgressBar(output=output, file=file, interval=interval, clock=clock)
    loop.on_start(_HOOK_NAME, priority, bar.on_start)
    loop.on_step(_HOOK_NAME, priority, bar.on_step, schedule=bar.schedule)
    loop.on_end(_HOOK_NAME, priority, bar.on_end)
    loop.shared_data[PROGRESS_BAR_KEY] = bar
    return bar
