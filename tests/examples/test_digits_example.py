import os

import pytest

from keras_trainloop.examples import digits


def test_trains_digits_to_90_percent_and_writes_the_plot(tmp_path, capsys):
    plot = tmp_path / "plot.png"
    result = digits.main(["--steps", "400", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert result["global_step"] == 400
    test_accuracy = float(result["eval"][1][-1])
    assert test_accuracy >= 0.9
    assert "Results on test" in out and "Mean Accuracy (#acc)" in out
    assert f"Plot: {os.path.abspath(plot)}" in out
    assert plot.stat().st_size > 0


def test_checkpoint_run_resumes_where_it_stopped(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    digits.main(["--steps", "60", "--checkpoint", str(ckpt), "--no-eval",
                 "--set", "hidden=32;learning_rate=0.01"])
    capsys.readouterr()
    result = digits.main(["--steps", "100", "--checkpoint", str(ckpt), "--no-eval"])
    out = capsys.readouterr().out
    assert "Resuming from" in out and "at step 60" in out
    assert result["global_step"] == 100
    assert (ckpt / "plot.png").exists()


def test_bad_setting_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        digits.main(["--steps", "10", "--set", "no_such_param=3"])
    assert "no_such_param" in capsys.readouterr().err


def test_trains_on_a_tfds_dataset_on_disk(tfds_digits_dir, tmp_path, capsys):
    result = digits.main(["--tfds", "digits_local", "--data-dir", tfds_digits_dir,
                          "--steps", "150", "--plot", str(tmp_path / "p.png"),
                          "--set", "learning_rate=0.01"])
    assert result["global_step"] == 150
    assert float(result["eval"][1][-1]) > 0.5
    assert "Results on digits_local/test" in capsys.readouterr().out


def test_one_seed_gives_the_same_accuracy_twice(capsys):
    args = ["--steps", "40", "--seed", "3", "--plot", os.devnull]
    first, second = digits.main(args), digits.main(args)
    capsys.readouterr()
    assert [float(v) for v in first["eval"][1]] == [float(v) for v in second["eval"][1]]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, capsys):
    straight = digits.main(["--steps", "80", "--seed", "1", "--plot", os.devnull])
    ckpt = tmp_path / "ckpt"
    digits.main(["--steps", "30", "--seed", "1", "--checkpoint", str(ckpt), "--no-eval"])
    resumed = digits.main(["--steps", "80", "--seed", "1", "--checkpoint", str(ckpt)])
    capsys.readouterr()
    # The same batches after the resume as without it: the same weights, the same report.
    for got, want in zip(resumed["eval"], straight["eval"], strict=True):
        assert [float(v) for v in got] == pytest.approx([float(v) for v in want], rel=1e-5)
