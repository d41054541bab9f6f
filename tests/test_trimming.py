"""The trim (scissorhands_jax._trim): on tied saliency it re-initialises exactly the
share asked for, and on untied scores both tie rules select the same entries, against a
brute-force stable sort; fresh values drawn by a function are drawn for the eligible
leaves only, and are the function's values."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_true, stable_top_mask

import scissorhands_jax as shs
from scissorhands_jax._trim import draw_and_trim


def _flat_loss(p, batch):  # every gradient entry 1: with params 1 every saliency is equal
    return sum(jnp.sum(x) for x in jax.tree.leaves(p)) * jnp.mean(batch["x"])


def _trim(params, settings):
    return shs.trim(
        _flat_loss, params, lambda key: iter([{"x": jnp.ones(2)}]), key=jax.random.key(0),
        eligible=jax.tree.map(lambda _: True, params), fresh=jax.tree.map(jnp.zeros_like, params),
        settings=settings,
    )  # fmt: skip


def test_trim_of_tied_saliency_reinitialises_what_was_asked():
    params = {"a": {"kernel": jnp.ones((10, 6))}, "b": {"kernel": jnp.ones((40,))}}
    trimmed = _trim(params, shs.TrimSettings(sparsity=0.97))  # the default: ties="exact"
    assert count_true(trimmed.mask) == 100 - 97  # 3 %, not 100 %
    want = stable_top_mask(jax.tree.map(np.ones_like, params), 0.97)
    np.testing.assert_array_equal(trimmed.mask["b"]["kernel"], want["b"]["kernel"])
    with pytest.warns(UserWarning, match="selects 100 of 100"):
        parity = _trim(params, shs.TrimSettings(sparsity=0.97, ties="release"))
    assert count_true(parity.mask) == 100


@pytest.mark.parametrize("seed", range(3))
def test_untied_scores_select_the_same_either_way(seed):
    rng = np.random.default_rng(seed)
    params = {"a": jnp.asarray(rng.normal(size=(30, 7)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(55,)), jnp.float32)}  # fmt: skip

    def loss(p, batch):
        return sum(jnp.sum(jnp.sin(x * batch["x"][0])) for x in jax.tree.leaves(p))

    out = {}
    for ties in ("exact", "release"):
        out[ties] = shs.trim(
            loss, params, lambda key: iter([{"x": jnp.full(1, 1.3)}]), key=jax.random.key(seed),
            eligible={"a": True, "b": True}, fresh=jax.tree.map(jnp.zeros_like, params),
            settings=shs.TrimSettings(sparsity=0.9, ties=ties),
        )  # fmt: skip
    for a, b in zip(jax.tree.leaves(out["exact"]), jax.tree.leaves(out["release"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert count_true(out["exact"].mask) == 265 - math.floor(0.9 * 265)


def test_drawn_fresh_values_are_the_functions_values():
    """A draw function gives what its own tree would give: same key, same values."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), "bias": jnp.ones(4)}
    eligible = {"w": True, "bias": True}
    settings = shs.TrimSettings(sparsity=0.5)
    key = jax.random.key(3)
    draw = shs.fresh_values("trunc_normal", params)
    trimmed = shs.trim(
        lambda p, b: jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["bias"] * b["x"][0]), params,
        lambda k: iter([{"x": jnp.ones(1)}]), key=key, eligible=eligible, fresh=draw,
        settings=settings,
    )  # fmt: skip
    by_hand = np.asarray(draw(jax.random.split(key)[1])["w"])  # trim's k_fresh
    m = np.asarray(trimmed.mask["w"])
    assert 0 < m.sum() < m.size
    np.testing.assert_allclose(np.asarray(trimmed.params["w"])[m], by_hand[m], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(trimmed.params["w"])[~m], np.asarray(params["w"])[~m])
    assert np.all(np.asarray(trimmed.params["bias"])[np.asarray(trimmed.mask["bias"])] == 0)


@pytest.mark.parametrize("reinit", ["trunc_normal", "torch"])
def test_leaves_not_eligible_are_not_drawn(reinit):
    """Re-initialising a small leaf next to a 4 MB one must not draw 4 MB of values (at
    Stable Diffusion size that would be a second copy of the UNet)."""
    params = {"small": jnp.ones((3, 5)), "big": jnp.ones((1000, 1000))}
    selected = jax.tree.map(lambda x: jnp.ones(x.shape, bool), params)
    big = params["big"].nbytes

    def scratch(eligible):
        fn = functools.partial(draw_and_trim, eligible, shs.fresh_values(reinit, params))
        compiled = jax.jit(fn).lower(params, selected, jax.random.key(0)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert scratch({"small": True, "big": True}) >= big  # the check can see a full draw
    assert scratch({"small": True, "big": False}) < big / 100
