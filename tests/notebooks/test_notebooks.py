"""Executes every notebook in notebooks/ top to bottom with a real kernel, offline."""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "keras_fit_hooks.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("NB_STEPS", "300")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "colab-badge" in nb.cells[0].source
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit notebooks with outputs stripped")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "Traceback" not in text
