"""How the progress bar draws: one status, three outputs (terminal, notebook, plain lines).

`ProgressBar` (`_progress.py`) decides when to draw and computes a `Status`;
the renderers here only lay it out. All three show the same numbers: the
steps, the elapsed time, one rate (steps per second since the first step
ended, so compilation is left out) and the ETA from that rate, then the
metrics. Before the first step ends they say that it is compiling.

- `TerminalRenderer`: the bar on one line sized to the terminal (80 columns
  fit), the metrics below it, wrapped to the width; redrawn in place with
  ANSI escapes (carriage return, cursor up, erase below).
- `HTMLRenderer`: an HTML block in a notebook, updated in place through an
  IPython display id.
- `PlainRenderer`: one line per draw, for logs and pipes (no escape codes).
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import os
from collections.abc import Sequence
from typing import Any, TextIO

COMPILING = "compiling the first step..."
"""What the bar says until the first step of a run ends."""

DEFAULT_COLUMNS = 80
"""The width assumed when the terminal reports none (and `COLUMNS` is unset)."""

_MIN_BAR = 10  # Narrower than this, the bar is left out (the numbers stay).
_MAX_BAR = 60
_PARTIAL = " ▏▎▍▌▋▊▉"
_CSI = "\x1b["


@dataclasses.dataclass(frozen=True)
class Status:
    """What one draw shows.

    Attributes:
        step: the steps done (the loop's step after the last one that ran).
        total: the end step, or None while unknown.
        elapsed: seconds since the run started (compilation included).
        rate: steps per second since the first step ended, or None.
        eta: seconds left at `rate`, or None.
        metrics: the metric items, e.g. `("loss=0.123", "accuracy=95.20%")`.
        compiling: the first step has not ended yet.
    """

    step: int
    total: int | None
    elapsed: float = 0.0
    rate: float | None = None
    eta: float | None = None
    metrics: tuple[str, ...] = ()
    compiling: bool = False


def format_duration(seconds: float | None) -> str:
    """`MM:SS`, or `H:MM:SS` from an hour; "?" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_rate(rate: float | None) -> str:
    """`158 steps/s` (3 significant digits below 100); "? steps/s" when unknown."""
    if rate is None or not math.isfinite(rate):
        return "? steps/s"
    if rate >= 100:
        return f"{rate:,.0f} steps/s"
    return f"{rate:.3g} steps/s"


def _where(status: Status) -> str:
    """`Step 900/2000 (45%)`, or `Step 900` while the total is unknown."""
    step, total = status.step, status.total
    return f"Step {step}/{total} ({100.0 * step / total:.0f}%)" if total else f"Step {step}"


def plain_line(status: Status) -> str:
    """The status as one line: `Step 9/20 (45%) | 158 steps/s | ETA 00:07 | loss=0.123`."""
    if status.compiling:
        return f"{_where(status)} | {COMPILING}"
    line = f"{_where(status)} | {format_rate(status.rate)} | ETA {format_duration(status.eta)}"
    return " | ".join([line, " ".join(status.metrics)]) if status.metrics else line


def terminal_columns(file: Any) -> int:
    """The width of the terminal `file` writes to; `COLUMNS`, then 80, when it says none."""
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            columns = 0
    return columns if columns > 0 else DEFAULT_COLUMNS


def _bar_cells(fraction: float, cells: int, unicode: bool) -> str:
    """A bar of `cells` characters filled to `fraction` (eighths of a cell in Unicode)."""
    fraction = min(max(fraction, 0.0), 1.0)
    if not unicode:
        full = int(fraction * cells)
        return "#" * full + " " * (cells - full)
    eighths = int(fraction * cells * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_PARTIAL[part] if part else "")
    return text + " " * (cells - len(text))


def _stats(status: Status) -> str:
    """`900/2000 [00:05<00:07, 158 steps/s]`, or the step and the compiling note."""
    where = f"{status.step}/{status.total}" if status.total else f"{status.step}"
    if status.compiling:
        return f"{where} [{COMPILING}]"
    elapsed = format_duration(status.elapsed)
    times = f"{elapsed}<{format_duration(status.eta)}" if status.total else elapsed
    return f"{where} [{times}, {format_rate(status.rate)}]"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def bar_line(status: Status, width: int, unicode: bool = True) -> str:
    """The bar's first line in at most `width` characters.

    `Training:  45%|█████▍      | 900/2000 [00:05<00:07, 158 steps/s]`; the
    bar takes the room the numbers leave (at most 60 cells); when under 10
    cells are left, "Training: " goes, then the bar.
    """
    stats = _stats(status)
    if not status.total:
        return _fit(f"Training: {stats}", width)
    fraction = status.step / status.total
    percent = f"{100.0 * fraction:3.0f}%"
    for prefix in ("Training: ", ""):
        room = width - len(prefix) - len(percent) - len(stats) - 3  # "|", "| "
        if room >= _MIN_BAR:
            cells = _bar_cells(fraction, min(room, _MAX_BAR), unicode)
            return f"{prefix}{percent}|{cells}| {stats}"
    return _fit(f"{percent} {stats}", width)


def wrap_items(items: Sequence[str], width: int) -> list[str]:
    """The items joined by spaces into lines of at most `width` characters (never cut
    between an item's name and value; an item longer than a line is shortened)."""
    lines: list[str] = []
    line = ""
    for item in items:
        item = _fit(item, width)
        if line and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    if line:
        lines.append(line)
    return lines


def _can_encode(file: Any, text: str) -> bool:
    try:
        text.encode(getattr(file, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


class TerminalRenderer:
    """The bar and the metrics below it, redrawn in place, sized to the terminal.

    After each draw the cursor stays at the end of the last line drawn; the
    next draw goes back to the start of the first (carriage return, cursor
    up) and erases below before writing, so a shorter drawing leaves nothing
    behind. Each line is at most one column narrower than the terminal, so
    no line wraps and the count of lines to go back up stays exact.
    """

    def __init__(self, file: TextIO):
        self._file = file
        self._height = 0  # Lines on screen of the current drawing.
        self._last: Status | None = None
        self._unicode = _can_encode(file, _PARTIAL + "█")

    def _lines(self, status: Status) -> list[str]:
        width = max(terminal_columns(self._file) - 1, 20)
        return [bar_line(status, width, self._unicode), *wrap_items(status.metrics, width)]

    def _erase(self) -> str:
        """Back to the start of the drawing, and erase it and what is below."""
        if not self._height:
            return ""
        up = f"{_CSI}{self._height - 1}A" if self._height > 1 else ""
        return f"\r{up}{_CSI}J"

    def _draw(self, status: Status, before: str = "", after: str = "") -> None:
        lines = self._lines(status)
        self._file.write(self._erase() + before + "\n".join(lines) + after)
        self._file.flush()
        self._height = 0 if after else len(lines)
        self._last = status

    def update(self, status: Status) -> None:
        self._draw(status)

    def write(self, text: str) -> None:
        """Writes `text` as lines above the bar, then draws the bar again below."""
        if self._last is None:
            self._file.write(text + "\n")
            self._file.flush()
            return
        self._draw(self._last, before=text + "\n")

    def final(self, status: Status) -> None:
        """Draws the final state and moves below it: the drawing stays on screen."""
        self._draw(status, after="\n")


def _html(status: Status) -> str:
    if status.total:
        bar = (
            f'<progress value="{status.step}" max="{status.total}" style="width: 30em"></progress>'
        )
    else:
        bar = '<progress style="width: 30em"></progress>'
    where = _where(status)
    where = where[0].lower() + where[1:]
    if status.compiling:
        stats = f"{where} · {COMPILING}"
    else:
        stats = (
            f"{where} · {format_duration(status.elapsed)} · {format_rate(status.rate)} · "
            f"ETA {format_duration(status.eta)}"
        )
    metrics = html.escape(" ".join(status.metrics))
    return f'<div style="font-family: monospace">{bar} {html.escape(stats)}<br>{metrics}</div>'


class HTMLRenderer:
    """An HTML block in a notebook, updated in place through an IPython display id.

    The block is displayed at the first draw (the compiling note at the
    start of a run). Without a kernel to display in, each draw prints a
    plain line instead.
    """

    def __init__(self, file: TextIO):
        self._file = file
        self._handle: Any = None
        self._shown = False

    def update(self, status: Status) -> None:
        from IPython import display as ipd

        content = ipd.HTML(_html(status))
        if not self._shown:
            self._shown = True
            self._handle = ipd.display(content, display_id=True)
        elif self._handle is not None:
            self._handle.update(content)
        if self._handle is None:  # No kernel (IPython.display printed a text repr instead).
            print(plain_line(status), file=self._file, flush=True)

    def write(self, text: str) -> None:
        print(text, file=self._file, flush=True)

    def final(self, status: Status) -> None:
        if self._handle is not None:
            self.update(status)


class PlainRenderer:
    """One plain line per draw, for logs and pipes (no escape codes, no carriage returns)."""

    def __init__(self, file: TextIO):
        self._file = file

    def update(self, status: Status) -> None:
        print(plain_line(status), file=self._file, flush=True)

    def write(self, text: str) -> None:
        print(text, file=self._file, flush=True)

    def final(self, status: Status) -> None:
        pass  # The final line says it all.
