"""The baselines: one invariant list for every method, then the behaviour each must show.

A tiny Linen MLP on 4x4 inputs keeps every test fast; the references (per-example
gradients, dense Fisher inverse, FGSM on a linear model, the distillation KL) are
computed independently with NumPy or a plain Python loop.
"""

from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import log_softmax, rel_entr, softmax

import scissorhands_jax as shs
from scissorhands_jax.baselines import HYPERPARAMETERS, METHODS, UnlearnResult, freeze
from scissorhands_jax.commands.compare import METHOD_NAMES

salun_mod = importlib.import_module("scissorhands_jax.baselines._salun")
influence_mod = importlib.import_module("scissorhands_jax.baselines._influence")
be_mod = importlib.import_module("scissorhands_jax.baselines._boundary_expanding")
bs_mod = importlib.import_module("scissorhands_jax.baselines._boundary_shrinking")
scrub_mod = importlib.import_module("scissorhands_jax.baselines._scrub")

CLASSES = 3
_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: (
        _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


class TinyNet(nn.Module):
    hidden: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape(x.shape[0], -1)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(CLASSES)(x)


def _data(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(16, CLASSES))
    return {"image": x, "label": np.argmax(x.reshape(n, -1) @ w, -1).astype(np.int32)}


@pytest.fixture(scope="module")
def tiny():
    model = shs.linen_model(TinyNet(), jnp.zeros((1, 4, 4, 1)))
    retain, forget = _data(40, 0), _data(12, 1)
    params, state = model.init(jax.random.key(0))
    both = jax.tree.map(lambda a, b: np.concatenate([a, b]), retain, forget)
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(both, 8),
        key=jax.random.key(1),
        epochs=15,
        tx=shs.sgd(0.1),
    )
    return model, params, state, retain, forget


TINY = {
    "retrain": {"lr": 0.1, "epochs": 2, "batch_size": 8},
    "ft": {"lr": 0.05, "epochs": 2, "batch_size": 8},
    "ga": {"lr": 0.01, "epochs": 2, "batch_size": 8},
    "rl": {"lr": 0.05, "epochs": 2, "batch_size": 8},
    "l1_sparse": {"alpha": 1e-3, "lr": 0.05, "epochs": 2, "batch_size": 8},
    "salun": {"lr": 0.05, "epochs": 2, "batch_size": 8},
    "iu": {"fisher_examples": 16, "chunk_size": 6, "batch_size": 8},
    "be": {"lr": 0.01, "epochs": 2, "batch_size": 8},
    "bs": {"lr": 0.01, "epochs": 2, "batch_size": 8},
    "scrub": {"epochs": 2, "max_epochs": 1, "batch_size": 8, "forget_batch_size": 4},
    "scissorhands": {"epochs": 2, "batch_size": 8, "sparsity": 0.9},
}

LONGER = {name: {"epochs": 4} for name, hps in TINY.items() if "epochs" in hps}
"""Twice the epochs of :data:`TINY` (Influence Unlearning has no epochs)."""


def _run(name, tiny, key, **overrides):
    model, params, state, retain, forget = tiny
    return METHODS[name](
        model,
        params,
        state,
        retain=retain,
        forget=forget,
        key=key,
        **{**TINY[name], **overrides},
    )


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _loss(model, params, state, data):
    return float(model.loss(params, state, jax.tree.map(jnp.asarray, data), False)[0])


def test_methods_table_is_complete():
    assert tuple(METHODS) == METHOD_NAMES
    assert set(TINY) == set(METHODS)
    for fn in METHODS.values():
        assert fn.__doc__ and "Returns:" in fn.__doc__


# ------------------------------------------------------------------- the invariant list


