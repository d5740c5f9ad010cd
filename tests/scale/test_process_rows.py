"""The batch layout check for per-process feeding (trainer/_distribution.py).

The refusal itself, on a real mesh whose model axis spans two processes, is in
test_multi_process.py; here the rule, on the row blocks each process holds.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from keras_trainloop.trainer import _distribution


@pytest.mark.parametrize(
    "held",
    [
        {0: (0,), 1: (1,)},
        {0: (0, 1), 1: (2, 3)},
        {0: (0, 2), 1: (1, 3)},  # Interleaved: JAX fills them from the process's rows in order.
        {0: (0, 1, 2, 3)},  # One process.
    ],
    ids=["one_block_each", "two_blocks_each", "interleaved", "one_process"],
)
def test_layouts_where_each_process_holds_its_own_rows_pass(held):
    assert _distribution._layout_problem(held) is None


@pytest.mark.parametrize(
    "held, problem",
    [
        (
            {0: (0, 1), 1: (0, 1)},
            "row block 0 of the batch (of 2) is on devices of processes [0, 1]",
        ),
        ({0: (0,), 1: (0,)}, "row block 0 of the batch (of 1) is on devices of processes [0, 1]"),
        ({0: (0, 1, 2), 1: (3,)}, "the processes hold unequal numbers of row blocks {0: 3, 1: 1}"),
    ],
    ids=["model_axis_across_processes", "batch_not_split", "unequal"],
)
def test_layouts_that_processes_would_fill_inconsistently_are_named(held, problem):
    assert _distribution._layout_problem(held) == problem


def test_this_processs_mesh_holds_every_row_block():
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    assert _distribution._rows_by_process(sharding) == {jax.process_index(): (0,)}
    _distribution.check_process_rows(None, sharding)  # One process: nothing to refuse.
