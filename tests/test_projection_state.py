"""The memory stored in the projection's state (set_memory), the rule against steps that
have no memory, non-finite updates, and loops that only call ``tx.update(grads, state,
params)``: Flax's TrainState and nnx.Optimizer.

References are the t = 1 closed form of GEM in float64,
:math:`\\tilde g = g + \\max(\\text{margin}, -\\langle g, m\\rangle / (\\lVert m\\rVert^2 +
\\epsilon))\\, m` when :math:`\\langle g, m\\rangle < 0`, else :math:`g`, and the
orthogonal complement :math:`g - m \\langle g, m\\rangle / (\\lVert m\\rVert^2 + \\epsilon)`.
"""

import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scissorhands_jax as shs

MARGIN, EPS = 0.5, 1e-3


def _gem_t1(g, m):
    g, m = np.asarray(g, np.float64).ravel(), np.asarray(m, np.float64).ravel()
    dot = g @ m
    if dot >= 0:
        return g
    return g + max(MARGIN, -dot / (m @ m + EPS)) * m


def _problem(seed=0):
    """g on {"a": (3,), "b": (2, 2)} and one memory row conflicting with it."""
    rng = np.random.default_rng(seed)
    g = {"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))}
    m = {k: rng.normal(size=v.shape) for k, v in g.items()}
    dot = sum(np.sum(g[k] * m[k]) for k in g)
    if dot > 0:
        m = {k: -v for k, v in m.items()}
    g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
    mem = {k: jnp.asarray(v[None], jnp.float32) for k, v in m.items()}
    return g, mem


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _flat_memory(mem):
    return np.concatenate([np.asarray(x[0], np.float64).ravel() for x in jax.tree.leaves(mem)])


def test_stored_memory_projects_like_the_argument_and_jit_traces_once():
    g, mem = _problem()
    want = _gem_t1(_flat(g), _flat_memory(mem))
    assert not np.allclose(want, _flat(g))  # the reference does project
    tx = optax.chain(shs.gem_projection(MARGIN, EPS), optax.identity())
    traces = []

    @jax.jit
    def update(u, state):
        traces.append(1)
        return tx.update(u, state)  # no memory= argument

    state = shs.set_memory(tx.init(g), mem)
    out, state = update(g, state)
    np.testing.assert_allclose(_flat(out), want, rtol=1e-5, atol=1e-6)
    arg_out, _ = tx.update(g, tx.init(g), memory=mem)
    np.testing.assert_allclose(_flat(arg_out), want, rtol=1e-5, atol=1e-6)

    # clearing and a new memory of the same shape keep the state's structure: no retrace
    cleared = shs.set_memory(state, None)
    out, cleared = update(g, cleared)
    np.testing.assert_array_equal(_flat(out), _flat(g))
    assert (
        int(shs.projection_state(cleared).count),
        int(shs.projection_state(cleared).projected),
    ) == (1, 1)
    other = jax.tree.map(lambda x: -x, mem)  # no conflict with g: passes through, counted
    out, state = update(g, shs.set_memory(cleared, other))
    np.testing.assert_allclose(_flat(out), _flat(g), rtol=0, atol=0)
    counters = shs.projection_state(state)
    assert (int(counters.count), int(counters.projected)) == (2, 1)
    assert len(traces) == 1


@pytest.mark.parametrize("jit", [False, True])
def test_a_step_without_any_memory_raises_unless_allowed(jit):
    g, _ = _problem()
    tx = optax.chain(shs.gem_projection(), optax.sgd(0.1))
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(ValueError, match="gem_projection: this step has no memory"):
        update(g, tx.init(g))
    tx = shs.orthogonal_projection()
    with pytest.raises(ValueError, match="orthogonal_projection: this step has no memory"):
        (jax.jit(tx.update) if jit else tx.update)(g, tx.init(g))

    quiet = shs.gem_projection(allow_no_memory=True)
    out, state = (jax.jit(quiet.update) if jit else quiet.update)(g, quiet.init(g))
    np.testing.assert_array_equal(_flat(out), _flat(g))
    assert int(state.count) == 0
    # told explicitly: memory=None, or a state cleared before any memory was stored
    out, _ = tx.update(g, tx.init(g), memory=None)
    np.testing.assert_array_equal(_flat(out), _flat(g))
    out, state = (jax.jit(tx.update) if jit else tx.update)(g, shs.set_memory(tx.init(g), None))
    np.testing.assert_array_equal(_flat(out), _flat(g))
    assert int(state.count) == 0


def test_the_argument_wins_over_the_stored_memory():
    g, mem = _problem(1)
    tx = shs.gem_projection(MARGIN, EPS)
    stored = shs.set_memory(tx.init(g), jax.tree.map(lambda x: -x, mem))  # no conflict
    out, _ = tx.update(g, stored, memory=mem)
    np.testing.assert_allclose(_flat(out), _gem_t1(_flat(g), _flat_memory(mem)), rtol=1e-5)
    conflicting = shs.set_memory(tx.init(g), mem)
    out, state = tx.update(g, conflicting, memory=None)  # a retain-only step, said so
    np.testing.assert_array_equal(_flat(out), _flat(g))
    assert int(state.count) == 0


def test_set_memory_finds_the_state_in_any_wrapper():
    g, mem = _problem(2)
    want = _gem_t1(_flat(g), _flat_memory(mem))  # sgd(1.0) negates it
    wrapped = {
        "chain": optax.chain(shs.gem_projection(MARGIN, EPS), optax.sgd(1.0)),
        "inject_hyperparams": optax.inject_hyperparams(
            lambda learning_rate: optax.chain(
                shs.gem_projection(MARGIN, EPS), optax.sgd(learning_rate)
            )
        )(learning_rate=1.0),
        "masked": optax.masked(
            optax.chain(shs.gem_projection(MARGIN, EPS), optax.sgd(1.0)), {"a": True, "b": True}
        ),
        "nested chain": optax.chain(
            optax.identity(), optax.chain(shs.gem_projection(MARGIN, EPS), optax.sgd(1.0))
        ),
    }
    for name, tx in wrapped.items():
        before = tx.init(g)
        state = shs.set_memory(before, mem)
        assert shs.projection_state(before).memory is None, name  # the input is unchanged
        out, state = jax.jit(tx.update)(g, state)
        np.testing.assert_allclose(-_flat(out), want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert int(shs.projection_state(state).projected) == 1, name


def test_set_memory_bad_input():
    g, mem = _problem()
    with pytest.raises(ValueError, match="holds no ProjectionState"):
        shs.set_memory(optax.sgd(0.1).init(g), mem)
    with pytest.raises(ValueError, match="holds no ProjectionState"):
        shs.projection_state(optax.sgd(0.1).init(g))
    tx = optax.chain(shs.gem_projection(), shs.gem_projection())
    with pytest.raises(ValueError, match="2 projection states"):
        shs.projection_state(tx.init(g))
    state = shs.gem_projection().init(g)
    with pytest.raises(ValueError, match="tree of arrays"):
        shs.set_memory(state, {})
    with pytest.raises(ValueError, match="same leading axis"):
        shs.set_memory(state, {"a": jnp.ones((1, 3)), "b": jnp.ones((2, 2, 2))})
    with pytest.raises(ValueError, match="same leading axis"):
        shs.set_memory(state, {"a": jnp.ones((0, 3)), "b": jnp.ones((0, 2, 2))})
    stored = shs.set_memory(state, {"a": jnp.ones((1, 2)), "b": jnp.ones((1, 2, 2))})
    with pytest.raises(ValueError, match="does not match update leaf"):  # checked at the step
        shs.gem_projection().update(g, stored)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("make", [shs.gem_projection, shs.orthogonal_projection])
def test_non_finite_update_raises_eagerly_and_turns_nan_under_jit(make, bad):
    g, mem = _problem(3)
    tx = make(eligible={"a": True, "b": False})
    g_bad = {**g, "a": g["a"].at[1].set(bad)}
    with pytest.raises(FloatingPointError, match="update .* holds NaN or inf"):
        tx.update(g_bad, tx.init(g), memory=mem)
    out, state = jax.jit(lambda u, s, m: tx.update(u, s, memory=m))(g_bad, tx.init(g), mem)
    assert np.all(np.isnan(np.asarray(out["a"])))  # not an infinite step passed on
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(g["b"]))  # not selected
    assert int(state.projected) == 1
    # a non-finite entry on a leaf the projection does not select is not its business
    g_other = {**g, "b": g["b"].at[0, 0].set(bad)}
    out, _ = tx.update(g_other, tx.init(g), memory=mem)
    assert np.all(np.isfinite(np.asarray(out["a"])))


def test_mask_is_a_deprecated_alias_of_eligible():
    g, mem = _problem(4)
    sel = {"a": True, "b": False}
    with pytest.warns(DeprecationWarning, match=r"gem_projection\(mask=...\) is deprecated"):
        old = shs.gem_projection(MARGIN, EPS, mask=sel)
    with pytest.warns(DeprecationWarning, match="orthogonal_projection"):
        shs.orthogonal_projection(mask=sel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = shs.gem_projection(MARGIN, EPS, eligible=sel)
    out_old, _ = old.update(g, old.init(g), memory=mem)
    out_new, _ = new.update(g, new.init(g), memory=mem)
    for k in g:
        np.testing.assert_array_equal(np.asarray(out_old[k]), np.asarray(out_new[k]))
    np.testing.assert_array_equal(np.asarray(out_new["b"]), np.asarray(g["b"]))
    with pytest.raises(ValueError, match="pass the leaf selection once"):
        shs.gem_projection(eligible=sel, mask=sel)


def _linear_loss(params, batch):
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((pred - batch["y"]) ** 2)


def _linear_problem():
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.normal(size=(3, 1)), jnp.float32), "b": jnp.zeros(1)}
    retain = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}
    retain["y"] = retain["x"] @ jnp.array([[1.0], [-2.0], [0.5]])
    forget = {"x": retain["x"][:4], "y": retain["y"][:4]}  # retain steps re-learn it
    return params, retain, forget


