"""report_eval prints GoMLX's evaluation report and returns the values."""

from __future__ import annotations

import pytest

import keras_trainloop as ktl


def test_report_eval_prints_each_dataset_and_each_eval_metric(trainer, train_ds, digits, capsys):
    loop = ktl.Loop(trainer)
    loop.run_steps(train_ds, 30)
    _, _, x, y = digits
    test_ds = ktl.ArrayDataset(x, y, batch_size=128, name="test")
    small_ds = ktl.ArrayDataset(x[:100], y[:100], batch_size=64, name="small")

    results = ktl.commandline.report_eval(trainer, test_ds, small_ds)

    expected = trainer.eval(test_ds)
    assert results[0] == pytest.approx([float(v) for v in expected], rel=1e-6)
    assert len(results) == 2 and results[0] != results[1]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Results on test:",
        f"\tMean Loss+Regularization (#loss+): {results[0][0]:.3f}",
        f"\tMean Loss (#loss): {results[0][1]:.3f}",
        f"\tMean Accuracy (#acc): {results[0][2]:.2%}",
        "Results on small:",
        f"\tMean Loss+Regularization (#loss+): {results[1][0]:.3f}",
        f"\tMean Loss (#loss): {results[1][1]:.3f}",
        f"\tMean Accuracy (#acc): {results[1][2]:.2%}",
    ]


class _EmptyDataset:
    name = "empty"

    def yield_batch(self):
        raise EOFError

    def reset(self):
        pass


def test_report_eval_of_an_empty_dataset_raises(trainer, capsys):
    with pytest.raises(ValueError, match="'empty' yielded no batch"):
        ktl.commandline.report_eval(trainer, _EmptyDataset())
    assert capsys.readouterr().out == ""
