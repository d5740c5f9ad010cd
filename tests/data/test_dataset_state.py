"""ArrayDataset.get_state / set_state: an exact, resumable position."""

import itertools
import json

import numpy as np
import pytest

import keras_trainloop as ktl
from keras_trainloop.data import _array

N = 10
X = np.arange(N, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # row i = i
Y = np.arange(N, dtype=np.int32)

CONFIGS = [
    {"batch_size": b, "shuffle": s, "loop_forever": lf, "drop_remainder": dr}
    for b, s, lf, dr in itertools.product(
        (3, 4, 10, 13), (False, True), (False, True), (False, True)
    )
    if not (dr and not lf and b > N)  # A pass would hold no batch: refused at construction.
]


def _config_id(config):
    return "b{batch_size}-{s}-{lf}-{dr}".format(
        s="shuffle" if config["shuffle"] else "ordered",
        lf="forever" if config["loop_forever"] else "finite",
        dr="drop" if config["drop_remainder"] else "keep",
        **config,
    )


def _make(config, seed=0, **kwargs):
    return ktl.ArrayDataset(X, Y, seed=seed, **config, **kwargs)


def _ops(rng, count):
    """A random sequence of reads: single batches, fused reads of 1-3 batches, resets."""
    kinds = rng.choice(["batch", "batch", "batches", "reset"], size=count)
    return [(kind, int(rng.integers(1, 4))) for kind in kinds]


def _apply(ds, ops):
    """What `ds` returns for each op: label ids, None (a fused read refused) or "EOF"."""
    out = []
    for kind, n in ops:
        if kind == "reset":
            ds.reset()
            continue
        try:
            batch = ds.yield_batch() if kind == "batch" else ds.yield_batches(n)
        except EOFError:
            out.append("EOF")
            continue
        out.append(None if batch is None else (kind, batch[2][0].tolist(), batch[1][0].tolist()))
    return out


def _json_round_trip(state):
    return json.loads(json.dumps(state))


@pytest.mark.parametrize("copy_passes", [True, False], ids=["pass-copies", "gathers"])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("seed", range(4))
def test_restored_dataset_yields_exactly_the_next_batches(seed, config, copy_passes, monkeypatch):
    if not copy_passes:
        monkeypatch.setattr(_array, "_PASS_COPY_BYTES", 0)
    rng = np.random.default_rng(seed)
    ds1 = _make(config, seed=seed)
    _apply(ds1, _ops(rng, int(rng.integers(0, 25))))
    state = _json_round_trip(ds1.get_state())
    ds2 = _make(config, seed=seed + 100)  # Another seed and history: the state decides.
    _apply(ds2, _ops(rng, int(rng.integers(0, 10))))
    ds2.set_state(state)
    after = _ops(rng, 40)
    assert _apply(ds2, after) == _apply(ds1, after)
    assert ds2.get_state() == ds1.get_state()


@pytest.mark.parametrize("config", [c for c in CONFIGS if c["batch_size"] == 3], ids=_config_id)
def test_a_state_taken_at_every_position_resumes_there(config):
    ds1 = _make(config)
    ops = _ops(np.random.default_rng(7), 30)
    reference = _apply(_make(config), ops)
    for i in range(len(ops) + 1):
        ds1 = _make(config)
        head = _apply(ds1, ops[:i])
        ds2 = _make(config, seed=1)
        ds2.set_state(_json_round_trip(ds1.get_state()))
        assert head + _apply(ds2, ops[i:]) == reference, f"resumed after op {i}"


def test_state_records_pass_offset_and_rng_as_plain_json_values():
    ds = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=3)
    assert ds.get_state()["pass"] == 0 and ds.get_state()["offset"] == 0
    for _ in range(3):
        ds.yield_batch()
    state = ds.get_state()
    assert state["pass"] == 0 and state["offset"] == N
    with pytest.raises(EOFError):
        ds.yield_batch()
    ds.reset()
    ds.yield_batch()
    state = ds.get_state()
    assert (state["pass"], state["offset"]) == (1, 4)
    assert state["rng"]["bit_generator"] == "PCG64"
    assert json.loads(json.dumps(state)) == state
    assert ktl.ArrayDataset(X, Y, batch_size=4).get_state()["rng"] is None


