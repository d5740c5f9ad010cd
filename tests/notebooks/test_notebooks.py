"""The notebooks in notebooks/, as a reader sees them and as a kernel runs them, offline.

The notebooks hold no test code. The checks live here and read what a reader
sees in the executed notebook: the progress bar's last state, the inline
plots, the printed results. A probe cell appended here (never saved) prints a
few of the kernel's values as JSON for the checks that need numbers.

Sizes: a notebook's defaults are for readers; the tests inject smaller ones
papermill-style, as a cell after the one tagged "parameters".

Files: the kernel runs with its working directory and TMPDIR inside pytest's
`tmp_path`; a notebook that writes into its working directory fails.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PARAMETERS_TAG = "parameters"
PROBE_MARKER = "NOTEBOOK_TEST_PROBE "
BADGE = re.compile(
    r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/"
    r"([\w.-]+\.ipynb)"
)
INSTALL = re.compile(
    r'%pip install -q "keras-trainloop(\[[\w,]+\])? @ git\+(https://github\.com/'
    r'[\w.-]+/[\w.-]+)"'
)


@dataclass
class Executed:
    """What a reader sees in an executed notebook, plus the probe's values."""

    stdout: str
    html: list[str]
    png_count: int
    values: dict[str, Any]
    tmp: pathlib.Path


@dataclass
class Spec:
    """How CI runs one notebook: injected parameters, a probe, and the checks of the result."""

    parameters: dict[str, Any]
    probe: str
    check: Callable[[Executed, dict[str, Any]], None]
    extras: set[str] = field(default_factory=lambda: {"examples"})


def _progress_bars(run: Executed) -> list[tuple[int, int]]:
    """(value, max) of each progress bar's last state."""
    bars = []
    for html in run.html:
        match = re.search(r'<progress value="(\d+)" max="(\d+)"', html)
        if match:
            bars.append((int(match.group(1)), int(match.group(2))))
    return bars


def _assert_finished_bars(run: Executed, count: int) -> None:
    bars = _progress_bars(run)
    assert len(bars) == count, bars
    assert all(value == maximum > 0 for value, maximum in bars), bars
    assert run.stdout.count("Training done at step") == count


def _in_tmp(run: Executed, path: str) -> bool:
    return pathlib.Path(path).resolve().is_relative_to((run.tmp / "tmp").resolve())


# Per-notebook checks ---------------------------------------------------------------------------
def _check_quickstart(run: Executed, params: dict[str, Any]) -> None:
    _assert_finished_bars(run, 1)
    assert f"Training done at step {params['STEPS']}" in run.stdout
    assert run.png_count >= 1, "the plots are drawn inline"
    assert "Results on train:" in run.stdout and "Results on test:" in run.stdout
    assert run.values["loop_step"] == params["STEPS"]
    assert run.values["test_accuracy"] > 0.85


def _check_keras_fit_hooks(run: Executed, params: dict[str, Any]) -> None:
    fired, total = run.values["fired"], run.values["total"]
    assert total == 45
    assert fired["every_20"] == [s for s in range(total) if (s + 1) % 20 == 0]
    assert fired["exponential"] == [5, 15, 35]
    assert fired["n_times"] == [11, 22, 33, 44]
    assert f"fit ended at step {total}" in run.stdout
    assert run.values["stopped_steps"] == 5 and run.values["stopped_epochs"] == 1
    assert "fit stopped after step 49, 5 steps into its first epoch" in run.stdout


def _check_from_fit_to_loop(run: Executed, params: dict[str, Any]) -> None:
    values = run.values
    _assert_finished_bars(run, 3)
    assert run.png_count >= 1, "the History plot is drawn inline"
    for history in (values["fit_history"], values["loop_history"]):
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
        assert 1 <= len(history["loss"]) <= params["EPOCHS"]
        assert history["val_loss"][-1] < history["val_loss"][0]
    assert values["fit_test_accuracy"] > 0.8 and values["loop_test_accuracy"] > 0.8
    assert abs(values["fit_test_accuracy"] - values["loop_test_accuracy"]) < 0.1
    assert "trainer.model is model: True" in run.stdout
    assert values["best_exists"] and _in_tmp(run, values["best_path"])
    assert _in_tmp(run, values["checkpoint_dir"])
    steps = params["STEPS"]
    assert f"resuming at step {steps}\n" in run.stdout
    assert values["loop_step"] == 2 * steps
    assert values["checkpoint_steps"][-1] == 2 * steps and len(values["checkpoint_steps"]) == 2


def _check_data_input(run: Executed, params: dict[str, Any]) -> None:
    values = run.values
    _assert_finished_bars(run, 4)
    assert run.png_count >= 1, "the plots are drawn inline"
    assert values["kinds"] == ["TFDataset", "TFDataset", "GrainDataset", "PyDatasetSource"]
    assert set(values["accuracies"]) == {"tf.data", "TFDS", "grain", "PyDataset"}
    assert all(accuracy > 0.8 for accuracy in values["accuracies"].values()), values
    assert _in_tmp(run, values["data_dir"])


