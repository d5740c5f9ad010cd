"""The code on the docs pages that readers copy first runs as written.

- docs/getting-started.md: its Python blocks, in order, in one namespace (they build on
  each other, from loading the data to the eval report).
- docs/coming-from-fit.md: the `model.fit` snippet and the keras-trainloop one, on the same
  data and initial weights, learn alike (as tests/docs/test_readme_fit_section.py checks for
  the README's copy).
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import pytest

import keras_trainloop as ktl

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "loop"))
from keras_parity import digits_data, twin_models

DOCS = pathlib.Path(__file__).parents[2] / "docs"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def _snippet_after(text: str, marker: str) -> str:
    return _python_blocks(text[text.index(marker) :])[0]


def test_getting_started_runs_top_to_bottom(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in _python_blocks((DOCS / "getting-started.md").read_text()):
        exec(block, namespace)  # noqa: S102 (the page's own code)
    out = capsys.readouterr().out
    assert "Training done at step 600" in out
    assert "Results on test:" in out
    assert float(namespace["results"][0][-1]) > 0.8  # The test accuracy.
    assert namespace["ctx"].get_param("hidden") == 64  # Set by the --set flag.
    assert not list(tmp_path.iterdir())


def test_the_fit_and_loop_snippets_run_and_learn_alike(tmp_path, monkeypatch, capsys):
    text = (DOCS / "coming-from-fit.md").read_text()
    monkeypatch.chdir(tmp_path)  # The snippets write best.keras and backup/ here.
    x, y, x_val, y_val = digits_data(300, 100)
    data = {
        "x": x,
        "y": y,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_val,
        "y_test": y_val,
        "keras": keras,
        "ktl": ktl,
    }
    fit_model, loop_model = twin_models()
    fit_ns = dict(data, model=fit_model)
    exec(_snippet_after(text, "With `model.fit`:"), fit_ns)  # noqa: S102
    loop_ns = dict(data, model=loop_model, callbacks=fit_ns["callbacks"])
    exec(_snippet_after(text, "With keras-trainloop (same model object"), loop_ns)  # noqa: S102
    capsys.readouterr()
    fit_history, loop_history = fit_ns["history"].history, loop_ns["history"].history
    for history in (fit_history, loop_history):
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
        assert history["val_loss"][-1] < history["val_loss"][0]
    assert abs(loop_history["val_accuracy"][-1] - fit_history["val_accuracy"][-1]) < 0.15
    assert (tmp_path / "best.keras").exists()
    assert loop_ns["trainer"].model is loop_model


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
