"""ESD and SalUn for text-conditional diffusion against NumPy references.

The losses and the saliency mask are checked on a toy linear ε-model,
``eps(p, x, t, c) = x W + mean_L(c) V + b`` on (B, D) latents, whose values and gradients
have closed forms computed here in float64 NumPy (tolerance 1e-5 relative: float32 against
float64 on values of order 1). The masks of ESD-x/ESD-u are checked on a tiny random SD
UNet against the path rules written out here; the steps on the same UNet.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

from conftest import TINY_UNET  # noqa: E402

from scissorhands_jax import sd  # noqa: E402
from scissorhands_jax._reinit import leaf_paths  # noqa: E402

D, L, E, B = 6, 3, 4, 5  # latent size, tokens, embedding size, batch
UNET = TINY_UNET
RTOL = 1e-5


def linear_eps(p, x, t, c):
    del t
    return x @ p["W"] + c.mean(axis=1) @ p["V"] + p["b"]


def toy(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "W": rng.normal(size=(D, D)).astype(np.float32),
        "V": rng.normal(size=(E, D)).astype(np.float32),
        "b": rng.normal(size=(D,)).astype(np.float32),
    }
    x = rng.normal(size=(B, D)).astype(np.float32)
    c, null = (rng.normal(size=(B, L, E)).astype(np.float32) for _ in range(2))
    return params, x, c, null


def np_eps(p, x, c):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    return np.asarray(x, np.float64) @ p["W"] + np.asarray(c, np.float64).mean(1) @ p["V"] + p["b"]


def np_mse_grads(p, x, c, target):
    """Value and gradients of mean((eps(p, x, c) - target)^2) for the linear model."""
    r = np_eps(p, x, c) - target
    scale = 2.0 / r.size
    cbar = np.asarray(c, np.float64).mean(1)
    grads = {"W": scale * x.T @ r, "V": scale * cbar.T @ r, "b": scale * r.sum(0)}
    return np.mean(r**2), grads


# ------------------------------------------------------------------------------ ESD


@pytest.mark.parametrize("eta", [1.0, 0.0, 2.5])
def test_esd_target_and_loss_match_numpy(eta):
    params, x, c, null = toy()
    original, _, _, _ = toy(1)
    t = jnp.arange(B)
    e_null, e_c = np_eps(original, x, null), np_eps(original, x, c)
    target = e_null - eta * (e_c - e_null)
    got = sd.esd_target(linear_eps, original, x, t, c, null, eta)
    np.testing.assert_allclose(got, target, rtol=RTOL, atol=1e-5)
    value, grads = np_mse_grads(params, x, c, target)
    loss, g = jax.value_and_grad(sd.esd_loss, argnums=1)(
        linear_eps, params, original, x, t, c, null, eta
    )
    np.testing.assert_allclose(loss, value, rtol=RTOL)
    for k in grads:  # the target is a constant: no gradient flows through the original
        np.testing.assert_allclose(g[k], grads[k], rtol=RTOL, atol=1e-6)
    g_orig = jax.grad(sd.esd_loss, argnums=2)(linear_eps, params, original, x, t, c, null, eta)
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(g_orig))


def test_esd_loss_is_zero_when_the_model_already_predicts_the_target():
    params, x, c, null = toy()
    # eta = 0: the target is the original's unconditional prediction; a model whose
    # context weights are zero predicts the same for any prompt
    p = {**params, "V": np.zeros_like(params["V"])}
    loss = sd.esd_loss(linear_eps, p, p, x, jnp.zeros(B, int), c, null, 0.0)
    assert float(loss) < 1e-12  # the doubled batch may round its matmul differently


@pytest.fixture(scope="module")
def unet_setup():
    unet = sd.UNet(sd.UNetConfig(**UNET))
    init = jax.jit(unet.init)(
        jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 5, 32))
    )
    # move every parameter off its initial value (zero-initialised outputs would hide terms)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: jnp.asarray(x + 0.05 * rng.normal(size=x.shape).astype(np.float32)),
        init["params"],
    )
    return unet, params


def test_esd_masks_select_the_cross_attention_and_the_rest(unet_setup):
    _, params = unet_setup
    paths = leaf_paths(params)
    x = [bool(m) for m in jax.tree.leaves(sd.esd_mask(params, "x"))]
    u = [bool(m) for m in jax.tree.leaves(sd.esd_mask(params, "u"))]
    cross = [re.search(r"/attn2/", p) is not None for p in paths]
    excluded = [re.match(r"(time_embedding|conv_norm_out|conv_out)/", p) is not None for p in paths]
    assert x == cross and sum(cross) == 4 * 5  # 4 transformers: q, k, v, out.kernel, out.bias
    assert u == [not a and not e for a, e in zip(cross, excluded, strict=True)]
    assert sum(excluded) == 8  # kernel and bias of linear_1, linear_2, conv_norm_out, conv_out
    assert any("attn1" in p for p, m in zip(paths, u, strict=True) if m)


# ---------------------------------------------------------------------------- SalUn


def test_salun_loss_matches_numpy():
    params, x, c, pseudo = toy()
    schedule = sd.SchedulerConfig().schedule()
    rng = np.random.default_rng(3)
    t_f, t_r = np.array([0, 10, 500, 900, 999]), np.array([3, 7, 300, 600, 998])
    n_f, n_r, x_r = (rng.normal(size=(B, D)).astype(np.float32) for _ in range(3))
    c_r = rng.normal(size=(B, L, E)).astype(np.float32)
    abar = np.cumprod(1.0 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)  # scaled_linear

    def noised(x0, t, n):
        a = abar[t][:, None]
        return np.sqrt(a) * x0 + np.sqrt(1 - a) * n

    xt_f = noised(x, t_f, n_f)
    forget = np.mean((np_eps(params, xt_f, c) - np_eps(params, xt_f, pseudo)) ** 2)
    retain = np.mean((n_r - np_eps(params, noised(x_r, t_r, n_r), c_r)) ** 2)
    got = sd.salun_loss(
        linear_eps, params, schedule, (x, c, pseudo, t_f, n_f), (x_r, c_r, t_r, n_r), 0.5
    )
    np.testing.assert_allclose(got, forget + 0.5 * retain, rtol=1e-4)
    # the pseudo prompt's prediction is a constant target
    g = jax.grad(
        lambda p: sd.salun_loss(
            linear_eps, p, schedule, (x, c, pseudo, t_f, n_f), (x_r, c_r, t_r, n_r), 0.0
        )  # fmt: skip
    )(params)
    _, want = np_mse_grads(params, xt_f, c, np_eps(params, xt_f, pseudo))
    np.testing.assert_allclose(g["V"], want["V"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.9])
def test_salun_mask_keeps_exactly_the_top_ratio(ratio):
    params, _, _, _ = toy()
    schedule = sd.SchedulerConfig().schedule()
    rng = np.random.default_rng(4)
    batches = [
        {"latents": rng.normal(size=(B, D)).astype(np.float32),
         "context": rng.normal(size=(B, L, E)).astype(np.float32)}
        for _ in range(2)
    ]  # fmt: skip
    key = jax.random.key(7)
    total = {k: 0.0 for k in params}
    for i, b in enumerate(batches):
        # the documented draws: t and noise of batch i from fold_in(key, i)
        t, noise = sd.draw_noise(jax.random.fold_in(key, i), b["latents"], 1000)
        t, noise = np.asarray(t), np.asarray(noise, np.float64)
        a = np.asarray(schedule.alphas_cumprod, np.float64)[t][:, None]
        x_t = np.sqrt(a) * b["latents"] + np.sqrt(1 - a) * noise
        _, g = np_mse_grads(params, x_t, b["context"], noise)
        total = {k: total[k] + g[k] for k in params}
    scores = np.concatenate([np.abs(total[k]).ravel() for k in sorted(params)])
    n = scores.size
    keep = n - int(np.floor((1 - ratio) * n))
    threshold = np.sort(scores)[-keep]
    mask = sd.salun_mask(linear_eps, params, schedule, batches, key, ratio)
    got = np.concatenate([np.asarray(mask[k]).ravel() for k in sorted(params)])
    assert got.sum() == keep
    np.testing.assert_array_equal(got, scores >= threshold)


def test_other_class_never_draws_the_label_and_reaches_every_other():
    labels = jnp.array([0, 1, 2, 3] * 250)
    other = np.asarray(sd.other_class(jax.random.key(0), labels, 4))
    assert not np.any(other == np.asarray(labels))
    for c in range(4):
        assert set(other[np.asarray(labels) == c]) == set(range(4)) - {c}


# ---------------------------------------------------------------------------- steps


def named_eps(p, x, t, c):
    """The linear model with ESD's module names: ``attn2`` reads the prompt."""
    del t
    return x @ p["conv"]["W"] + c.mean(axis=1) @ p["attn2"]["V"] + p["conv"]["b"]