@pytest.mark.parametrize("name", list(METHODS))
def test_method_invariants(name, tiny):
    _, params, state, _, _ = tiny
    before = _bits(params)
    first = _run(name, tiny, jax.random.key(0))
    assert isinstance(first, UnlearnResult) and isinstance(first.log, list) and first.log
    assert jax.tree.structure(first.params) == jax.tree.structure(params)
    assert jax.tree.structure(first.model_state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(first.params), jax.tree.leaves(params), strict=True):
        assert new.shape == old.shape and new.dtype == old.dtype
        assert np.all(np.isfinite(np.asarray(new)))
    assert _bits(params) == before, "the input parameters must not be modified"
    assert _bits(first.params) != before, "the method changed nothing"
    # compiled once per run, no retrace after the first step: from empty caches, a run
    # twice as long (another key: other shuffles, labels, draws) compiles no more programs
    counts = []
    for overrides in ({}, LONGER.get(name, {})):
        jax.clear_caches()
        compiles = len(_COMPILES)
        _run(name, tiny, jax.random.key(1), **overrides)
        counts.append(len(_COMPILES) - compiles)
    assert counts[0] > 0 and counts[1] == counts[0], f"{name} retraced during a run: {counts}"
    # same seed, same result, bit for bit
    again = _run(name, tiny, jax.random.key(0))
    assert _bits(again.params) == _bits(first.params)


@pytest.mark.parametrize("name", list(METHODS))
def test_method_rejects_bad_input_before_work(name, tiny):
    model, params, state, retain, forget = tiny
    compiles = len(_COMPILES)
    empty = jax.tree.map(lambda x: x[:0], forget)
    with pytest.raises(ValueError, match="empty"):
        METHODS[name](model, params, state, retain=retain, forget=empty, key=jax.random.key(0))
    with pytest.raises(ValueError, match="arrays"):
        METHODS[name](
            model, params, state, retain=retain, forget=lambda k: [forget], key=jax.random.key(0)
        )
    assert len(_COMPILES) == compiles


@pytest.mark.parametrize("name", sorted(HYPERPARAMETERS))
def test_hyperparameters_are_declared_and_checked_before_work(name, tiny):
    model, params, state, retain, forget = tiny
    fields = HYPERPARAMETERS[name]()  # every field has its default
    assert set(TINY[name]) <= set(vars(fields))
    compiles = len(_COMPILES)
    with pytest.raises(ValueError, match=rf"{name} has no hyperparameter\(s\) \['lrr'\]"):
        _run(name, tiny, jax.random.key(0), lrr=0.1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        _run(name, tiny, jax.random.key(0), batch_size=0)
    assert len(_COMPILES) == compiles
    with pytest.raises(dataclasses.FrozenInstanceError):
        fields.batch_size = 1


def test_every_method_but_scissorhands_has_a_hyperparameter_class():
    assert set(HYPERPARAMETERS) == set(METHODS) - {"scissorhands"}


@pytest.mark.parametrize("name", ["ft", "ga", "rl", "salun", "be", "bs", "scrub", "l1_sparse"])
def test_bad_learning_rate_is_a_clear_error(name, tiny):
    with pytest.raises(ValueError, match="lr must be a positive number"):
        _run(name, tiny, jax.random.key(0), lr=-1.0)


# ------------------------------------------------------------------------ behaviour


def test_gradient_ascent_raises_the_forget_loss(tiny):
    model, params, state, _, forget = tiny
    before = _loss(model, params, state, forget)
    losses = [
        _loss(model, _run("ga", tiny, jax.random.key(0), lr=lr, epochs=3).params, state, forget)
        for lr in (0.1, 1.0)
    ]
    assert before < losses[0] < losses[1] and losses[1] > 10 * before, (before, losses)


@pytest.mark.parametrize("name", ["ft", "l1_sparse", "retrain"])
def test_retain_only_methods_never_see_the_forget_set(name, tiny):
    # Poisoned forget examples (NaN inputs, out-of-range labels) would make any loss that
    # touched them NaN; the result must be finite and bit-identical to the clean run.
    model, params, state, retain, forget = tiny
    poisoned = {
        "image": np.full_like(forget["image"], np.nan),
        "label": np.full_like(forget["label"], 10_000),
    }
    clean = _run(name, tiny, jax.random.key(3))
    dirty = METHODS[name](
        model, params, state, retain=retain, forget=poisoned, key=jax.random.key(3), **TINY[name]
    )
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(dirty.params))
    assert _bits(dirty.params) == _bits(clean.params)


def test_the_poison_would_be_caught(tiny):
    # The same poison in the retain set does reach the loss: the check above can fail.
    model, params, state, retain, forget = tiny
    image = retain["image"].copy()
    image[5] = np.nan
    poisoned = {**retain, "image": image}
    with pytest.raises(FloatingPointError):
        METHODS["ft"](
            model,
            params,
            state,
            retain=poisoned,
            forget=forget,
            key=jax.random.key(3),
            **TINY["ft"],
        )


