"""Plot points: one measured metric value at one step, stored as JSON lines."""

from __future__ import annotations

import dataclasses
import json
import os
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
    def label(self) -> str:
        """The curve's name: "Train: <metric>" or "Eval on <dataset>: <metric>" (as GoMLX)."""
        if self.kind == TRAIN:
            return f"Train: {self.metric_name}"
        return f"Eval on {self.dataset}: {self.metric_name}"

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

    Args:
        path: a points file, or a (checkpoint) directory holding
            `POINTS_FILE_NAME`.

    Returns:
        The points, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a point; the message gives the file and
            line number.

    Example:
        points = ktl.plots.load_points("/tmp/run")  # the checkpoint directory
        ktl.plots.plot_points(points, "/tmp/run/plot.png")
    """
    file_path = points_path(path)
    points = []
    with open(file_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                points.append(Point.from_json(line))
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(
                    f"Line {number} of the plot points file {file_path!r} is not a point: {e}. "
                    f"Received: {line.strip()[:200]!r}. Fix: remove or repair that line."
                ) from None
    return points


def save_points(points: Iterable[Point], path: str | os.PathLike, *, append: bool = True) -> str:
    """Writes points as JSON lines, appended by default; returns the file path.

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
    with open(file_path, "a" if append else "w", encoding="utf-8") as f:
        f.writelines(point.to_json() + "\n" for point in points)
    return file_path