def named_toy(seed=0):
    params, x, c, null = toy(seed)
    named = {"attn2": {"V": params["V"]}, "conv": {"W": params["W"], "b": params["b"]}}
    return jax.tree.map(jnp.asarray, named), x, c, null


def test_steps_on_a_toy_model_move_only_the_mask():
    params, x, c, null = named_toy()
    before = jax.tree.map(np.asarray, params)
    schedule = sd.SchedulerConfig().schedule()
    for which, want in (("x", [True, False, False]), ("u", [False, True, True])):
        hp = sd.ESDHyperparameters(lr=1e-2, variant=which, x_t="noised")
        mask = sd.esd_mask(params, which)
        state = sd.init_erasure_state(params, mask, jax.random.key(0), hp)
        state, _ = sd.make_esd_step(named_eps, schedule, hp)(
            state, {"latents": x, "context": c, "uncond": null}
        )
        assert _changed(before, state.params) == want
    assert not any(_changed(before, params))  # the caller's arrays survive the donation
    mask = sd.salun_mask(named_eps, params, schedule, [{"latents": x, "context": c}],
                         jax.random.key(1), 0.3)  # fmt: skip
    hp = sd.SalunSDHyperparameters(lr=1e-2)
    state = sd.init_erasure_state(params, mask, jax.random.key(2), hp)
    batch = {"forget": {"latents": x, "context": c, "pseudo_context": null},
             "retain": {"latents": -x, "context": null}}  # fmt: skip
    state, metrics = sd.make_salun_step(named_eps, schedule, hp)(state, batch)
    for new, old, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(before),
                           jax.tree.leaves(mask), strict=True):  # fmt: skip
        new, m = np.asarray(new), np.asarray(m)
        np.testing.assert_array_equal(new[~m], old[~m])
        assert np.all(new[m] != old[m])
    np.testing.assert_allclose(
        metrics["loss"], metrics["forget_loss"] + 0.5 * metrics["retain_loss"], rtol=1e-6
    )