def test_retrain_equals_fit_on_retain_only(tiny):
    model, _, _, retain, _ = tiny
    key = jax.random.key(7)
    result = _run("retrain", tiny, key)
    k_init, k_fit = jax.random.split(key)
    params, state = model.init(k_init)
    params, state, _ = shs.fit(
        model.loss,
        params,
        state,
        shs.data.array_source(retain, 8),
        key=k_fit,
        epochs=2,
        tx=shs.sgd(0.1),
    )
    assert _bits(result.params) == _bits(params)


def test_l1_with_zero_alpha_is_finetuning_and_alpha_shrinks_the_norm(tiny):
    ft = _run("ft", tiny, jax.random.key(4))
    l1_zero = _run("l1_sparse", tiny, jax.random.key(4), alpha=0.0)
    for a, b in zip(jax.tree.leaves(ft.params), jax.tree.leaves(l1_zero.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    strong = _run("l1_sparse", tiny, jax.random.key(4), alpha=0.05)
    l1 = lambda p: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(p))  # noqa: E731
    assert l1(strong.params) < 0.9 * l1(ft.params)
    assert [e["alpha"] for e in strong.log] == [0.05, 0.025]


def test_salun_frozen_entries_stay_bit_identical(tiny):
    # Strong weight decay and momentum over many steps: any leak shows in the bits.
    model, params, state, retain, forget = tiny
    hp = {"lr": 0.05, "epochs": 6, "batch_size": 8, "weight_decay": 0.5, "momentum": 0.9}
    result = _run("salun", tiny, jax.random.key(5), **hp)
    mask = salun_mod.saliency_mask(model, params, state, forget, ratio=0.5, batch_size=8)
    changed = 0
    for new, old, m in zip(
        jax.tree.leaves(result.params),
        jax.tree.leaves(params),
        jax.tree.leaves(mask),
        strict=True,
    ):
        new, old, m = np.asarray(new), np.asarray(old), np.asarray(m)
        assert np.array_equal(new[~m].view(np.uint32), old[~m].view(np.uint32))
        changed += int(np.sum(new[m] != old[m]))
    n = sum(np.size(m) for m in jax.tree.leaves(mask))
    selected = sum(int(np.sum(m)) for m in jax.tree.leaves(mask))
    assert selected == n // 2 or abs(selected - n / 2) <= 1
    assert changed > 0.9 * selected
    assert result.log[0] == {"epoch": "mask", "trained": selected}


def test_masking_gradients_before_the_optimizer_would_leak():
    # What the release does (mask the gradient, then weight decay and momentum) moves
    # frozen weights; `freeze` after the chain does not, -0.0 included.
    params = {"w": jnp.array([1.0, -0.0, 0.5, -2.0])}
    mask = {"w": jnp.array([True, False, False, True])}
    grads = {"w": jnp.array([0.3, 0.2, -0.1, 0.4])}
    naive = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9))
    fixed = optax.chain(naive, freeze())
    p_naive, p_fixed = params, params
    s_naive, s_fixed = naive.init(params), fixed.init(params)
    for _ in range(20):
        masked = jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), grads, mask)
        u, s_naive = naive.update(masked, s_naive, p_naive)
        p_naive = optax.apply_updates(p_naive, u)
        u, s_fixed = fixed.update(grads, s_fixed, p_fixed, freeze_mask=mask)
        p_fixed = optax.apply_updates(p_fixed, u)
    assert float(p_naive["w"][2]) != 0.5  # decay leaked into a frozen weight
    got = np.asarray(p_fixed["w"])
    assert (
        got[1:3].view(np.uint32).tolist()
        == np.array([-0.0, 0.5], np.float32).view(np.uint32).tolist()
    )
    assert got[0] != 1.0 and got[3] != -2.0


def _per_example_grads_loop(model, params, state, data):
    """(n, P) by a Python loop over single examples: the independent reference."""
    rows = []
    for i in range(len(data["label"])):
        one = jax.tree.map(lambda x, i=i: jnp.asarray(x[i : i + 1]), data)
        g = jax.grad(lambda p, one=one: model.loss(p, state, one, False)[0])(params)
        rows.append(
            np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(g)])
        )
    return np.stack(rows)