SPECS = {
    "quickstart.ipynb": Spec(
        parameters={"STEPS": 300},
        probe="{'loop_step': loop.loop_step, 'test_accuracy': float(results[1][-1])}",
        check=_check_quickstart,
    ),
    "keras_fit_hooks.ipynb": Spec(
        parameters={},
        probe=(
            "{'fired': fired, 'total': -(-len(x) // 128) * epochs, "
            "'stopped_steps': loop2.loop_step - loop2.start_step, "
            "'stopped_epochs': len(history2.epoch)}"
        ),
        check=_check_keras_fit_hooks,
    ),
    "from_fit_to_loop.ipynb": Spec(
        parameters={"EPOCHS": 4, "STEPS": 150},
        probe=(
            "{'fit_history': fit_history.history, 'loop_history': history.history, "
            "'fit_test_accuracy': fit_results['accuracy'], "
            "'loop_test_accuracy': loop_results['accuracy'], "
            "'best_path': best_path, 'best_exists': os.path.exists(best_path), "
            "'checkpoint_dir': checkpoint_dir, 'loop_step': loop.loop_step, "
            "'checkpoint_steps': checkpoint.steps()}"
        ),
        check=_check_from_fit_to_loop,
    ),
    "data_input.ipynb": Spec(
        parameters={"STEPS": 200},
        probe=(
            "{'kinds': [type(d).__name__ for d in (ktl.as_dataset(test_tf), tfds_train, "
            "ktl.as_dataset(train_grain), py_dataset)], "
            "'accuracies': {k: float(v[0][-1]) for k, v in results.items()}, "
            "'data_dir': data_dir}"
        ),
        check=_check_data_input,
        extras={"examples", "grain"},
    ),
}


# Reading notebooks -----------------------------------------------------------------------------
def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _parameters_cell(nb: Any) -> int | None:
    for index, cell in enumerate(nb.cells):
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def _assigned_names(source: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z_]\w*)\s*=", source, re.MULTILINE))


def _project_urls() -> dict[str, str] | None:
    """pyproject.toml's [project.urls]; None where tomllib is missing (Python 3.10)."""
    try:
        import tomllib
    except ImportError:
        return None
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("urls", {})


def _to_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=float))


# Tests -----------------------------------------------------------------------------------------
def test_every_notebook_has_its_checks():
    assert {p.name for p in NOTEBOOKS} == set(SPECS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_as_a_user_sees_it(path):
    nb = nbformat.read(path, as_version=4)
    spec = SPECS[path.name]
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "colab-badge" in first.source
    badge = BADGE.search(first.source)
    assert badge and badge.group(2) == path.name, "the badge opens this notebook"
    repo_url = f"https://github.com/{badge.group(1)}"
    for cell in _code_cells(nb):
        assert not cell.get("outputs"), "commit notebooks with outputs stripped"
        assert not re.search(r"^\s*assert\b", cell.source, re.MULTILINE), cell.source
        assert "NB_" not in cell.source and "os.environ.get(" not in cell.source, cell.source
    install = INSTALL.search(_code_cells(nb)[0].source)
    assert install, "the first code cell installs keras-trainloop from its repository"
    assert install.group(2) == repo_url, "it installs from the repository the badge points to"
    assert set(install.group(1).strip("[]").split(",")) == spec.extras
    urls = _project_urls()
    if urls is not None:
        assert repo_url in urls.values(), "pyproject.toml's [project.urls] has the repo"
    index = _parameters_cell(nb)
    if spec.parameters:
        assert index is not None, f"a cell tagged {PARAMETERS_TAG!r} holds the sizes"
        assert set(spec.parameters) <= _assigned_names(nb.cells[index].source)


def _execute(path: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: Any) -> tuple[Any, Any]:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("TMPDIR", str(tmp))  # The kernel's tempfile.gettempdir().
    monkeypatch.delenv("MPLBACKEND", raising=False)  # The kernel's inline backend draws plots.
    spec = SPECS[path.name]
    nb = nbformat.read(path, as_version=4)
    if spec.parameters:
        index = _parameters_cell(nb)
        source = "\n".join(f"{name} = {value!r}" for name, value in spec.parameters.items())
        injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, injected)
    probe = (
        f"import json as _json\nprint({PROBE_MARKER!r} + _json.dumps({spec.probe}, default=float))"
    )
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # Raises CellExecutionError on the first failing cell.
    assert not list(cwd.iterdir()), "the notebook writes into a temporary folder only"
    return nb, spec


def _outputs(nb: Any, tmp_path: pathlib.Path) -> Executed:
    *cells, probe = _code_cells(nb)
    stdout, html, png_count = [], [], 0
    for cell in cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", out
            if out.output_type == "stream" and out.name == "stdout":
                stdout.append(out.text)
            data = out.get("data", {})
            if "text/html" in data:
                html.append(data["text/html"])
            png_count += "image/png" in data
    probe_text = "".join(out.get("text", "") for out in probe.get("outputs", []))
    values = json.loads(probe_text.split(PROBE_MARKER, 1)[1])
    return Executed("".join(stdout), html, png_count, values, tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_shows_its_results(path, tmp_path, monkeypatch):
    nb, spec = _execute(path, tmp_path, monkeypatch)
    run = _outputs(nb, tmp_path)
    assert "Traceback" not in run.stdout
    spec.check(run, spec.parameters)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
