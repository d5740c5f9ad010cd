"""The progress bar: plain lines, terminal bar, notebook HTML, metric reads, cost."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.commandline import _progress

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


def test_plain_output_prints_a_line_per_interval_and_a_final_line(
    trainer, train_ds, clock, capsys
):
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(1.0))
    bar = ktl.commandline.attach_progress_bar(loop, clock=clock)  # stdout is captured: no TTY
    loop.run_steps(train_ds, 20)

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert bar.output == "plain"
    assert "\r" not in out and "\x1b" not in out
    # The first step, then one line every 5 (fake) seconds, then the final line.
    assert [line.split(" |")[0] for line in lines[:-1]] == [
        "Step 1/20 (5%)", "Step 6/20 (30%)", "Step 11/20 (55%)", "Step 16/20 (80%)"
    ]
    assert "ETA 00:14" in lines[1]  # 14 steps left at 1 step per second
    final = lines[-1]
    assert final.startswith("Training done at step 20: 20 steps in 00:20 (1 steps/s)")
    for short_name in ("batch_loss=", "~loss+=", "~loss=", "~acc="):
        assert short_name in final
    assert final == bar.last_line


def test_final_line_is_printed_even_when_no_line_was_due(trainer, train_ds, clock, capsys):
    loop = ktl.Loop(trainer)
    ktl.commandline.attach_progress_bar(loop, output="plain", interval=1000.0, clock=clock)
    loop.run_steps(train_ds, 3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Step 1/3")
    assert lines[1].startswith("Training done at step 3: 3 steps")


def test_metrics_are_read_from_the_device_only_when_the_bar_redraws(
    trainer, train_ds, clock
):
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
    # One more read of each at the end: the run's entry in loop.history.
    assert reads[0] == (bar.draws + 2) * counted_metrics


def test_terminal_output_redraws_one_line_in_place_with_tqdm(trainer, train_ds, clock):
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
    lines = text.split("\n")
    # Two lines written during the run, the closed bar's line, the final line.
    assert len(lines) == 5 and lines[-1] == ""
    assert [line.split("\r")[-1] for line in lines[:2]] == ["note 5", "note 11"]
    assert text.count("\r") >= bar.draws  # every redraw returns to the start of the line
    bar_line = lines[2].split("\r")[-1]
    assert "12/12" in bar_line and "100%" in bar_line and "~acc=" in bar_line
    assert lines[3].startswith("Training done at step 12: 12 steps")


def test_run_epochs_shows_the_end_step_once_the_first_epoch_ends(digits, trainer, clock):
    x, y, _, _ = digits
    ds = ktl.ArrayDataset(x[:256], y[:256], batch_size=64)  # 4 steps per epoch
    out = io.StringIO()
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(1.0))
    ktl.commandline.attach_progress_bar(loop, output="plain", file=out, interval=2.0,
                                        clock=clock)
    loop.run_epochs(ds, 3)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Step 1 |")  # the total is unknown in the first epoch
    assert "ETA ?" in lines[0]
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
    monkeypatch.setattr(_progress, "has_ipywidgets", lambda: False)
    loop = ktl.Loop(trainer)
    loop.on_step("tick", -1, clock.tick_hook(TICK))
    bar = ktl.commandline.attach_progress_bar(loop, output="notebook", interval=1.0,
                                              clock=clock)
    loop.run_steps(train_ds, 20)

    assert bar.output == "notebook"
    assert len(handles) == 1  # one output, updated in place
    contents = handles[0].contents
    assert len(contents) == 1 + bar.draws + 1  # initial, each redraw, the final state
    final_html = contents[-1].data
    assert "<progress" in final_html and "step 20/20 (100%)" in final_html
    assert "~acc=" in final_html
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
    [("auto", True, "terminal"), ("auto", False, "plain"), ("plain", True, "plain"),
     ("notebook", False, "notebook"), ("terminal", False, "terminal")],
    ids=["tty", "pipe", "forced-plain", "forced-notebook", "forced-terminal"],
)
def test_output_kind_is_detected_or_forced(output, tty, expected):
    assert ktl.commandline.resolve_output(output, _Stream(tty)) == expected
    assert not ktl.commandline.in_notebook()  # pytest is no kernel


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"output": "html"}, ValueError, "output must be one of"),
     ({"interval": -1}, ValueError, "interval must be a non-negative"),
     ({"clock": 3.0}, TypeError, "clock must be a function")],
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
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    loop = ktl.Loop(None)
    ktl.commandline.attach_progress_bar(loop, output="plain")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[loop.as_keras_callback()])
    final = capsys.readouterr().out.splitlines()[-1]
    assert "loss=" in final and "accuracy=" in final
