import keras
import numpy as np
import pytest

import keras_trainloop as ktl


def test_in_scope_nests_and_shares_the_store():
    ctx = ktl.Context()
    inner = ctx.in_scope("a").in_scope("b")
    assert ctx.scope == "/"
    assert inner.scope == "/a/b"
    inner.set_param("x", 1)
    assert ctx.in_scope("a").in_scope("b").get_param("x") == 1


def test_get_param_looks_up_parents_then_default():
    ctx = ktl.Context()
    ctx.set_param("lr", 0.1)
    ctx.in_scope("a").set_param("lr", 0.2)
    assert ctx.in_scope("a").in_scope("b").get_param("lr") == 0.2
    assert ctx.in_scope("c").get_param("lr") == 0.1
    assert ctx.get_param("missing", "dflt") == "dflt"


def test_layer_is_created_once_per_scope():
    ctx = ktl.Context()
    calls = []

    def factory():
        calls.append(1)
        return keras.layers.Dense(3)

    a1 = ctx.in_scope("a").layer("dense", factory)
    a2 = ctx.in_scope("a").layer("dense", factory)
    b = ctx.in_scope("b").layer("dense", factory)
    assert a1 is a2 and a1 is not b
    assert len(calls) == 2


def test_variable_is_created_once_and_checks_shape():
    ctx = ktl.Context()
    v = ctx.variable("w", (2, 3), initializer="zeros")
    assert ctx.variable("w", (2, 3)) is v
    np.testing.assert_array_equal(np.asarray(v.value), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"already exists with shape \(2, 3\)"):
        ctx.variable("w", (4,))


@pytest.mark.parametrize("name", ["", "a/b", None], ids=["empty", "slash", "none"])
def test_bad_names_are_rejected(name):
    with pytest.raises(ValueError, match="Received: name="):
        ktl.Context().in_scope(name)


def test_layer_factory_must_return_a_layer():
    with pytest.raises(TypeError, match="must return a keras.layers.Layer"):
        ktl.Context().layer("x", lambda: 3)


def test_root_is_the_same_store_at_the_root_scope():
    ctx = ktl.Context().set_param("lr", 0.1)
    nested = ctx.in_scope("a").in_scope("b")
    assert nested.root().scope == "/"
    assert nested.root().get_param("lr") == 0.1
    assert ctx.root() is ctx


def test_named_variables_use_scoped_names_not_keras_unique_names():
    ctx = ktl.Context()
    dense = ctx.in_scope("mlp").layer("dense", lambda: keras.layers.Dense(2))
    dense.build((None, 3))
    w = ctx.variable("w", (2,))
    named = ctx.named_variables()
    assert set(named) == {"/mlp/dense/kernel", "/mlp/dense/bias", "/w"}
    assert named["/w"] is w and named["/mlp/dense/kernel"] is dense.kernel


def test_trace_state_is_installed_only_while_tracing():
    ctx = ktl.Context()
    ctx.bind_global_step(lambda: 41)
    assert (ctx.training, ctx.global_step) == (False, 41)
    state = ktl.context.TraceState(training=True, global_step=7, spec="s")
    with ctx.in_scope("a").tracing(state):
        assert (ctx.training, ctx.global_step, ctx.trace.spec) == (True, 7, "s")
        ktl.add_loss(ctx, 2.0)
    assert [float(x) for x in state.losses] == [2.0]
    assert (ctx.training, ctx.global_step, ktl.get_losses(ctx)) == (False, 41, None)