def _esd_batch(key, n=2):
    k = jax.random.split(key, 3)
    return {
        "latents": jax.random.normal(k[0], (n, 8, 8, 4)),
        "context": jax.random.normal(k[1], (n, 5, 32)),
        "uncond": jax.random.normal(k[2], (n, 5, 32)),
    }


def _changed(a, b):
    return [bool(np.any(np.asarray(x) != np.asarray(y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]  # fmt: skip


@pytest.mark.slow
def test_esd_step_moves_only_the_masked_leaves_and_keeps_the_caller_params(unet_setup):
    unet, params = unet_setup
    before = jax.tree.map(np.asarray, params)
    hp = sd.ESDHyperparameters(lr=1e-3, variant="x", x_t="noised")
    mask = sd.esd_mask(params, "x")
    state = sd.init_erasure_state(params, mask, jax.random.key(1), hp)
    step = sd.make_esd_step(sd.unet_eps(unet), sd.SchedulerConfig().schedule(), hp)
    state, metrics = step(state, _esd_batch(jax.random.key(2)))
    assert state.step == 1 and np.isfinite(float(metrics["loss"]))
    moved = _changed(before, state.params)
    assert moved == [bool(m) for m in jax.tree.leaves(mask)]
    assert not any(_changed(before, params)) and not any(_changed(before, state.original))


@pytest.mark.slow
def test_salun_step_moves_only_the_salient_entries(unet_setup):
    unet, params = unet_setup
    eps, schedule = sd.unet_eps(unet), sd.SchedulerConfig().schedule()
    b = _esd_batch(jax.random.key(3))
    mask = sd.salun_mask(eps, params, schedule, [b], jax.random.key(4), 0.5)
    hp = sd.SalunSDHyperparameters(lr=1e-3)
    state = sd.init_erasure_state(params, mask, jax.random.key(5), hp)
    step = sd.make_salun_step(eps, schedule, hp)
    batch = {"forget": {"latents": b["latents"], "context": b["context"],
                        "pseudo_context": b["uncond"]},
             "retain": {"latents": -b["latents"], "context": b["uncond"]}}  # fmt: skip
    state, metrics = step(state, batch)
    assert state.original is None
    np.testing.assert_allclose(
        metrics["loss"], metrics["forget_loss"] + 0.5 * metrics["retain_loss"], rtol=1e-6
    )
    moved = 0
    for new, old, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(params),
                           jax.tree.leaves(mask), strict=True):  # fmt: skip
        new, old, m = np.asarray(new), np.asarray(old), np.asarray(m)
        np.testing.assert_array_equal(new[~m], old[~m])
        moved += int(np.sum(new[m] != old[m]))
    total = sum(int(np.sum(m)) for m in jax.tree.leaves(mask))
    assert moved > 0.9 * total  # Adam moves (nearly) every entry with a gradient


@pytest.mark.slow
def test_esd_steps_lower_the_esd_loss_and_compile_once(unet_setup):
    unet, params = unet_setup
    calls = []

    def eps(p, x, t, c):
        calls.append(1)  # runs only while tracing
        return unet.apply({"params": p}, x, t, c)

    hp = sd.ESDHyperparameters(lr=3e-3, variant="x", x_t="noised")
    b = _esd_batch(jax.random.key(6))
    batch = {"x_t": b["latents"], "t": jnp.array([300, 700]), "context": b["context"],
             "uncond": b["uncond"]}  # fmt: skip
    state = sd.init_erasure_state(params, sd.esd_mask(params, "x"), jax.random.key(0), hp)
    step = sd.make_esd_step(eps, sd.SchedulerConfig().schedule(), hp)
    losses = []
    for _ in range(6):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    traced = len(calls)
    state, _ = step(state, batch)
    assert len(calls) == traced  # no retrace after the first step
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------- hostile


@pytest.mark.parametrize(
    "cls, field, value",
    [
        (sd.ESDHyperparameters, "lr", 0.0),
        (sd.ESDHyperparameters, "lr", float("nan")),
        (sd.ESDHyperparameters, "iterations", -1),
        (sd.ESDHyperparameters, "iterations", 2.5),
        (sd.ESDHyperparameters, "batch_size", 0),
        (sd.ESDHyperparameters, "negative_guidance", -1.0),
        (sd.ESDHyperparameters, "negative_guidance", "1"),
        (sd.ESDHyperparameters, "variant", "xattn"),
        (sd.ESDHyperparameters, "x_t", "sampled"),
        (sd.ESDHyperparameters, "ddim_steps", 0),
        (sd.ESDHyperparameters, "start_guidance", -1.0),
        (sd.SalunSDHyperparameters, "alpha", -0.5),
        (sd.SalunSDHyperparameters, "ratio", 0.0),
        (sd.SalunSDHyperparameters, "ratio", 1.0),
        (sd.SalunSDHyperparameters, "epochs", True),
        (sd.SalunSDHyperparameters, "lr", -1e-5),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
    with pytest.raises(ValueError, match="no hyperparameter"):
        cls.of("esd", {"learning_rate": 1e-5})


def test_hostile_masks_batches_and_states(unet_setup):
    unet, params = unet_setup
    params_toy, x, c, _ = toy()
    schedule = sd.SchedulerConfig().schedule()
    with pytest.raises(ValueError, match="variant"):
        sd.esd_mask(params, "z")
    with pytest.raises(ValueError, match="attn2"):
        sd.esd_mask(params_toy, "x")
    with pytest.raises(ValueError, match="ratio"):
        sd.salun_mask(linear_eps, params_toy, schedule, [{"latents": x, "context": c}],
                      jax.random.key(0), 1.5)  # fmt: skip
    with pytest.raises(ValueError, match="empty"):
        sd.salun_mask(linear_eps, params_toy, schedule, [], jax.random.key(0))
    with pytest.raises(ValueError, match="context"):
        sd.salun_mask(linear_eps, params_toy, schedule, [{"latents": x}], jax.random.key(0))
    hp = sd.ESDHyperparameters(x_t="noised")
    with pytest.raises(ValueError, match="structure of params"):
        sd.init_erasure_state(params, {"a": True}, jax.random.key(0), hp)
    with pytest.raises(ValueError, match="hp must be"):
        sd.init_erasure_state(params, sd.esd_mask(params), jax.random.key(0), {"lr": 1e-5})
    with pytest.raises(ValueError, match="ESDHyperparameters"):
        sd.make_esd_step(sd.unet_eps(unet), schedule, sd.SalunSDHyperparameters())
    state = sd.init_erasure_state(params, sd.esd_mask(params), jax.random.key(0), hp)
    step = sd.make_esd_step(sd.unet_eps(unet), schedule, hp)
    with pytest.raises(ValueError, match="uncond"):
        step(state, {"latents": x, "context": c})
    salun = sd.make_salun_step(sd.unet_eps(unet), schedule, sd.SalunSDHyperparameters())
    with pytest.raises(ValueError, match="pseudo_context"):
        salun(state, {"forget": {"latents": x, "context": c}, "retain": {}})
    with pytest.raises(ValueError, match="num_classes"):
        sd.other_class(jax.random.key(0), jnp.zeros(3, int), 1)


# ------------------------------------------------- FSDP sharding on 8 virtual devices

DEVICES = 8


def _fsdp_worker() -> dict:
    """Runs in a subprocess with 8 CPU devices: one ESD and one SalUn step with the
    parameters, Adam's moments and the mask sharded over the mesh, against the same step
    on one device. Prints the placements and the differences as JSON."""
    from scissorhands_jax import parallel

    rng = np.random.default_rng(0)
    params = {
        "attn2": {"V": rng.normal(size=(32, 64)).astype(np.float32)},
        "conv": {"W": rng.normal(size=(64, 64)).astype(np.float32) / 8,
                 "b": rng.normal(size=(64,)).astype(np.float32)},
    }  # fmt: skip
    x = rng.normal(size=(16, 64)).astype(np.float32)
    c, null = (rng.normal(size=(16, 3, 32)).astype(np.float32) for _ in range(2))
    schedule = sd.SchedulerConfig().schedule()
    mesh = parallel.data_mesh()
    out: dict = {"device_count": jax.device_count()}

    def spec(a):  # the split axis of each dimension (trailing Nones written out)
        axes = tuple(getattr(a.sharding, "spec", ("single",)))
        return list(axes + (None,) * (a.ndim - len(axes)))

    traces = []

    def eps(p, x_t, t, context):
        traces.append(1)  # runs only while tracing
        return named_eps(p, x_t, t, context)

    def run(placed, which):
        if which == "esd":
            hp = sd.ESDHyperparameters(lr=1e-3, variant="u", x_t="noised")
            mask = sd.esd_mask(placed, "u")
            make, batch = sd.make_esd_step, {"latents": x, "context": c, "uncond": null}
        else:
            hp = sd.SalunSDHyperparameters(lr=1e-3)
            mask = sd.salun_mask(named_eps, placed, schedule, [{"latents": x, "context": c}],
                                 jax.random.key(1), 0.5)  # fmt: skip
            make = sd.make_salun_step
            batch = {"forget": {"latents": x, "context": c, "pseudo_context": null},
                     "retain": {"latents": -x, "context": null}}  # fmt: skip
        state = sd.init_erasure_state(placed, mask, jax.random.key(2), hp)
        placement = {
            "params": [spec(a) for a in jax.tree.leaves(state.params)],
            "adam_mu": [spec(a) for a in jax.tree.leaves(state.opt_state[0][0].mu)],
            "mask": [spec(a) for a in jax.tree.leaves(state.mask)],
        }
        step = make(eps, schedule, hp)
        traces.clear()
        state, metrics = step(state, batch)
        placement["params_after"] = [spec(a) for a in jax.tree.leaves(state.params)]
        placement["adam_mu_after"] = [spec(a) for a in jax.tree.leaves(state.opt_state[0][0].mu)]
        traced = len(traces)
        step(jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, state), batch)
        placement["retraced"] = len(traces) > traced
        return state, metrics, mask, placement

    sharded_params = parallel.on_mesh(params, mesh, shard=True, min_size=1024)
    for which in ("esd", "salun"):
        ref, ref_m, ref_mask, _ = run(jax.tree.map(jnp.asarray, params), which)
        par, par_m, par_mask, placement = run(sharded_params, which)
        out[which] = {
            **placement,
            "mask_equal": all(
                bool(np.array_equal(np.asarray(a), np.asarray(b)))
                for a, b in zip(jax.tree.leaves(ref_mask), jax.tree.leaves(par_mask), strict=True)
            ),
            "loss_rel": abs(float(ref_m["loss"]) - float(par_m["loss"])) / float(ref_m["loss"]),
            "mu_max_abs": max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(
                    jax.tree.leaves(ref.opt_state[0][0].mu),
                    jax.tree.leaves(par.opt_state[0][0].mu),
                    strict=True,
                )
            ),  # fmt: skip
            "mu_max": max(
                float(np.max(np.abs(a))) for a in jax.tree.leaves(ref.opt_state[0][0].mu)
            ),
            "params_max_abs": max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(
                    jax.tree.leaves(ref.params), jax.tree.leaves(par.params), strict=True
                )
            ),  # fmt: skip
        }

    # the tiny SD UNet: one ESD-x step, its parameters split over the 8 devices
    unet = sd.UNet(sd.UNetConfig(**UNET))
    init = jax.jit(unet.init)(
        jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 5, 32))
    )
    unet_params = jax.tree.map(np.asarray, init["params"])
    hp = sd.ESDHyperparameters(lr=1e-4, x_t="noised")
    b = {k: np.asarray(v) for k, v in _esd_batch(jax.random.key(3), 8).items()}
    results = []
    for tree in (jax.tree.map(jnp.asarray, unet_params),
                 parallel.on_mesh(unet_params, mesh, shard=True, min_size=1024)):  # fmt: skip
        state = sd.init_erasure_state(tree, sd.esd_mask(tree, "x"), jax.random.key(4), hp)
        state, metrics = sd.make_esd_step(sd.unet_eps(unet), schedule, hp)(state, b)
        results.append((state, float(metrics["loss"])))
    (ref, ref_loss), (par, par_loss) = results
    split = [a for a in jax.tree.leaves(par.opt_state[0][0].mu) if "data" in spec(a)]
    out["unet"] = {
        "leaves": len(jax.tree.leaves(par.params)),
        "split_params": sum("data" in spec(a) for a in jax.tree.leaves(par.params)),
        "split_mu": len(split),
        "loss_rel": abs(ref_loss - par_loss) / ref_loss,
        "mu_rel": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(ref.opt_state[0][0].mu),
                            jax.tree.leaves(par.opt_state[0][0].mu), strict=True)
        ) / max(float(np.max(np.abs(a))) for a in jax.tree.leaves(ref.opt_state[0][0].mu)),
    }  # fmt: skip
    return out


