"""Plot points: one measured metric value at one step, stored as JSON lines."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable

POINTS_FILE_NAME = "training_plot_points.jsonl"
"""The points file in a checkpoint directory (GoMLX: training_plot_points.json)."""

TRAIN = "train"
EVAL = "eval"


@dataclasses.dataclass(frozen=True)
class Point:
    """One metric value measured at one global step.

    Attributes:
        step: the global step (steps trained so far) when it was measured.
        metric_name: the metric's name, e.g. "Mean Accuracy".
        short_name: the metric's short name, e.g. "#acc".
        metric_type: e.g. "loss" or "accuracy"; one plot per type.
        dataset: the dataset's name: the evaluated dataset, or the training
            dataset for train metrics.
        kind: "train" for train metrics (moving averages during training),
            "eval" for metrics of `trainer.eval` on a dataset.
        value: the value.
    """

    step: int
    metric_name: str
    short_name: str
    metric_type: str
    dataset: str
    kind: str
    value: float

    @property
    def series(self) -> str:
        """What was measured on: "Train" (train metrics) or "Eval on <dataset>" (one colour each)."""
        return "Train" if self.kind == TRAIN else f"Eval on {self.dataset}"

    @property
    def label(self) -> str:
        """The curve's name: "Train: <metric>" or "Eval on <dataset>: <metric>" (as GoMLX)."""
        return f"{self.series}: {self.metric_name}"

    def to_json(self) -> str:
        """One JSON line (without the newline)."""
        return json.dumps(dataclasses.asdict(self), allow_nan=True)

    @classmethod
    def from_json(cls, line: str) -> Point:
        """Parses a line written by `to_json`.

        Raises:
            ValueError: the line is not such a JSON object.
        """
        record = json.loads(line)
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(record, dict) or set(record) != set(fields):
            raise ValueError(f"expected a JSON object with the fields {fields}")
        return cls(
            step=int(record["step"]),
            metric_name=str(record["metric_name"]),
            short_name=str(record["short_name"]),
            metric_type=str(record["metric_type"]),
            dataset=str(record["dataset"]),
            kind=str(record["kind"]),
            value=float(record["value"]),
        )


def points_path(path: str | os.PathLike) -> str:
    """`path` itself for a file, or the points file inside a directory."""
    path = os.path.expanduser(os.fspath(path))
    return os.path.join(path, POINTS_FILE_NAME) if os.path.isdir(path) else path


def load_points(path: str | os.PathLike) -> list[Point]:
    """Loads the points saved as JSON lines.

    A last line that is not a point (a write cut short: the process was
    killed while appending, with a version that did not write atomically)
    is dropped with a warning naming the file and line; any other line that
    is not a point is an error.

    Args:
        path: a points file, or a (checkpoint) directory holding
            `POINTS_FILE_NAME`.

    Returns:
        The points, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line other than the last is not a point (the file is
            corrupt); the message gives the file and line number.

    Example:
        points = ktl.plots.load_points("/tmp/run")  # the checkpoint directory
        ktl.plots.plot_points(points, "/tmp/run/plot.png")
    """
    points, torn = read_points(path)
    if torn is not None:
        warn_torn(torn)
    return points


@dataclasses.dataclass(frozen=True)
class TornLine:
    """The last line of a points file, which is not a point (a write cut short)."""

    file_path: str
    number: int
    text: str
    error: str


def read_points(path: str | os.PathLike) -> tuple[list[Point], TornLine | None]:
    """The points of a points file, and its torn last line if it has one (no warning).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line other than the last is not a point.
    """
    file_path = points_path(path)
    with open(file_path, encoding="utf-8") as f:
        text = f.read()
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    points = []
    for i, (number, line) in enumerate(numbered):
        try:
            points.append(Point.from_json(line))
        except (ValueError, TypeError, KeyError) as e:
            if i == len(numbered) - 1:
                return points, TornLine(file_path, number, line, str(e))
            raise ValueError(
                f"Line {number} of the plot points file {file_path!r} is not a point: {e}. "
                f"Received: {line.strip()[:200]!r}. Points follow it, so the file is corrupt "
                "(not a write cut short, which only tears the last line). Fix: remove or "
                "repair that line (one JSON object per line, as Point.to_json writes), or "
                "delete the file to start the plots afresh."
            ) from None
    return points, None


def warn_torn(torn: TornLine) -> None:
    """Warns that the torn last line of a points file is dropped."""
    warnings.warn(
        f"Dropped line {torn.number} of the plot points file {torn.file_path!r}: it is not "
        f"a complete point ({torn.error}), as when a write was cut short (the process was "
        f"killed while saving). Received: {torn.text.strip()[:200]!r}. The other points "
        "are kept; the file is rewritten without it at the next save.",
        stacklevel=3,
    )


def save_points(points: Iterable[Point], path: str | os.PathLike, *, append: bool = True) -> str:
    """Writes points as JSON lines, appended by default; returns the file path.

    The file is replaced atomically (a temporary file in the same directory,
    then `os.replace`): an interrupted save leaves the previous file whole.
    Appending copies the existing lines, dropping a torn last line (with a
    warning, see `load_points`).

    Args:
        points: the points.
        path: a file, or a directory (the file `POINTS_FILE_NAME` in it).
        append: append to an existing file (else replace it).

    Returns:
        The path of the file written.
    """
    file_path = points_path(path)
    directory = os.path.dirname(file_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    kept = _kept_text(file_path) if append and os.path.exists(file_path) else ""
    new = "".join(point.to_json() + "\n" for point in points)
    write_atomically(file_path, (kept + new).encode("utf-8"))
    return file_path


def _kept_text(file_path: str) -> str:
    """The existing lines to keep when appending: all but a torn last line, newline-ended."""
    with open(file_path, encoding="utf-8") as f:
        numbered = [
            (n, line) for n, line in enumerate(f.read().split("\n"), start=1) if line.strip()
        ]
    if numbered:
        number, last = numbered[-1]
        try:
            Point.from_json(last)
        except (ValueError, TypeError, KeyError) as e:
            warn_torn(TornLine(file_path, number, last, str(e)))
            numbered.pop()
    return "".join(line + "\n" for _, line in numbered)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in its directory and `os.replace`.

    Readers see the old file or the new one, never a part: an interrupted
    write (Ctrl-C, kill -9, a full disk) leaves the old file as it was and
    no temporary file behind (except after kill -9 or a power cut: a hidden
    `.NAME.*.tmp`). The file keeps the old file's permissions (new files get
    the usual `0o666` less the umask).
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mode_for(path: str) -> int:
    """The permissions of the file at `path`, or those a new file gets (0o666 less the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


@functools.cache
def _umask() -> int:
    mask = os.umask(0o22)  # Reading the umask sets it: put it back at once.
    os.umask(mask)
    return mask
