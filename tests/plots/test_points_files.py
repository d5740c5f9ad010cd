"""Points and PNG files: atomic writes, a torn last line dropped with a warning."""

from __future__ import annotations

import os
import stat
import warnings

import pytest

from keras_trainloop.plots import (
    PLOT_FILE_NAME,
    POINTS_FILE_NAME,
    Plots,
    Point,
    load_points,
    plot_points,
    save_points,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _points(steps, value=1.0):
    return [Point(s, "Metric loss", "m", "loss", "ds", "train", value / s) for s in steps]


def _lines(points):
    return "".join(p.to_json() + "\n" for p in points)


def _no_temporary_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "torn",
    ['{"step": 3, "metric_na', '{"step": 3, "metric_na\n', "{not json\n\n"],
    ids=["cut-mid-line", "cut-with-newline", "junk-then-blank-lines"],
)
def test_a_torn_last_line_is_dropped_with_a_warning_naming_file_and_line(tmp_path, torn):
    path = tmp_path / POINTS_FILE_NAME
    path.write_text(_lines(_points([1, 2])) + torn)
    with pytest.warns(
        UserWarning,
        match=rf"Dropped line 3 of the plot points file "
        rf"'{path}'.*write was cut short",
    ):
        assert load_points(tmp_path) == _points([1, 2])


def test_a_bad_line_followed_by_points_is_an_error_with_the_fix(tmp_path):
    path = tmp_path / POINTS_FILE_NAME
    path.write_text(_lines(_points([1])) + '{"step": 2, "metric_na\n' + _lines(_points([3])))
    with pytest.raises(
        ValueError,
        match=rf"Line 2 of the plot points file '{path}' is not a "
        r"point.*the file is corrupt.*Fix: remove or repair",
    ):
        load_points(path)


def test_appending_after_a_torn_line_drops_it_and_keeps_lines_whole(tmp_path):
    path = tmp_path / POINTS_FILE_NAME
    path.write_text(_lines(_points([1])) + '{"step": 2, "metr')
    with pytest.warns(UserWarning, match="Dropped line 2"):
        save_points(_points([3]), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_points(path) == _points([1, 3])


def test_a_last_point_without_its_newline_is_kept_and_appended_to(tmp_path):
    path = tmp_path / POINTS_FILE_NAME
    path.write_text(_lines(_points([1, 2])).rstrip("\n"))
    save_points(_points([3]), path)
    assert path.read_text() == _lines(_points([1, 2, 3]))


def test_plots_drop_a_torn_line_once_and_rewrite_the_file(tmp_path, make_trainer):
    path = tmp_path / POINTS_FILE_NAME
    path.write_text(_lines(_points([10, 20])) + '{"step": 30, "met')
    with pytest.warns(UserWarning, match="Dropped line 3") as record:
        plots = Plots(make_trainer(), directory=tmp_path, output="file")
    assert len(record) == 1
    assert plots.points == _points([10, 20])
    assert path.read_text() == _lines(_points([10, 20]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.add_points(_points([30]))
        assert load_points(tmp_path) == _points([10, 20, 30])


@pytest.mark.parametrize("append", [True, False], ids=["append", "replace"])
def test_saving_replaces_the_file_atomically(tmp_path, append):
    path = tmp_path / POINTS_FILE_NAME
    save_points(_points([1, 2]), path)
    inode = path.stat().st_ino
    save_points(_points([3]), path, append=append)
    assert path.stat().st_ino != inode  # A new file renamed over the old one, not rewritten.
    assert load_points(path) == _points([1, 2, 3] if append else [3])
    assert _no_temporary_files(tmp_path)


def _interrupt_writes(monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)


def test_an_interrupted_save_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / POINTS_FILE_NAME
    save_points(_points([1, 2]), path)
    before = path.read_bytes()
    _interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_points(_points([3]), path)
    assert path.read_bytes() == before
    assert _no_temporary_files(tmp_path)


def test_truncate_after_rewrites_atomically(tmp_path, make_trainer, monkeypatch):
    save_points(_points([10, 20, 30]), tmp_path)
    plots = Plots(make_trainer(), directory=tmp_path, output="file")
    path = tmp_path / POINTS_FILE_NAME
    inode = path.stat().st_ino
    assert plots.truncate_after(20) == 1
    assert path.stat().st_ino != inode
    assert load_points(path) == _points([10, 20])
    before = path.read_bytes()
    _interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        plots.truncate_after(10)
    assert path.read_bytes() == before
    assert _no_temporary_files(tmp_path)


def test_saving_keeps_the_files_permissions(tmp_path):
    path = tmp_path / POINTS_FILE_NAME
    save_points(_points([1]), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_current_umask()
    path.chmod(0o640)
    save_points(_points([2]), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def _current_umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def test_the_png_is_written_atomically(tmp_path, monkeypatch):
    png = tmp_path / PLOT_FILE_NAME
    plot_points(_points([1, 2, 3]), png)
    first = png.read_bytes()
    assert first[:8] == PNG_MAGIC
    inode = png.stat().st_ino
    plot_points(_points([1, 2, 3], value=2.0), png)
    assert png.stat().st_ino != inode and png.read_bytes()[:8] == PNG_MAGIC
    before = png.read_bytes()
    _interrupt_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        plot_points(_points([1, 2, 3], value=3.0), png)
    assert png.read_bytes() == before
    assert _no_temporary_files(tmp_path)