def test_woodfisher_inverse_product_matches_a_dense_solve(tiny):
    model, params, state, retain, _ = tiny
    fisher = jax.tree.map(lambda x: x[:10], retain)
    g = _per_example_grads_loop(model, params, state, fisher)
    p = g.shape[1]
    v = np.random.default_rng(0).normal(size=p)
    damping = 0.01
    dense = damping * np.eye(p) + g.T @ g / len(g)
    expected = np.linalg.solve(dense, v)
    got = influence_mod.woodfisher_inverse_product(
        model, params, state, fisher, jnp.asarray(v, jnp.float32), damping=damping, chunk_size=3
    )
    np.testing.assert_allclose(
        np.asarray(got), expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max()
    )


def test_influence_step_matches_the_formula(tiny):
    model, params, state, retain, forget = tiny
    alpha, damping, m = 3.0, 0.5, 12
    result = _run(
        "iu", tiny, jax.random.key(2), alpha=alpha, damping=damping, fisher_examples=m, chunk_size=5
    )
    g_f = _per_example_grads_loop(model, params, state, forget).mean(0)
    g_r = _per_example_grads_loop(model, params, state, retain).mean(0)
    v = 12 / 52 * (g_f - g_r)
    pick = np.sort(shs.data.batching.permutation(jax.random.key(2), 40)[:m])
    g = _per_example_grads_loop(model, params, state, jax.tree.map(lambda x: x[pick], retain))
    step = alpha * np.linalg.solve(damping * np.eye(len(v)) + g.T @ g / m, v)
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(t)])  # noqa: E731
    np.testing.assert_allclose(flat(result.params) - flat(params), step, rtol=1e-3, atol=1e-6)
    assert result.log[0]["fisher_examples"] == m


