"""The progress bar: plain lines, terminal bar, notebook HTML, metric reads, cost."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.commandline import _progress
from keras_trainloop.commandline import _progress_render as _render

TICK = 0.25  # fake seconds per step: exact in binary, so redraw steps are exact


class _CountingValue:
    """A metric value that counts how often it is copied to the host."""

    def __init__(self, value, reads):
        self._value = value
        self._reads = reads

    def __array__(self, dtype=None, copy=None):
        self._reads[0] += 1
        return np.asarray(self._value, dtype=dtype)

    def block_until_ready(self):  # The loop waits on results now and then: not a read.
        self._value.block_until_ready()
        return self


def _count_metric_reads(trainer) -> list[int]:
    reads = [0]
    train_step = trainer.train_step

    def counting_train_step(spec, inputs, labels):
        # The batch loss (first) stays a device array: the loop checks it for NaN every
        # 16 steps on the device. The bar reads every metric when it redraws.
        first, *rest = train_step(spec, inputs, labels)
        return [first, *(_CountingValue(v, reads) for v in rest)]

    trainer.train_step = counting_train_step
    return reads


def test_plain_output_prints_a_line_per_interval_and_a_final_line(trainer, train_ds, clock, capsys):
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(1.0))
    bar = ktl.commandline.attach_progress_bar(loop, clock=clock)  # stdout is captured: no TTY
    loop.run_steps(train_ds, 20)

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert bar.output == "plain"
    assert "\r" not in out and "\x1b" not in out
    # The compiling note, the first step, then one line every 5 (fake) seconds, the final line.
    assert lines[0] == "Step 0/20 (0%) | compiling the first step..."
    assert [line.split(" |")[0] for line in lines[1:-1]] == [
        "Step 1/20 (5%)",
        "Step 6/20 (30%)",
        "Step 11/20 (55%)",
        "Step 16/20 (80%)",
    ]
    assert "ETA 00:14" in lines[2]  # 14 steps left at 1 step per second
    final = lines[-1]
    assert final.startswith("Training done at step 20: 20 steps in 00:20 (1 steps/s)")
    assert " | loss=" in final and "moving_average_accuracy=" in final
    assert final == bar.last_line


def test_final_line_is_printed_even_when_no_line_was_due(trainer, train_ds, clock, capsys):
    loop = ktl.Loop(trainer)
    ktl.commandline.attach_progress_bar(loop, output="plain", interval=1000.0, clock=clock)
    loop.run_steps(train_ds, 3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "compiling" in lines[0]
    assert lines[1].startswith("Step 1/3")
    assert lines[2].startswith("Training done at step 3: 3 steps")


def test_metrics_are_read_from_the_device_only_when_the_bar_redraws(trainer, train_ds, clock):
    reads = _count_metric_reads(trainer)
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(TICK))
    bar = ktl.commandline.attach_progress_bar(
        loop, output="plain", file=io.StringIO(), interval=1.0, clock=clock
    )
    loop.run_steps(train_ds, 40)

    # Redraws after steps 1, 5, 9, ..., 37 (every 4 fake steps), plus the final state.
    assert bar.draws == 10
    counted_metrics = len(trainer.train_metrics) - 1  # all but the batch loss
    # One more read of each at the end, shared through loop.logs by the final state and the
    # run's entry in loop.history.
    assert reads[0] == (bar.draws + 1) * counted_metrics


_ESCAPES = re.compile(r"\x1b\[(\d*)([AJK])|\r|\n|[^\x1b\r\n]+")


def _screen(text: str) -> list[str]:
    """The lines a terminal shows after `text` (carriage return, newline, cursor up, erase)."""
    rows, row, col = [""], 0, 0
    for match in _ESCAPES.finditer(text):
        token, code = match.group(0), match.group(2)
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif code == "A":
            row = max(0, row - int(match.group(1) or 1))
        elif code in ("J", "K"):
            rows[row] = rows[row][:col]
            if code == "J":
                del rows[row + 1 :]
        else:
            line = rows[row].ljust(col)
            rows[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return rows


def test_terminal_output_redraws_in_place_with_the_metrics_below_the_bar(
    trainer, train_ds, clock, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(TICK))
    bar = ktl.commandline.attach_progress_bar(
        loop, output="terminal", file=out, interval=1.0, clock=clock
    )
    ktl.every_n_steps(loop, 6, "note", 1, lambda loop, metrics: bar.write(f"note {loop.loop_step}"))
    loop.run_steps(train_ds, 12)

    text = out.getvalue()
    assert bar.output == "terminal"
    assert text.count("\r") >= bar.draws  # every redraw goes back to the start of the bar
    screen = _screen(text)
    # The lines written during the run, the bar and its metrics as last drawn, the final line.
    assert screen[:2] == ["note 5", "note 11"]
    assert screen[2].startswith("Training: 100%|") and "| 12/12 [00:03<00:00, " in screen[2]
    assert screen[3].startswith("loss=") and "moving_average_accuracy=" in screen[3]
    assert screen[4].startswith("Training done at step 12: 12 steps")
    assert f"{screen[4]} {screen[5]}" == bar.last_line  # the final line, wrapped
    assert screen[6:] == [""]
    assert all(len(line) < 80 for line in screen)


def test_terminal_says_it_is_compiling_until_the_first_step_ends(
    trainer, train_ds, clock, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    screens = []
    loop = ktl.Loop(trainer)
    loop.on_start("look", 1, lambda loop, ds: screens.append(_screen(out.getvalue())))
    loop.on_step("look", 1, lambda loop, metrics: screens.append(_screen(out.getvalue())))
    ktl.commandline.attach_progress_bar(
        loop, output="terminal", file=out, interval=100.0, clock=clock
    )
    loop.run_steps(train_ds, 2)

    at_start, after_first_step = screens[0], screens[1]
    assert len(at_start) == 1 and len(at_start[0]) == 79  # the bar fills the width
    assert at_start[0].startswith("Training:   0%|    ")
    assert at_start[0].endswith("    | 0/2 [compiling the first step...]")
    assert "compiling" not in "".join(after_first_step)
    assert after_first_step[0].startswith("Training:  50%|")


def test_eta_and_rate_leave_the_first_step_out(trainer, train_ds, clock):
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    seconds = iter([100.0] + [1.0] * 19)  # The first step compiles for 100 s, then 1 step/s.
    loop.on_step("tick", -1, lambda loop, metrics: setattr(clock, "now", clock.now + next(seconds)))
    bar = ktl.commandline.attach_progress_bar(
        loop, output="plain", file=out, interval=5.0, clock=clock
    )
    loop.run_steps(train_ds, 20)

    lines = out.getvalue().splitlines()
    assert lines[1].startswith("Step 1/20 (5%) | ? steps/s | ETA ?")  # no rate from one step
    assert lines[2].startswith("Step 6/20 (30%) | 1 steps/s | ETA 00:14")
    assert bar.last_line.startswith("Training done at step 20: 20 steps in 01:59 (1 steps/s)")


def test_bar_and_final_line_show_the_same_rate(trainer, train_ds, clock, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    seconds = iter([3.0] + [0.5, 0.25] * 10)  # A slow first step, then uneven ones.
    loop.on_step("tick", -1, lambda loop, metrics: setattr(clock, "now", clock.now + next(seconds)))
    bar = ktl.commandline.attach_progress_bar(
        loop, output="terminal", file=out, interval=1.0, clock=clock
    )
    loop.run_steps(train_ds, 21)

    screen = _screen(out.getvalue())
    rate = bar.last_line.split("(")[1].split(")")[0]
    assert rate == "2.67 steps/s"  # 20 steps in 7.5 s after the first one
    assert screen[0].endswith(f"21/21 [00:10<00:00, {rate}]")


def test_metrics_are_named_as_keras_names_them_and_formatted_by_their_metric(
    trainer, train_ds, clock
):
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    seen = []
    loop.on_end("logs", 1, lambda loop, metrics: seen.append(dict(loop.logs(metrics))))
    bar = ktl.commandline.attach_progress_bar(loop, output="plain", file=out, clock=clock)
    loop.run_steps(train_ds, 5)

    logs = seen[0]  # the run's end logs, as Keras callbacks see them
    items = bar.last_line.split(" | ")[1].split()
    assert [item.split("=")[0] for item in items] == ["loss", "moving_average_accuracy"]
    assert items[0] == f"loss={logs['loss']:.3f}"
    assert items[1] == f"moving_average_accuracy={logs['moving_average_accuracy']:.2%}"
    for short_name in ("batch_loss", "~loss", "~acc"):
        assert short_name not in bar.last_line


def test_validation_values_are_shown_after_each_validation(digits, trainer, train_ds, clock):
    _, _, x, y = digits
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(1.0))
    validations = []
    loop.on_validation_end("seen", 0, lambda loop, logs: validations.append(dict(logs)))
    bar = ktl.commandline.attach_progress_bar(
        loop, output="plain", file=out, interval=2.0, clock=clock
    )
    loop.run_steps(
        train_ds, 8, validation_data=ktl.ArrayDataset(x, y, batch_size=128), validation_freq=4
    )  # validates after steps 4 and 8

    lines = {line.split(" |")[0]: line for line in out.getvalue().splitlines()}
    assert "val_" not in lines["Step 1/8 (12%)"] + lines["Step 3/8 (38%)"]
    after = [lines["Step 5/8 (62%)"], lines["Step 7/8 (88%)"]]
    for line, logs in zip([*after, bar.last_line], validations[:1] * 2 + validations[1:]):
        assert f"val_loss={logs['loss']:.3f}" in line
        assert f"val_mean_accuracy={logs['mean_accuracy']:.2%}" in line
    assert bar.last_line.endswith(f"val_mean_accuracy={validations[1]['mean_accuracy']:.2%}")


_LONG_METRICS = tuple(
    f"{name}=0.123"
    for name in (
        "loss",
        "moving_average_accuracy",
        "sparse_top_k_categorical_accuracy",
        "val_loss",
        "val_mean_accuracy",
        "val_sparse_top_k_categorical_accuracy",
    )
)
_LONG_RUN = _render.Status(123_456, 1_000_000, 3 * 3600.0, 1234.5, 10 * 3600.0, _LONG_METRICS)


@pytest.mark.parametrize("columns", [80, 60], ids=["80", "60"])
def test_terminal_lines_fit_the_terminal_width_with_every_metric_whole(columns):
    width = columns - 1
    line = _render.bar_line(_LONG_RUN, width)
    lines = [line, *_render.wrap_items(_LONG_METRICS, width)]
    assert all(len(text) <= width for text in lines)
    assert " ".join(lines[1:]).split() == list(_LONG_METRICS)  # on lines of their own
    assert "123456/1000000 [3:00:00<10:00:00, 1,234 steps/s]" in line
    if columns == 80:
        assert line.startswith("Training:  12%|") and len(line.split("|")[1]) >= 10
    else:  # too narrow for a bar of 10 cells beside these numbers: the numbers stay whole
        assert line == " 12% 123456/1000000 [3:00:00<10:00:00, 1,234 steps/s]"


def test_lines_of_a_very_narrow_terminal_are_shortened_not_wrapped():
    lines = [_render.bar_line(_LONG_RUN, 39), *_render.wrap_items(_LONG_METRICS, 39)]
    assert all(len(text) <= 39 for text in lines)
    assert lines[0].endswith("...") and lines[-1].endswith("...")


@pytest.mark.parametrize(
    "columns, start, cells",
    [
        (80, "Training:  45%|", 27),
        (60, " 45%|", 17),
        (53, " 45%|", 10),
    ],
    ids=["80", "60", "53"],
)
def test_the_bar_takes_the_room_the_numbers_leave(columns, start, cells):
    status = _render.Status(900, 2000, 5.0, 158.0, 7.0, ("loss=0.123",))
    line = _render.bar_line(status, columns - 1)
    assert line.startswith(start) and line.endswith("| 900/2000 [00:05<00:07, 158 steps/s]")
    assert len(line) == columns - 1 and len(line.split("|")[1]) == cells


def test_terminal_width_comes_from_the_terminal_then_columns_then_80(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert _render.terminal_columns(io.StringIO()) == 80
    monkeypatch.setenv("COLUMNS", "132")
    assert _render.terminal_columns(io.StringIO()) == 132


def test_terminal_bar_falls_back_to_ascii_when_the_stream_cannot_encode_blocks():
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    renderer = _render.TerminalRenderer(out)
    renderer.update(_render.Status(5, 10, 1.0, 4.0, 1.25, ("loss=0.500",)))
    out.flush()
    text = out.buffer.getvalue().decode("ascii")
    assert "|" + "#" * 5 in text and "loss=0.500" in text


def test_run_epochs_shows_the_end_step_once_the_first_epoch_ends(digits, trainer, clock):
    x, y, _, _ = digits
    ds = ktl.ArrayDataset(x[:256], y[:256], batch_size=64)  # 4 steps per epoch
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(1.0))
    ktl.commandline.attach_progress_bar(loop, output="plain", file=out, interval=2.0, clock=clock)
    loop.run_epochs(ds, 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Step 0 | compiling the first step..."  # the total is unknown
    assert lines[1].startswith("Step 1 |") and "ETA ?" in lines[1]
    assert lines[-2].startswith("Step 11/12 (92%)")
    assert lines[-1].startswith("Training done at step 12: 12 steps")


class _FakeHandle:
    def __init__(self, content):
        self.contents = [content]

    def update(self, content):
        self.contents.append(content)


def test_notebook_output_updates_one_html_display_in_place(
    trainer, train_ds, clock, monkeypatch, capsys
):
    from IPython import display as ipd

    handles = []

    def fake_display(obj, display_id=False):
        assert display_id is True
        handles.append(_FakeHandle(obj))
        return handles[-1]

    monkeypatch.setattr(ipd, "display", fake_display)
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(TICK))
    bar = ktl.commandline.attach_progress_bar(loop, output="notebook", interval=1.0, clock=clock)
    loop.run_steps(train_ds, 20)

    assert bar.output == "notebook"
    assert len(handles) == 1  # one output, updated in place
    contents = handles[0].contents
    assert len(contents) == 1 + bar.draws + 1  # the compiling note, each redraw, the final state
    assert "step 0/20 (0%) · compiling the first step..." in contents[0].data
    assert "compiling" not in contents[1].data
    final_html = contents[-1].data
    assert "<progress" in final_html and "step 20/20 (100%)" in final_html
    assert "loss=" in final_html and "moving_average_accuracy=" in final_html
    rate = bar.last_line.split("(")[1].split(")")[0]
    assert f"{rate} · ETA 00:00" in final_html  # the final line's rate
    out = capsys.readouterr().out
    assert out.splitlines() == [bar.last_line]  # only the final line is printed


def test_skipped_steps_cost_about_a_microsecond():
    bar = _progress.ProgressBar(output="plain", file=io.StringIO())
    bar._next = float("inf")  # as between two redraws

    class FakeLoop:
        loop_step = 5

    loop, metrics = FakeLoop(), [0.0]
    on_step = bar.on_step
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20_000):
            on_step(loop, metrics)
        best = min(best, (time.perf_counter() - start) / 20_000)
    # < 2% of a 40 µs step on this class of machine (measured ~0.3-0.6 µs).
    assert best < 1.5e-6


def test_attaching_twice_returns_the_bar_already_attached(trainer):
    loop = ktl.Loop(trainer)
    first = ktl.commandline.attach_progress_bar(loop)
    assert ktl.commandline.attach_progress_bar(loop) is first
    assert loop.shared_data[ktl.commandline.PROGRESS_BAR_KEY] is first


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    "output, tty, expected",
    [
        ("auto", True, "terminal"),
        ("auto", False, "plain"),
        ("plain", True, "plain"),
        ("notebook", False, "notebook"),
        ("terminal", False, "terminal"),
    ],
    ids=["tty", "pipe", "forced-plain", "forced-notebook", "forced-terminal"],
)
def test_output_kind_is_detected_or_forced(output, tty, expected):
    assert ktl.commandline.resolve_output(output, _Stream(tty)) == expected
    assert not ktl.commandline.in_notebook()  # pytest is no kernel


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"output": "html"}, ValueError, "output must be one of"),
        ({"interval": -1}, ValueError, "interval must be a non-negative"),
        ({"clock": 3.0}, TypeError, "clock must be a function"),
    ],
    ids=["output", "interval", "clock"],
)
def test_bad_arguments_are_rejected(trainer, kwargs, error, match):
    with pytest.raises(error, match=match):
        ktl.commandline.attach_progress_bar(ktl.Loop(trainer), **kwargs)


def test_bar_under_model_fit_names_the_values_after_keras_logs(digits, capsys):
    import keras

    x, y = digits[0], digits[1]
    x = np.asarray(x).reshape(len(x), -1)[:256]
    y = np.asarray(y)[:256]
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(10)])
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    loop = ktl.Loop(None)
    ktl.commandline.attach_progress_bar(loop, output="plain")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[loop.as_keras_callback()])
    final = capsys.readouterr().out.splitlines()[-1]
    assert "loss=" in final and "accuracy=" in final