def test_flax_train_state_apply_gradients_projects():
    from flax.training import train_state

    params, retain, forget = _linear_problem()
    lr = 0.1
    tx = optax.chain(shs.gem_projection(MARGIN, EPS), optax.sgd(lr))
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    memory = shs.forget_memory(_linear_loss, params, [forget])
    # the retain gradient conflicts with the memory: learning retain re-learns forget
    g = jax.grad(_linear_loss)(params, retain)
    want = _flat(params) - lr * _gem_t1(_flat(g), _flat_memory(memory))
    assert _flat(g) @ _flat_memory(memory) < 0

    traces = []

    @jax.jit
    def train_step(state, batch):
        traces.append(1)
        return state.apply_gradients(grads=jax.grad(_linear_loss)(state.params, batch))

    with pytest.raises(ValueError, match="this step has no memory"):
        train_step(state, retain)  # a loop that never provides one is told so
    state = state.replace(opt_state=shs.set_memory(state.opt_state, memory))
    state = train_step(state, retain)
    np.testing.assert_allclose(_flat(state.params), want, rtol=1e-5, atol=1e-6)
    assert int(shs.projection_state(state.opt_state).projected) == 1
    state = state.replace(opt_state=shs.set_memory(state.opt_state, None))
    before = _flat(state.params)
    g = jax.grad(_linear_loss)(state.params, retain)
    state = train_step(state, retain)  # retain-only: plain SGD
    np.testing.assert_allclose(_flat(state.params), before - lr * _flat(g), rtol=1e-5, atol=1e-6)
    assert int(shs.projection_state(state.opt_state).projected) == 1
    # from here on (TrainState's step is an array now) neither a new memory nor
    # clearing it retraces the step
    seen = len(traces)
    for stored in (memory, None, memory):
        state = train_step(state.replace(opt_state=shs.set_memory(state.opt_state, stored)), retain)
    assert int(shs.projection_state(state.opt_state).projected) == 3
    assert len(traces) == seen


