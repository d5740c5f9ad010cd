"""`loop.train_step_durations`: a bounded window of the last steps (issue 15 point 15)."""

from __future__ import annotations

import pytest
from loop_helpers import Batches

import keras_trainloop as ktl
from keras_trainloop.loop import _durations
from keras_trainloop.loop._durations import StepDurations

WINDOW = 50


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(_durations, "DURATIONS_WINDOW", WINDOW)
    return WINDOW


def test_the_default_window_is_documented_in_the_loop_docstring():
    assert _durations.DURATIONS_WINDOW == 10_000
    assert "last 10,000 steps" in " ".join(ktl.Loop.__doc__.split())


def test_a_run_longer_than_the_window_keeps_the_last_durations(trainer, small_window):
    loop = ktl.Loop(trainer)
    loop.run_steps(Batches(loop_forever=True), small_window + 30)
    assert len(loop.train_step_durations) == small_window
    kept = list(loop.train_step_durations)
    assert loop.median_train_step_duration() == sorted(kept)[small_window // 2]


def test_an_external_run_keeps_a_bounded_window(small_window):
    loop = ktl.Loop(None)
    run = loop.begin_external_run(0)
    for step in range(3 * small_window):
        run.step(step, [])
    assert len(loop.train_step_durations) == small_window
    run.end()


def test_the_median_is_over_the_kept_durations(small_window):
    loop = ktl.Loop(None)
    loop.train_step_durations = [1000.0] * 70 + [float(i) for i in range(small_window)]
    assert len(loop.train_step_durations) == small_window
    assert loop.median_train_step_duration() == small_window // 2  # The 1000s were dropped.


def test_the_window_reads_like_a_list(small_window):
    loop = ktl.Loop(None)
    values = [float(i) for i in range(2 * small_window)]
    loop.train_step_durations = values
    durations = loop.train_step_durations
    kept = values[-small_window:]
    assert durations == kept and (durations != kept) is False and kept == durations
    assert durations != values
    assert durations[0] == kept[0] and durations[-1] == kept[-1]
    assert durations[-5:] == kept[-5:] and isinstance(durations[-5:], list)
    assert list(durations) == kept and sum(durations) == sum(kept) and max(durations) == kept[-1]
    durations.append(1.5)
    durations.extend([2.5, 3.5])
    assert len(durations) == small_window and durations[-3:] == [1.5, 2.5, 3.5]
    assert StepDurations() == [] and loop.median_train_step_duration() > 0


def test_a_new_run_starts_a_fresh_window(trainer, small_window):
    loop = ktl.Loop(trainer)
    ds = Batches(loop_forever=True)
    loop.run_steps(ds, small_window + 5)
    loop.run_steps(ds, 3)
    assert len(loop.train_step_durations) == 3
