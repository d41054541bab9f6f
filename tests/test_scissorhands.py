"""The whole method on digits-10, on Linen (with and without BatchNorm) and NNX models."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import accuracy_of, scissorhands_flat
from flax import nnx

import scissorhands_jax as shs

FAST = {"batch_size": 64, "progress": False}


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["random10", "class0"])
def test_forgets_and_keeps_retain(digits_model, original, scenario):
    split = shs.data.load_digits10(scenario, 0)
    params, state = original
    before = accuracy_of(digits_model, params, state, split.forget)
    result = scissorhands_flat(
        digits_model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(3),
        eligible="all_but_first_conv",
        epochs=5,
        **FAST,
    )
    after = accuracy_of(digits_model, result.params, result.model_state, split.forget)
    retain_acc = accuracy_of(digits_model, result.params, result.model_state, split.retain)
    assert after < before
    if scenario == "class0":
        assert after <= before - 50  # the class is gone, not merely dented
    assert retain_acc >= 85.0
    # the log: a trim entry, then one per epoch with the release's schedule
    assert result.log[0]["epoch"] == "trim" and result.log[0]["reinitialised"] > 0
    epochs = result.log[1:]
    assert len(epochs) == 5
    n_forget_batches = -(-len(split.forget_idx) // 64)
    n_retain_batches = -(-len(split.retain_idx) // 64)
    for entry in epochs:
        assert entry["joint_steps"] == n_forget_batches
        assert entry["joint_steps"] + entry["retain_steps"] == n_retain_batches
        assert 0 <= entry["projected_steps"] <= entry["joint_steps"]


@pytest.mark.slow
def test_same_key_is_bit_identical_and_input_untouched(digits_model, original):
    split = shs.data.load_digits10("random10", 1)
    params, state = original
    copy = jax.tree.map(np.array, params)
    run = lambda key: scissorhands_flat(  # noqa: E731
        digits_model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=key,
        eligible="all_but_first_conv",
        epochs=2,
        **FAST,
    )
    a, b, c = run(jax.random.key(7)), run(jax.random.key(7)), run(jax.random.key(8))
    assert _leaves_equal(a.params, b.params)
    assert _leaves_equal(a.mask, b.mask)
    assert not _leaves_equal(a.params, c.params)
    assert _leaves_equal(params, copy)


def test_mask_respects_eligibility_and_sparsity(digits_model, original):
    split = shs.data.load_digits10("random10", 0)
    params, state = original
    result = scissorhands_flat(
        digits_model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(0),
        eligible="all_but_first_conv",
        epochs=0,
        sparsity=0.9,
        **FAST,
    )
    assert not np.any(np.asarray(result.mask["Conv_0"]["kernel"]))
    n_total = sum(x.size for x in jax.tree.leaves(params))
    n_selected = sum(int(np.sum(m)) for m in jax.tree.leaves(result.mask))
    assert 0 < n_selected <= n_total - int(0.9 * n_total)
    # epochs=0: the result is the trimmed model; unselected entries are bit-identical
    for p, q, m in zip(
        jax.tree.leaves(params),
        jax.tree.leaves(result.params),
        jax.tree.leaves(result.mask),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], np.asarray(q)[~np.asarray(m)])


@pytest.mark.slow
def test_project_every_and_cumulative_memory(digits_model, original):
    split = shs.data.load_digits10("random10", 0)
    params, state = original
    common = dict(
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(1),
        eligible="all_but_first_conv",
        epochs=2,
        **FAST,
    )
    every2 = scissorhands_flat(digits_model, params, state, project_every=2, **common)
    for entry in every2.log[1:]:
        assert entry["projected_steps"] <= entry["joint_steps"] // 2
    clean = scissorhands_flat(digits_model, params, state, memory_num=2, **common)
    cumulative = scissorhands_flat(
        digits_model, params, state, memory_num=2, cumulative_memory=True, **common
    )
    assert np.isfinite(cumulative.log[-1]["loss_retain"])
    assert _leaves_equal(clean.mask, cumulative.mask)  # same trim ...
    assert not _leaves_equal(clean.params, cumulative.params)  # ... different memories
    # with one memory batch the running sum is the clean memory: the same run
    one = scissorhands_flat(digits_model, params, state, **common)
    one_cumulative = scissorhands_flat(
        digits_model, params, state, cumulative_memory=True, **common
    )
    assert _leaves_equal(one.params, one_cumulative.params)
    none = scissorhands_flat(digits_model, params, state, projection="none", **common)
    assert all(e["projected_steps"] == 0 for e in none.log[1:])


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10, name="fc")(x)


@pytest.mark.slow
def test_linen_batchnorm_model(original):
    del original
    split = shs.data.load_digits10("random10", 0)
    model = shs.linen_model(_BNNet(), jnp.zeros((1, 8, 8, 1)))
    params, state = model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(0),
        epochs=2,
        tx=shs.sgd(0.05),
    )
    result = scissorhands_flat(
        model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(2),
        epochs=1,
        sparsity=0.8,
        **FAST,
    )
    assert set(result.model_state) == {"batch_stats"}
    assert not np.any(np.asarray(result.mask["BatchNorm_0"]["scale"]))
    assert not np.any(np.asarray(result.mask["BatchNorm_0"]["bias"]))
    assert np.any(np.asarray(result.mask["fc"]["kernel"]))
    # the running statistics were updated in training mode during repair
    assert not _leaves_equal(state, result.model_state)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(result.params))


@pytest.mark.slow
def test_nnx_model_through_split():
    split = shs.data.load_digits10("class0", 0)
    make = lambda rngs: shs.DigitsCNNNNX(rngs=rngs, batch_norm=True)  # noqa: E731
    model, params, state = shs.nnx_model(make)
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(0),
        epochs=3,
        tx=shs.sgd(0.05),
    )
    before = accuracy_of(model, params, state, split.forget)
    result = scissorhands_flat(
        model,
        params,
        state,
        retain=split.retain,
        forget=split.forget,
        key=jax.random.key(1),
        eligible=r"dense|conv1",
        epochs=2,
        sparsity=0.9,
        lam=0.5,
        **FAST,
    )
    after = accuracy_of(model, result.params, result.model_state, split.forget)
    assert after < before
    paths = dict(zip(shs.leaf_paths(result.mask), jax.tree.leaves(result.mask), strict=True))
    assert not any(np.any(np.asarray(m)) for p, m in paths.items() if "bn" in p or "conv0" in p)
    # the state merges back into a module that the user keeps working with
    graphdef, _, _ = nnx.split(make(nnx.Rngs(0)), nnx.Param, ...)
    module = nnx.merge(graphdef, result.params, result.model_state)
    module.eval()
    assert module(jnp.asarray(split.test["image"][:4])).shape == (4, 10)
