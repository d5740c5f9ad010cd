"""The data positions a checkpoint keeps: one per process (the job itself: tests/scale)."""

import json

import pytest

from keras_trainloop.checkpoints._process_states import restored_state, saved_entries


def test_one_process_saves_its_state_as_the_one_data_state():
    state = {"dataset": "ArrayDataset", "offset": 64}
    entries = saved_entries(state)
    assert entries == {"data_state": json.dumps(state)}
    assert restored_state(entries, 5, "/ckpt") == state
    assert saved_entries(None) == {"data_state": None}
    assert restored_state({"data_state": None}, 5, "/ckpt") is None


def test_a_process_takes_its_own_entry_of_a_job_of_as_many_processes():
    mine = {"dataset": "TFDataset", "shard": [0, 1]}
    assert restored_state({"data_state": None, "data_states": [json.dumps(mine)]}, 5, "/c") == mine
    assert restored_state({"data_state": None, "data_states": [None]}, 5, "/c") is None


def test_positions_saved_by_another_number_of_processes_start_the_data_afresh_with_a_warning():
    metadata = {"data_state": None, "data_states": [json.dumps({"a": 0}), json.dumps({"a": 1})]}
    with pytest.warns(
        UserWarning,
        match=r"step 7 in '/ckpt' holds the data positions of 2 processes, but this job runs "
        r"1: the weights, the optimizer and the step are restored, and a run resumed from it "
        r"starts each process's data order afresh\. Fix, for an exact resume: run as many",
    ):
        assert restored_state(metadata, 7, "/ckpt") is None