def test_nnx_optimizer_forwards_the_memory():
    from flax import nnx

    class Linear(nnx.Module):
        def __init__(self, rngs):
            self.w = nnx.Param(
                jnp.asarray(np.random.default_rng(5).normal(size=(3, 1)), jnp.float32)
            )
            self.b = nnx.Param(jnp.zeros(1))

        def __call__(self, x):
            return x @ self.w[...] + self.b[...]

    params, retain, forget = _linear_problem()
    model = Linear(nnx.Rngs(0))
    lr = 0.1
    optimizer = nnx.Optimizer(
        model, optax.chain(shs.gem_projection(MARGIN, EPS), optax.sgd(lr)), wrt=nnx.Param
    )
    _, nparams = nnx.split(model, nnx.Param)
    memory = shs.forget_memory(
        lambda p, b: _linear_loss({"w": p["w"][...], "b": p["b"][...]}, b), nparams, [forget]
    )

    def loss(m, batch):
        return jnp.mean((m(batch["x"]) - batch["y"]) ** 2)

    g = jax.grad(_linear_loss)(params, retain)
    mem_flat = np.concatenate(
        [np.asarray(memory["b"][0]).ravel(), np.asarray(memory["w"][0]).ravel()]
    )
    want = _flat(params) - lr * _gem_t1(_flat(g), mem_flat)
    optimizer.update(model, nnx.grad(loss)(model, retain), memory=memory)
    got = np.concatenate([np.asarray(model.b[...]).ravel(), np.asarray(model.w[...]).ravel()])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="this step has no memory"):
        optimizer.update(model, nnx.grad(loss)(model, retain))


@pytest.mark.slow  # ~10 s: two epochs of the digits CNN
def test_method_page_train_state_loop_projects():
    page = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "TrainState" in b
    ]
    names = {}
    exec(compile(block, "method.md TrainState block", "exec"), names)
    counters = shs.projection_state(names["state"].opt_state)
    # every joint step saw the memory (two epochs of the forget batches), none other did
    assert int(counters.count) == 2 * names["forget"].num_batches
    assert 0 < int(counters.projected) <= int(counters.count)
    assert not bool(counters.active)


def test_projected_count_reads_the_projection_wherever_the_chain_holds_it():
    from scissorhands_jax._loop import projected_count

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.ones(3)}
    memory = {"w": -jnp.ones((1, 3))}  # conflicts with the gradient: every step projects
    chains = {
        "first": optax.chain(shs.gem_projection(), optax.sgd(0.1)),
        "after weight decay": optax.chain(
            optax.add_decayed_weights(0.0), shs.gem_projection(), optax.sgd(0.1)
        ),
    }
    for name, tx in chains.items():
        state = tx.init(params)
        assert projected_count(state) == 0, name
        for _ in range(2):
            _, state = tx.update(grads, state, params, memory=memory)
        assert projected_count(state) == 2, name
    assert projected_count(optax.sgd(0.1).init(params)) == 0  # no projection: nothing counted