def test_shadow_logit_is_the_features_times_the_shadow_weights(tiny):
    model, params, state, _, forget = tiny
    x = jnp.asarray(forget["image"])
    index = be_mod.head_index(params, CLASSES)
    assert shs.leaf_paths(params)[index] == "Dense_1/kernel"
    w_s, b_s = jnp.linspace(-1.0, 1.0, 8), jnp.float32(0.3)
    got, new_state = be_mod.expanded_logits(model, params, state, x, (w_s, b_s), index)
    got = np.asarray(got)
    assert new_state == state
    h = np.maximum(
        np.asarray(x).reshape(len(x), -1) @ np.asarray(params["Dense_0"]["kernel"])
        + np.asarray(params["Dense_0"]["bias"]),
        0.0,
    )
    np.testing.assert_allclose(got[:, :CLASSES], np.asarray(model.logits(params, state, x)), 1e-5)
    np.testing.assert_allclose(got[:, CLASSES], h @ np.asarray(w_s) + 0.3, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head="):
        be_mod.head_index(params, CLASSES, head="nothing_like_this")


def test_boundary_expanding_pushes_the_forget_set_into_the_shadow_class(tiny):
    model, params, state, _, forget = tiny
    x = jnp.asarray(forget["image"])
    result = _run("be", tiny, jax.random.key(0), lr=0.1, epochs=5)
    # the shadow neuron is gone: the logits keep C columns, and the forget accuracy drops
    before = np.mean(np.argmax(np.asarray(model.logits(params, state, x)), -1) == forget["label"])
    after = np.mean(
        np.argmax(np.asarray(model.logits(result.params, state, x)), -1) == forget["label"]
    )
    assert after < before


def test_nearest_wrong_class_by_hand_on_a_linear_model():
    model = shs.linen_model(TinyNet(hidden=0), jnp.zeros((1, 4, 4, 1)))
    params, state = model.init(jax.random.key(3))
    data = _data(9, 5)
    bound = 0.2
    got = np.asarray(bs_mod.nearest_wrong_labels(model, params, state, data, jnp.float32(bound)))
    w = np.asarray(params["Dense_0"]["kernel"], np.float64)
    b = np.asarray(params["Dense_0"]["bias"], np.float64)
    x = data["image"].reshape(9, -1).astype(np.float64)
    y = data["label"]
    p = softmax(x @ w + b, axis=-1)
    grad_x = (p - np.eye(CLASSES)[y]) @ w.T  # d CE / d x for z = x W + b
    z_adv = (x + bound * np.sign(grad_x)) @ w + b
    z_adv[np.arange(9), y] = -np.inf
    np.testing.assert_array_equal(got, np.argmax(z_adv, -1))
    assert np.all(got != y)


def test_distill_kl_matches_scipy():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    temperature = 4.0
    p_t = softmax(t / temperature, axis=-1)
    expected = np.sum(rel_entr(p_t, softmax(s / temperature, axis=-1))) / 6 * temperature**2
    got = scrub_mod.distill_kl(jnp.asarray(s), jnp.asarray(t), temperature)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert abs(float(scrub_mod.distill_kl(jnp.asarray(t), jnp.asarray(t), 2.0))) < 1e-6
    assert np.allclose(log_softmax(t, -1).shape, (6, 5))


def test_scrub_max_steps_move_the_student_away_on_the_forget_set(tiny):
    model, params, state, retain, forget = tiny
    result = _run("scrub", tiny, jax.random.key(0), lr=0.05, epochs=1, max_epochs=1)
    xf, xr = jnp.asarray(forget["image"]), jnp.asarray(retain["image"])

    def kl(x):
        s = model.logits(result.params, state, x)
        return float(scrub_mod.distill_kl(s, model.logits(params, state, x), 4.0))

    assert kl(xf) > kl(xr)
    assert [e["phase"] for e in result.log] == ["max", "min"]


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(CLASSES)(nn.relu(x))


def _bn_running_mean(params, state, x, momentum=0.9):
    """BatchNorm's running mean after one training-mode pass on ``x``, by hand."""
    h = np.asarray(x).reshape(len(x), -1) @ np.asarray(params["Dense_0"]["kernel"])
    h = h + np.asarray(params["Dense_0"]["bias"])
    old = np.asarray(state["batch_stats"]["BatchNorm_0"]["mean"])
    return momentum * old + (1 - momentum) * h.mean(0)


def test_training_mode_forward_updates_batch_norm_by_hand():
    model = shs.linen_model(BatchNormNet(), jnp.zeros((1, 4, 4, 1)))
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(_data(10, 2)["image"])
    from scissorhands_jax.models.adapters import forward

    _, same = forward(model, params, state, x, False)
    assert same is state
    logits, new = forward(model, params, state, x, True)
    np.testing.assert_allclose(
        np.asarray(new["batch_stats"]["BatchNorm_0"]["mean"]),
        _bn_running_mean(params, state, x),
        rtol=1e-5,
        atol=1e-6,
    )
    # training mode normalises with the batch's own statistics: the logits differ
    assert not np.allclose(np.asarray(logits), np.asarray(model.logits(params, state, x)))
    # the BE shadow logits run the same pass and return the same state
    index = be_mod.head_index(params, CLASSES)
    shadow = (jnp.ones(8), jnp.float32(0.0))
    z, be_state = be_mod.expanded_logits(model, params, state, x, shadow, index, train=True)
    np.testing.assert_allclose(np.asarray(z[:, :CLASSES]), np.asarray(logits), rtol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, be_state, new)


@pytest.mark.parametrize("name", ["be", "scrub"])
def test_be_and_scrub_train_batch_norm_like_a_train_mode_loop(name):
    """The release's BE and SCRUB loops run the model in ``train()`` mode: with a
    BatchNorm model their result must carry moved running statistics."""
    model = shs.linen_model(BatchNormNet(), jnp.zeros((1, 4, 4, 1)))
    params, state = model.init(jax.random.key(0))
    retain, forget = _data(16, 0), _data(8, 1)
    hp = {"lr": 0.01, "epochs": 1, "batch_size": 8}
    if name == "scrub":
        hp.update(max_epochs=1, forget_batch_size=8)
    result = METHODS[name](
        model, params, state, retain=retain, forget=forget, key=jax.random.key(0), **hp
    )
    moved = np.asarray(result.model_state["batch_stats"]["BatchNorm_0"]["mean"])
    assert np.all(np.isfinite(moved))
    assert not np.allclose(moved, np.asarray(state["batch_stats"]["BatchNorm_0"]["mean"]))


def test_freeze_docstring_example_runs():
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(freeze, "freeze", globs={"freeze": freeze}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
