"""Tests for scissorhands_jax._saliency against hand-derived gradients and NumPy sorts.

References are independent of the library: the saliency of a two-layer net uses
backpropagation written out in NumPy float64, and every threshold is the k-th entry of
``np.sort`` over the concatenation of all leaves (one global ranking).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_true, stable_top_mask
from jax.tree_util import Partial

import scissorhands_jax as shs
from scissorhands_jax._saliency import (
    connection_sensitivity,
    kth_smallest,
    top_k_mask,
    top_k_threshold,
)

D_IN, D_HID, N_CLS = 5, 4, 3


# ----------------------------------------------------------------- two-layer net (JAX)


def _two_layer_loss(params, batch):
    """Mean softmax cross-entropy of x -> tanh(x W1 + b1) W2 + b2."""
    h = jnp.tanh(batch["x"] @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    z = h @ params["out"]["kernel"] + params["out"]["bias"]
    logp = jax.nn.log_softmax(z)
    return -jnp.mean(logp[jnp.arange(z.shape[0]), batch["y"]])


def _scaled_two_layer_loss(scale, params, batch):
    """The same loss on logits times ``scale``: a loss with state (an array it reads)."""
    h = jnp.tanh(batch["x"] @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    z = scale * (h @ params["out"]["kernel"] + params["out"]["bias"])
    logp = jax.nn.log_softmax(z)
    return -jnp.mean(logp[jnp.arange(z.shape[0]), batch["y"]])


def _two_layer_params(rng):
    return {
        "hidden": {
            "kernel": rng.normal(0.0, 0.8, (D_IN, D_HID)).astype(np.float32),
            "bias": rng.normal(0.0, 0.5, (D_HID,)).astype(np.float32),
        },
        "out": {
            "kernel": rng.normal(0.0, 0.8, (D_HID, N_CLS)).astype(np.float32),
            "bias": rng.normal(0.0, 0.5, (N_CLS,)).astype(np.float32),
        },
    }


def _batches(rng, sizes):
    return [
        {
            "x": rng.normal(0.0, 1.0, (n, D_IN)).astype(np.float32),
            "y": rng.integers(0, N_CLS, n).astype(np.int32),
        }
        for n in sizes
    ]


# ----------------------------------------------------- two-layer net (NumPy reference)


def _np_grads(params, batch, scale=1.0):
    """Backprop of the two-layer net by hand, in float64."""
    w1 = params["hidden"]["kernel"].astype(np.float64)
    b1 = params["hidden"]["bias"].astype(np.float64)
    w2 = params["out"]["kernel"].astype(np.float64)
    b2 = params["out"]["bias"].astype(np.float64)
    x = batch["x"].astype(np.float64)
    y = batch["y"]
    n = x.shape[0]
    h = np.tanh(x @ w1 + b1)
    z = scale * (h @ w2 + b2)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(N_CLS)[y]
    dz = (p - onehot) / n  # d(mean CE)/dz
    dlin = scale * dz  # through the logit scale
    dw2 = h.T @ dlin
    db2 = dlin.sum(axis=0)
    dh = dlin @ w2.T
    da = dh * (1.0 - h**2)  # tanh'
    dw1 = x.T @ da
    db1 = da.sum(axis=0)
    return {"hidden": {"kernel": dw1, "bias": db1}, "out": {"kernel": dw2, "bias": db2}}


def _np_saliency(params, batches, scale=1.0):
    """s = | theta * sum_b |grad L_b| | in float64."""
    acc = None
    for batch in batches:
        g = jax.tree.map(np.abs, _np_grads(params, batch, scale))
        acc = g if acc is None else jax.tree.map(np.add, acc, g)
    return jax.tree.map(lambda p, a: np.abs(p.astype(np.float64) * a), params, acc)


def _assert_tree_close(got, want, rtol=2e-5, atol=1e-7):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol)


# -------------------------------------------------------------- connection_sensitivity


@pytest.mark.parametrize("seed", [0, 1])
def test_saliency_matches_hand_backprop_over_several_batches(seed):
    rng = np.random.default_rng(seed)
    params = _two_layer_params(rng)
    batches = _batches(rng, [6, 6, 3])  # uneven last batch
    got = connection_sensitivity(_two_layer_loss, params, batches)
    want = _np_saliency(params, batches)
    _assert_tree_close(got, want)
    for leaf in jax.tree.leaves(got):
        assert leaf.dtype == jnp.float32
        assert np.all(np.asarray(leaf) >= 0.0)
    # More batches give more saliency: the sum over batches is really a sum.
    one = connection_sensitivity(_two_layer_loss, params, batches[:1])
    _assert_tree_close(one, _np_saliency(params, batches[:1]))
    total_one = sum(float(np.sum(x)) for x in jax.tree.leaves(one))
    total_all = sum(float(np.sum(x)) for x in jax.tree.leaves(got))
    assert total_all > total_one


def test_saliency_accepts_a_generator_of_batches():
    rng = np.random.default_rng(3)
    params = _two_layer_params(rng)
    batches = _batches(rng, [4, 4])
    got = connection_sensitivity(_two_layer_loss, params, (b for b in batches))
    _assert_tree_close(got, _np_saliency(params, batches))


def test_saliency_sums_absolute_gradients_of_batches_with_opposite_signs():
    # loss = <c, w> + c0 * b: the gradient of a batch is its c. Two batches with opposite
    # c cancel in a plain sum, but not in the sum of absolute values.
    def loss(p, batch):
        return jnp.sum(batch["c"] * p["w"]) + batch["c0"] * p["b"]

    params = {"w": np.array([1.5, -2.0, 0.5, 0.0], np.float32), "b": np.float32(-3.0)}
    c = np.array([1.0, -2.0, 0.25, 7.0], np.float32)
    batches = [{"c": c, "c0": np.float32(2.0)}, {"c": -c, "c0": np.float32(-2.0)}]
    s = connection_sensitivity(loss, params, batches)
    np.testing.assert_array_equal(np.asarray(s["w"]), np.abs(params["w"]) * 2.0 * np.abs(c))
    assert float(s["b"]) == 3.0 * 2.0 * 2.0
    # The signed sum would have given zero everywhere.
    assert np.all(np.asarray(s["w"])[:3] > 0.0)
    # A zero parameter has zero saliency whatever its gradient.
    assert float(s["w"][3]) == 0.0


def test_saliency_on_two_layer_net_with_cancelling_batches():
    # The same batch with the labels of the other class flips the sign of some gradients.
    rng = np.random.default_rng(7)
    params = _two_layer_params(rng)
    (b,) = _batches(rng, [1])
    b_other = {"x": b["x"], "y": (b["y"] + 1) % N_CLS}
    batches = [b, b_other]
    g0, g1 = (_np_grads(params, bb) for bb in batches)
    signs_differ = np.sign(g0["out"]["bias"]) != np.sign(g1["out"]["bias"])
    assert np.any(signs_differ)  # the case really cancels
    got = connection_sensitivity(_two_layer_loss, params, batches)
    _assert_tree_close(got, _np_saliency(params, batches))
    signed = np.abs(params["out"]["bias"] * (g0["out"]["bias"] + g1["out"]["bias"]))
    assert not np.allclose(np.asarray(got["out"]["bias"]), signed, rtol=1e-3)


@pytest.mark.parametrize("empty", [[], (), "generator"])
def test_saliency_empty_batches_raise(empty):
    params = _two_layer_params(np.random.default_rng(0))
    batches = (b for b in []) if empty == "generator" else empty
    with pytest.raises(ValueError, match="empty"):
        connection_sensitivity(_two_layer_loss, params, batches)


@pytest.mark.parametrize("bad_batch", [0, 1])
def test_saliency_nan_loss_raises(bad_batch):
    rng = np.random.default_rng(0)
    params = _two_layer_params(rng)
    batches = _batches(rng, [4, 4])
    batches[bad_batch]["x"][0, 0] = np.nan
    with pytest.raises(FloatingPointError):
        connection_sensitivity(_two_layer_loss, params, batches)


def test_saliency_nan_parameter_raises():
    rng = np.random.default_rng(0)
    params = _two_layer_params(rng)
    params["out"]["bias"][0] = np.nan
    with pytest.raises(FloatingPointError):
        connection_sensitivity(_two_layer_loss, params, _batches(rng, [4]))


def test_saliency_stateful_loss_through_partial():
    rng = np.random.default_rng(11)
    params = _two_layer_params(rng)
    batches = _batches(rng, [5, 5])
    for scale in (1.0, 2.5, -0.5):  # same function, new state: no stale compiled constant
        loss = Partial(_scaled_two_layer_loss, jnp.float32(scale))
        got = connection_sensitivity(loss, params, batches)
        _assert_tree_close(got, _np_saliency(params, batches, scale=scale))


# --------------------------------------------------------------- threshold references


def _flat(scores):
    return np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in jax.tree.leaves(scores)])


def _ref_threshold(scores, sparsity):
    """tau = np.sort(all)[floor(sparsity N) - 1], the release's fallback when it hits max/min."""
    flat = _flat(scores)
    k = math.floor(sparsity * flat.size)
    tau = np.sort(flat)[k - 1]
    if tau == flat.max() or tau == flat.min():
        tau = (flat.max() - flat.min()) / 2.0
    return tau


