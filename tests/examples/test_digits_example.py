import json
import os
import pathlib
import re
import subprocess
import sys

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
    digits.main(
        [
            "--steps",
            "60",
            "--checkpoint",
            str(ckpt),
            "--no-eval",
            "--set",
            "hidden=32;learning_rate=0.01",
        ]
    )
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
    result = digits.main(
        [
            "--tfds",
            "digits_local",
            "--data-dir",
            tfds_digits_dir,
            "--steps",
            "150",
            "--plot",
            str(tmp_path / "p.png"),
            "--set",
            "learning_rate=0.01",
        ]
    )
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


def _run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


_RUN_DIGITS = """
import json, runpy, sys
sys.argv = ["digits", *{argv!r}]
try:
    runpy.run_module("keras_trainloop.examples.digits", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
loaded = [m for m in ("keras", "jax", "tensorflow", "tensorflow_datasets") if m in sys.modules]
print(json.dumps({{"code": code, "loaded": loaded}}))
"""


def test_help_answers_before_keras_and_jax_are_imported(tmp_path):
    out = _run_python(_RUN_DIGITS.format(argv=["--help"]), tmp_path)
    assert out.returncode == 0, out.stderr
    *help_lines, last = out.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "loaded": []}
    assert "--set" in "\n".join(help_lines) and "learning_rate=0.001" in "\n".join(help_lines)


def test_the_digits_job_without_tfds_never_imports_tensorflow(tmp_path):
    out = _run_python(_RUN_DIGITS.format(argv=["--steps", "5", "--plot", "p.png"]), tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert "jax" in result["loaded"] and "keras" in result["loaded"]
    assert "tensorflow" not in result["loaded"]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_an_unknown_optimizer_is_a_usage_error_like_other_bad_settings(capsys):
    with pytest.raises(SystemExit) as raised:
        digits.main(["--steps", "10", "--set", "optimizer=foo"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m keras_trainloop.examples.digits")
    assert "error: Unknown optimizer name. Received: optimizer='foo'" in err
    assert "Traceback" not in err


def test_steps_help_says_it_is_the_total_across_resumed_runs():
    parser, _ = digits.build_parser()
    steps = next(action for action in parser._actions if action.dest == "steps")
    assert steps.help.startswith("total train steps, counted across resumed runs")


def test_parser_defaults_are_the_contexts(capsys):
    parser, flag = digits.build_parser()
    assert flag.dest == "set" and parser.parse_args([]).set == ""
    ctx = digits.create_context()
    assert {key: ctx.get_param(key) for key in digits.DEFAULTS} == digits.DEFAULTS
    with pytest.raises(SystemExit):  # the settings' own errors are unchanged
        digits.main(["--set", "hidden=1.5"])
    assert "Setting 'hidden=1.5': the value of parameter 'hidden' must parse as a int" in (
        capsys.readouterr().err
    )


_ROOT = pathlib.Path(__file__).parents[2]


def _extra(extras: dict, name: str) -> set[str]:
    """The requirements of an extra, with the package's own extras it names expanded."""
    found = set()
    for requirement in extras[name]:
        if requirement.startswith("keras-trainloop["):
            for inner in requirement.split("[")[1].rstrip("]").split(","):
                found |= _extra(extras, inner.strip())
        else:
            found.add(requirement)
    return found


def test_readme_sets_up_the_main_job_without_tensorflow_in_two_commands():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    text = (_ROOT / "README.md").read_text()
    block = text.split("## Set up and run", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[0].startswith(
        'pip install -e ".[examples]" && python -m keras_trainloop.examples.digits'
    )
    extras = tomllib.loads((_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    examples = _extra(extras, "examples")
    assert not [r for r in examples if "tensorflow" in r]
    assert {"scikit-learn", "matplotlib", "orbax-checkpoint"} <= {
        re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in examples
    }
    assert any("tensorflow" in r for r in _extra(extras, "all"))  # [all] keeps everything
