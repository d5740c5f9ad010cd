"""README's "Coming from model.fit": both snippets run on real data and learn alike.

They shuffle differently (fit with its own RNG), so the values are compared
loosely; tests/loop/test_loop_keras_fit_parity.py compares unshuffled runs exactly.
"""

from __future__ import annotations

import pathlib
import re
import sys

import keras
import pytest

import keras_trainloop as ktl

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "loop"))
from keras_parity import digits_data, twin_models

README = pathlib.Path(__file__).parents[2] / "README.md"


def _snippet(after: str) -> str:
    text = README.read_text()
    start = text.index(after)
    match = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    return match.group(1)


def test_the_fit_and_loop_snippets_run_and_learn_alike(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # The snippets write best.keras and backup/ here.
    x, y, x_val, y_val = digits_data(300, 100)
    data = {"x": x, "y": y, "x_val": x_val, "y_val": y_val, "x_test": x_val, "y_test": y_val,
            "keras": keras, "ktl": ktl}
    fit_model, loop_model = twin_models()
    fit_ns = dict(data, model=fit_model)
    exec(_snippet("With `model.fit`:"), fit_ns)  # noqa: S102 (the README's own code)
    loop_ns = dict(data, model=loop_model, callbacks=fit_ns["callbacks"])
    exec(_snippet("With keras-trainloop (same model object"), loop_ns)  # noqa: S102
    capsys.readouterr()
    fit_history, loop_history = fit_ns["history"].history, loop_ns["history"].history
    for history in (fit_history, loop_history):
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
        assert history["val_loss"][-1] < history["val_loss"][0]
    assert abs(loop_history["val_accuracy"][-1] - fit_history["val_accuracy"][-1]) < 0.15
    assert set(loop_ns["trainer"].eval(ktl.ArrayDataset(x_val, y_val, batch_size=32),
                                       return_dict=True)) == {"loss", "accuracy"}
    assert (tmp_path / "best.keras").exists()
    assert loop_ns["trainer"].model is loop_model


if __name__ == "__main__":
    pytest.main([__file__])