def _ref_mask(scores, sparsity):
    tau = _ref_threshold(scores, sparsity)
    return jax.tree.map(lambda s: np.asarray(s, np.float32) > tau, scores)


def _assert_same_mask(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g = np.asarray(g)
        assert g.dtype == np.bool_
        assert g.shape == np.shape(w)
        np.testing.assert_array_equal(g, w)


def _tied_tree(rng, high=6):
    """Leaves of different shapes (a scalar among them) with integer values: many ties."""

    def leaf(shape):
        return rng.integers(0, high, shape).astype(np.float32)

    return {
        "conv": {"kernel": leaf((3, 3, 2, 4)), "bias": leaf((4,))},
        "dense": [leaf((7, 5)), leaf(())],
        "head": (leaf((2, 3, 5)),),
    }


# ------------------------------------------------------------------------ top_k_mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9, 0.97])
def test_top_k_mask_matches_sort_reference_with_ties(seed, sparsity):
    scores = _tied_tree(np.random.default_rng(seed))
    want = _ref_mask(scores, sparsity)
    n_want = sum(int(np.sum(w)) for w in jax.tree.leaves(want))
    masks = {}
    for method in ("host", "device", "auto"):
        masks[method] = top_k_mask(scores, sparsity, method=method)
        _assert_same_mask(masks[method], want)
        n_got = sum(int(np.sum(m)) for m in jax.tree.leaves(masks[method]))
        assert n_got == n_want
        tau = top_k_threshold(scores, sparsity, method=method)
        assert float(tau) == float(_ref_threshold(scores, sparsity))
    host, device = jax.tree.leaves(masks["host"]), jax.tree.leaves(masks["device"])
    for a, b in zip(host, device, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_mask_continuous_scores_select_exactly_the_top_fraction(method):
    rng = np.random.default_rng(5)
    scores = {
        "a": rng.exponential(1.0, (40, 25)).astype(np.float32),
        "b": rng.exponential(3.0, (17,)).astype(np.float32),
        "c": rng.exponential(0.1, (8, 8, 3)).astype(np.float32),
    }
    n = 40 * 25 + 17 + 8 * 8 * 3
    sparsity = 0.97
    mask = top_k_mask(scores, sparsity, method=method)
    _assert_same_mask(mask, _ref_mask(scores, sparsity))
    # Distinct values: exactly N - floor(sparsity N) entries are selected.
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == n - math.floor(sparsity * n)


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_mask_ranks_globally_across_leaves(method):
    # Leaf "big" holds every large score: a global ranking selects all of it and nothing
    # of "small", where a per-leaf ranking would select half of each.
    scores = {
        "small": np.arange(1.0, 9.0, dtype=np.float32).reshape(2, 4),
        "big": np.arange(100.0, 108.0, dtype=np.float32).reshape(2, 2, 2),
    }
    mask = top_k_mask(scores, 0.5, method=method)
    assert not np.any(np.asarray(mask["small"]))
    assert np.all(np.asarray(mask["big"]))


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_mask_bfloat16_leaf(method):
    rng = np.random.default_rng(9)
    scores = {
        "a": jnp.asarray(rng.integers(0, 20, (6, 7)), jnp.bfloat16),
        "b": rng.integers(0, 20, (11,)).astype(np.float32),
    }
    _assert_same_mask(top_k_mask(scores, 0.7, method=method), _ref_mask(scores, 0.7))


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_fallback_when_tau_is_the_min(method):
    # Sorted: 1 x7, 3, 5, 10; N = 10, k = 5 -> tau = 1 = min -> tau = (10 - 1) / 2 = 4.5.
    # Without the fallback {3, 5, 10} would be selected; with the midpoint 5.5 only {10}.
    scores = {"a": np.array([1, 1, 3, 1, 1], np.float32), "b": np.array([[1, 10], [5, 1]])}
    scores["b"] = scores["b"].astype(np.float32)
    scores["c"] = np.array([1.0], np.float32)
    assert float(top_k_threshold(scores, 0.5, method=method)) == 4.5
    mask = top_k_mask(scores, 0.5, method=method)
    _assert_same_mask(mask, _ref_mask(scores, 0.5))
    np.testing.assert_array_equal(np.asarray(mask["a"]), [False] * 5)
    np.testing.assert_array_equal(np.asarray(mask["b"]), [[False, True], [True, False]])
    assert not np.any(np.asarray(mask["c"]))


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_fallback_when_tau_is_the_max(method):
    # Sorted: 2, 3, 4, 5, 10 x6; N = 10, k = 5 -> tau = 10 = max -> tau = (10 - 2) / 2 = 4.
    # Without the fallback nothing would be selected; with the midpoint 6 only the 10s.
    scores = {
        "a": np.array([10, 2, 10, 4], np.float32),
        "b": np.array([[10, 3, 10], [5, 10, 10]], np.float32),
    }
    assert float(top_k_threshold(scores, 0.5, method=method)) == 4.0
    mask = top_k_mask(scores, 0.5, method=method)
    _assert_same_mask(mask, _ref_mask(scores, 0.5))
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == 7


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_fallback_mostly_zero_saliency(method):
    # A typical saliency: most entries exactly 0 (min), a few positive.
    scores = {"w": np.zeros((10, 10), np.float32), "b": np.zeros((5,), np.float32)}
    scores["w"][0, :4] = [8.0, 1.0, 2.0, 6.0]
    # N = 105, k = floor(0.9 * 105) = 94 -> tau = 0 = min -> tau = 8 / 2 = 4 -> {8, 6}
    mask = top_k_mask(scores, 0.9, method=method)
    _assert_same_mask(mask, _ref_mask(scores, 0.9))
    assert np.flatnonzero(np.asarray(mask["w"])).tolist() == [0, 3]
    assert not np.any(np.asarray(mask["b"]))


@pytest.mark.parametrize("method", ["auto", "host", "device"])
@pytest.mark.parametrize("sparsity", [0, 1, 0.0, 1.0, -0.1, 1.5, "0.5", None, float("nan")])
def test_top_k_bad_sparsity_raises(sparsity, method):
    scores = {"a": np.arange(10.0, dtype=np.float32)}
    with pytest.raises(ValueError):
        top_k_mask(scores, sparsity, method=method)
    with pytest.raises(ValueError):
        top_k_threshold(scores, sparsity, method=method)


@pytest.mark.parametrize("method", ["auto", "host", "device"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_top_k_non_finite_scores_raise(bad, method):
    scores = {"a": np.arange(10.0, dtype=np.float32), "b": np.ones((3, 2), np.float32)}
    scores["b"][1, 1] = bad
    with pytest.raises(ValueError):
        top_k_mask(scores, 0.5, method=method)


@pytest.mark.parametrize("method", ["auto", "host", "device"])
def test_top_k_zero_rank_raises(method):
    # N = 3, floor(0.2 * 3) = 0.
    scores = {"a": np.array([1.0, 2.0], np.float32), "b": np.array(3.0, np.float32)}
    with pytest.raises(ValueError):
        top_k_mask(scores, 0.2, method=method)
    # floor(0.34 * 3) = 1 is fine.
    mask = top_k_mask(scores, 0.34, method=method)
    _assert_same_mask(mask, _ref_mask(scores, 0.34))


def test_top_k_empty_scores_and_bad_method_raise():
    with pytest.raises(ValueError):
        top_k_mask({"a": np.zeros((0,), np.float32)}, 0.5)
    with pytest.raises(ValueError):
        top_k_mask({"a": np.arange(4.0, dtype=np.float32)}, 0.5, method="gpu")


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_mask_tree_with_a_zero_size_leaf(method):
    # An empty leaf holds no entry: the ranking is over the other leaves, and the mask of
    # the empty leaf is empty. kth_smallest already handles it; both methods must too.
    scores = {"a": np.arange(10.0, dtype=np.float32), "empty": np.zeros((0, 3), np.float32)}
    assert float(kth_smallest(scores, 3)) == 2.0
    mask = top_k_mask(scores, 0.5, method=method)
    _assert_same_mask(mask, _ref_mask(scores, 0.5))
    assert mask["empty"].shape == (0, 3)


@pytest.mark.parametrize("method", ["host", "device"])
def test_top_k_mask_output_is_boolean_tree_of_the_input_structure(method):
    scores = _tied_tree(np.random.default_rng(1), high=1000)
    scores["dense"][0] = jnp.asarray(scores["dense"][0])  # mix NumPy and JAX leaves
    mask = top_k_mask(scores, 0.8, method=method)
    assert jax.tree.structure(mask) == jax.tree.structure(scores)
    for m, s in zip(jax.tree.leaves(mask), jax.tree.leaves(scores), strict=True):
        assert m.dtype == jnp.bool_
        assert m.shape == np.shape(s)


# ---------------------------------------------------------------------- kth_smallest


def _signed_tree(rng):
    def leaf(shape):
        x = rng.integers(-3, 4, shape).astype(np.float32) * 0.5
        x[rng.random(shape) < 0.2] = -0.0
        return x

    return {"a": leaf((2, 3)), "b": [leaf((4,)), leaf((1, 1, 3))], "c": np.float32(-0.0)}


@pytest.mark.parametrize("seed", [0, 1])
def test_kth_smallest_equals_sorted_reference_for_every_k(seed):
    tree = _signed_tree(np.random.default_rng(seed))
    flat = np.sort(_flat(tree))
    assert np.any(flat < 0) and np.any(flat == 0)
    assert np.any(np.signbit(flat) & (flat == 0))  # a -0.0 is in there
    for k in range(1, flat.size + 1):
        got = kth_smallest(tree, k)
        assert got.shape == () and got.dtype == jnp.float32
        assert float(got) == float(flat[k - 1]), k


def test_kth_smallest_extreme_values():
    tiny = np.float32(1e-45)  # smallest subnormal
    tree = {
        "a": np.array([np.inf, -np.inf, tiny, -tiny], np.float32),
        "b": np.array([np.finfo(np.float32).max, np.finfo(np.float32).min, 0.0, -0.0]),
    }
    tree["b"] = tree["b"].astype(np.float32)
    flat = np.sort(_flat(tree))
    for k in range(1, flat.size + 1):
        assert float(kth_smallest(tree, k)) == float(flat[k - 1]), k


def test_kth_smallest_random_continuous():
    rng = np.random.default_rng(4)
    tree = {
        "a": rng.normal(0.0, 1.0, (30, 20)).astype(np.float32),
        "b": rng.normal(5.0, 1e-3, (50,)).astype(np.float32),
    }
    flat = np.sort(_flat(tree))
    for k in (1, 2, 77, 325, 600, 649, 650):
        assert float(kth_smallest(tree, k)) == float(flat[k - 1]), k


def test_device_top_k_is_exact_at_millions_of_entries():
    """The counting bisection equals a full sort on a few million entries with ties."""
    rng = np.random.default_rng(7)
    scores = {
        "conv": np.abs(rng.standard_normal((3, 3, 256, 512))).astype(np.float32),
        "dense": np.round(np.abs(rng.standard_normal((1024, 1000))), 2).astype(np.float32),
        "bias": np.zeros(1000, np.float32),
    }
    flat = np.concatenate([v.ravel() for v in scores.values()])
    k = math.floor(0.97 * flat.size)
    expected = np.partition(flat, k - 1)[k - 1]
    tau = top_k_threshold(scores, 0.97, method="device")
    assert float(tau) == float(expected)
    mask = top_k_mask(scores, 0.97, method="device")
    assert sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(mask)) == int(
        np.sum(flat > expected)
    )


# --------------------------------------------------------------------------- tied scores


def _tied(seed, high):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.integers(0, high, (3, 3, 2, 4)).astype(np.float32)},
        "dense": [rng.integers(0, high, (7, 5)).astype(np.float32), np.float32(high - 1)],
        "head": (jnp.asarray(rng.integers(0, high, (2, 3, 5)), jnp.bfloat16),),
    }


@pytest.mark.parametrize("method", ["host", "device"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9, 0.97])
@pytest.mark.parametrize("seed, high", [(0, 1), (1, 2), (2, 6), (3, 60)])
def test_exact_ties_select_exactly_the_asked_count(seed, high, sparsity, method):
    scores = _tied(seed, high)  # high = 1: every score equal
    got = shs.top_k_mask(scores, sparsity, method=method, ties="exact")
    want = stable_top_mask(scores, sparsity)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)
    n = sum(np.size(x) for x in jax.tree.leaves(scores))
    assert count_true(got) == n - math.floor(sparsity * n)


def test_release_ties_are_kept_behind_the_option_and_warn():
    scores = {"w": np.ones((10, 10), np.float32)}
    with pytest.warns(UserWarning, match="selects 100 of 100 entries .* asks for 3 "):
        mask = shs.top_k_mask(scores, 0.97, ties="release")
    assert count_true(mask) == 100  # the release's behaviour, as it was
    assert count_true(shs.top_k_mask(scores, 0.97, ties="exact")) == 3