@pytest.fixture(scope="module")
def fsdp():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={DEVICES}"
        + " --xla_cpu_multi_thread_eigen=false"
    )
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, __file__, "fsdp"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fsdp_shards_params_adam_state_and_mask(fsdp):
    assert fsdp["device_count"] == DEVICES
    # leaf order: attn2/V (32, 64), conv/W (64, 64), conv/b (64,): the largest dimension
    # divisible by 8 is split; the bias (under min_size) is replicated
    want = [[None, "data"], ["data", None], [None]]
    for which in ("esd", "salun"):
        got = fsdp[which]
        assert got["params"] == want and got["params_after"] == want
        # Adam's moments split as the parameters are, before and after the step
        assert got["adam_mu"] == want and got["adam_mu_after"] == want
        assert not got["retraced"]  # the placement is stable: one program for the run
    assert fsdp["salun"]["mask"] == want  # a per-entry mask too
    assert fsdp["esd"]["mask"] == [[], [], []]  # per-leaf flags: replicated


@pytest.mark.slow
def test_the_tiny_unet_shards_and_steps_as_on_one_device(fsdp):
    got = fsdp["unet"]
    # the UNet's large leaves (convolutions, attention and feed-forward kernels) are split,
    # and Adam's moments with them; norms and biases stay whole
    assert 20 < got["split_params"] < got["leaves"] and got["split_mu"] == got["split_params"]
    assert got["loss_rel"] < 1e-5 and got["mu_rel"] < 1e-4


@pytest.mark.slow
def test_a_sharded_step_gives_the_numbers_of_one_device(fsdp):
    """Float32 sums in another order: the loss and Adam's first moment to 1e-5 relative;
    the parameters moved by at most lr from Adam's first step, so within 2e-3 * 1e-3."""
    for which in ("esd", "salun"):
        got = fsdp[which]
        assert got["mask_equal"]
        assert got["loss_rel"] < 1e-5
        assert got["mu_max_abs"] <= 1e-5 * got["mu_max"]
        assert got["params_max_abs"] < 2e-6


def test_place_like_keeps_unplaced_references_and_refuses_other_structures():
    from scissorhands_jax import parallel

    params, _, _, _ = named_toy()
    mask = sd.esd_mask(params, "x")
    placed = parallel.place_like(mask, params)
    assert all(a is b for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(mask), strict=True))
    with pytest.raises(ValueError, match="structure"):
        parallel.place_like({"a": True}, params)


if __name__ == "__main__" and sys.argv[1:] == ["fsdp"]:
    print(json.dumps(_fsdp_worker()))
