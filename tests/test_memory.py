"""Tests for forget_memory against gradients derived by hand for a linear model.

For pred = x @ w + b and L = mean((pred - y)^2) over the n x k entries, with r = pred - y:
dL/dw = 2/(n k) x^T r and dL/db = 2/(n k) sum_rows r. The memory of batch i is -grad L_i.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scissorhands_jax as shs

D_IN, D_OUT, N = 3, 2, 8


def _params(rng):
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(D_IN, D_OUT)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(D_OUT,)), jnp.float32),
        },
        "scale": jnp.asarray(rng.normal(size=(D_OUT,)), jnp.float32),
    }


def _loss_fn(params, batch):
    pred = batch["x"] @ params["dense"]["kernel"] + params["dense"]["bias"]
    return jnp.mean((params["scale"] * pred - batch["y"]) ** 2)


def _batches(rng, t):
    return [
        {
            "x": jnp.asarray(rng.normal(size=(N, D_IN)), jnp.float32),
            "y": jnp.asarray(rng.normal(size=(N, D_OUT)), jnp.float32),
        }
        for _ in range(t)
    ]


def _hand_grad(params, batch):
    """Gradient of mean((s * (x w + b) - y)^2) in float64, by hand."""
    w = np.asarray(params["dense"]["kernel"], np.float64)
    b = np.asarray(params["dense"]["bias"], np.float64)
    s = np.asarray(params["scale"], np.float64)
    x = np.asarray(batch["x"], np.float64)
    y = np.asarray(batch["y"], np.float64)
    pred = x @ w + b
    r = s * pred - y  # (n, k)
    c = 2.0 / r.size
    return {
        "dense": {"kernel": c * x.T @ (r * s), "bias": c * (r * s).sum(0)},
        "scale": c * (r * pred).sum(0),
    }


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _assert_tree_close(got, want, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("t", [1, 3])
def test_memory_is_negative_gradient_per_batch(t):
    rng = np.random.default_rng(t)
    params = _params(rng)
    batches = _batches(rng, t)
    want = _stack([jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches])

    memory = shs.forget_memory(_loss_fn, params, batches)

    _assert_tree_close(memory, want)
    for leaf in jax.tree.leaves(memory):
        assert leaf.dtype == jnp.float32 and leaf.shape[0] == t


def test_memory_accepts_a_generator_of_batches():
    rng = np.random.default_rng(10)
    params = _params(rng)
    batches = _batches(rng, 2)
    want = _stack([jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches])
    memory = shs.forget_memory(_loss_fn, params, (b for b in batches))
    _assert_tree_close(memory, want)


def test_eligible_zeroes_the_other_leaves():
    rng = np.random.default_rng(11)
    params = _params(rng)
    batches = _batches(rng, 2)
    eligible = {"dense": {"kernel": True, "bias": False}, "scale": False}
    grads = _stack([jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches])
    want = {
        "dense": {"kernel": grads["dense"]["kernel"], "bias": np.zeros((2, D_OUT))},
        "scale": np.zeros((2, D_OUT)),
    }

    memory = shs.forget_memory(_loss_fn, params, batches, eligible=eligible)

    _assert_tree_close(memory, want)
    np.testing.assert_array_equal(np.asarray(memory["scale"]), 0.0)
    np.testing.assert_array_equal(np.asarray(memory["dense"]["bias"]), 0.0)


def test_cumulative_gives_running_sums():
    """Release parity for t > 1: gradients are never zeroed between the memory batches,
    so row i is sum_{j<=i} -grad_j (and row 1 is the clean memory)."""
    rng = np.random.default_rng(12)
    params = _params(rng)
    batches = _batches(rng, 3)
    negs = [jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches]
    running, want = None, []
    for n in negs:
        running = n if running is None else jax.tree.map(np.add, running, n)
        want.append(running)

    memory = shs.forget_memory(_loss_fn, params, batches, cumulative=True)

    _assert_tree_close(memory, _stack(want))


def test_cumulative_respects_eligible():
    rng = np.random.default_rng(13)
    params = _params(rng)
    batches = _batches(rng, 2)
    eligible = {"dense": {"kernel": False, "bias": True}, "scale": False}
    negs = [jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches]
    bias = np.cumsum(np.stack([n["dense"]["bias"] for n in negs]), axis=0)
    want = {
        "dense": {"kernel": np.zeros((2, D_IN, D_OUT)), "bias": bias},
        "scale": np.zeros((2, D_OUT)),
    }

    memory = shs.forget_memory(_loss_fn, params, batches, eligible=eligible, cumulative=True)

    _assert_tree_close(memory, want)


def test_works_inside_jit():
    """Under jax.jit the finite check is left out and the result is the eager one."""
    rng = np.random.default_rng(17)
    params = _params(rng)
    batches = _batches(rng, 2)
    eligible = {"dense": {"kernel": True, "bias": False}, "scale": True}
    jitted = jax.jit(lambda p, bs: shs.forget_memory(_loss_fn, p, bs, eligible=eligible))
    want = _stack([jax.tree.map(np.negative, _hand_grad(params, b)) for b in batches])
    want["dense"]["bias"] = np.zeros_like(want["dense"]["bias"])
    _assert_tree_close(jitted(params, batches), want)


def test_traced_eligible_is_refused_with_advice():
    rng = np.random.default_rng(18)
    params = _params(rng)
    batches = _batches(rng, 1)
    eligible = {"dense": {"kernel": True, "bias": False}, "scale": True}
    bad = jax.jit(lambda p, e: shs.forget_memory(_loss_fn, p, batches, eligible=e))
    with pytest.raises(ValueError, match="outside jax.jit"):
        bad(params, jax.tree.map(jnp.asarray, eligible))


def test_memory_feeds_gem_projection():
    """The memory has the layout the projection expects, and GEM with margin 0 keeps the
    projected update from lowering each forget loss to first order."""
    rng = np.random.default_rng(14)
    params = _params(rng)
    batches = _batches(rng, 2)
    memory = shs.forget_memory(_loss_fn, params, batches)
    g = jax.grad(lambda p: sum(_loss_fn(p, b) for b in batches))(params)  # learns them back
    tx = shs.gem_projection(margin=0.0, eps=1e-6)
    out, state = tx.update(g, tx.init(params), memory=memory)
    assert int(state.projected) == 1
    for b in batches:
        # d/da L_f(theta - a g~) at a = 0 is -<grad L_f, g~> and must not be negative
        grad_f = jax.tree.leaves(_hand_grad(params, b))
        dot = sum(
            float(np.sum(np.asarray(o, np.float64) * h))
            for o, h in zip(jax.tree.leaves(out), grad_f, strict=True)
        )
        assert dot <= 1e-4, dot


def test_empty_batches_raise():
    params = _params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        shs.forget_memory(_loss_fn, params, [])
    with pytest.raises(ValueError, match="empty"):
        shs.forget_memory(_loss_fn, params, iter(()))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_raises(bad):
    rng = np.random.default_rng(15)
    params = _params(rng)
    batches = _batches(rng, 3)
    batches[1]["y"] = batches[1]["y"].at[0, 0].set(bad)
    with pytest.raises(FloatingPointError, match="forget batch 1"):
        shs.forget_memory(_loss_fn, params, batches)


@pytest.mark.parametrize("cumulative", ["no", 0, None, np.array([True, False])])
def test_forget_memory_refuses_a_cumulative_that_is_not_a_bool(cumulative):
    # the string "no" was once read as True (running sums)
    params = {"w": jnp.ones(2)}
    batches = [{"x": jnp.ones(2)}]
    with pytest.raises(ValueError, match="cumulative must be True or False"):
        shs.forget_memory(lambda p, b: jnp.sum(p["w"] * b["x"]), params, batches,
                          cumulative=cumulative)  # fmt: skip


# ------------------------------------------------------------------ non-finite gradients


def test_forget_memory_refuses_a_non_finite_gradient_of_a_finite_loss():
    def loss(p, batch):  # finite at p = 0, its gradient is not
        return jnp.sum(jnp.sqrt(p["w"])) * batch["x"][0]

    params = {"w": jnp.zeros(3)}
    with pytest.raises(FloatingPointError, match="gradient of forget batch 0 holds NaN or inf"):
        shs.forget_memory(loss, params, [{"x": jnp.ones(1)}])
