"""In a real Jupyter kernel, the bar and the plot are detected and update in place."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

_CELL = """
import os
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
import keras_trainloop as ktl
import keras

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int32")

def model_fn(ctx, spec, inputs):
    return [ctx.layer("out", lambda: keras.layers.Dense(2))(inputs[0])]

trainer = ktl.Trainer(model_fn, ktl.losses.sparse_categorical_cross_entropy_logits, "adam",
                      eval_metrics=[ktl.metrics.SparseCategoricalAccuracy()])
loop = ktl.Loop(trainer)
bar = ktl.commandline.attach_progress_bar(loop, interval=0)
test_ds = ktl.ArrayDataset(x, y, batch_size=128, name="test")
plots = ktl.plots.attach_plots(loop, test_ds, every_n_steps=10)
loop.run_steps(ktl.ArrayDataset(x, y, batch_size=32, loop_forever=True), 30)
print("outputs:", bar.output, plots.output, bar.draws)
"""


def test_progress_bar_and_plots_update_one_output_each_in_a_kernel(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_CELL)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = nb.cells[0].outputs
    html = [o for o in outputs if o.output_type == "display_data" and "text/html" in o.data]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    # One HTML bar and one image, each updated in place (the client applies the updates).
    assert len(html) == 1, outputs
    assert "step 30/30 (100%)" in html[0].data["text/html"]
    assert len(images) == 1
    assert "Training done at step 30: 30 steps" in stdout
    draws = int(stdout.split("outputs: notebook notebook ")[1].split()[0])
    assert draws == 30  # interval=0: every step redraws, yet there is one output
