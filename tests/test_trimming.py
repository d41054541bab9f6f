"""The trim (scissorhands_jax._trim): on tied saliency it re-initialises exactly the
share asked for, and on untied scores both tie rules select the same entries, against a
brute-force stable sort."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_true, stable_top_mask

import scissorhands_jax as shs


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