def test_reset_without_reading_after_set_state_changes_nothing():
    ds1 = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=0)
    ds1.yield_batch()
    ds1.reset()
    ds2 = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=5)
    ds2.set_state(ds1.get_state())
    ds2.reset()
    ds1.reset()
    np.testing.assert_array_equal(ds2.yield_batch()[2][0], ds1.yield_batch()[2][0])


@pytest.mark.parametrize(
    "other, match",
    [
        ({"batch_size": 5}, r"batch_size=4 in the state but 5 here"),
        ({"shuffle": False}, r"shuffle=True in the state but False here"),
        ({"loop_forever": True}, r"loop_forever=False in the state but True here"),
        ({"drop_remainder": True}, r"drop_remainder=False in the state but True here"),
        ({"num_examples": 9}, r"num_examples=10 in the state but 9 here"),
    ],
    ids=["batch_size", "shuffle", "loop_forever", "drop_remainder", "num_examples"],
)
def test_state_of_a_dataset_with_other_arguments_is_refused_unchanged(other, match):
    saved = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=0)
    saved.yield_batch()
    num = other.pop("num_examples", N)
    kwargs = {"batch_size": 4, "shuffle": True, "seed": 1} | other
    ds = ktl.ArrayDataset(X[:num], Y[:num], **kwargs)
    ds.yield_batch()
    before = ds.get_state()
    with pytest.raises(ValueError, match=match) as info:
        ds.set_state(saved.get_state())
    assert "Fix: build the dataset with the same arrays and arguments" in str(info.value)
    assert ds.get_state() == before


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: None, r"takes the dict that ArrayDataset.get_state\(\) returns"),
        (lambda s: s | {"dataset": "TFDataset"}, r"Received: state=\{'dataset': 'TFDataset'"),
        (lambda s: s | {"version": 99}, r"version=99"),
        (lambda s: s | {"offset": 11}, r"offset=11.*integer in \[0, 10\]"),
        (lambda s: s | {"offset": -1}, r"offset=-1"),
        (lambda s: s | {"pass": "2"}, r"pass='2'"),
        (lambda s: s | {"rng": {"bit_generator": "PCG64"}}, r"rng=.*Fix: pass the rng entry"),
        (lambda s: s | {"rng": None}, r"rng=None"),
    ],
    ids=[
        "not-a-dict",
        "other-dataset",
        "version",
        "offset-past-end",
        "negative-offset",
        "pass-type",
        "broken-rng",
        "missing-rng",
    ],
)
def test_malformed_states_are_refused_with_the_fix(change, match):
    ds = ktl.ArrayDataset(X, Y, batch_size=4, shuffle=True, seed=0)
    ds.yield_batch()
    before = ds.get_state()
    state = change(dict(before))
    with pytest.raises(ValueError, match=match):
        ds.set_state(state)
    assert ds.get_state() == before


def test_rng_of_an_unshuffled_state_is_refused():
    ds = ktl.ArrayDataset(X, Y, batch_size=4)
    state = ds.get_state() | {"rng": {"bit_generator": "PCG64"}}
    with pytest.raises(ValueError, match="rng=None for an unshuffled dataset"):
        ds.set_state(state)


def test_get_state_and_set_state_are_optional_protocol_members():
    class Minimal:
        name = "minimal"

        def yield_batch(self):
            raise EOFError

        def reset(self):
            pass

    assert isinstance(Minimal(), ktl.Dataset)
    assert not hasattr(Minimal(), "get_state")
    assert "get_state" in ktl.Dataset.__doc__ and "set_state" in ktl.Dataset.__doc__
